//! Struct member offsets from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`). Rust eBPF has no CO-RE relocations, so the
//! programs read `struct sock`/`tcp_sock` members at offsets found here.

use btf_rs::{Btf, Type};
use tcptrace_common::{ABSENT_OFFSET, SockLayout, TaskLayout};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Offsets the programs need; members this kernel lacks stay absent
/// (the matching figures are then reported as unknown).
pub fn layouts() -> (SockLayout, TaskLayout, Vec<String>) {
    let mut layout = SockLayout::default();
    let mut task = TaskLayout::default();
    let mut missing = Vec::new();
    let btf = match Btf::from_file(VMLINUX) {
        Ok(btf) => btf,
        Err(err) => {
            missing.push(format!(
                "kernel BTF ({VMLINUX}: {err}): no idle times, netns or accept() attribution"
            ));
            return (layout, task, missing);
        }
    };
    let mut find = |strukt: &str, path: &[&str]| -> u16 {
        match member_offset(&btf, strukt, path) {
            Some(offset) if offset < ABSENT_OFFSET as u32 => offset as u16,
            _ => {
                missing.push(format!("struct {strukt}.{}", path.join(".")));
                ABSENT_OFFSET
            }
        }
    };
    layout.skc_state = find("sock_common", &["skc_state"]);
    layout.skc_net = find("sock_common", &["skc_net"]);
    layout.net_inum = find("net", &["ns", "inum"]);
    layout.lsndtime = find("tcp_sock", &["lsndtime"]);
    layout.rcv_tstamp = find("tcp_sock", &["rcv_tstamp"]);
    layout.lrcvtime = find("inet_connection_sock", &["icsk_ack", "lrcvtime"]);
    task.task_files = find("task_struct", &["files"]);
    task.files_fdt = find("files_struct", &["fdt"]);
    task.fdt_fd = find("fdtable", &["fd"]);
    task.file_private_data = find("file", &["private_data"]);
    task.socket_sk = find("socket", &["sk"]);
    (layout, task, missing)
}

/// Byte offset of `path` (nested member names) inside `struct strukt`,
/// looking through anonymous structs and unions on the way.
pub fn member_offset(btf: &Btf, strukt: &str, path: &[&str]) -> Option<u32> {
    let root = btf
        .resolve_types_by_name(strukt)
        .ok()?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))?;
    let mut current = root;
    let mut bits = 0;
    for name in path {
        let (offset, member_type) = find_member(btf, &current, name)?;
        bits += offset;
        current = member_type;
    }
    (bits % 8 == 0).then_some(bits / 8)
}

/// (bit offset, type) of member `name`, searching anonymous members too.
fn find_member(btf: &Btf, strukt: &Type, name: &str) -> Option<(u32, Type)> {
    let members = match strukt {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return None,
    };
    for member in members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_type = resolve_alias(btf, btf.resolve_chained_type(member).ok()?)?;
        if member_name == name {
            return Some((member.bit_offset(), member_type));
        }
        if member_name.is_empty()
            && let Some((inner, found)) = find_member(btf, &member_type, name)
        {
            return Some((member.bit_offset() + inner, found));
        }
    }
    None
}

/// Follows typedefs and qualifiers down to the underlying type.
fn resolve_alias(btf: &Btf, mut t: Type) -> Option<Type> {
    loop {
        t = match &t {
            Type::Typedef(x) => btf.resolve_chained_type(x).ok()?,
            Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => {
                btf.resolve_chained_type(x).ok()?
            }
            Type::TypeTag(x) => btf.resolve_chained_type(x).ok()?,
            _ => return Some(t),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel when it has BTF (CI does).
    #[test]
    fn finds_nested_members_in_vmlinux() {
        if !std::path::Path::new(VMLINUX).exists() {
            return;
        }
        let (layout, task, missing) = layouts();
        assert!(task.task_files > 0 && task.socket_sk > 0);
        assert!(missing.is_empty(), "missing: {missing:?}");
        // sock_common starts with addresses and ports; skc_state is never first.
        assert!(layout.skc_state > 0 && layout.skc_state < 64);
        // tcp_sock embeds inet_connection_sock, which embeds sock.
        assert!(layout.lsndtime > layout.lrcvtime || layout.lsndtime > 512);
    }
}
