//! Network namespaces: the one `--netns` resolver every command uses
//! (`resolve`), the namespaces in use on the host, and running code
//! inside one, as `ip netns exec` does.
//!
//! `--netns` takes a name under /run/netns (what `ip netns add`
//! creates), a path such as /proc/PID/ns/net, or the namespace's inode
//! number (what events carry as `netns`). Whatever the form, the answer
//! is checked to be a network namespace, so a typo, a plain file or
//! `/proc/PID/ns/uts` is one clear error instead of a filter that
//! silently matches nothing.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Where `ip netns add NAME` bind-mounts a namespace.
pub const RUN_NETNS: &str = "/run/netns";

/// `f_type` of nsfs, the filesystem of namespace files
/// (include/uapi/linux/magic.h).
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// `NS_GET_NSTYPE` = `_IO(0xb7, 0x3)`: the `CLONE_NEW*` type of a
/// namespace file (include/uapi/linux/nsfs.h, kernels >= 4.11).
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// A network namespace, resolved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// As given on the command line (reports echo it).
    pub spec: String,
    /// Its inode number: what the kernel programs filter on and events
    /// carry as `netns` (`struct net`'s `ns.inum`).
    pub inode: u32,
    /// A path that opens it: /run/netns/NAME, the path given, or
    /// /proc/PID/ns/net of a process inside it.
    pub path: PathBuf,
}

/// Why `--netns` was refused, or a namespace could not be entered. Each
/// message is one line and starts with the flag and the value given.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Empty, `.`, `..` or blank.
    #[error(
        "--netns '{spec}': give a name under /run/netns, a path such as /proc/PID/ns/net, or a namespace inode number"
    )]
    BadName {
        /// The value given.
        spec: String,
    },
    /// `--netns 0`: no namespace has inode 0 (it used to turn the filter off).
    #[error("--netns 0: no namespace has inode 0 (leave --netns out to watch every namespace)")]
    ZeroInode,
    /// An inode number that no process and no /run/netns entry is in.
    #[error(
        "--netns {spec}: no process or /run/netns entry is in a network namespace with that inode"
    )]
    NoSuchInode {
        /// The value given.
        spec: String,
    },
    /// The name or path does not exist or cannot be read.
    #[error("--netns {spec}: cannot open network namespace {}: {source}", path.display())]
    Open {
        /// The value given.
        spec: String,
        /// The path it stands for.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: io::Error,
    },
    /// The path exists but is no network namespace.
    #[error("--netns {spec}: {} is {what}, not a network namespace", path.display())]
    NotNetns {
        /// The value given.
        spec: String,
        /// The path it stands for.
        path: PathBuf,
        /// What it is instead: `a directory`, `a regular file`, `a uts namespace`...
        what: String,
    },
    /// setns(2) refused (not root, or the namespace went away).
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Enter {
        /// The namespace's path.
        path: PathBuf,
        /// What setns(2) returned.
        #[source]
        source: io::Error,
    },
}

/// Resolves a `--netns` value: a name under /run/netns, a path (anything
/// with a `/`), or an inode number (of a namespace some process or a
/// /run/netns entry is in). The result is checked to be a network
/// namespace.
///
/// # Errors
/// A `NetnsError` naming the value, one line each: blank or `.`/`..`,
/// `0`, an inode nothing is in, a path that does not open, or a path that
/// is a file, a directory or another kind of namespace.
pub fn resolve(spec: &str) -> Result<Netns, NetnsError> {
    let path = if spec.trim().is_empty() || spec == "." || spec == ".." {
        return Err(NetnsError::BadName { spec: spec.into() });
    } else if spec.bytes().all(|b| b.is_ascii_digit()) {
        // Inodes of namespaces are 32-bit (`ns_common.inum`).
        match spec.parse::<u32>() {
            Ok(0) => return Err(NetnsError::ZeroInode),
            Ok(inode) => {
                find_by_inode(inode).ok_or_else(|| NetnsError::NoSuchInode { spec: spec.into() })?
            }
            Err(_) => return Err(NetnsError::NoSuchInode { spec: spec.into() }),
        }
    } else if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        Path::new(RUN_NETNS).join(spec)
    };
    let inode = check(spec, &path)?;
    Ok(Netns {
        spec: spec.to_string(),
        inode,
        path,
    })
}

