//! When a finding happened: the first and the last event of the kinds its
//! cause rests on, from the processes it names in the role of the first
//! (most involved) one: the clients that got the RSTs, not the proxy that
//! closed their connections. When none of them had such events, from the
//! peers it names, else from the whole host. The report marks these
//! moments on its timeline.

use super::finding::{Cause, Finding, Moments};
use crate::aggregate::{
    Aggregate,
    timeline::{Moments as Seen, Series},
};

/// The kinds of event each cause rests on. A cause not listed (one
/// added later) rests on every kind.
fn series_of(cause: Cause) -> &'static [Series] {
    use Series::*;
    match cause {
        Cause::LbIdleTimeout | Cause::ServerKeepaliveTimeout | Cause::HalfOpenAfterPeerRestart => {
            &[RstReceived, RstSent, SocketErrors]
        }
        Cause::AcceptQueueOverflow => &[Retransmits, ConnectFailed, RstReceived, Drops],
        Cause::PortExhaustion | Cause::NothingListening => {
            &[ConnectFailed, RstReceived, SocketErrors]
        }
        Cause::CloseWithUnreadData | Cause::LingerZeroAbort => &[RstSent, RstReceived],
        Cause::ClientTimeout => &[RstReceived, SocketErrors],
        Cause::RetransmissionTimeout => &[Retransmits, SocketErrors, Drops],
        #[allow(unreachable_patterns, reason = "causes added later rest on every kind")]
        _ => &Series::ALL,
    }
}

/// The span of `series` over `seen`, `None` when none had such events.
fn union<'a>(seen: impl Iterator<Item = &'a Seen>, series: &[Series]) -> Option<(u64, u64)> {
    seen.filter_map(|m| m.span(series))
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
}

/// Sets each finding's moments from the aggregate's timeline.
pub fn mark(findings: &mut [Finding], agg: &Aggregate) {
    let timeline = &agg.timeline;
    for f in findings {
        let series = series_of(f.cause);
        let role = f.affected.first().map(|a| a.role);
        let by_process = union(
            f.affected
                .iter()
                .filter(|a| a.pid != 0 && Some(a.role) == role)
                .filter_map(|a| timeline.process(a.pid)),
            series,
        );
        let by_peer = || {
            union(
                f.affected
                    .iter()
                    .filter_map(|a| a.peer.as_ref())
                    .filter_map(|p| timeline.peer(p)),
                series,
            )
        };
        let span = by_process
            .or_else(by_peer)
            .or_else(|| timeline.total().span(series));
        f.moments = span.map(|(first, last)| Moments {
            first_s: timeline.seconds_at(first),
            last_s: timeline.seconds_at(last),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::testing::{ev, names},
        diagnosis::finding::{Affected, Confidence},
        event::EventKind as K,
    };

    fn affected(pid: u32) -> Affected {
        Affected {
            pid,
            comm: "app".into(),
            peer: Some("10.0.0.2:443".parse().unwrap()),
            events: 1,
            role: "client",
            cgroup_id: 0,
            cgroup: None,
        }
    }

    fn finding(cause: Cause, affected: Option<Affected>) -> Finding {
        let mut f = Finding::new(cause, Confidence::High, 1, "x".into());
        f.affected.extend(affected);
        f
    }

    #[test]
    fn moments_come_from_the_named_processes_and_the_cause_s_kinds() {
        let mut agg = Aggregate::new(names());
        agg.timeline.set_origin(1_000 * 1_000_000);
        // pid 7: RSTs received at 3.0 s and 4.5 s; a retransmit at 9 s.
        for (at, kind) in [
            (4_000, K::RstReceived),
            (5_500, K::RstReceived),
            (10_000, K::Retransmit),
        ] {
            agg.add(&ev(kind, at).owner(7, "app").state("ESTABLISHED").build());
        }
        // Another process's RST at 1 s counts only for the whole host.
        agg.add(
            &ev(K::RstReceived, 2_000)
                .owner(8, "other")
                .state("ESTABLISHED")
                .build(),
        );
        // The closer's own incidents (pid 8) are not the finding's.
        let mut idle = finding(Cause::LbIdleTimeout, Some(affected(7)));
        idle.affected.push(Affected {
            role: "closer",
            ..affected(8)
        });
        let mut findings = vec![
            idle,
            finding(Cause::RetransmissionTimeout, Some(affected(7))),
            // Named processes and peers without such events: the host's.
            finding(
                Cause::AcceptQueueOverflow,
                Some(Affected {
                    peer: None,
                    ..affected(9)
                }),
            ),
        ];
        mark(&mut findings, &agg);
        let moments = |first_s, last_s| Some(Moments { first_s, last_s });
        assert_eq!(findings[0].moments, moments(3.0, 4.5));
        assert_eq!(findings[1].moments, moments(9.0, 9.0));
        assert_eq!(findings[2].moments, moments(1.0, 9.0));
        // No event at all: no moment.
        let mut findings = vec![finding(Cause::PortExhaustion, None)];
        mark(&mut findings, &Aggregate::new(names()));
        assert_eq!(findings[0].moments, None);
    }
}
