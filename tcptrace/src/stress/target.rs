//! The explicit target of a client mode: resolved and checked for a route
//! before any load starts, so a dead name is one clear error instead of a
//! report full of failures. Its syntax is checked earlier, by the command
//! line parser (`cli::parse_target`), as a usage error.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
};

use crate::{cli::TargetSpec, stress::classify};

/// Why a stress target cannot be used; each names the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The host name does not resolve.
    #[error("'{target}': cannot resolve '{host}': {source}")]
    Dns {
        /// The target as given.
        target: String,
        /// The host part.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The host name resolves to nothing.
    #[error("'{target}': '{host}' resolves to no address")]
    NoAddress {
        /// The target as given.
        target: String,
        /// The host part.
        host: String,
    },
    /// No route to the address.
    #[error("{addr} is unreachable from here ({class}): check the address and the routes")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
        /// How connecting failed (ENETUNREACH, EHOSTUNREACH, ...).
        class: classify::Class,
    },
}

/// A resolved target: what the user wrote and the address used.
#[derive(Debug, Clone)]
pub struct Target {
    /// As given.
    pub text: String,
    /// The host part.
    pub host: String,
    /// The address it resolved to (the first one).
    pub addr: SocketAddr,
}

/// Resolves (first address) and checks that a route exists.
pub async fn resolve(spec: &TargetSpec) -> Result<Target, TargetError> {
    let TargetSpec { text, host, port } = spec;
    let port = *port;
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| TargetError::Dns {
                target: text.clone(),
                host: host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| TargetError::NoAddress {
                target: text.clone(),
                host: host.clone(),
            })?,
    };
    check_route(addr)?;
    Ok(Target {
        text: text.clone(),
        host: host.clone(),
        addr,
    })
}

/// Asks the kernel for a route without sending anything: connecting a UDP
/// socket only looks the route up.
fn check_route(addr: SocketAddr) -> Result<(), TargetError> {
    let any: IpAddr = if addr.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let unreachable = |err: io::Error| TargetError::Unreachable {
        addr,
        class: classify::io_error(&err),
    };
    let probe = UdpSocket::bind((any, 0)).map_err(unreachable)?;
    probe.connect(addr).map_err(unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stress_target_resolves_without_the_network() {
        let spec = |text| crate::cli::parse_target(text).unwrap();
        assert_eq!(
            resolve(&spec("127.0.0.1:9")).await.unwrap().addr,
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(
            resolve(&spec("localhost:9"))
                .await
                .unwrap()
                .addr
                .ip()
                .is_loopback()
        );
        // A failing lookup would ask the host's resolver: the root tests
        // check that inside an isolated namespace instead.
    }
}
