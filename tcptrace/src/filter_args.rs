//! The flags every tracing command shares (`--pid`, `--comm`, `--port`,
//! `--netns`, `--events`, `--reuse-idle`, `--ring-kib`, `--pods-dir`)
//! turned into session options and the cgroup/pod resolver: the one place
//! `trace`, `top`, `diagnose` and `exporter` read them, so they mean the
//! same everywhere. Part of the command layer (it reads `cli` types).

use std::path::Path;

use tcptrace_common::kind_mask;

use crate::{
    cli::{EventClass, FilterArgs, IfaceArgs},
    host::{
        cgroups::Cgroups,
        k8s::{DEFAULT_PODS_DIR, PodLogs, PodsDirError},
        netns::{self, Netns, NetnsError},
    },
    session::TracerOptions,
    tc::TcOptions,
};

/// Tracer options for `filter` with a ring buffer of `ring_kib` KiB,
/// and the namespace `--netns` names (resolved and checked).
///
/// # Errors
/// A `--netns` value that is no network namespace (see `netns::resolve`).
pub fn session_options(
    filter: &FilterArgs,
    ring_kib: u32,
) -> Result<(TracerOptions, Option<Netns>), NetnsError> {
    let netns = filter.netns.as_deref().map(netns::resolve).transpose()?;
    let options = TracerOptions {
        pid: filter.pid,
        comm: filter.comm.clone(),
        port: filter.port,
        netns: netns.as_ref().map(|ns| ns.inode),
        kinds: kind_mask_of(&filter.events),
        ring_bytes: ring_kib * 1024,
        batch_wakeups: true,
        skip_opening: false,
        count_opens: false,
        reuse_idle: filter.reuse_idle,
        tc: None,
        flight_payload: None,
    };
    Ok((options, netns))
}

/// TC programs for `ifaces` in the traced namespace (`netns`, else
/// ours): none with `--no-tc`, nor when neither received resets (`kinds`)
/// nor the flight recorder need their packets.
pub fn tc_options(
    ifaces: &IfaceArgs,
    netns: Option<&Netns>,
    kinds: u32,
    recorder: bool,
) -> Option<TcOptions> {
    let wanted = recorder || kinds & kind_mask::RST != 0;
    (wanted && !ifaces.no_tc).then(|| TcOptions {
        interfaces: ifaces.iface.clone(),
        netns: netns.map(|ns| ns.path.clone()),
        capture: recorder,
    })
}

/// The cgroup resolver, naming pods from `--pods-dir`, or from the
/// kubelet's /var/log/pods when it exists. A default directory that
/// exists but cannot be listed is said once on stderr and left out.
///
/// # Errors
/// A `--pods-dir` that cannot be listed.
pub fn cgroups(filter: &FilterArgs) -> Result<Cgroups, PodsDirError> {
    let cgroups = Cgroups::default();
    if let Some(dir) = &filter.pods_dir {
        return Ok(cgroups.with_pods(PodLogs::open(dir)?));
    }
    if !Path::new(DEFAULT_PODS_DIR).exists() {
        return Ok(cgroups);
    }
    match PodLogs::open(DEFAULT_PODS_DIR) {
        Ok(logs) => Ok(cgroups.with_pods(logs)),
        Err(err) => {
            eprintln!("tcptrace: warning: {err}; pods are named by UID");
            Ok(cgroups)
        }
    }
}

/// Kinds traced without `--events`: everything but reuse after idle,
/// which `diagnose` adds (a send per idle gap: cheap, but only an
/// idle-timeout diagnosis needs it).
pub const DEFAULT_KINDS: u32 = kind_mask::ALL & !kind_mask::REUSE;

/// `tcptrace_common::kind_mask` bits for the `--events` classes;
/// `DEFAULT_KINDS` when none is given.
fn kind_mask_of(classes: &[EventClass]) -> u32 {
    if classes.is_empty() {
        return DEFAULT_KINDS;
    }
    classes.iter().fold(0, |mask, class| {
        mask | match class {
            EventClass::Rst => kind_mask::RST,
            EventClass::Retrans => kind_mask::RETRANSMIT,
            EventClass::Connect => kind_mask::CONNECT,
            EventClass::State => kind_mask::STATE,
            EventClass::Drop => kind_mask::DROP,
            EventClass::Error => kind_mask::ERROR,
            EventClass::Reuse => kind_mask::REUSE,
            EventClass::All => kind_mask::ALL,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_programs_only_where_their_packets_serve() {
        let ifaces = IfaceArgs {
            iface: vec!["veth0".into()],
            no_tc: false,
        };
        let tc = tc_options(&ifaces, None, DEFAULT_KINDS, false).unwrap();
        assert_eq!(tc.interfaces, ["veth0"]);
        assert_eq!(tc.netns, None);
        assert_eq!(tc_options(&ifaces, None, kind_mask::CONNECT, false), None);
        assert!(tc_options(&ifaces, None, kind_mask::CONNECT, true).is_some());
        let off = IfaceArgs {
            iface: Vec::new(),
            no_tc: true,
        };
        assert_eq!(tc_options(&off, None, DEFAULT_KINDS, false), None);
    }

    #[test]
    fn flags_become_options() {
        let filter = FilterArgs {
            pid: Some(42),
            port: Some(80),
            events: vec![EventClass::Rst, EventClass::Connect],
            ..FilterArgs::default()
        };
        let (options, netns) = session_options(&filter, 64).unwrap();
        assert_eq!(options.pid, Some(42));
        assert_eq!(options.port, Some(80));
        assert_eq!(options.kinds, kind_mask::RST | kind_mask::CONNECT);
        assert_eq!(options.ring_bytes, 64 * 1024);
        assert_eq!((options.netns, netns), (None, None));
        let default = FilterArgs::default();
        let (options, _) = session_options(&default, 64).unwrap();
        assert_eq!(options.kinds, DEFAULT_KINDS);
        assert_eq!(options.kinds & kind_mask::DROP, kind_mask::DROP);
        assert_eq!(options.kinds & kind_mask::REUSE, 0);
        let all = FilterArgs {
            events: vec![EventClass::Drop, EventClass::All],
            ..FilterArgs::default()
        };
        assert_eq!(session_options(&all, 64).unwrap().0.kinds, kind_mask::ALL);
        let zero = FilterArgs {
            netns: Some("0".into()),
            ..FilterArgs::default()
        };
        assert!(matches!(
            session_options(&zero, 64),
            Err(NetnsError::ZeroInode)
        ));
    }
}
