//! The yardstick for `cargo xtask bench stress`: the simplest possible
//! connection churn, blocking std sockets on plain threads.
//!
//! ```text
//! churn-baseline connect ADDR THREADS SECONDS   # prints: connections=N failures=F seconds=T
//! ```

use std::{
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [mode, addr, threads, seconds] => addr
            .parse::<SocketAddr>()
            .ok()
            .zip(threads.parse::<usize>().ok().filter(|t| *t > 0))
            .zip(seconds.parse::<u64>().ok().filter(|s| *s > 0))
            .map(|((addr, threads), seconds)| {
                (mode.as_str(), addr, threads, Duration::from_secs(seconds))
            }),
        _ => None,
    };
    match parsed {
        Some(("connect", addr, threads, duration)) => connect(addr, threads, duration),
        _ => {
            eprintln!("usage: churn-baseline connect IP:PORT THREADS SECONDS");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn connect(addr: SocketAddr, threads: usize, duration: Duration) {
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while Instant::now() < deadline {
                    match TcpStream::connect(addr) {
                        Ok(stream) => {
                            drop(stream);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    println!(
        "connections={} failures={} seconds={:.3}",
        ok.into_inner(),
        failed.into_inner(),
        start.elapsed().as_secs_f64()
    );
}
