//! Connecting, as cheaply as a blocking loop when the peer is close.
//!
//! On loopback (and any local path) the kernel finishes the handshake
//! inside `connect()` itself: the SYN, SYN-ACK and ACK are processed in the
//! softirq run when the call returns, so a non-blocking connect that says
//! EINPROGRESS is, in fact, already connected. Registering that socket with
//! epoll, arming a timer and waking a task would double the syscalls of a
//! churn loop. So `connect` asks once with a zero-timeout `poll()` and
//! only falls back to the runtime (epoll + the `--connect-timeout` timer)
//! when the handshake really is in flight.

use std::{io, net::SocketAddr, time::Duration};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::stress::classify::{self, Class};

/// Opens a connection within `timeout`. The socket is non-blocking and not
/// registered with the runtime: drop it to close, or hand it to
/// `tokio::net::TcpStream::from_std` to use it.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Socket, Class> {
    let class = |err: io::Error| classify::io_error(&err);
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(class)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => return Ok(socket),
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(class(err)),
    }
    if settled(&SockRef::from(&socket)).map_err(class)? {
        return finish(socket);
    }
    let pending = tokio::net::TcpStream::from_std(socket.into()).map_err(class)?;
    match tokio::time::timeout(timeout, wait_settled(&pending)).await {
        Ok(result) => result.map_err(class)?,
        Err(_) => return Err(Class::Borrowed(classify::TIMEOUT)),
    }
    // Deregisters from epoll; the connection stays open.
    finish(pending.into_std().map_err(class)?.into())
}

/// The outcome of a settled connect: the socket, or the error it got.
fn finish(socket: Socket) -> Result<Socket, Class> {
    match socket.take_error() {
        Ok(None) => Ok(socket),
        Ok(Some(err)) | Err(err) => Err(classify::io_error(&err)),
    }
}

/// Whether the connect has finished (connected or failed), without waiting.
fn settled(socket: &SockRef<'_>) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(&**socket, PollFlags::OUT)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    Ok(poll(&mut fds, Some(&zero))? > 0)
}

/// Waits until the connect settles; epoll readiness can be spurious, so
/// each wake-up is checked.
async fn wait_settled(pending: &tokio::net::TcpStream) -> io::Result<()> {
    loop {
        pending.writable().await?;
        if settled(&SockRef::from(pending))? {
            return Ok(());
        }
    }
}

/// Closes with an RST instead of a FIN (SO_LINGER 0).
pub fn close_with_reset(socket: Socket) {
    // If this fails the close is a FIN, which the server's report shows.
    let _ = socket.set_linger(Some(Duration::ZERO));
    drop(socket);
}

/// The socket as a runtime stream, for modes that read and write.
pub fn into_stream(socket: Socket) -> Result<tokio::net::TcpStream, Class> {
    tokio::net::TcpStream::from_std(socket.into()).map_err(|e| classify::io_error(&e))
}
