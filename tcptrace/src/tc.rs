//! The TC programs' lifecycle: attach them to the interfaces of the
//! traced namespace (`--iface`, or every non-loopback interface with an
//! Ethernet header), and take away everything that was added when
//! tracing ends, whatever way it ends.
//!
//! Where the kernel has TCX (6.6+), each program hangs on a BPF link
//! that lives as long as our file descriptor: Ctrl-C, a crash or SIGKILL
//! detach it with the process, nothing outlives it. Older kernels (6.1)
//! get clsact filters, which stay until someone deletes them. Those are
//! tagged: the filter's handle is our pid, and a clsact qdisc we had to
//! add leaves a marker file under `/run/tcptrace`. On exit we delete our
//! filters and, if no filter remains on it, a qdisc we added; on the next
//! start we delete what a SIGKILLed run left (tcptrace filters whose pid
//! is gone, then its empty qdiscs). Nobody else's filter or qdisc is
//! ever touched.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
};
use tcptrace_common::tc_program;

use crate::{
    error::{Error, Result},
    host::{
        netns::{self, NetnsError},
        rtnetlink::{self, Hook, Link},
    },
    kernel::verifier,
    safe_file,
};

/// `TCPTRACE_TC_ATTACH=clsact` makes tcptrace attach clsact filters even
/// where TCX exists (how the fallback and its clean-up are tested on new
/// kernels).
pub const TC_ATTACH_ENV: &str = "TCPTRACE_TC_ATTACH";

/// Where the markers of the clsact qdiscs tcptrace added are kept (tmpfs:
/// qdiscs and markers both go at reboot).
pub const MARKER_DIR: &str = "/run/tcptrace";

/// Said (in `missing`) when the kernel has no TCX links.
pub const CLSACT_FALLBACK: &str = "TCX links (kernels before 6.6): the TC programs hang on clsact filters instead; they are removed on exit, and a run killed with SIGKILL leaves them until the next tcptrace start removes them";

/// Said when no interface of the traced namespace can carry the TC programs.
pub const NO_INTERFACE: &str = "TC programs: the traced namespace has no non-loopback interface with an Ethernet header (give one with --iface): received resets get origin unknown";

/// Which interfaces, in which namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcOptions {
    /// Interfaces to watch by name; empty: every non-loopback interface
    /// with an Ethernet header.
    pub interfaces: Vec<String>,
    /// The namespace whose interfaces they are (`None`: ours).
    pub netns: Option<PathBuf>,
    /// Packets are wanted for a capture (`--pcap`): with no interface to
    /// watch, `attach` then fails saying which `--iface` to pass instead
    /// of running without packets.
    pub capture: bool,
}

/// How the programs hang on the interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcMode {
    /// BPF links (kernels >= 6.6): gone with the process.
    Tcx,
    /// clsact filters, removed by us.
    Clsact,
}

impl TcMode {
    /// `tcx` or `clsact`.
    pub fn name(self) -> &'static str {
        match self {
            TcMode::Tcx => "tcx",
            TcMode::Clsact => "clsact",
        }
    }
}

/// The TC programs attached: what the summary reports, and what detach
/// takes away.
pub struct TcAttachment {
    /// The namespace, kept open: it can be entered again to detach even
    /// if its name or the process it was found through has gone.
    netns: Option<File>,
    /// Its inode.
    pub netns_inode: u32,
    /// How they are attached.
    pub mode: TcMode,
    /// Interfaces watched, by name.
    pub interfaces: Vec<String>,
    links: Vec<SchedClassifierLink>,
    /// clsact qdiscs we added (interface index): removed once empty.
    added_qdiscs: Vec<u32>,
}

/// What the attach left to say: interfaces skipped and the mode's limits.
pub type Notes = Vec<String>;

