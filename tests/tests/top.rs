//! `tcptrace top`: the TUI on a real pseudo-terminal (drawn, sortable,
//! quits on q or a signal with the terminal restored), and JSON snapshots
//! without a terminal.

use std::{
    fs::File,
    io::Read,
    net::TcpStream,
    os::fd::{FromRawFd, OwnedFd},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use tests::{Netns, require_root, tcptrace_bin};

/// `tcptrace top ARGS` on a 120x40 pseudo-terminal; the screen bytes
/// accumulate in the returned buffer.
fn top_on_pty(args: &[&str]) -> (Child, File, Arc<Mutex<Vec<u8>>>) {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out-pointers and a winsize; no name buffer.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh fds we now own.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let child = Command::new(tcptrace_bin())
        .arg("top")
        .args(args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn tcptrace top");
    let screen = Arc::new(Mutex::new(Vec::new()));
    let mut reader = File::from(master.try_clone().unwrap());
    let sink = screen.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        // Ends with EIO once the child has closed the slave side.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (child, File::from(master), screen)
}

fn screen_text(screen: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&screen.lock().unwrap()).into_owned()
}

fn wait_for(screen: &Mutex<Vec<u8>>, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !screen_text(screen).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared: {:?}",
            screen_text(screen)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tcptrace top did not exit");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn assert_restored(screen: &str) {
    let leave = screen
        .rfind("\x1b[?1049l")
        .expect("left the alternate screen");
    assert!(
        screen[leave..].contains("\x1b[?25h"),
        "cursor shown again at the end"
    );
}

#[test]
fn tui_draws_sorts_and_quits_with_the_terminal_restored() {
    require_root();
    let ns = Netns::new("toptui");
    let netns = ns.name().to_string();
    let (mut child, mut master, screen) = top_on_pty(&["--netns", &netns, "--interval", "300ms"]);
    wait_for(&screen, "processes", Duration::from_secs(20));
    let refused = ns.run(|| {
        (0..4)
            .filter(|_| TcpStream::connect("127.0.0.1:9").is_err())
            .count()
    });
    assert_eq!(refused, 4);
    // The peer shows up with its failed connects.
    wait_for(&screen, "127.0.0.1:9", Duration::from_secs(5));
    use std::io::Write;
    master.write_all(b"s").unwrap();
    wait_for(&screen, "resets", Duration::from_secs(5));
    master.write_all(b"q").unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert_restored(&screen_text(&screen));
}

#[test]
fn tui_restores_the_terminal_on_sigterm() {
    require_root();
    let (mut child, _master, screen) = top_on_pty(&["--port", "9"]);
    wait_for(&screen, "processes", Duration::from_secs(20));
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert_restored(&screen_text(&screen));
}

#[test]
fn json_snapshots_without_a_terminal() {
    require_root();
    let ns = Netns::new("topjson");
    let mut cmd = Command::new(tcptrace_bin());
    cmd.args(["top", "--json", "--interval", "500ms", "--duration", "3s"])
        .args(["--netns", ns.name()]);
    // Traffic only once the programs are attached: start-up (BTF, the
    // socket scan) takes over a second on a busy machine.
    let (mut child, _stderr, _) = tests::trace::spawn_until(&mut cmd, "top; Ctrl-C to stop");
    thread::sleep(Duration::from_millis(200));
    ns.run(|| {
        for _ in 0..3 {
            let _ = TcpStream::connect("127.0.0.1:9");
        }
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let snapshots: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // Every 500 ms for 3 s: the last is the final one, at 3 s, printed
    // once (not a periodic one at 3 s and the final one right after).
    assert_eq!(snapshots.len(), 6, "{out}");
    assert!(snapshots.iter().all(|s| s["type"] == "top"));
    let times: Vec<f64> = snapshots
        .iter()
        .map(|s| s["elapsed_s"].as_f64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] > 0.25),
        "one snapshot per interval: {times:?}"
    );
    let last = snapshots.last().unwrap();
    let peer = last["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == "127.0.0.1:9")
        .unwrap_or_else(|| panic!("no row for the refused port: {last}"));
    assert_eq!(peer["connect_failed"], 3, "{peer}");
}

/// `tmux -L SOCKET ARGS` on this test's own tmux server.
fn tmux(socket: &str, args: &[&str]) -> String {
    tests::sh("tmux", &[&["-L", socket][..], args].concat())
}

/// The visible screen of the tmux pane, as text.
fn capture(socket: &str) -> String {
    tmux(socket, &["capture-pane", "-p", "-t", "top"])
}

/// Captures until `ok` holds for the screen; the last screen otherwise.
fn capture_until(socket: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let screen = capture(socket);
        if ok(&screen) {
            return screen;
        }
        assert!(Instant::now() < deadline, "{what}, never on:\n{screen}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The figure after `max` on the first line naming `rate` (the host's
/// strip is the left half of the screen).
fn strip_max(screen: &str, rate: &str) -> f64 {
    let line = screen
        .lines()
        .find(|l| l.trim_start().starts_with(rate))
        .unwrap_or_else(|| panic!("no {rate} line in:\n{screen}"));
    let mut words = line.split_whitespace().skip_while(|w| *w != "max");
    words.next();
    words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no max figure in {line:?}"))
}

/// Ports of 127.0.0.1 shown as rows of their own, other than the closed
/// port 40000 the connects were refused by.
fn client_ports(screen: &str) -> Vec<&str> {
    screen
        .split("127.0.0.1:")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or("")
        })
        .filter(|port| !port.is_empty() && *port != "40000")
        .collect()
}

/// The tmux server of `top_tui_in_tmux...`, killed however the test ends.
struct TmuxServer(String);

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

/// In tmux (keys typed with send-keys, the screen read with capture-pane):
/// refused connects to a closed port of one address show in the host's
/// rate strip; the one-off ephemeral-port "peers" the kernel dropped
/// segments from fold into one row with the number of ports; Enter on
/// that row shows its detail, Esc goes back to the tables.
#[test]
fn top_tui_in_tmux_strip_folded_peers_detail_and_back() {
    require_root();
    let ns = Netns::new("toptmux");
    let socket = format!("tcptrace-top-{}", std::process::id());
    let _server = TmuxServer(socket.clone());
    let bin = tcptrace_bin();
    let cmd = format!(
        "{} top --netns {} --interval 300ms",
        bin.display(),
        ns.name()
    );
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "160",
            "-y",
            "48",
            &cmd,
        ],
    );
    capture_until(&socket, "the tables", |s| s.contains("processes"));
    // Connects to a closed port above 32767: the kernel drops each SYN
    // (no socket) and refuses it; seen from the closed port, every
    // client port is a different one-off "peer".
    let refused = ns.run(|| {
        (0..6)
            .filter(|_| TcpStream::connect("127.0.0.1:40000").is_err())
            .count()
    });
    assert_eq!(refused, 6);
    let folded = "127.0.0.1:* (unowned RSTs) x6 ports";
    // The host's strip shows the resets, and the client ports are not
    // rows of their own (the screen is read while top may be redrawing
    // it: wait for one that has it all).
    capture_until(
        &socket,
        "the folded row, no row per client port, the host's RST rate",
        |s| {
            s.contains(folded)
                && s.contains("host, per second")
                && strip_max(s, "RST/s") > 0.0
                && client_ports(s).is_empty()
        },
    );
    // The selected row's strip follows the selection: walk the peers
    // table down to the folded row.
    tmux(&socket, &["send-keys", "-t", "top", "Tab"]);
    let title = format!("{folded}, per second");
    // Down then back Up: wherever the sort put it.
    for key in ["Down"; 4].into_iter().chain(["Up"; 4]) {
        if capture(&socket).contains(&title) {
            break;
        }
        tmux(&socket, &["send-keys", "-t", "top", key]);
        thread::sleep(Duration::from_millis(400));
    }
    capture_until(&socket, "the folded row selected", |s| s.contains(&title));
    tmux(&socket, &["send-keys", "-t", "top", "Enter"]);
    let detail_title = format!("detail: {folded}");
    capture_until(
        &socket,
        "the folded row's detail, without the tables",
        |s| {
            [
                detail_title.as_str(),
                "unowned RSTs with ephemeral ports:",
                "6 segments dropped",
                "6 ports of 127.0.0.1, no process owned them",
                "Esc: back",
            ]
            .iter()
            .all(|line| s.contains(line))
                && !s.contains("NAME")
        },
    );
    tmux(&socket, &["send-keys", "-t", "top", "Escape"]);
    capture_until(&socket, "the tables again", |s| {
        s.contains("NAME") && s.contains(folded) && !s.contains("detail:")
    });
    tmux(&socket, &["send-keys", "-t", "top", "q"]);
    // The session ends with its command: top quit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("tmux")
        .args(["-L", &socket, "has-session", "-t", "top"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(Instant::now() < deadline, "top did not quit on q");
        thread::sleep(Duration::from_millis(100));
    }
}
