//! Socket options the tests set or read by hand because std has no call
//! for them (TCP_USER_TIMEOUT, TCP_MAXSEG, TCP_TIMESTAMP, SO_SNDBUF,
//! SO_LINGER). Each call panics with the OS error if the kernel refuses.

use std::os::fd::AsRawFd;

/// `setsockopt(fd, level, name, &value)` for an option of type `T`
/// (`int`, `struct linger`).
fn set<T>(socket: &impl AsRawFd, level: i32, name: i32, value: &T) {
    // SAFETY: a valid fd and a pointer to a `T` of its own size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}): {}",
        std::io::Error::last_os_error()
    );
}

/// `setsockopt(fd, level, name, &value)` for an `int` option.
pub fn set_int(socket: &impl AsRawFd, level: i32, name: i32, value: i32) {
    set(socket, level, name, &value);
}

/// `getsockopt(fd, level, name)` for an `int` option.
pub fn get_int(socket: &impl AsRawFd, level: i32, name: i32) -> i32 {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and out-pointers of the right sizes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
    value
}

/// SO_LINGER {1, 0}: the next close sends an RST instead of a FIN.
pub fn set_linger_zero(socket: &impl AsRawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set(socket, libc::SOL_SOCKET, libc::SO_LINGER, &linger);
}
