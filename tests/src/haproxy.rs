//! The load-balancer idle-timeout incident, for the tests that need one:
//! a real HAProxy with `timeout client 2s` in a namespace (it also serves
//! the backend itself), and a pooled client that reuses its keep-alive
//! connections after a 3 s gap. HAProxy has closed them at 2 s; every
//! reuse gets an RST.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use crate::{Netns, diagnose::Guard};

/// Where the pool connects.
pub const LB: &str = "127.0.0.1:8080";
/// HAProxy's `timeout client`, s.
pub const IDLE_TIMEOUT_S: f64 = 2.0;

/// HAProxy running in a namespace; stopped (and its config removed) on drop.
pub struct IdleTimeoutLb {
    _haproxy: Guard,
    dir: PathBuf,
    lb: SocketAddr,
}

impl IdleTimeoutLb {
    /// Starts HAProxy in `ns` and waits until it listens.
    pub fn start(ns: &Netns) -> IdleTimeoutLb {
        let dir = std::env::temp_dir().join(format!("tcptrace-haproxy-{}", ns.name()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            "global\n  maxconn 200\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 2s\n  timeout server 2s\n\
             frontend lb\n  bind 127.0.0.1:8080\n  default_backend app\n\
             backend app\n  server app1 127.0.0.1:8081\n\
             frontend app\n  bind 127.0.0.1:8081\n  http-request return status 200 content-type text/plain string ok\n",
        )
        .expect("write haproxy.cfg");
        let haproxy = Guard(
            ns.command("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start haproxy (apt-get install haproxy)"),
        );
        let lb: SocketAddr = LB.parse().unwrap();
        ns.run(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect_timeout(&lb, Duration::from_millis(200)).is_err() {
                assert!(Instant::now() < deadline, "haproxy never listened on {lb}");
                thread::sleep(Duration::from_millis(50));
            }
        });
        IdleTimeoutLb {
            _haproxy: haproxy,
            dir,
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

impl Drop for IdleTimeoutLb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 request and its (small, complete) response.
fn request(conn: &mut TcpStream) -> std::io::Result<usize> {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf)?;
    if n == 0 {
        return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
    }
    Ok(n)
}
