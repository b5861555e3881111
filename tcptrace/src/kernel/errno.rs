//! Names of the errors a TCP socket can hand its application
//! (`sk_err`, as `sock:inet_sk_error_report` sees it, and what socket
//! calls return): the one errno table of the crate. The numbers are
//! the kernel's ABI for this architecture, taken from libc; the names are
//! the ones applications log (`ECONNRESET`, not "Connection reset").

/// `ECONNRESET`, `ETIMEDOUT`, ... for a positive errno; `None` for one
/// this table does not list.
pub fn name(errno: i32) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(n, _)| *n == errno)
        .map(|(_, name)| *name)
}

/// `ECONNRESET`, ... as `name` gives it, or `ERRNO_<n>` for a number
/// without a name: the label of socket errors in summaries and `top`.
pub fn label(errno: i32) -> String {
    match name(errno) {
        Some(name) => name.to_string(),
        None => format!("ERRNO_{errno}"),
    }
}

/// Errors TCP sets on a socket (tcp_reset, tcp_write_err, ICMP errors via
/// tcp_v4_err/ip_icmp_error), plus those socket calls return to TCP
/// clients and servers (what `stress` counts failures under).
const NAMES: &[(i32, &str)] = &[
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::ECONNABORTED, "ECONNABORTED"),
    (libc::EPIPE, "EPIPE"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::EHOSTDOWN, "EHOSTDOWN"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::ENETRESET, "ENETRESET"),
    (libc::EMSGSIZE, "EMSGSIZE"),
    (libc::ENOPROTOOPT, "ENOPROTOOPT"),
    (libc::EPROTO, "EPROTO"),
    (libc::EACCES, "EACCES"),
    (libc::EPERM, "EPERM"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::ENONET, "ENONET"),
    (libc::EREMOTEIO, "EREMOTEIO"),
    (libc::EKEYREJECTED, "EKEYREJECTED"),
    (libc::EINVAL, "EINVAL"),
    (libc::EIO, "EIO"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::ESHUTDOWN, "ESHUTDOWN"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENFILE, "ENFILE"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::EINTR, "EINTR"),
    (libc::EALREADY, "EALREADY"),
    (libc::EISCONN, "EISCONN"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_applications_log() {
        assert_eq!(name(104), Some("ECONNRESET"), "x86-64 and arm64 number");
        assert_eq!(name(libc::ETIMEDOUT), Some("ETIMEDOUT"));
        assert_eq!(name(libc::ECONNREFUSED), Some("ECONNREFUSED"));
        assert_eq!(name(0), None);
        assert_eq!(name(9999), None);
    }

    #[test]
    fn table_has_no_duplicates() {
        for (i, (number, name)) in NAMES.iter().enumerate() {
            assert!(
                NAMES[i + 1..].iter().all(|(n, m)| n != number && m != name),
                "{name} listed twice"
            );
        }
    }
}