/// Loads the TC programs and attaches them to the interfaces `options`
/// names (first removing what a killed run left there). Interfaces that
/// cannot carry them are named in the notes; `Ok(None)` when no interface
/// could.
///
/// # Errors
/// An `--iface` that does not exist in the namespace (a usage error), or
/// a namespace that cannot be entered.
pub fn attach(ebpf: &mut Ebpf, options: &TcOptions) -> Result<(Option<TcAttachment>, Notes)> {
    let mut notes = Notes::new();
    for name in [tc_program::INGRESS, tc_program::EGRESS] {
        if let Err(err) = program(ebpf, name)?.load() {
            notes.push(format!(
                "TC program {name} ({}): no reset origin, no packet capture",
                verifier::verdict(&err)
            ));
            return Ok((None, notes));
        }
    }
    let netns = options
        .netns
        .as_deref()
        .map(|path| {
            File::open(path).map_err(|source| NetnsError::Enter {
                path: path.to_path_buf(),
                source,
            })
        })
        .transpose()?;
    let force_clsact = std::env::var_os(TC_ATTACH_ENV).is_some_and(|v| v == "clsact");
    let path = netns.as_ref().map(fd_path);
    let attached = netns::run_in(path.as_deref(), || {
        attach_here(ebpf, options, force_clsact, &mut notes)
    })?;
    Ok((
        attached.map(
            |(netns_inode, mode, interfaces, links, added_qdiscs)| TcAttachment {
                netns,
                netns_inode,
                mode,
                interfaces,
                links,
                added_qdiscs,
            },
        ),
        notes,
    ))
}

type Attached = (u32, TcMode, Vec<String>, Vec<SchedClassifierLink>, Vec<u32>);

/// `attach` inside the namespace.
fn attach_here(
    ebpf: &mut Ebpf,
    options: &TcOptions,
    force_clsact: bool,
    notes: &mut Notes,
) -> Result<Option<Attached>> {
    let netns_inode = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| Error::io("reading our network namespace", e))?
        .ino() as u32;
    let links = rtnetlink::links().map_err(|e| Error::Kernel(e.to_string()))?;
    remove_leftovers(&links, netns_inode);
    let chosen = choose(&links, &options.interfaces, notes)?;
    if chosen.is_empty() && options.interfaces.is_empty() && options.capture {
        return Err(Error::Usage(no_capture_interface(&links)));
    }
    if chosen.is_empty() {
        if options.interfaces.is_empty() {
            // Nothing to watch here (a loopback-only namespace) is no
            // limit of the kernel: the summary's `tc` is null, received
            // resets carry no origin.
            log::debug!("{NO_INTERFACE}");
        }
        return Ok(None);
    }
    let mut mode = if force_clsact {
        TcMode::Clsact
    } else {
        TcMode::Tcx
    };
    let mut attached = Vec::new();
    let mut interfaces = Vec::new();
    let mut added_qdiscs = Vec::new();
    for link in chosen {
        let mut hooked = Vec::new();
        for (hook, name) in [
            (TcAttachType::Ingress, tc_program::INGRESS),
            (TcAttachType::Egress, tc_program::EGRESS),
        ] {
            let prog = program(ebpf, name)?;
            let result = match mode {
                TcMode::Tcx => {
                    match prog.attach_with_options(
                        &link.name,
                        hook,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    ) {
                        // No TCX on this kernel: clsact from now on.
                        Err(err) if attached.is_empty() && hooked.is_empty() => {
                            log::debug!("TCX attach on {}: {err}", link.name);
                            mode = TcMode::Clsact;
                            notes.push(CLSACT_FALLBACK.to_string());
                            attach_clsact(prog, &link, hook, netns_inode, &mut added_qdiscs)
                        }
                        other => other,
                    }
                }
                TcMode::Clsact => attach_clsact(prog, &link, hook, netns_inode, &mut added_qdiscs),
            };
            match result.and_then(|id| prog.take_link(id)) {
                Ok(taken) => hooked.push(taken),
                Err(err) => {
                    notes.push(format!(
                        "TC programs on {} ({}): its packets give no reset origin",
                        link.name,
                        verifier::verdict(&err)
                    ));
                    hooked.clear();
                    break;
                }
            }
        }
        if !hooked.is_empty() {
            attached.extend(hooked);
            interfaces.push(link.name.clone());
        }
    }
    if attached.is_empty() {
        // Whatever was added for nothing goes now.
        remove_empty_qdiscs(&mut added_qdiscs, netns_inode);
        return Ok(None);
    }
    if force_clsact {
        notes.push(format!(
            "{TC_ATTACH_ENV}=clsact: TC programs on clsact filters although this kernel may have TCX"
        ));
    }
    Ok(Some((
        netns_inode,
        mode,
        interfaces,
        attached,
        added_qdiscs,
    )))
}

