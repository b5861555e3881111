//! The explicit target of a client mode: parsed, resolved and checked for a
//! route before any load starts, so a typo or a dead name is one clear
//! error instead of a report full of failures.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
};

use crate::stress::classify;

/// Why a stress target cannot be used; each names the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not `HOST:PORT`.
    #[error(
        "'{0}' is not a target: give HOST:PORT, e.g. 127.0.0.1:8080, [::1]:80 or lb.internal:443"
    )]
    Syntax(String),
    /// Port 0.
    #[error("'{0}': port 0 cannot be connected to; give the port the server listens on")]
    PortZero(String),
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

/// Splits `HOST:PORT` (IPv6 literals in brackets) and checks the port.
pub fn split(text: &str) -> Result<(String, u16), TargetError> {
    let syntax = || TargetError::Syntax(text.to_string());
    let (host, port) = text.rsplit_once(':').ok_or_else(syntax)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .filter(|h| h.parse::<Ipv6Addr>().is_ok())
            .ok_or_else(syntax)?,
        // An unbracketed IPv6 literal would make the port ambiguous.
        None if host.contains(':') || host.is_empty() => return Err(syntax()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| syntax())?;
    if port == 0 {
        return Err(TargetError::PortZero(text.to_string()));
    }
    Ok((host.to_string(), port))
}

/// Parses, resolves (first address) and checks that a route exists.
pub async fn resolve(text: &str) -> Result<Target, TargetError> {
    let (host, port) = split(text)?;
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| TargetError::Dns {
                target: text.to_string(),
                host: host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| TargetError::NoAddress {
                target: text.to_string(),
                host: host.clone(),
            })?,
    };
    check_route(addr)?;
    Ok(Target {
        text: text.to_string(),
        host,
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

    #[test]
    fn stress_target_syntax() {
        assert_eq!(split("127.0.0.1:8080").unwrap(), ("127.0.0.1".into(), 8080));
        assert_eq!(split("[::1]:80").unwrap(), ("::1".into(), 80));
        assert_eq!(
            split("lb.internal:443").unwrap(),
            ("lb.internal".into(), 443)
        );
        assert!(matches!(
            split("127.0.0.1:0"),
            Err(TargetError::PortZero(_))
        ));
        for bad in [
            "127.0.0.1",
            "::1:80",
            ":80",
            "host:http",
            "host:70000",
            "[::1:80",
            "[nope]:80",
            "",
        ] {
            assert!(
                matches!(split(bad), Err(TargetError::Syntax(_))),
                "{bad} accepted"
            );
        }
    }

    #[tokio::test]
    async fn stress_target_resolves_without_the_network() {
        assert_eq!(
            resolve("127.0.0.1:9").await.unwrap().addr,
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(
            resolve("localhost:9")
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
