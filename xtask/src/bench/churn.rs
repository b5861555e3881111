//! The load every overhead run shares: connect, then close with
//! SO_LINGER 0 (an RST per connection, no TIME_WAIT), from enough threads
//! to keep every core busy, inside a network namespace of its own.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// A namespace for the churn, deleted on drop.
pub struct BenchNetns {
    pub name: String,
}

impl BenchNetns {
    pub fn new() -> Result<BenchNetns> {
        let name = format!("tcptrace-bench-{}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = BenchNetns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"])?;
        // Wide port range: a long churn must not run out of ports.
        let sysctl = "net.ipv4.ip_local_port_range=1024 65000";
        run(
            "ip",
            &["netns", "exec", &ns.name, "sysctl", "-q", "-w", sysctl],
        )?;
        Ok(ns)
    }

    fn enter(&self) -> Result<()> {
        let file = File::open(format!("/run/netns/{}", self.name)).context("open netns")?;
        // SAFETY: valid fd; affects only the calling thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs the churn for `duration`; returns (connections per second,
/// connections made in all).
pub fn churn(ns: &BenchNetns, threads: usize, duration: Duration) -> Result<(f64, u64)> {
    let stop = AtomicBool::new(false);
    let made = AtomicU64::new(0);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop, made) = (&stop, &made);

    thread::scope(|s| -> Result<(f64, u64)> {
        // Acceptors: blocking accept and drop, as many as connectors, with
        // a deep backlog: a full accept queue drops SYNs and stalls
        // connect() for a whole second, which would measure the backlog
        // instead of the tracer. Woken at the end by a connect each.
        s.spawn(move || -> Result<()> {
            ns.enter()?;
            let listener = TcpListener::bind("127.0.0.1:0")?;
            // SAFETY: listen(2) again on our socket only raises its backlog.
            if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
                bail!("listen: {}", std::io::Error::last_os_error());
            }
            addr_tx.send(listener.local_addr()?)?;
            let listener = &listener;
            thread::scope(|inner| {
                for _ in 0..threads {
                    inner.spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok((conn, _)) = listener.accept() {
                                drop(conn);
                            }
                        }
                    });
                }
            });
            Ok(())
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(5))
            .context("acceptor did not start")?;
        for _ in 0..threads {
            s.spawn(move || -> Result<()> {
                ns.enter()?;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(conn) = TcpStream::connect(addr) {
                        abort(conn);
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        thread::sleep(duration);
        let count = made.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        // Wake the acceptors from inside the namespace.
        s.spawn(move || -> Result<()> {
            ns.enter()?;
            for _ in 0..threads {
                let _ = TcpStream::connect(addr);
            }
            Ok(())
        });
        Ok((count as f64 / elapsed, count))
    })
}

fn abort(conn: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and option struct.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed", args.join(" "));
    }
    Ok(())
}