/// The interfaces to watch: those named (each must exist; one without
/// an Ethernet header is noted and skipped), or every non-loopback one
/// with an Ethernet header (others skipped quietly: tunnels carry no
/// Ethernet header for the programs to skip).
fn choose(links: &[Link], names: &[String], notes: &mut Notes) -> Result<Vec<Link>> {
    if names.is_empty() {
        return Ok(links
            .iter()
            .filter(|l| !l.loopback && l.has_ethernet_header())
            .cloned()
            .collect());
    }
    let mut chosen = Vec::new();
    for name in names {
        let Some(link) = links.iter().find(|l| &l.name == name) else {
            let known: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "--iface {name}: no such interface in the traced namespace (it has {})",
                known.join(", ")
            )));
        };
        if link.has_ethernet_header() {
            if !chosen.contains(link) {
                chosen.push(link.clone());
            }
        } else {
            notes.push(format!(
                "TC programs on {name} (link type {}, no Ethernet header): its packets give no reset origin",
                link.link_type
            ));
        }
    }
    Ok(chosen)
}

/// The error of `--pcap` in a namespace with no default interface to
/// watch, naming the `--iface` to pass (the loopback, say).
fn no_capture_interface(links: &[Link]) -> String {
    let can: Vec<&str> = links
        .iter()
        .filter(|l| l.has_ethernet_header())
        .map(|l| l.name.as_str())
        .collect();
    if can.is_empty() {
        let all: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        format!(
            "--pcap: no interface of the traced namespace carries an Ethernet header (it has {}): no packets to capture",
            all.join(", ")
        )
    } else {
        format!(
            "--pcap: the traced namespace has no interface watched by default (only the loopback): pass --iface {} to capture there",
            can.join(",")
        )
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    let missing = || Error::Kernel(format!("program {name} missing from the eBPF object"));
    ebpf.program_mut(name)
        .ok_or_else(missing)?
        .try_into()
        .map_err(|_| missing())
}

/// A clsact filter tagged with our pid as its handle, on a clsact qdisc
/// added (and marked as ours) if the interface has none.
fn attach_clsact(
    prog: &mut SchedClassifier,
    link: &Link,
    hook: TcAttachType,
    netns_inode: u32,
    added_qdiscs: &mut Vec<u32>,
) -> Result<tc::SchedClassifierLinkId, ProgramError> {
    if !added_qdiscs.contains(&link.index) && !rtnetlink::has_clsact(link.index).unwrap_or(true) {
        // The marker first: a kill between the two leaves a marker for
        // nothing (harmless), never a qdisc nobody knows we added.
        if let Err(err) = write_marker(netns_inode, link.index) {
            log::warn!("cannot mark the clsact qdisc of {}: {err}", link.name);
        }
        match tc::qdisc_add_clsact(&link.name) {
            Ok(()) => added_qdiscs.push(link.index),
            Err(tc::TcError::AlreadyAttached) => remove_marker(netns_inode, link.index),
            Err(err) => {
                remove_marker(netns_inode, link.index);
                return Err(ProgramError::from(err));
            }
        }
    }
    prog.attach_with_options(
        &link.name,
        hook,
        TcAttachOptions::Netlink(NlOptions {
            handle: TcHandle::from(std::process::id()),
            ..NlOptions::default()
        }),
    )
}

impl TcAttachment {
    /// Detaches every program and deletes the clsact qdiscs we added once
    /// no filter is left on them. Also done on drop.
    pub fn detach(&mut self) {
        if self.links.is_empty() && self.added_qdiscs.is_empty() {
            return;
        }
        let links = std::mem::take(&mut self.links);
        let mut added = std::mem::take(&mut self.added_qdiscs);
        let inode = self.netns_inode;
        let path = self.netns.as_ref().map(fd_path);
        let done = netns::run_in(path.as_deref(), move || {
            // A link detaches as it drops: TCX closes its fd, clsact
            // deletes its filter through a netlink socket of the
            // namespace this thread is in.
            drop(links);
            remove_empty_qdiscs(&mut added, inode);
            Ok::<(), NetnsError>(())
        });
        if let Err(err) = done {
            log::warn!("detaching the TC programs: {err}");
        }
    }
}

impl Drop for TcAttachment {
    fn drop(&mut self) {
        self.detach();
    }
}

/// /proc/self/fd/N of an open namespace file: a path that enters it.
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// What a killed run left in this namespace: clsact filters of our
/// programs whose handle (the pid that added them) is no live tcptrace,
/// then the qdiscs a marker says tcptrace added, once empty.
fn remove_leftovers(links: &[Link], netns_inode: u32) {
    for link in links {
        for hook in Hook::BOTH {
            let Ok(filters) = rtnetlink::filters(link.index, hook) else {
                continue;
            };
            for filter in filters {
                let ours = filter
                    .bpf_name
                    .as_deref()
                    .is_some_and(|n| n == tc_program::INGRESS || n == tc_program::EGRESS);
                if ours && !is_live_tcptrace(filter.handle) {
                    log::debug!(
                        "removing a TC filter a killed tcptrace (pid {}) left on {}",
                        filter.handle,
                        link.name
                    );
                    if let Err(err) = rtnetlink::delete_filter(link.index, &filter) {
                        log::warn!(
                            "cannot remove a stale tcptrace filter on {}: {err}",
                            link.name
                        );
                    }
                }
            }
        }
        if marker_exists(netns_inode, link.index) {
            remove_empty_qdiscs(&mut vec![link.index], netns_inode);
        }
    }
}

fn is_live_tcptrace(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "tcptrace")
}

