//! Every file tcptrace writes (trace output, tune's drop-in, state and
//! lock, later captures and reports) goes through here, because tcptrace
//! runs as root in directories others can write to (/tmp):
//!
//! - never through a symbolic link: the last component is opened with
//!   `O_NOFOLLOW`, and a link on the way to it is followed only if root
//!   (or we) own it, as `fs.protected_symlinks=1` would do, which many
//!   hosts leave off;
//! - never into a file someone else could have written: an existing file
//!   is used only if it is a regular file we own, not writable by group
//!   or others, with one hard link; otherwise one line says why;
//! - mode 0600 whatever the umask (the files hold pids, commands, cgroups,
//!   peers);
//! - whole-file writes replace the file atomically, through a temporary
//!   file in the same directory created with `O_EXCL`; a temporary file
//!   left by a killed run is removed by the next write.
//!
//! Every check is made on the open descriptor (`fstat`) and every step
//! works relative to the open directory (`openat`, `renameat`), so
//! swapping a path after it was checked changes nothing.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{self, Read as _, Write as _},
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use rustix::{
    fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, Stat},
    io::Errno,
};

/// Mode of every file tcptrace creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directories tcptrace creates for its own state.
pub const DIR_MODE: u32 = 0o700;
/// Symbolic links followed on the way to one file, as the kernel's
/// MAXSYMLINKS (include/linux/namei.h).
const MAX_LINKS: usize = 40;
/// Larger files are not tcptrace's state: refuse rather than read them.
const MAX_READ: u64 = 1 << 20;
/// Temporary files are named `.NAME.tmpPID`.
const TEMP_INFIX: &str = ".tmp";

/// Why a file was refused or could not be used. Each message is one line
/// that names the path.
#[derive(Debug, thiserror::Error)]
pub enum SafeFileError {
    /// The final path component is a symbolic link.
    #[error("{}: is a symbolic link; tcptrace does not write or read through links (give the real path)", .0.display())]
    Symlink(PathBuf),
    /// A directory on the way is a link owned by neither root nor us.
    #[error("{}: goes through {}, a symbolic link owned by uid {owner}; refusing to follow it", path.display(), link.display())]
    UntrustedLink {
        /// The path asked for.
        path: PathBuf,
        /// The link on the way.
        link: PathBuf,
        /// Its owner's uid.
        owner: u32,
    },
    /// Not a regular file (a FIFO, a directory, a block device, ...).
    #[error("{}: is {kind}, not a regular file; refusing to use it", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead (`a FIFO`, `a directory`, ...).
        kind: &'static str,
    },
    /// A file another user owns or could have written (or with more
    /// than one hard link).
    #[error("{}: {reason}; refusing to use a file others could have written", path.display())]
    NotOurs {
        /// The path.
        path: PathBuf,
        /// Who owns it or who could write it.
        reason: String,
    },
    /// A directory others could write into (they could replace or
    /// rename what we write there): refused for every file the tool
    /// writes (output, record, report, pcap, state).
    #[error("{}: {reason}; refusing to write there", path.display())]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// Why it is unsafe.
        reason: String,
    },
    /// A state file too large to be ours.
    #[error("{}: larger than {} KiB, not a file tcptrace wrote", .0.display(), MAX_READ / 1024)]
    TooLarge(PathBuf),
    /// Another run held the lock for longer than we wait.
    #[error("{}: another tcptrace run has held this lock for {} s; try again once it has finished", path.display(), waited.as_secs())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long this run waited.
        waited: Duration,
    },
    /// A system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// `create`, `read`, `rename`, ...
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

impl SafeFileError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> SafeFileError {
        let path = path.to_path_buf();
        move |errno| SafeFileError::Io {
            action,
            path,
            source: errno.into(),
        }
    }
}

type Result<T, E = SafeFileError> = std::result::Result<T, E>;

