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

    /// Runs a command line inside the namespace, split at whitespace (no
    /// quoting): a firewall rule reads as it would be typed,
    /// `ns.exec_line("iptables -A INPUT -p tcp --dport 9000 -j DROP")`.
    pub fn exec_line(&self, line: &str) -> String {
        let mut words = line.split_whitespace();
        let program = words.next().expect("a command line");
        self.exec(program, &words.collect::<Vec<_>>())
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

    /// Makes a veth pair: `dev` here, `peer_dev` in `peer`; both ends
    /// still down and without addresses (see [`Netns::up`]).
    pub fn add_veth(&self, dev: &str, peer: &Netns, peer_dev: &str) {
        self.ip(&[
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            peer_dev,
            "netns",
            peer.name(),
        ]);
    }

    /// Gives `dev` each address of `cidrs` (`198.18.0.1/24`,
    /// `2001:db8::1/64`: an IPv6 one without duplicate address detection,
    /// so it is usable at once), then brings it up.
    pub fn up(&self, dev: &str, cidrs: &[&str]) {
        for cidr in cidrs {
            self.add_address(dev, cidr);
        }
        self.ip(&["link", "set", dev, "up"]);
    }

    /// One more address on `dev` (IPv6 without duplicate address detection).
    pub fn add_address(&self, dev: &str, cidr: &str) {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"]);
        } else {
            self.ip(&["-4", "addr", "add", cidr, "dev", dev]);
        }
    }

    /// The default route of `gateway`'s family via `gateway`.
    pub fn default_route(&self, gateway: &str) {
        let family = if gateway.contains(':') { "-6" } else { "-4" };
        self.ip(&[family, "route", "add", "default", "via", gateway]);
    }

    /// Forwards IPv4 and IPv6 between its interfaces (a router).
    pub fn forward(&self) {
        self.sysctl("net.ipv4.ip_forward", "1");
        self.sysctl("net.ipv6.conf.all.forwarding", "1");
    }

    /// The link-layer address of `dev`.
    pub fn mac(&self, dev: &str) -> String {
        self.exec_line(&format!("cat /sys/class/net/{dev}/address"))
            .trim()
            .to_string()
    }
}

/// One end of a link: a namespace, its device, and the device's addresses
/// (without prefix length).
pub type LinkEnd<'a> = (&'a Netns, &'a str, &'a [&'a str]);

/// Permanent neighbour entries on both ends of a link, so neither end
/// sends an ARP request or neighbour solicitation over it. One sent while
/// a fresh veth comes up may be lost and is retried after 1 s, delaying a
/// test's first packets by that second: the first SYN of every lane is
/// answered after its retransmit, and the test's timeline shifts.
pub fn pin_neighbours(a: LinkEnd<'_>, b: LinkEnd<'_>) {
    for ((here, dev, _), (there, there_dev, addrs)) in [(a, b), (b, a)] {
        let mac = there.mac(there_dev);
        for addr in addrs {
            here.ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Quiet: a test may have deleted it already.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(std::process::Stdio::null())
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

    /// Namespaces `tt-{tag}a-*` and `tt-{tag}b-*`, `veth0` in `a` and
    /// `veth1` in `b`; both deleted on drop (which removes the link).
    pub fn new(tag: &str) -> NetnsPair {
        let a = Netns::new(&format!("{tag}a"));
        let b = Netns::new(&format!("{tag}b"));
        a.add_veth("veth0", &b, "veth1");
        a.up(
            "veth0",
            &[&format!("{}/24", Self::A4), &format!("{}/64", Self::A6)],
        );
        b.up(
            "veth1",
            &[&format!("{}/24", Self::B4), &format!("{}/64", Self::B6)],
        );
        pin_neighbours(
            (&a, "veth0", &[Self::A4, Self::A6]),
            (&b, "veth1", &[Self::B4, Self::B6]),
        );
        NetnsPair { a, b }
    }
}

/// Client and server namespaces with a router namespace between them:
/// `client` 198.18.1.1 / 2001:db8:1::1 (`eth0`) -- (`rc`) `router` (`rs`)
/// -- (`eth0`) `server` 198.18.2.1 / 2001:db8:2::1; the router is
/// .254 / ::fe on each side. The server's packets reach the client one
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
    /// The router's interface on the server's side (packets from the
    /// server come in here).
    pub const ROUTER_TO_SERVER: &str = "rs";

    /// Namespaces `tt-{tag}c-*`, `tt-{tag}r-*` and `tt-{tag}s-*`, the
    /// router forwarding both families; all deleted on drop.
    pub fn new(tag: &str) -> Routed {
        let client = Netns::new(&format!("{tag}c"));
        let router = Netns::new(&format!("{tag}r"));
        let server = Netns::new(&format!("{tag}s"));
        for (end, net, dev) in [(&client, 1, "rc"), (&server, 2, "rs")] {
            router.add_veth(dev, end, "eth0");
            let (gw4, gw6) = (format!("198.18.{net}.254"), format!("2001:db8:{net}::fe"));
            router.up(dev, &[&format!("{gw4}/24"), &format!("{gw6}/64")]);
            end.up(
                "eth0",
                &[
                    &format!("198.18.{net}.1/24"),
                    &format!("2001:db8:{net}::1/64"),
                ],
            );
            end.default_route(&gw4);
            end.default_route(&gw6);
            let (end4, end6) = (format!("198.18.{net}.1"), format!("2001:db8:{net}::1"));
            pin_neighbours(
                (&router, dev, &[&gw4, &gw6]),
                (end, "eth0", &[&end4, &end6]),
            );
        }
        router.forward();
        Routed {
            client,
            router,
            server,
        }
    }
}
