//! The link to a `diagnose --during` that started this load
//! (`--parent-fd`, a Unix socket): say when the load has started, and end
//! at once when diagnose is gone.
//!
//! `PR_SET_PDEATHSIG` alone acts only once the dead parent has finished
//! exiting, which for a tracing diagnose includes the kernel's teardown of
//! its eBPF programs (about half a second here); the socket closes as soon
//! as its file descriptors do.

use std::{
    io::Write as _,
    os::{
        fd::{BorrowedFd, FromRawFd as _},
        unix::net::UnixStream,
    },
};

use tokio::io::AsyncReadExt as _;

/// Takes the inherited socket `fd` and starts watching it; `None` (and a
/// debug note) if `fd` is not a socket, e.g. a wrong number given by hand.
pub fn adopt(fd: i32) -> Option<UnixStream> {
    // SAFETY: only borrowed for fstat(2); an fd that is not open fails.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let is_socket = rustix::fs::fstat(borrowed).is_ok_and(|s| {
        rustix::fs::FileType::from_raw_mode(s.st_mode) == rustix::fs::FileType::Socket
    });
    if !is_socket {
        log::debug!("--parent-fd {fd}: not a socket");
        return None;
    }
    // SAFETY: the socket was inherited for this purpose and nothing else
    // in this process owns it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let watched = stream
        .try_clone()
        .and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(s)
        })
        .map_err(|e| log::debug!("--parent-fd {fd}: {e}"))
        .ok()?;
    tokio::spawn(end_with_parent(watched));
    Some(stream)
}

/// One byte: the load is under way.
pub fn say_started(mut parent: &UnixStream) {
    if let Err(e) = parent.write_all(b"1") {
        log::debug!("--parent-fd: {e}");
    }
}

/// Ends the process once the other end closes: nobody is left to want
/// this load or read its report.
async fn end_with_parent(mut parent: tokio::net::UnixStream) {
    let mut buf = [0u8; 16];
    loop {
        match parent.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    std::process::exit(1);
}
