//! Small HTTP/1.1 exchanges the scenario tests make with real servers
//! (nginx, HAProxy) and with their own.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

/// One `GET /` on `conn` and its (small, complete) response: the bytes
/// read. A connection the server closed is `UnexpectedEof`.
pub fn request(conn: &mut TcpStream) -> std::io::Result<usize> {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf)?;
    if n == 0 {
        return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
    }
    Ok(n)
}

/// Three keep-alive connections to `server` used once, then again after
/// `idle`; returns how many of the reuses failed. Run it inside the
/// client's namespace.
pub fn pooled_reuse(server: SocketAddr, idle: Duration) -> usize {
    let mut pool: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(server).expect("connect"))
        .collect();
    for conn in &mut pool {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        request(conn).expect("request on a fresh pooled connection");
    }
    thread::sleep(idle);
    pool.iter_mut().map(request).filter(Result::is_err).count()
}
