//! Per-program statistics the kernel keeps: how often a program was
//! skipped because it was already running on that CPU (a tracepoint that
//! fires in softirq while the same program runs in process context).
//! Those events never reach the ring buffer; they are reported so that
//! nothing is lost silently.

use std::os::fd::{AsFd, AsRawFd};

use aya_obj::generated::{bpf_cmd, bpf_prog_info};

/// The `info` member of `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `recursion_misses` of the program behind `fd` (kernels >= 5.12).
pub fn recursion_misses(fd: impl AsFd) -> Option<u64> {
    // SAFETY: bpf_prog_info is plain data; zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: (&mut info as *mut bpf_prog_info) as u64,
    };
    // SAFETY: attr points at a live bpf_prog_info of the stated size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &mut attr as *mut InfoAttr,
            size_of::<InfoAttr>() as libc::c_long,
        )
    };
    (rc == 0).then_some(info.recursion_misses)
}
