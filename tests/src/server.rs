//! TCP servers on threads of their own for the scenario tests: a
//! [`Server`] whose accepting thread hands each connection to a thread of
//! its own running the test's closure (an echo, a file server, a backend
//! behind HAProxy), and a [`Sink`] that reads one connection after the
//! other to its end. Both stop when dropped, and stop accepting by
//! themselves after 60 s, so a test that hangs leaves no server behind.

use std::{
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// How long a server accepts at most.
const LIMIT: Duration = Duration::from_secs(60);
/// How long a stopping server waits for its connections' threads.
const WAIT_FOR_CONNECTIONS: Duration = Duration::from_secs(5);

/// The accepting thread and the flag that stops it and the connections.
/// Dropping it stops the accepting, raises the flag and waits for the
/// connections' threads (5 s at most: a thread stuck writing to a peer
/// that vanished is left behind).
pub struct Server {
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Accepts on `listener` and runs `serve(conn, stop)` on a thread per
    /// connection, `conn` blocking (no timeout set), `stop` raised when
    /// the server is dropped: a connection that waits should poll it
    /// (a read timeout) to end in time.
    pub fn spawn<F>(listener: TcpListener, serve: F) -> Server
    where
        F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    {
        listener.set_nonblocking(true).expect("O_NONBLOCK");
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let acceptor = {
            let stop = stop.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + LIMIT;
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (serve, stop) = (serve.clone(), stop.clone());
                            connections.push(thread::spawn(move || {
                                conn.set_nonblocking(false).expect("blocking again");
                                serve(conn, &stop);
                            }));
                        }
                        // Nothing waiting, or a client that gave up
                        // before its turn (ECONNABORTED): try again.
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
                let deadline = Instant::now() + WAIT_FOR_CONNECTIONS;
                while connections.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                for connection in connections.into_iter().filter(|c| c.is_finished()) {
                    let _ = connection.join();
                }
            })
        };
        Server {
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A server that accepts one connection at a time and reads it until the
/// client closes (or sends nothing for 2 s), so the client closes first
/// and keeps the TIME_WAIT. Dropping it stops it (it also stops by itself
/// after 60 s).
pub struct Sink {
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    pub fn spawn(listener: TcpListener) -> Sink {
        use std::io::Read as _;
        listener.set_nonblocking(true).expect("O_NONBLOCK");
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = stop.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + LIMIT;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                            let mut buf = [0u8; 64];
                            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                        }
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        Sink {
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().expect("sink thread panicked");
        }
    }
}
