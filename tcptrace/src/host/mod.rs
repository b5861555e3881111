//! Host readers: what the kernel says about a network namespace or the
//! whole host, read from /proc and /proc/sys. Plain data, no commands.

pub mod conntrack;
pub mod global;
pub mod icmp;
