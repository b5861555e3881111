//! Runs the real `tcptrace trace --json` as a child and collects its
//! NDJSON records.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::tcptrace_bin;

pub struct Trace {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Trace {
    /// Starts `tcptrace trace --json ARGS...` and waits until it says it
    /// is tracing (programs attached).
    pub fn start(args: &[&str]) -> Trace {
        Trace::start_with_env(args, &[])
    }

    /// `start` with these environment variables set for the tracer.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Trace {
        let mut cmd = Command::new(tcptrace_bin());
        cmd.args(["trace", "--json"]).args(args);
        cmd.envs(env.iter().copied());
        let (child, stderr, stderr_seen) = spawn_until(&mut cmd, "tracing; Ctrl-C to stop");
        // On the kernel CI runs, every program must load: a verifier
        // rejection would otherwise only degrade.
        let missing: Vec<_> = stderr_seen
            .iter()
            .filter(|l| l.contains("not traced on this kernel"))
            .collect();
        assert!(
            missing.is_empty(),
            "tcptrace could not attach everything: {missing:?}"
        );
        Trace {
            child,
            stderr,
            stderr_seen,
        }
    }

    /// The tracer's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (as Ctrl-C does), waits, and returns every record.
    pub fn stop(mut self) -> Records {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let (out, status) = collect(&mut self.child, &self.stderr, &mut self.stderr_seen);
        assert!(
            status.success(),
            "tcptrace exited with {status}: {:?}",
            self.stderr_seen
        );
        let records = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l}: {e}")))
            .collect();
        Records {
            records,
            stderr: std::mem::take(&mut self.stderr_seen),
            text: out,
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Records {
    pub records: Vec<Value>,
    pub stderr: Vec<String>,
    /// The stream as printed.
    pub text: String,
}

impl Records {
    pub fn events(&self) -> impl Iterator<Item = &Value> {
        self.records.iter().filter(|r| r["type"] == "event")
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> {
        self.events().filter(move |r| r["kind"] == kind)
    }

    pub fn summary(&self) -> &Value {
        self.records
            .iter()
            .find(|r| r["type"] == "summary")
            .expect("a summary record")
    }

    /// Events of `kind` with this local or remote port.
    pub fn on_port<'a>(&'a self, kind: &'a str, port: u16) -> Vec<&'a Value> {
        self.of_kind(kind)
            .filter(|r| r["local_port"] == port || r["remote_port"] == port)
            .collect()
    }
}

/// The pid the tracer attributed an event to (panics if unknown).
pub fn owner_pid(event: &Value) -> u64 {
    event["owner"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("event without owner: {event}"))
}

/// Reads all of a finishing child's stdout, reaps it, and appends the
/// rest of its stderr to `seen`.
pub fn collect(
    child: &mut Child,
    stderr: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
) -> (String, std::process::ExitStatus) {
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    let status = child.wait().expect("wait");
    // The child has exited: its stderr reaches EOF, the reader thread
    // forwards the last lines and ends. Wait for that (bounded: a
    // grandchild could keep the pipe open), or the last lines are lost.
    while let Ok(line) = stderr.recv_timeout(Duration::from_secs(2)) {
        seen.push(line);
    }
    (out, status)
}

/// Spawns `cmd` with piped stdout and stderr and waits (30 s at most)
/// until a stderr line contains `ready`. Returns the child, the rest of
/// its stderr, and the lines seen so far.
pub fn spawn_until(cmd: &mut Command, ready: &str) -> (Child, mpsc::Receiver<String>, Vec<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcptrace");
    let (rx, seen) = wait_for_stderr(child.stderr.take().expect("stderr"), ready);
    (child, rx, seen)
}

/// Reads `stderr` until a line contains `text` (panics after 30 s).
pub fn wait_for_stderr(
    stderr: std::process::ChildStderr,
    text: &str,
) -> (mpsc::Receiver<String>, Vec<String>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let ready = line.contains(text);
                seen.push(line);
                if ready {
                    return (rx, seen);
                }
            }
            Err(_) => panic!("no '{text}' on stderr: {seen:?}"),
        }
    }
}

/// Waits for `child` to exit within `limit`; kills it and panics otherwise.
pub fn wait_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
