//! What is read from the host rather than traced: sockets through netlink
//! sock_diag and their owning processes from /proc, kernel counters (TCP,
//! ICMP), sysctls, sockstat, conntrack, host-wide TCP limits, cgroups,
//! Kubernetes pods, interfaces and their TC objects (rtnetlink), and
//! network namespaces (the one `--netns` resolver). Below the pipeline:
//! nothing here imports a command, the tracer or the CLI.

pub mod cgroups;
pub mod conntrack;
pub mod counters;
pub mod global;
pub mod icmp;
pub mod netns;
pub mod owners;
pub mod pods;
pub mod preexisting;
pub mod reading;
pub mod rtnetlink;
pub mod sock_diag;
pub mod sockstat;
pub mod sysctl;
