//! Kernel side of tcptrace: one module per hook, maps in `maps`.
//!
//! Field offsets of every tracepoint and struct member come from the
//! running kernel (the `CONFIG` map, written by userspace before attach),
//! so one object works across kernel versions without CO-RE.
#![no_std]
#![no_main]

mod accept;
mod drop;
mod emit;
mod error;
mod maps;
mod opens;
mod owner;
mod read;
mod related;
mod reset;
mod retransmit;
mod reuse;
mod state;
mod tc;

/// Probe-read helpers need a GPL-compatible license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
