//! Failure classes: every failed connect, request or held connection is
//! counted under a short stable name, the errno name when the kernel gave
//! one (ECONNREFUSED, ETIMEDOUT, EADDRNOTAVAIL, ECONNRESET...), so reports
//! from different runs and hosts compare line by line.

use std::{borrow::Cow, io};

/// The name a failure is counted under.
pub type Class = Cow<'static, str>;

/// Our own timeout (--connect-timeout, --reply-timeout) expired. Named like
/// the kernel's so a timeout counts the same whoever noticed it first.
pub const TIMEOUT: &str = "ETIMEDOUT";
/// The peer closed the connection (FIN) where a reply was expected.
pub const EOF: &str = "EOF";
/// The peer answered something that is not a reply we understand.
pub const BAD_REPLY: &str = "BAD_REPLY";

/// Errno names that TCP clients and servers meet, by number.
const ERRNO_NAMES: &[(i32, &str)] = &[
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::ECONNABORTED, "ECONNABORTED"),
    (libc::EPIPE, "EPIPE"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::EHOSTDOWN, "EHOSTDOWN"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::ENETRESET, "ENETRESET"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::ESHUTDOWN, "ESHUTDOWN"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENFILE, "ENFILE"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EPERM, "EPERM"),
    (libc::EINVAL, "EINVAL"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::EINTR, "EINTR"),
    (libc::EPROTO, "EPROTO"),
    (libc::EALREADY, "EALREADY"),
    (libc::EISCONN, "EISCONN"),
];

/// The class of an errno number: its name, or `errno N` for a rare one.
pub fn errno_name(errno: i32) -> Class {
    match ERRNO_NAMES.iter().find(|(number, _)| *number == errno) {
        Some((_, name)) => Cow::Borrowed(name),
        None => Cow::Owned(format!("errno {errno}")),
    }
}

/// The class of an I/O error from a socket call.
pub fn io_error(err: &io::Error) -> Class {
    match err.raw_os_error() {
        Some(errno) => errno_name(errno),
        None => match err.kind() {
            io::ErrorKind::UnexpectedEof => Cow::Borrowed(EOF),
            io::ErrorKind::TimedOut => Cow::Borrowed(TIMEOUT),
            io::ErrorKind::ConnectionReset => errno_name(libc::ECONNRESET),
            io::ErrorKind::ConnectionRefused => errno_name(libc::ECONNREFUSED),
            kind => Cow::Owned(format!("{kind:?}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_errno_names() {
        assert_eq!(errno_name(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(errno_name(libc::EADDRNOTAVAIL), "EADDRNOTAVAIL");
        assert_eq!(errno_name(9999), "errno 9999");
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(io_error(&reset), "ECONNRESET");
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(io_error(&eof), EOF);
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(io_error(&timeout), "ETIMEDOUT");
    }

    #[test]
    fn stress_errno_table_has_no_duplicates() {
        for (i, (number, name)) in ERRNO_NAMES.iter().enumerate() {
            assert!(
                ERRNO_NAMES[i + 1..]
                    .iter()
                    .all(|(n, m)| n != number && m != name),
                "{name} listed twice"
            );
        }
    }
}
