//! Sockets in known states for the snapshot and counters tests: listeners
//! with a chosen backlog, connects that never complete, TIME_WAIT made by
//! an active close, sockets handed to another process; and the wait for a
//! server process to listen.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::OwnedFd,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

fn new_socket(addr: SocketAddr) -> Socket {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).expect("socket")
}

/// A listener with exactly this backlog (std always asks for 128 or more).
pub fn listen(addr: &str, backlog: i32) -> TcpListener {
    let addr: SocketAddr = addr.parse().expect("listen address");
    let socket = new_socket(addr);
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&addr.into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket.listen(backlog).expect("listen");
    socket.into()
}

/// A completed connection (the kernel finished the handshake; the peer
/// need not have accepted it).
pub fn connect(addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("connect address");
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// Sends a SYN and returns at once: against a full accept queue the SYN is
/// dropped and the socket stays in SYN_SENT until it is closed.
pub fn connect_pending(addr: &str) -> Socket {
    let addr: SocketAddr = addr.parse().expect("connect address");
    let socket = new_socket(addr);
    socket.set_nonblocking(true).expect("O_NONBLOCK");
    match socket.connect(&addr.into()) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => socket,
        other => panic!("connect {addr} should be in progress, got {other:?}"),
    }
}

/// Leaves one socket in TIME_WAIT on the client side: the client closes
/// first, the server reads the FIN and closes too.
pub fn time_wait_via(listener: &TcpListener) {
    let addr = listener.local_addr().expect("local_addr");
    let client = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    drop(client);
    let mut rest = Vec::new();
    server
        .read_to_end(&mut rest)
        .expect("read until the client's FIN");
    drop(server);
}

/// A `sleep` child that holds the given sockets as its stdin and stdout,
/// so they belong to its pid alone. Killed on drop.
pub struct Holder {
    child: Child,
}

impl Holder {
    pub fn new(stdin: impl Into<OwnedFd>, stdout: impl Into<OwnedFd>) -> Holder {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::from(stdin.into()))
            .stdout(Stdio::from(stdout.into()))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        // The Command (and with it our copies of the fds) is gone here.
        Holder { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to `addr` until something accepts (10 s at most; each try
/// closed at once): for a server started as another process. Panics with
/// `who()` (what should have listened, and its log) otherwise.
pub fn wait_listening(addr: SocketAddr, who: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr}: {}",
            who()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