/// Creates `path` for writing a stream (trace output): a new file with
/// mode 0600, or, if one is there already, our own file emptied (and its
/// mode set to 0600). A symbolic link, a FIFO, a block device or a file
/// another user owns or could write is refused and left as it is.
///
/// A character device of root's with one name (`/dev/null`, `/dev/full`,
/// a terminal) is written as it is: no one else can make one (mknod needs
/// CAP_MKNOD, and a hard link cannot cross into /dev's file system), so
/// it is there because the user named it.
pub fn create(path: &Path) -> Result<File> {
    let (dir, name) = open_parent(path)?;
    if let Some(device) = system_char_device(&dir, &name, path)? {
        return Ok(device);
    }
    let created = rustix::fs::openat(
        &dir,
        &name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    );
    let fd = match created {
        Ok(fd) => fd,
        Err(Errno::EXIST) => {
            let fd = open_existing(&dir, &name, path, OFlags::WRONLY)?;
            rustix::fs::ftruncate(&fd, 0).map_err(SafeFileError::io("truncate", path))?;
            fd
        }
        Err(errno) => return Err(refusal(&dir, &name, path, errno, "create")),
    };
    // The umask may have taken bits away; the mode is ours to set.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE))
        .map_err(SafeFileError::io("set the mode of", path))?;
    Ok(File::from(fd))
}

/// `path`, opened for writing, if it is a character device owned by root
/// with one name; `None` if it is anything else (or nothing).
fn system_char_device(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<Option<File>> {
    let is_device = |stat: &Stat| {
        FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice
            && stat.st_uid == 0
            && stat.st_nlink == 1
    };
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if is_device(&stat) => {}
        _ => return Ok(None),
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| refusal(dir, name, path, errno, "open"))?;
    // Checked again on what was opened: the name may have changed since.
    let stat = rustix::fs::fstat(&fd).map_err(SafeFileError::io("inspect", path))?;
    if !is_device(&stat) {
        return Err(SafeFileError::NotRegular {
            path: path.to_path_buf(),
            kind: "no longer the device it was",
        });
    }
    Ok(Some(File::from(fd)))
}

