//! `serve`: the built-in sink server, well-behaved by default and
//! misbehaving on request (small backlog, slow or no accept, close with
//! unread data, linger-0 close, idle close), so each cause of resets can be
//! reproduced without a real application. It answers the raw one-line
//! request of `pool` and HTTP `GET`s alike.
//!
//! It says `listening on ADDR` on stderr once ready and prints what it saw
//! on stdout when it stops (duration, Ctrl-C or SIGTERM): connections
//! accepted, how they ended, requests answered. Before reporting it drains
//! its accept queue, so a client's count of connections made can be
//! compared with the server's count of connections accepted exactly.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::Semaphore,
};

use crate::{
    cli::ServeArgs,
    stop::stop_signal,
    stress::{
        classify::{self, Class},
        report, wire,
    },
};

/// How the server ends connections, as asked on the command line.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    close_unread: bool,
    idle_close: Option<Duration>,
    close_after: Option<u64>,
    linger0: bool,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    requests: AtomicU64,
    closed_by_peer: AtomicU64,
    closed_idle: AtomicU64,
    closed_after: AtomicU64,
    closed_unread: AtomicU64,
    errors: Mutex<BTreeMap<Class, u64>>,
    /// Held while a connection's end is booked (its close counted and
    /// `open` decremented) and while the report is read, so the report
    /// never counts a connection both as closed and as still open.
    books: Mutex<()>,
}

/// How one connection ended.
enum Ended {
    ByPeer,
    Idle,
    After,
    Unread,
    Error(Class),
    /// Closed by us for a reason not counted on its own.
    Quietly,
    /// Already booked by `serve`: our own closes are booked just before
    /// the close, so a report never shows an RST that was not counted.
    Booked,
}

/// What the server saw, printed when it stops.
#[derive(Debug, Serialize)]
struct ServeReport {
    listen: String,
    elapsed_s: f64,
    accepted: u64,
    /// Accepted while draining the queue at the end (part of `accepted`).
    drained: u64,
    peak_open: u64,
    open_at_end: u64,
    requests: u64,
    closed_by_peer: u64,
    closed_idle: u64,
    closed_after: u64,
    closed_unread: u64,
    /// Server closes that sent an RST (SO_LINGER 0).
    linger0: bool,
    errors: BTreeMap<Class, u64>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let addr = args.listen;
    let listener =
        listen(addr, args.backlog).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let start = Instant::now();
    let behaviour = Behaviour {
        close_unread: args.close_unread,
        idle_close: args.idle_close,
        close_after: args.close_after,
        linger0: args.linger0,
    };
    let counters = Arc::new(Counters::default());
    let slots = Arc::new(Semaphore::new(args.max_conns as usize));
    // Installed before saying it listens: the duration, Ctrl-C, SIGTERM
    // or SIGHUP end the run with its report.
    let stopped = stop_signal(Some(args.duration));
    writeln!(io::stderr(), "tcptrace stress serve: listening on {local}")?;

