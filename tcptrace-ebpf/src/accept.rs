//! `syscalls:sys_exit_accept4` / `sys_exit_accept`: the accepting task
//! becomes the owner of the new connection (until then it was the
//! listener's). Syscall tracepoints run in process context on every
//! kernel, where fexit/kprobes may be unavailable (no CONFIG_KPROBES,
//! lockdown), so the socket is found by walking the task's fd table.

use aya_ebpf::{
    helpers::generated::bpf_get_current_task, macros::tracepoint, programs::TracePointContext,
};
use tcptrace_common::tracepoint as tp;

use crate::{owner, read};

/// File descriptors beyond this are not looked up (a sanity bound).
const MAX_FD: i64 = 1 << 24;

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = handle(&ctx, tp::EXIT_ACCEPT4);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = handle(&ctx, tp::EXIT_ACCEPT);
    0
}

#[inline(always)]
fn handle(ctx: &TracePointContext, which: usize) -> Option<()> {
    let cfg = read::config()?;
    let layout = cfg.layouts.get(which)?;
    let fd = read::syscall_ret(ctx, layout)?;
    if !(0..MAX_FD).contains(&fd) {
        return None;
    }
    let task = unsafe { bpf_get_current_task() };
    // Each step yields 0 when unknown, and 0 stops the next one.
    let files: u64 = read::member_or(task, cfg.task.task_files, 0);
    let fdt: u64 = read::member_or(files, cfg.task.files_fdt, 0);
    let fds: u64 = read::member_or(fdt, cfg.task.fdt_fd, 0);
    if fds == 0 {
        return None;
    }
    let file: u64 = read::read_kernel_or(fds + fd as u64 * 8, 0);
    let socket: u64 = read::member_or(file, cfg.task.file_private_data, 0);
    let sk: u64 = read::member_or(socket, cfg.task.socket_sk, 0);
    if sk == 0 {
        return None;
    }
    owner::claim(&cfg.sock, sk);
    Some(())
}