/// The namespace's inode, once `path` is known to be a network namespace.
fn check(spec: &str, path: &Path) -> Result<u32, NetnsError> {
    let not_netns = |what: String| NetnsError::NotNetns {
        spec: spec.into(),
        path: path.to_path_buf(),
        what,
    };
    let open_error = |source| NetnsError::Open {
        spec: spec.into(),
        path: path.to_path_buf(),
        source,
    };
    // Every namespace file lives on the one nsfs superblock, so a file on
    // another device is not one: refused before it is opened (a FIFO or
    // a device would block or act on open).
    let meta = fs::metadata(path).map_err(open_error)?;
    if Some(meta.dev()) != nsfs_device() {
        return Err(not_netns(describe(&meta.file_type()).into()));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(open_error)?;
    let statfs = rustix::fs::fstatfs(&file).map_err(|e| open_error(e.into()))?;
    if statfs.f_type as u64 != NSFS_MAGIC {
        return Err(not_netns(describe(&meta.file_type()).into()));
    }
    match namespace_type(&file) {
        Ok(libc::CLONE_NEWNET) => {}
        Ok(other) => return Err(not_netns(format!("a {} namespace", type_name(other)))),
        Err(err) => {
            return Err(not_netns(format!(
                "a namespace file of unknown type ({err})"
            )));
        }
    }
    u32::try_from(meta.ino()).map_err(|_| not_netns("an inode beyond 32 bits".into()))
}

/// The device of nsfs, from our own namespace's file.
fn nsfs_device() -> Option<u64> {
    fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev())
}

/// The `CLONE_NEW*` value of a namespace file.
fn namespace_type(file: &File) -> io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a number;
    // the fd is open for the duration of the call.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if nstype < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(nstype)
}

fn type_name(nstype: i32) -> &'static str {
    match nstype {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "non-network",
    }
}

fn describe(kind: &fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "no namespace file"
    }
}

/// Paths that may open a network namespace: /run/netns entries first
/// (they may hold no process), then /proc/PID/ns/net of every process.
fn candidates() -> impl Iterator<Item = PathBuf> {
    let named = fs::read_dir(RUN_NETNS)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path());
    let processes = procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .map(|process| PathBuf::from(format!("/proc/{}/ns/net", process.pid())));
    named.chain(processes)
}

/// A path to the network namespace with this inode.
fn find_by_inode(inode: u32) -> Option<PathBuf> {
    candidates().find(|path| fs::metadata(path).is_ok_and(|m| m.ino() == u64::from(inode)))
}

/// (inode, a path that opens it) of each network namespace in use, at
/// most `limit`, each once. Best effort: what vanishes meanwhile is skipped.
pub fn in_use(limit: usize) -> Vec<(u32, PathBuf)> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for path in candidates() {
        if found.len() >= limit {
            break;
        }
        let Some(inode) = fs::metadata(&path)
            .ok()
            .and_then(|m| u32::try_from(m.ino()).ok())
        else {
            continue;
        };
        if !found.iter().any(|(seen, _)| *seen == inode) {
            found.push((inode, path));
        }
    }
    found
}

/// A path to the initial network namespace (the host's, where
/// host-wide sysctls such as `tcp_max_orphans` live): pid 1's or, where
/// pid 1 is out of reach (an init holding capabilities we lack makes its
/// /proc/1/ns refuse even root), kthreadd's: kernel threads always live
/// in it. `None` when neither may be looked at (not root).
pub fn initial() -> Option<PathBuf> {
    let pid1 = Path::new("/proc/1/ns/net");
    if fs::metadata(pid1).is_ok() {
        return Some(pid1.to_path_buf());
    }
    let kthreadd = Path::new("/proc/2/ns/net");
    (is_kthreadd(Path::new("/proc/2/status")) && fs::metadata(kthreadd).is_ok())
        .then(|| kthreadd.to_path_buf())
}

/// Whether a /proc/PID/status describes kthreadd (in a container's pid
/// namespace, pid 2 is an ordinary process).
fn is_kthreadd(status: &Path) -> bool {
    let Ok(text) = fs::read_to_string(status) else {
        return false;
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    field("PPid:") == Some("0")
        && (field("Kthread:") == Some("1") || field("Name:") == Some("kthreadd"))
}

/// The cookie of the namespace the calling thread is in: a 64-bit number
/// the kernel never hands out twice while it runs, unlike the inode,
/// which a namespace created after another is deleted can take over
/// (`SO_NETNS_COOKIE`, Linux 5.14+, net/core/sock.c). `None` on older
/// kernels or when no socket can be made.
pub fn cookie() -> Option<u64> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None).ok()?;
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid socket and a buffer of the length passed.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    (rc == 0 && len as usize == size_of::<u64>()).then_some(cookie)
}