    let accepting = async {
        if args.no_accept {
            std::future::pending::<()>().await;
        }
        loop {
            // The semaphore is never closed: acquiring only waits.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            if let Some(delay) = args.accept_delay {
                tokio::time::sleep(delay).await;
            }
            match listener.accept().await {
                Ok((stream, _)) => {
                    counters.opened();
                    let counters = Arc::clone(&counters);
                    tokio::spawn(async move {
                        let ended = serve(stream, behaviour, &counters).await;
                        counters.ended(ended);
                        drop(slot);
                    });
                }
                // Out of descriptors or memory, or a connection reset in
                // the queue: count it and keep serving.
                Err(err) => counters.error(classify::io_error(&err)),
            }
        }
    };
    tokio::select! {
        () = accepting => {}
        reason = stopped => log::debug!("stopping: {reason}"),
    }
    let drained = if args.no_accept {
        0
    } else {
        drain(&listener, &counters)
    };
    let report = counters.report(local, start.elapsed(), drained, args.linger0);
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        report.human(&mut out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted server must not wait for its old connections' TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts (and closes) whatever is still queued, without waiting.
fn drain(listener: &TcpListener, counters: &Counters) -> u64 {
    let socket = socket2::SockRef::from(listener);
    let mut drained = 0;
    loop {
        match socket.accept() {
            Ok(_) => {
                drained += 1;
                counters.accepted.fetch_add(1, Relaxed);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return drained,
            Err(err) => {
                counters.error(classify::io_error(&err));
                return drained;
            }
        }
    }
}

/// Serves one connection until the peer or a misbehaviour ends it.
async fn serve(mut stream: TcpStream, behaviour: Behaviour, counters: &Counters) -> Ended {
    if behaviour.close_unread {
        // Wait for data without consuming it (readiness alone can be
        // spurious): closing with bytes unread makes the kernel send an RST.
        let unread = matches!(stream.peek(&mut [0u8; 1]).await, Ok(1..));
        counters.ended(if unread {
            Ended::Unread
        } else {
            Ended::Quietly
        });
        close(stream, behaviour);
        return Ended::Booked;
    }
    let mut buf = Vec::new();
    let mut answered = 0;
    loop {
        loop {
            match wire::next_request(&buf) {
                Ok(Some(request)) => {
                    buf.drain(..request.len());
                    if let Err(err) = stream.write_all(request.reply()).await {
                        return Ended::Error(classify::io_error(&err));
                    }
                    answered += 1;
                    counters.requests.fetch_add(1, Relaxed);
                    if behaviour.close_after == Some(answered) {
                        counters.ended(Ended::After);
                        close(stream, behaviour);
                        return Ended::Booked;
                    }
                }
                Ok(None) => break,
                Err(wire::BadReply) => return Ended::Error(Class::Borrowed("BAD_REQUEST")),
            }
        }
        buf.reserve(4096);
        let read = stream.read_buf(&mut buf);
        let read = match behaviour.idle_close {
            Some(idle) => match tokio::time::timeout(idle, read).await {
                Ok(read) => read,
                Err(_) => {
                    counters.ended(Ended::Idle);
                    close(stream, behaviour);
                    return Ended::Booked;
                }
            },
            None => read.await,
        };
        match read {
            Ok(0) => return Ended::ByPeer,
            Ok(_) => {}
            Err(err) => return Ended::Error(classify::io_error(&err)),
        }
    }
}

/// The server's own close: FIN, or RST with `--linger0`.
fn close(stream: TcpStream, behaviour: Behaviour) {
    if behaviour.linger0 {
        // If this fails the close is a FIN; the report shows it as no RST.
        let _ = stream.set_zero_linger();
    }
    drop(stream);
}

impl Counters {
    fn opened(&self) {
        let _books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        self.accepted.fetch_add(1, Relaxed);
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(open, Relaxed);
    }

    /// Books a connection's end: its close counted and `open` decremented
    /// together (see `books`).
    fn ended(&self, ended: Ended) {
        let _books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        match ended {
            Ended::ByPeer => self.closed_by_peer.fetch_add(1, Relaxed),
            Ended::Idle => self.closed_idle.fetch_add(1, Relaxed),
            Ended::After => self.closed_after.fetch_add(1, Relaxed),
            Ended::Unread => self.closed_unread.fetch_add(1, Relaxed),
            Ended::Error(class) => {
                self.error(class);
                0
            }
            Ended::Quietly => 0,
            Ended::Booked => return,
        };
        self.open.fetch_sub(1, Relaxed);
    }

    fn error(&self, class: Class) {
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(class)
            .or_default() += 1;
    }

    fn report(
        &self,
        listen: SocketAddr,
        elapsed: Duration,
        drained: u64,
        linger0: bool,
    ) -> ServeReport {
        let _books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        ServeReport {
            listen: listen.to_string(),
            elapsed_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            accepted: self.accepted.load(Relaxed),
            drained,
            peak_open: self.peak_open.load(Relaxed),
            open_at_end: self.open.load(Relaxed),
            requests: self.requests.load(Relaxed),
            closed_by_peer: self.closed_by_peer.load(Relaxed),
            closed_idle: self.closed_idle.load(Relaxed),
            closed_after: self.closed_after.load(Relaxed),
            closed_unread: self.closed_unread.load(Relaxed),
            linger0,
            errors: self
                .errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

impl ServeReport {
    fn human(&self, out: &mut impl io::Write) -> io::Result<()> {
        writeln!(out, "serve {} for {:.2}s", self.listen, self.elapsed_s)?;
        writeln!(
            out,
            "  accepted      {} ({} drained at the end), peak {} open, {} open at the end",
            self.accepted, self.drained, self.peak_open, self.open_at_end
        )?;
        writeln!(out, "  requests      {} answered", self.requests)?;
        let how = if self.linger0 { "RST" } else { "FIN" };
        writeln!(
            out,
            "  closes        {} by the peer; by us ({how}): {} idle, {} after N requests, {} with unread data",
            self.closed_by_peer, self.closed_idle, self.closed_after, self.closed_unread
        )?;
        if !self.errors.is_empty() {
            writeln!(out, "  errors        {}", report::classes(&self.errors))?;
        }
        Ok(())
    }
}