/// Deletes the clsact qdiscs of `indices` (ours) that no filter uses any
/// more, with their markers. One still in use (another tcptrace, or a
/// filter someone added since) stays, marker and all: the last one out
/// removes it.
fn remove_empty_qdiscs(indices: &mut Vec<u32>, netns_inode: u32) {
    for index in indices.drain(..) {
        let in_use = Hook::BOTH.iter().any(|hook| {
            rtnetlink::filters(index, *hook).map_or(true, |filters| !filters.is_empty())
        });
        if in_use {
            continue;
        }
        match rtnetlink::has_clsact(index) {
            Ok(true) => {
                if let Err(err) = rtnetlink::delete_clsact(index) {
                    log::warn!(
                        "cannot remove the clsact qdisc tcptrace added (ifindex {index}): {err}"
                    );
                    continue;
                }
            }
            Ok(false) => {}
            Err(_) => continue,
        }
        remove_marker(netns_inode, index);
    }
}

fn marker_path(netns_inode: u32, index: u32) -> PathBuf {
    Path::new(MARKER_DIR).join(format!("clsact-{netns_inode}-{index}"))
}

fn write_marker(netns_inode: u32, index: u32) -> Result<(), safe_file::SafeFileError> {
    safe_file::private_dir(Path::new(MARKER_DIR))?;
    safe_file::write_atomically(
        &marker_path(netns_inode, index),
        format!(
            "clsact qdisc added by tcptrace pid {}\n",
            std::process::id()
        )
        .as_bytes(),
    )
}

fn marker_exists(netns_inode: u32, index: u32) -> bool {
    matches!(
        safe_file::read_trusted(&marker_path(netns_inode, index)),
        Ok(Some(_))
    )
}

fn remove_marker(netns_inode: u32, index: u32) {
    if let Err(err) = safe_file::remove(&marker_path(netns_inode, index)) {
        log::warn!("{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, link_type: u16, loopback: bool) -> Link {
        Link {
            index,
            name: name.into(),
            link_type,
            loopback,
        }
    }

    #[test]
    fn default_interfaces_skip_loopback_and_tunnels() {
        let links = [
            link(1, "lo", 772, true),
            link(2, "eth0", 1, false),
            link(3, "wg0", 65534, false),
            link(4, "veth0", 1, false),
        ];
        let mut notes = Notes::new();
        let chosen = choose(&links, &[], &mut notes).unwrap();
        let names: Vec<_> = chosen.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["eth0", "veth0"]);
        assert!(notes.is_empty(), "skipped quietly: {notes:?}");
    }

    #[test]
    fn pcap_with_only_the_loopback_says_to_pass_iface_lo() {
        let only_lo = [link(1, "lo", 772, true)];
        let err = no_capture_interface(&only_lo);
        assert!(err.contains("pass --iface lo"), "{err}");
        let tunnels = [link(3, "wg0", 65534, false)];
        let err = no_capture_interface(&tunnels);
        assert!(
            err.contains("it has wg0") && !err.contains("--iface"),
            "{err}"
        );
    }

    #[test]
    fn named_interfaces_must_exist_and_carry_ethernet() {
        let links = [link(1, "lo", 772, true), link(3, "wg0", 65534, false)];
        let mut notes = Notes::new();
        let chosen = choose(&links, &["lo".into(), "wg0".into()], &mut notes).unwrap();
        assert_eq!(chosen.len(), 1, "lo when asked for");
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("wg0") && notes[0].contains("no Ethernet header"));
        let err = choose(&links, &["eth9".into()], &mut notes)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--iface eth9: no such interface"), "{err}");
        assert!(err.contains("lo, wg0"), "{err}");
    }
}
