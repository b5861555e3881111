//! A TCP peer the tests run as a separate process (so attribution to a
//! pid other than the test's own can be checked).
//!
//! `peer hold ADDR`: listen, print `port N`, accept one connection, read
//! until EOF or error, print `ended: ...`, exit.
//! `peer reset-after ADDR MS`: listen, print `port N`, accept one
//! connection, read one request, answer it, wait MS, then close with
//! SO_LINGER 0 (the client receives an RST after an idle gap of MS).
//! `peer no-accept ADDR MS [BACKLOG]`: listen with a backlog of BACKLOG
//! (default 0), print `port N`, never accept, exit after MS. Once
//! BACKLOG + 1 connections wait in the accept queue, further SYNs are
//! dropped and their clients retransmit them.
//! `peer slow-accept ADDR MS BACKLOG EVERY_MS`: the same, but accept one
//! connection every EVERY_MS (and hold it): each accept frees a slot, so
//! a burst of retransmitted SYNs is answered and their final ACKs find
//! the queue full again (reset with `tcp_abort_on_overflow=1`, else
//! dropped and the SYN-ACK retransmitted).

use std::{
    io::{Read, Write},
    net::TcpListener,
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, addr) = match (args.get(1), args.get(2)) {
        (Some(m), Some(a)) => (m.as_str(), a.as_str()),
        _ => {
            eprintln!(
                "usage: peer hold|reset-after|no-accept|slow-accept ADDR [MS [BACKLOG [EVERY_MS]]]"
            );
            std::process::exit(2);
        }
    };
    if mode == "no-accept" || mode == "slow-accept" {
        let every = (mode == "slow-accept")
            .then(|| args.get(5).and_then(|m| m.parse().ok()).expect("EVERY_MS"));
        no_accept(
            addr,
            args.get(3).and_then(|m| m.parse().ok()).expect("MS"),
            args.get(4).map_or(0, |b| b.parse().expect("BACKLOG")),
            every,
        );
        return;
    }
    let listener = TcpListener::bind(addr).expect("bind");
    println!("port {}", listener.local_addr().expect("local addr").port());
    std::io::stdout().flush().expect("flush");
    let (mut conn, _) = listener.accept().expect("accept");
    match mode {
        "hold" => {
            let mut buf = [0u8; 4096];
            let end = loop {
                match conn.read(&mut buf) {
                    Ok(0) => break "eof".to_string(),
                    Ok(_) => continue,
                    Err(e) => break format!("{:?}", e.kind()),
                }
            };
            println!("ended: {end}");
        }
        "reset-after" => {
            let ms: u64 = args.get(3).and_then(|m| m.parse().ok()).expect("MS");
            let mut buf = [0u8; 64];
            let n = conn.read(&mut buf).expect("read request");
            conn.write_all(&buf[..n]).expect("answer");
            std::thread::sleep(Duration::from_millis(ms));
            tests::set_linger_zero(&conn);
            drop(conn);
            println!("reset sent");
        }
        other => panic!("unknown mode {other}"),
    }
}

fn no_accept(addr: &str, ms: u64, backlog: i32, accept_every_ms: Option<u64>) {
    use socket2::{Domain, Socket, Type};
    let addr: std::net::SocketAddr = addr.parse().expect("ADDR");
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(backlog).expect("listen");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local addr")
        .port();
    println!("port {port}");
    std::io::stdout().flush().expect("flush");
    let Some(every) = accept_every_ms else {
        std::thread::sleep(Duration::from_millis(ms));
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_millis(ms);
    let mut held = Vec::new();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(every));
        if let Ok((conn, _)) = socket.accept() {
            held.push(conn);
        }
    }
}