/// Reads a file only if it is ours (see [`check_ours`]); `None` if it
/// does not exist, nor its directory.
pub fn read_trusted(path: &Path) -> Result<Option<String>> {
    let (dir, name) = match open_parent(path) {
        Ok(found) => found,
        Err(SafeFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let fd = match open_existing(&dir, &name, path, OFlags::RDONLY) {
        Ok(fd) => fd,
        Err(SafeFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    File::from(fd)
        .take(MAX_READ + 1)
        .read_to_string(&mut text)
        .map_err(|source| SafeFileError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_READ {
        return Err(SafeFileError::TooLarge(path.to_path_buf()));
    }
    Ok(Some(text))
}

/// Replaces `path` with `contents` in one step: a reader (or a reboot)
/// sees the old file or the new one, never a part. An existing `path`
/// must be ours; the new file has mode 0600.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let (dir, name) = replaceable(path)?;
    remove_stale_temps(&dir, &name);
    let mut temp_name = OsString::from(".");
    temp_name.push(&name);
    temp_name.push(format!("{TEMP_INFIX}{}", std::process::id()));
    let temp_path = path.with_file_name(&temp_name);
    let fd = rustix::fs::openat(
        &dir,
        &temp_name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    )
    .map_err(SafeFileError::io("create", &temp_path))?;
    // Held until the file is renamed or removed: a later run that finds
    // the file unlocked knows its writer is dead.
    let _ = rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive);
    let result = (|| {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE))?;
        let mut file = File::from(fd);
        file.write_all(contents)?;
        file.sync_all()?;
        rustix::fs::renameat(&dir, &temp_name, &dir, &name)?;
        // The rename itself is durable once the directory is synced.
        let listing = rustix::fs::openat(
            &dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::fsync(listing)?;
        Ok::<_, io::Error>(())
    })();
    result.map_err(|source| {
        let _ = rustix::fs::unlinkat(&dir, &temp_name, AtFlags::empty());
        SafeFileError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Checks now what [`write_atomically`] will check when it writes: its
/// directory is one we may write into and `path` is nothing yet or our
/// own file. For a command that writes at the end of a long run, so a
/// refusal comes before the run, not after it.
///
/// # Errors
/// The refusal `write_atomically` would give.
pub fn check_replaceable(path: &Path) -> Result<()> {
    replaceable(path).map(drop)
}

/// The directory of `path` and its name, once `path` is known to be
/// nothing yet or our own regular file.
fn replaceable(path: &Path) -> Result<(OwnedFd, OsString)> {
    let (dir, name) = open_parent(path)?;
    match open_existing(&dir, &name, path, OFlags::RDONLY) {
        Ok(_) => {}
        Err(SafeFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok((dir, name))
}

/// Removes our own file at `path`; nothing if there is none. A file that
/// is not ours is left where it is and refused.
pub fn remove(path: &Path) -> Result<()> {
    let (dir, name) = match open_parent(path) {
        Ok(found) => found,
        Err(SafeFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match open_existing(&dir, &name, path, OFlags::RDONLY) {
        Ok(_) => {}
        Err(SafeFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    match rustix::fs::unlinkat(&dir, &name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(errno) => Err(SafeFileError::io("remove", path)(errno)),
    }
}

/// Makes sure `path` is a directory only we can write to: created with
/// mode 0700 if missing (its parent must exist), refused if another user
/// owns it or group/others can write it (unless it is sticky, as /tmp
/// is, where nobody can replace a file of ours).
pub fn private_dir(path: &Path) -> Result<()> {
    let (parent, name) = open_parent(path)?;
    match rustix::fs::mkdirat(&parent, &name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(errno) => return Err(SafeFileError::io("create the directory", path)(errno)),
    }
    let dir = rustix::fs::openat(
        &parent,
        &name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| refusal(&parent, &name, path, errno, "open the directory"))?;
    check_trusted_dir(&dir, path)
}

/// The one rule for a directory we write in: owned by root or us, and
/// not writable by group or others unless sticky (as /tmp is, where
/// nobody can replace or rename a file of ours). `path` names it.
fn check_trusted_dir(dir: &OwnedFd, path: &Path) -> Result<()> {
    let stat = rustix::fs::fstat(dir).map_err(SafeFileError::io("inspect", path))?;
    let unsafe_dir = |reason: String| SafeFileError::UnsafeDir {
        path: path.to_path_buf(),
        reason,
    };
    if stat.st_uid != euid() && stat.st_uid != 0 {
        return Err(unsafe_dir(format!("owned by uid {}", stat.st_uid)));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(unsafe_dir(format!(
            "group or others can write to it (mode {mode:04o}) and it is not sticky"
        )));
    }
    Ok(())
}

/// An exclusive `flock` on a lock file of ours, released on drop (and by
/// the kernel when the process dies, so a killed run never leaves it held).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the lock at `path` (created if missing), waiting at most `wait`
/// for another holder to finish.
pub fn lock(path: &Path, wait: Duration) -> Result<Lock> {
    let (dir, name) = open_parent(path)?;
    let fd = match rustix::fs::openat(
        &dir,
        &name,
        OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    ) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => open_existing(&dir, &name, path, OFlags::RDONLY)?,
        Err(errno) => return Err(refusal(&dir, &name, path, errno, "create")),
    };
    let started = Instant::now();
    loop {
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Lock { _file: fd.into() }),
            Err(Errno::WOULDBLOCK) if started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(SafeFileError::Locked {
                    path: path.to_path_buf(),
                    waited: started.elapsed(),
                });
            }
            Err(Errno::INTR) => {}
            Err(errno) => return Err(SafeFileError::io("lock", path)(errno)),
        }
    }
}

/// The reason an existing file is not ours, if it is not: a regular file
/// owned by our effective user, not writable by group or others, with no
/// second name (a hard link could be someone else's way in).
pub fn check_ours(stat: &Stat) -> Result<(), String> {
    let owner = stat.st_uid;
    if owner != euid() {
        return Err(format!("owned by uid {owner}, not by us (uid {})", euid()));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!("group or others can write to it (mode {mode:04o})"));
    }
    if stat.st_nlink > 1 {
        return Err(format!("it has {} hard links", stat.st_nlink));
    }
    Ok(())
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens an existing file without following a link and without blocking
/// on a FIFO, then checks on the descriptor that it is ours.
fn open_existing(dir: &OwnedFd, name: &OsStr, path: &Path, access: OFlags) -> Result<OwnedFd> {
    let fd = rustix::fs::openat(
        dir,
        name,
        access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| refusal(dir, name, path, errno, "open"))?;
    let stat = rustix::fs::fstat(&fd).map_err(SafeFileError::io("inspect", path))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(SafeFileError::NotRegular {
            path: path.to_path_buf(),
            kind: describe(kind),
        });
    }
    check_ours(&stat).map_err(|reason| SafeFileError::NotOurs {
        path: path.to_path_buf(),
        reason,
    })?;
    // Reads and writes of a regular file never block; clear the flag so
    // the `File` behaves as usual.
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(SafeFileError::io("open", path))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
        .map_err(SafeFileError::io("open", path))?;
    Ok(fd)
}

/// Turns an `openat` failure into the reason: a link or something that is
/// not a file is named as such, anything else is the errno.
fn refusal(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    errno: Errno,
    action: &'static str,
) -> SafeFileError {
    let kind = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|stat| FileType::from_raw_mode(stat.st_mode));
    match (errno, kind) {
        (_, Some(FileType::Symlink)) => SafeFileError::Symlink(path.to_path_buf()),
        (Errno::ISDIR | Errno::NXIO | Errno::NOTDIR, Some(kind))
            if kind != FileType::RegularFile =>
        {
            SafeFileError::NotRegular {
                path: path.to_path_buf(),
                kind: describe(kind),
            }
        }
        _ => SafeFileError::io(action, path)(errno),
    }
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::RegularFile => "a regular file",
        FileType::Unknown => "of an unknown type",
    }
}

/// Opens the directory that holds `path`, walking one component at a time
/// from `/` (or the working directory): a symbolic link on the way is
/// followed only if root or we own it. Returns the directory, opened with
/// `O_PATH`, and the last component.
fn open_parent(path: &Path) -> Result<(OwnedFd, OsString)> {
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name.to_os_string(),
        _ => {
            return Err(SafeFileError::Io {
                action: "use",
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
            });
        }
    };
    let parent = path.parent().unwrap_or(Path::new(""));
    let open_dir = |at: &dyn AsFd, name: &OsStr| {
        rustix::fs::openat(
            at.as_fd(),
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let dir_error = SafeFileError::io("open the directory of", path);
    let start = if parent.is_absolute() { "/" } else { "." };
    let mut dir = open_dir(&rustix::fs::CWD, OsStr::new(start)).map_err(dir_error)?;
    // Components still to walk, last one first.
    let mut todo: Vec<OsString> = components(parent.as_os_str().as_bytes());
    todo.reverse();
    let mut links = 0;
    let mut walked = PathBuf::from(start);
    while let Some(part) = todo.pop() {
        if part == "/" {
            dir = open_dir(&rustix::fs::CWD, OsStr::new("/"))
                .map_err(SafeFileError::io("open the directory of", path))?;
            walked = PathBuf::from("/");
            continue;
        }
        walked.push(&part);
        match open_dir(&dir, &part) {
            Ok(next) => dir = next,
            Err(errno @ (Errno::NOTDIR | Errno::LOOP)) => {
                let stat = rustix::fs::statat(&dir, &part, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(SafeFileError::io("open the directory of", path))?;
                if FileType::from_raw_mode(stat.st_mode) != FileType::Symlink {
                    return Err(SafeFileError::io("open the directory of", path)(errno));
                }
                if stat.st_uid != 0 && stat.st_uid != euid() {
                    return Err(SafeFileError::UntrustedLink {
                        path: path.to_path_buf(),
                        link: walked,
                        owner: stat.st_uid,
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(SafeFileError::io("open the directory of", path)(
                        Errno::LOOP,
                    ));
                }
                let target = rustix::fs::readlinkat(&dir, &part, Vec::new())
                    .map_err(SafeFileError::io("open the directory of", path))?;
                let mut more = components(target.as_bytes());
                more.reverse();
                todo.extend(more);
                walked.pop();
            }
            Err(errno) => return Err(SafeFileError::io("open the directory of", path)(errno)),
        }
    }
    let shown = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    check_trusted_dir(&dir, shown)?;
    Ok((dir, name))
}

/// `/a/./b//c` -> ["/", "a", "b", "c"]; ".." is kept, the kernel resolves
/// it against the directory already open.
fn components(path: &[u8]) -> Vec<OsString> {
    let mut parts = Vec::new();
    if path.first() == Some(&b'/') {
        parts.push(OsString::from("/"));
    }
    parts.extend(
        path.split(|b| *b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .map(|p| OsStr::from_bytes(p).to_os_string()),
    );
    parts
}

/// Removes `.NAME.tmpPID` files whose writer has died: ours, regular, and
/// not locked (a live writer holds a lock on its temporary file).
fn remove_stale_temps(dir: &OwnedFd, name: &OsStr) {
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    prefix.extend_from_slice(TEMP_INFIX.as_bytes());
    let Ok(listing) = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let Ok(mut entries) = rustix::fs::Dir::new(listing) else {
        return;
    };
    let mut stale = Vec::new();
    while let Some(Ok(entry)) = entries.read() {
        let file = entry.file_name().to_bytes();
        let Some(pid) = file.strip_prefix(prefix.as_slice()) else {
            continue;
        };
        if !pid.is_empty() && pid.iter().all(u8::is_ascii_digit) {
            stale.push(OsStr::from_bytes(file).to_os_string());
        }
    }
    for temp in stale {
        let Ok(fd) = rustix::fs::openat(
            dir,
            &temp,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let ours = rustix::fs::fstat(&fd).is_ok_and(|stat| {
            FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                && check_ours(&stat).is_ok()
        });
        if ours && rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok() {
            log::debug!("removing {:?}, left by a run that was killed", temp);
            let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink},
    };

    use super::*;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("tcptrace-safe-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_0600_and_reuses_only_its_own_file() {
        let dir = Scratch::new("create");
        let path = dir.0.join("out.ndjson");
        create(&path).unwrap().write_all(b"one\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        create(&path).unwrap().write_all(b"2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "2\n", "emptied first");
        assert_eq!(mode(&path), 0o600, "tightened");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = create(&path).unwrap_err().to_string();
        assert!(
            err.contains("group or others can write to it (mode 0666)"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "2\n", "left as it was");
    }

    #[test]
    fn never_writes_through_a_link_or_into_a_second_name() {
        let dir = Scratch::new("links");
        let victim = dir.0.join("victim");
        fs::write(&victim, "keep\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.0.join("out.ndjson");
        symlink(&victim, &link).unwrap();
        let err = create(&link).unwrap_err();
        assert!(matches!(err, SafeFileError::Symlink(_)), "{err}");
        assert!(matches!(
            write_atomically(&link, b"x"),
            Err(SafeFileError::Symlink(_))
        ));
        assert!(matches!(
            read_trusted(&link),
            Err(SafeFileError::Symlink(_))
        ));
        // A dangling link is refused too, not created through.
        let dangling = dir.0.join("dangling");
        symlink(dir.0.join("nowhere"), &dangling).unwrap();
        assert!(matches!(create(&dangling), Err(SafeFileError::Symlink(_))));
        assert!(!dir.0.join("nowhere").exists());

        let hard = dir.0.join("hard");
        fs::hard_link(&victim, &hard).unwrap();
        let err = create(&hard).unwrap_err().to_string();
        assert!(err.contains("2 hard links"), "{err}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
    }

    #[test]
    fn not_a_regular_file_is_refused() {
        let dir = Scratch::new("kinds");
        let err = create(&dir.0).unwrap_err().to_string();
        assert!(
            err.contains("not a file name") || err.contains("a directory"),
            "{err}"
        );
        let sub = dir.0.join("sub");
        fs::create_dir(&sub).unwrap();
        let err = create(&sub).unwrap_err().to_string();
        assert!(err.contains("is a directory, not a regular file"), "{err}");
        let fifo = dir.0.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = create(&fifo).unwrap_err().to_string();
        assert!(err.contains("is a FIFO"), "{err}");
        // A device of root's that the user named is written as it is.
        create(Path::new("/dev/null"))
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert_eq!(mode(Path::new("/dev/null")), 0o666, "left as it was");
        // Anything else that is not a file is refused.
        let err = read_trusted(Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("character device"), "{err}");
    }

    #[test]
    fn directory_links_are_followed_only_when_trusted() {
        let dir = Scratch::new("dirlink");
        let real = dir.0.join("real");
        fs::create_dir(&real).unwrap();
        let via = dir.0.join("via");
        symlink("real", &via).unwrap();
        // Our own link (root's, in the root tests): followed.
        create(&via.join("a")).unwrap();
        assert!(real.join("a").exists());
        // Someone else's link: refused, nothing created behind it.
        if euid() != 0 {
            return; // chown needs root; `cargo xtask test` runs this as root
        }
        rustix::fs::chownat(
            rustix::fs::CWD,
            &via,
            Some(rustix::process::Uid::from_raw(65534)),
            None,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let err = create(&via.join("b")).unwrap_err().to_string();
        assert!(err.contains("a symbolic link owned by uid 65534"), "{err}");
        assert!(!real.join("b").exists());
        // Paths with . and .. and doubled slashes walk the same way.
        let odd = dir.0.join("real/../real//./c");
        create(&odd).unwrap();
        assert!(real.join("c").exists());
    }

    #[test]
    fn atomic_writes_replace_and_clean_up_after_a_killed_run() {
        let dir = Scratch::new("atomic");
        let path = dir.0.join("90-test.conf");
        write_atomically(&path, b"one\n").unwrap();
        write_atomically(&path, b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(mode(&path), 0o600);
        // What a SIGKILL between create and rename leaves: an unlocked
        // temporary file. A live writer's (locked) one stays.
        let stale = dir.0.join(".90-test.conf.tmp999999999");
        fs::write(&stale, "half").unwrap();
        let live = dir.0.join(".90-test.conf.tmp1");
        let held = File::create(&live).unwrap();
        rustix::fs::flock(&held, FlockOperation::LockExclusive).unwrap();
        let other = dir.0.join(".other.tmp5");
        fs::write(&other, "not for this file").unwrap();
        write_atomically(&path, b"three\n").unwrap();
        assert!(!stale.exists(), "stale temporary file removed");
        assert!(live.exists() && other.exists());
        drop(held);
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(read_trusted(&path).unwrap().as_deref(), Some("three\n"));
        remove(&path).unwrap();
        assert_eq!(read_trusted(&path).unwrap(), None);
        remove(&path).unwrap();
        assert_eq!(read_trusted(&dir.0.join("no/such/file")).unwrap(), None);
    }

    #[test]
    fn private_dirs_and_locks() {
        let dir = Scratch::new("private");
        let state = dir.0.join("state");
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        private_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&state).unwrap_err().to_string();
        assert!(err.contains("not sticky"), "{err}");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o1777)).unwrap();
        private_dir(&state).unwrap();

        // The same rule for the directory of every file written there.
        let shared = dir.0.join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let output = shared.join("events.ndjson");
        let refused = |err: SafeFileError| {
            let err = err.to_string();
            assert!(err.contains("not sticky"), "{err}");
        };
        refused(create(&output).unwrap_err());
        refused(write_atomically(&output, b"x").unwrap_err());
        refused(check_replaceable(&output).unwrap_err());
        refused(private_dir(&shared.join("pcap")).unwrap_err());
        assert!(!output.exists());
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        create(&output).unwrap();

        let path = state.join("tune.lock");
        let first = lock(&path, Duration::ZERO).unwrap();
        let err = lock(&path, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, SafeFileError::Locked { .. }), "{err}");
        drop(first);
        lock(&path, Duration::ZERO).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn path_components() {
        assert_eq!(
            components(b"/a/./b//c/../d"),
            ["/", "a", "b", "c", "..", "d"].map(OsString::from)
        );
        assert_eq!(components(b"rel/x"), ["rel", "x"].map(OsString::from));
        assert!(components(b"").is_empty());
    }
}
