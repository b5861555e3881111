//! What is read from the host rather than traced: sockets through netlink
//! sock_diag and their owning processes from /proc, kernel counters (TCP,
//! ICMP), sysctls, sockstat, conntrack, host-wide TCP limits, cgroups,
//! Kubernetes pods (named from cgroup paths and the kubelet's log layout),
//! interfaces and their TC objects (rtnetlink), a survey of every
//! namespace's counters and conntrack, and
//! network namespaces (the one `--netns` resolver). Below the pipeline:
//! nothing here imports a command, the tracer or the CLI.

pub mod cgroups;
pub mod conntrack;
pub mod counters;
pub mod global;
pub mod icmp;
pub mod k8s;
pub mod netns;
pub mod owners;
pub mod pods;
pub mod preexisting;
pub mod reading;
pub mod rtnetlink;
pub mod sock_diag;
pub mod sockstat;
pub mod survey;
pub mod sysctl;
