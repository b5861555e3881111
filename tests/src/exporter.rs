//! The real `tcptrace exporter` as a child, a minimal HTTP client to
//! scrape it, and a real Prometheus (Debian's package) that scrapes it
//! every second from a temporary directory of its own.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{tcptrace_bin, trace};

/// A running `tcptrace exporter`.
pub struct Exporter {
    child: Child,
    stderr: mpsc::Receiver<String>,
    /// Stderr lines seen so far.
    pub seen: Vec<String>,
    /// Where it serves.
    pub addr: SocketAddr,
}

impl Exporter {
    /// Starts `tcptrace exporter --listen 127.0.0.1:0 ARGS...` and waits
    /// until it says where it serves (programs attached).
    pub fn start(args: &[&str]) -> Exporter {
        let mut cmd = Command::new(tcptrace_bin());
        cmd.args(["exporter", "--listen", "127.0.0.1:0"]).args(args);
        let (child, stderr, seen) = trace::spawn_until(&mut cmd, "exporting on http://");
        let addr = seen
            .iter()
            .find_map(|l| {
                l.split("http://")
                    .nth(1)?
                    .split('/')
                    .next()?
                    .parse::<SocketAddr>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no address in {seen:?}"));
        let missing: Vec<_> = seen
            .iter()
            .filter(|l| l.contains("not traced on this kernel"))
            .collect();
        assert!(missing.is_empty(), "not everything attached: {missing:?}");
        Exporter {
            child,
            stderr,
            seen,
            addr,
        }
    }

    /// One scrape: the OpenMetrics text.
    pub fn scrape(&self) -> String {
        let (status, body) = get(self.addr, "/metrics").expect("scrape");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`, waits at most `limit` for the exit, and returns
    /// the status and every stderr line.
    pub fn stop_with(mut self, signal: i32, limit: Duration) -> (ExitStatus, Vec<String>) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = trace::wait_within(&mut self.child, limit);
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`: (status, body).
/// Two seconds for each step: a server that hangs fails the call.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of every sample of `family` (a counter without `_total`, or a
/// gauge) in a scrape, whose labels contain `matching`.
pub fn sum_of(text: &str, family: &str, matching: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            name == family || name == format!("{family}_total")
        })
        .filter(|l| l.contains(matching))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A free TCP port on localhost (free when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A real Prometheus, scraping `targets` every second, in a temporary
/// directory removed (and the process killed) on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// Its HTTP API.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus on a free port with a 1 s scrape and rule
    /// evaluation interval, the `rules` file (a Prometheus rules file)
    /// if given, and waits until it is ready.
    pub fn start(targets: &[SocketAddr], rules: Option<&str>) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "tcptrace-prometheus-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: tcptrace\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        if let Some(rules) = rules {
            std::fs::write(dir.join("rules.yaml"), rules).expect("rules file");
            config += "rule_files:\n  - rules.yaml\n";
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        let prometheus = Prometheus { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(get(addr, "/-/ready"), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/PATH?query=...`: the `data` of the answer.
    pub fn api(&self, path: &str, query: Option<&str>) -> Value {
        let url = match query {
            Some(q) => format!("/api/v1/{path}?query={}", urlencode(q)),
            None => format!("/api/v1/{path}"),
        };
        let (status, body) = get(self.addr, &url).expect("prometheus API");
        let value: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"));
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(value["status"], "success", "{url}: {body}");
        value["data"].clone()
    }

    /// An instant query: the result vector.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        self.api("query", Some(promql))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of an instant query that returns one sample;
    /// `None` when it returns nothing.
    pub fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        assert!(result.len() <= 1, "{promql}: {result:?}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Polls `check` every 250 ms until it gives `Some` (at most `limit`).
    pub fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: no {what} within {limit:?}; targets {}",
                self.api("targets", None)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `spec` of deploy/prometheus-rules.yaml (a PrometheusRule) as a
/// plain Prometheus rules file, with every `for:` set to `for_value`.
/// Converted with the PyYAML of the deploy venv (see `deploy_venv`).
pub fn alert_rules(for_value: &str) -> String {
    let python = deploy_venv().join("bin/python");
    let source = workspace().join("deploy/prometheus-rules.yaml");
    let script = format!(
        "import sys, yaml\n\
         doc = yaml.safe_load(open(sys.argv[1]))\n\
         assert doc['kind'] == 'PrometheusRule', doc['kind']\n\
         for group in doc['spec']['groups']:\n\
         \x20   for rule in group['rules']:\n\
         \x20       if 'for' in rule: rule['for'] = '{for_value}'\n\
         print(yaml.safe_dump(doc['spec'], sort_keys=False))\n"
    );
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "converting {}: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The venv with kubernetes-validate and PyYAML (`cargo xtask test`
/// installs it and names it in TCPTRACE_DEPLOY_VENV).
pub fn deploy_venv() -> PathBuf {
    let venv = std::env::var_os("TCPTRACE_DEPLOY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/deploy-venv"));
    assert!(
        venv.join("bin/python").exists(),
        "{} missing: run the tests through `cargo xtask test`",
        venv.display()
    );
    venv
}

/// The repository's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}