/// Moves the calling thread into the namespace at `path`. Only this
/// thread moves: read per-namespace /proc files through
/// /proc/thread-self afterwards.
///
/// # Errors
/// `Enter` when the path does not open or setns(2) refuses (not root, or
/// not a network namespace).
pub fn enter(path: &Path) -> Result<(), NetnsError> {
    let error = |source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(error)?;
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| error(e.into()))
}

/// Runs `work` on a thread of its own inside `netns` (or right here,
/// where we are, when `None`), so the rest of the process stays where it
/// was. Sockets `work` opens and /proc/thread-self files it reads belong
/// to that namespace.
///
/// # Errors
/// What `work` returns, or `Enter` (converted) if the thread could not
/// enter the namespace.
pub fn run_in<T, E>(
    netns: Option<&Path>,
    work: impl FnOnce() -> Result<T, E> + Send,
) -> Result<T, E>
where
    T: Send,
    E: From<NetnsError> + Send,
{
    let Some(path) = netns else {
        return work();
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(path)?;
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_resolves_in_every_form() {
        let here = resolve("/proc/self/ns/net").unwrap();
        let inode = fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        assert_eq!(here.inode, inode);
        let by_inode = resolve(&inode.to_string()).unwrap();
        assert_eq!(by_inode.inode, inode);
        assert_eq!(by_inode.spec, inode.to_string());
        assert!(fs::metadata(&by_inode.path).unwrap().ino() == u64::from(inode));
    }

    #[test]
    fn bad_values_are_one_line_errors_that_name_them() {
        let message = |spec: &str| resolve(spec).unwrap_err().to_string();
        assert!(matches!(resolve("0"), Err(NetnsError::ZeroInode)));
        assert!(message("0").starts_with("--netns 0:"));
        for spec in ["", " ", ".", ".."] {
            assert!(
                matches!(resolve(spec), Err(NetnsError::BadName { .. })),
                "{spec:?}"
            );
        }
        assert!(matches!(
            resolve("4294967295"),
            Err(NetnsError::NoSuchInode { .. })
        ));
        assert!(matches!(
            resolve("99999999999"),
            Err(NetnsError::NoSuchInode { .. })
        ));
        let missing = message("tcptrace-no-such-netns");
        assert!(
            missing.contains("cannot open network namespace /run/netns/tcptrace-no-such-netns"),
            "{missing}"
        );
        let dir = message("/proc");
        assert!(
            dir.contains("/proc is a directory, not a network namespace"),
            "{dir}"
        );
        let file = message("/proc/self/status");
        assert!(file.contains("is a regular file"), "{file}");
        let fifo_free = message("/dev/null");
        assert!(fifo_free.contains("is a device"), "{fifo_free}");
        let uts = message("/proc/self/ns/uts");
        assert!(
            uts.contains("is a uts namespace, not a network namespace"),
            "{uts}"
        );
        for spec in [
            "0",
            "",
            "/proc",
            "/proc/self/ns/uts",
            "tcptrace-no-such-netns",
        ] {
            assert!(!message(spec).contains('\n'));
        }
    }

    #[test]
    fn namespaces_in_use_include_ours_once() {
        let inode = fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        let found = in_use(usize::MAX);
        assert_eq!(found.iter().filter(|(i, _)| *i == inode).count(), 1);
        assert!(in_use(1).len() <= 1);
    }

    #[test]
    fn kthreadd_is_recognised() {
        assert!(is_kthreadd(Path::new("/proc/2/status")) || !Path::new("/proc/2").exists());
        assert!(!is_kthreadd(Path::new("/proc/self/status")));
    }

    #[test]
    fn the_initial_namespace_is_a_network_namespace() {
        // As root (how the tests run) pid 1 or kthreadd is in sight.
        if let Some(path) = initial() {
            let spec = path.to_string_lossy();
            assert!(resolve(&spec).is_ok(), "{spec}");
        }
    }

    #[test]
    fn work_runs_here_without_a_namespace() {
        let result: Result<u32, NetnsError> = run_in(None, || Ok(7));
        assert_eq!(result.unwrap(), 7);
        let err =
            run_in::<(), NetnsError>(Some(Path::new("/nonexistent/ns")), || Ok(())).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
    }
}
