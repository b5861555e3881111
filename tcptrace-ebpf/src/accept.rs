//! `fexit/inet_csk_accept`: the accepting task becomes the owner of the
//! new connection (it was provisionally the listener's).

use aya_ebpf::{macros::fexit, programs::FExitContext};

use crate::owner;

#[fexit(function = "inet_csk_accept")]
pub fn inet_csk_accept(ctx: FExitContext) -> u32 {
    let sk: u64 = match ctx.ret::<u64>() {
        Ok(sk) => sk,
        Err(_) => return 0,
    };
    if sk == 0 {
        return 0;
    }
    let mut info = owner::sock_info(sk).unwrap_or_default();
    info.owner = owner::current();
    owner::remember(sk, &info);
    0
}

