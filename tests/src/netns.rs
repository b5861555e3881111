//! Network namespaces owned by a test.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use crate::sh;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "tt-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// The namespace inode, as tcptrace reports it.
    pub fn inode(&self) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path()).expect("netns path").ino() as u32
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Runs any program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// A `Command` that will run inside the namespace, in a process group
    /// of its own so `crate::kill_group` also reaches any workers it forks
    /// (nginx, haproxy).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .process_group(0);
        cmd
    }

    /// Moves the calling thread into the namespace (sockets it creates
    /// afterwards live there). Use on a thread of your own.
    pub fn enter(&self) {
        let file = File::open(self.path()).expect("open netns");
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                f()
            })
            .join()
            .expect("thread inside netns panicked")
        })
    }

    /// Writes a sysctl inside the namespace (net.* sysctls are per netns).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair.
/// `a` is 198.18.0.1 / 2001:db8::1, `b` is 198.18.0.2 / 2001:db8::2.
pub struct NetnsPair {
    pub a: Netns,
    pub b: Netns,
}

impl NetnsPair {
    pub const A4: &str = "198.18.0.1";
    pub const B4: &str = "198.18.0.2";
    pub const A6: &str = "2001:db8::1";
    pub const B6: &str = "2001:db8::2";

    pub fn new(tag: &str) -> NetnsPair {
        let a = Netns::new(&format!("{tag}a"));
        let b = Netns::new(&format!("{tag}b"));
        a.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            b.name(),
        ]);
        for (ns, dev, v4, v6) in [
            (&a, "veth0", Self::A4, Self::A6),
            (&b, "veth1", Self::B4, Self::B6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        NetnsPair { a, b }
    }
}

/// Client and server namespaces with a router namespace between them:
/// `client` 198.18.1.1 / 2001:db8:1::1 -- `router` -- `server`
/// 198.18.2.1 / 2001:db8:2::1. The server's packets reach the client one
/// hop later than the router's own (TTL / hop limit one lower).
pub struct Routed {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
}

impl Routed {
    pub const CLIENT4: &str = "198.18.1.1";
    pub const SERVER4: &str = "198.18.2.1";
    pub const CLIENT6: &str = "2001:db8:1::1";
    pub const SERVER6: &str = "2001:db8:2::1";

    pub fn new(tag: &str) -> Routed {
        let client = Netns::new(&format!("{tag}c"));
        let router = Netns::new(&format!("{tag}r"));
        let server = Netns::new(&format!("{tag}s"));
        for (end, net, dev) in [(&client, 1, "rc"), (&server, 2, "rs")] {
            router.ip(&[
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                end.name(),
            ]);
            for (ns, dev, host) in [(&router, dev, "254"), (end, "eth0", "1")] {
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("198.18.{net}.{host}/24"),
                    "dev",
                    dev,
                ]);
                let v6_host = if host == "1" { "1" } else { "fe" };
                ns.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("2001:db8:{net}::{v6_host}/64"),
                    "dev",
                    dev,
                    "nodad",
                ]);
                ns.ip(&["link", "set", dev, "up"]);
            }
            end.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("198.18.{net}.254"),
            ]);
            end.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("2001:db8:{net}::fe"),
            ]);
        }
        router.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv6.conf.all.forwarding", "1");
        Routed {
            client,
            router,
            server,
        }
    }
}
