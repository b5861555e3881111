//! The `peer` helper (`src/bin/peer.rs`) run as a process of its own, so
//! that events can be attributed to a pid other than the test's.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
};

/// Spawns `peer` (`cmd`: `Netns::command(env!("CARGO_BIN_EXE_peer"))`
/// with its mode and arguments) with its stdout piped, and reads the
/// `port N` line it prints once it listens. Returns the child, the rest
/// of its stdout (keep it: the peer may print `ended: ...` later) and the
/// port.
pub fn spawn(cmd: &mut Command) -> (Child, BufReader<ChildStdout>, u16) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn peer");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("peer port line");
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a port line: {line:?}"));
    (child, out, port)
}
