//! A real HAProxy in a namespace, and the load-balancer idle-timeout
//! incident for the tests that need one: HAProxy with `timeout client 2s`
//! (it also serves the backend itself), and a pooled client that reuses
//! its keep-alive connections after a 3 s gap. HAProxy has closed them at
//! 2 s; every reuse gets an RST.

use std::{
    net::{SocketAddr, TcpStream},
    process::Stdio,
    thread,
    time::Duration,
};

use crate::{Netns, diagnose::Guard, host::ScratchDir, http::request, sockets::wait_listening};

/// Where the pool connects.
pub const LB: &str = "127.0.0.1:8080";
/// HAProxy's `timeout client`, s.
pub const IDLE_TIMEOUT_S: f64 = 2.0;

/// A real HAProxy (`haproxy -db`) running in a namespace; on drop it is
/// killed and its directory (the config) removed.
pub struct Haproxy {
    _process: Guard,
    _dir: ScratchDir,
}

impl Haproxy {
    /// Starts HAProxy in `ns` with `config` (the text of haproxy.cfg) and
    /// waits until something accepts on `listen` (10 s at most).
    pub fn start(ns: &Netns, config: &str, listen: SocketAddr) -> Haproxy {
        let dir = ScratchDir::new(&format!("haproxy-{}", ns.name()));
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let process = Guard(
            ns.command("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start haproxy (apt-get install haproxy)"),
        );
        ns.run(|| wait_listening(listen, || "haproxy".to_string()));
        Haproxy {
            _process: process,
            _dir: dir,
        }
    }
}

/// HAProxy with `timeout client 2s` in front of a backend it serves
/// itself; stopped on drop.
pub struct IdleTimeoutLb {
    _haproxy: Haproxy,
    lb: SocketAddr,
}

impl IdleTimeoutLb {
    /// Starts HAProxy in `ns` and waits until it listens.
    pub fn start(ns: &Netns) -> IdleTimeoutLb {
        let lb: SocketAddr = LB.parse().unwrap();
        let haproxy = Haproxy::start(
            ns,
            "global\n  maxconn 200\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 2s\n  timeout server 2s\n\
             frontend lb\n  bind 127.0.0.1:8080\n  default_backend app\n\
             backend app\n  server app1 127.0.0.1:8081\n\
             frontend app\n  bind 127.0.0.1:8081\n  http-request return status 200 content-type text/plain string ok\n",
            lb,
        );
        IdleTimeoutLb {
            _haproxy: haproxy,
            lb,
        }
    }

    /// Three pooled connections used twice 300 ms apart (a gap HAProxy
    /// tolerates), then again after 3 s: returns how many of those last
    /// reuses failed (3 when HAProxy's timeout killed them all).
    pub fn pooled_reuse_after_gap(&self, ns: &Netns) -> usize {
        let lb = self.lb;
        ns.run(move || {
            let mut pool: Vec<TcpStream> = (0..3)
                .map(|_| TcpStream::connect(lb).expect("connect to haproxy"))
                .collect();
            for conn in &mut pool {
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            }
            for _ in 0..2 {
                for conn in &mut pool {
                    request(conn).expect("request on a fresh pooled connection");
                }
                thread::sleep(Duration::from_millis(300));
            }
            thread::sleep(Duration::from_secs(3));
            pool.iter_mut().map(request).filter(Result::is_err).count()
        })
    }
}
