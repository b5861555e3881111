//! The workloads `tune` has recommendations for, and the load balancers
//! it writes configuration for.

use crate::cli::{LbArg, ProfileArg};

/// A workload with its own recommended sysctl values (see `SETTINGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TuneProfile {
    /// General-purpose host: the kernel defaults that cause incidents fixed.
    Default,
    /// A server behind a load balancer: deep accept queues, short keepalive.
    LbBackend,
    /// Many short outbound connections: wide port range, TIME_WAIT reuse.
    HighChurnClient,
    /// The load balancer or proxy itself: both of the above, bigger buffers.
    Proxy,
}

impl TuneProfile {
    /// Every profile, in the order `Setting::recommended` lists values.
    pub const ALL: [TuneProfile; 4] = [
        TuneProfile::Default,
        TuneProfile::LbBackend,
        TuneProfile::HighChurnClient,
        TuneProfile::Proxy,
    ];

    /// The name `--profile` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            TuneProfile::Default => "default",
            TuneProfile::LbBackend => "lb-backend",
            TuneProfile::HighChurnClient => "high-churn-client",
            TuneProfile::Proxy => "proxy",
        }
    }
}

impl From<ProfileArg> for TuneProfile {
    fn from(arg: ProfileArg) -> TuneProfile {
        match arg {
            ProfileArg::Default => TuneProfile::Default,
            ProfileArg::LbBackend => TuneProfile::LbBackend,
            ProfileArg::HighChurnClient => TuneProfile::HighChurnClient,
            ProfileArg::Proxy => TuneProfile::Proxy,
        }
    }
}

/// A load balancer `tune --lb` writes a configuration snippet for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancer {
    /// HAProxy.
    Haproxy,
    /// nginx.
    Nginx,
}

impl From<LbArg> for LoadBalancer {
    fn from(arg: LbArg) -> LoadBalancer {
        match arg {
            LbArg::Haproxy => LoadBalancer::Haproxy,
            LbArg::Nginx => LoadBalancer::Nginx,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::*;

    #[test]
    fn names_are_the_flag_values() {
        for arg in ProfileArg::value_variants() {
            let name = arg.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(TuneProfile::from(*arg).name(), name);
        }
        assert_eq!(ProfileArg::value_variants().len(), TuneProfile::ALL.len());
    }
}
