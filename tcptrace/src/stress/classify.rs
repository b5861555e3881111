//! Failure classes: every failed connect, request or held connection is
//! counted under a short stable name, the errno name when the kernel gave
//! one (ECONNREFUSED, ETIMEDOUT, EADDRNOTAVAIL, ECONNRESET...), so reports
//! from different runs and hosts compare line by line.

use std::{borrow::Cow, io};

use crate::kernel::errno;

/// The name a failure is counted under.
pub type Class = Cow<'static, str>;

/// Our own timeout (--connect-timeout, --reply-timeout) expired. Named like
/// the kernel's so a timeout counts the same whoever noticed it first.
pub const TIMEOUT: &str = "ETIMEDOUT";
/// The peer closed the connection (FIN) where a reply was expected.
pub const EOF: &str = "EOF";
/// The peer answered something that is not a reply we understand.
pub const BAD_REPLY: &str = "BAD_REPLY";

/// The class of an errno number: its name, or `errno N` for a rare one.
pub fn errno_name(errno: i32) -> Class {
    match errno::name(errno) {
        Some(name) => Cow::Borrowed(name),
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
}
