//! `pool`: a keep-alive client pool. `--connections` workers each own one
//! pooled connection, use it for a request, leave it idle for a gap drawn
//! from `--idle`, and use it again; a connection that fails is replaced by
//! a fresh one. Every use is counted by how long the connection sat idle
//! before it, because resets that cluster at one idle age are the mark of
//! a load balancer or server idle timeout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    cli::{PoolArgs, Spread},
    stress::{
        Mode, Run,
        classify::{self, Class},
        connect::{connect, into_stream},
        report::{Live, Tally},
        target, wire,
    },
};

/// One pooled connection and when it was last used.
struct Pooled {
    stream: TcpStream,
    last_used: Instant,
    buf: Vec<u8>,
}

/// What to send and how to read the answer.
struct Exchange {
    request: Vec<u8>,
    parse: fn(&[u8]) -> Result<Option<wire::Reply>, wire::BadReply>,
    timeout: Duration,
}

pub async fn run(run: Run, args: PoolArgs) -> anyhow::Result<Tally> {
    let exchange = Arc::new(match &args.http {
        Some(path) => {
            let host = args
                .host
                .clone()
                .unwrap_or_else(|| host_header(&run.target));
            Exchange {
                request: wire::http_request(path, &host),
                parse: wire::http_reply,
                timeout: args.reply_timeout,
            }
        }
        None => Exchange {
            request: wire::RAW_REQUEST.to_vec(),
            parse: wire::raw_reply,
            timeout: args.reply_timeout,
        },
    });
    let workers = args.connections as usize;
    let live = Live::new(workers);
    let _progress = live.progress(Mode::Pool, run.start);
    let tickets = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (run, live, tickets, exchange) = (
            run.clone(),
            Arc::clone(&live),
            Arc::clone(&tickets),
            Arc::clone(&exchange),
        );
        let (requests, idle) = (args.requests, args.idle);
        tasks.spawn(async move {
            let mut pooled: Option<Pooled> = None;
            while tickets.fetch_add(1, Ordering::Relaxed) < requests
                && Instant::now() < run.deadline
                && !run.is_stopped()
            {
                let (mut conn, idle_before) = match pooled.take() {
                    Some(conn) => {
                        let idle = conn.last_used.elapsed();
                        (conn, Some(idle))
                    }
                    None => {
                        let started = Instant::now();
                        let attempt = tokio::select! {
                            attempt = connect(run.target.addr, run.connect_timeout) => attempt,
                            // Cut short: no outcome, not counted.
                            () = run.stop() => break,
                        };
                        match attempt.and_then(into_stream) {
                            Ok(stream) => {
                                live.with(worker, |t| t.connect_ok(started.elapsed()));
                                (
                                    Pooled {
                                        stream,
                                        last_used: started,
                                        buf: Vec::new(),
                                    },
                                    None,
                                )
                            }
                            Err(class) => {
                                live.with(worker, |t| t.connect_failed(class));
                                if !gap(idle, &run, &tickets, requests).await {
                                    break;
                                }
                                continue;
                            }
                        }
                    }
                };
                let started = Instant::now();
                let outcome = use_once(&mut conn, &exchange).await;
                let elapsed = started.elapsed();
                live.with(worker, |t| {
                    t.request(idle_before, outcome.clone().map(|_| elapsed))
                });
                if outcome == Ok(true) {
                    conn.last_used = Instant::now();
                    pooled = Some(conn);
                }
                if !gap(idle, &run, &tickets, requests).await {
                    break;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    Ok(live.total())
}

/// Sleeps one idle gap, unless the run ends first; false if it does.
async fn gap(idle: Spread, run: &Run, tickets: &AtomicU64, requests: u64) -> bool {
    let gap = idle.min + (idle.max - idle.min).mul_f64(fastrand::f64());
    if tickets.load(Ordering::Relaxed) >= requests || Instant::now() + gap >= run.deadline {
        return false;
    }
    run.sleep_until(Instant::now() + gap).await
}

/// One request and its reply within the reply timeout. `Ok(true)` if the
/// connection can be used again.
async fn use_once(conn: &mut Pooled, exchange: &Exchange) -> Result<bool, Class> {
    match tokio::time::timeout(exchange.timeout, request(conn, exchange)).await {
        Ok(result) => result,
        Err(_) => Err(Class::Borrowed(classify::TIMEOUT)),
    }
}

async fn request(conn: &mut Pooled, exchange: &Exchange) -> Result<bool, Class> {
    conn.stream
        .write_all(&exchange.request)
        .await
        .map_err(|e| classify::io_error(&e))?;
    loop {
        match (exchange.parse)(&conn.buf) {
            Ok(Some(reply)) => {
                conn.buf.drain(..reply.len);
                return match reply.status {
                    200..400 => Ok(!reply.close),
                    status => Err(Class::Owned(format!("HTTP {status}"))),
                };
            }
            Ok(None) => {}
            Err(wire::BadReply) => return Err(Class::Borrowed(classify::BAD_REPLY)),
        }
        conn.buf.reserve(4096);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => return Err(Class::Borrowed(classify::EOF)),
            Ok(_) => {}
            Err(err) => return Err(classify::io_error(&err)),
        }
    }
}

/// `Host:` as a browser would send it: the name given, the port if not 80.
fn host_header(target: &target::Target) -> String {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    match target.addr.port() {
        80 => host,
        port => format!("{host}:{port}"),
    }
}
