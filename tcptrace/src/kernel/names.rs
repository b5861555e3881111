//! The names this kernel gives to TCP states, reset reasons and drop
//! reasons, read from the symbol tables in the tracepoints' `print fmt`
//! (`__print_symbolic` of `sock:inet_sock_set_state`'s `newstate`, of
//! `tcp:tcp_send_reset`'s `reason` and of `skb:kfree_skb`'s `reason`,
//! include/trace/events/sock.h, tcp.h and skb.h), never from hard-coded
//! numbers: `enum skb_drop_reason` in particular is renumbered between
//! kernels (QUEUE_PURGE is 91 on 6.12, 104 on 6.18).

use std::{borrow::Cow, collections::BTreeMap};

/// State, reset-reason and drop-reason names, looked up without
/// allocating (they are printed for every event). Serialised as they
/// are into record files (`trace --record`), so replay names what the
/// recording kernel named.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Names {
    /// By state number: `ESTABLISHED`, `SYN_SENT`, ... (without `TCP_`);
    /// `STATE_<n>` for a number the kernel does not list.
    states: Vec<String>,
    /// `enum sk_rst_reason` value -> name (kernels >= 6.10).
    reasons: BTreeMap<u32, String>,
    /// `enum skb_drop_reason` value -> name (`NETFILTER_DROP`, ...;
    /// kernels >= 5.17).
    drop_reasons: BTreeMap<u32, String>,
}

impl Names {
    /// From the format files' tables: state number -> `TCP_ESTABLISHED`
    /// etc., reason number -> `TCP_ABORT_ON_CLOSE` etc.
    pub fn new(states: BTreeMap<u32, String>, reasons: BTreeMap<u32, String>) -> Names {
        let states = (0..=u8::MAX)
            .map(|n| match states.get(&u32::from(n)) {
                Some(name) => name.strip_prefix("TCP_").unwrap_or(name).to_string(),
                None => format!("STATE_{n}"),
            })
            .collect();
        Names {
            states,
            reasons,
            drop_reasons: BTreeMap::new(),
        }
    }

    /// The same names plus this kernel's drop reasons, from
    /// `skb:kfree_skb`'s table: reason number -> `NETFILTER_DROP` etc.
    pub fn with_drop_reasons(mut self, drop_reasons: BTreeMap<u32, String>) -> Names {
        self.drop_reasons = drop_reasons;
        self
    }

    /// `ESTABLISHED`, `SYN_SENT`, ... for a state number.
    pub fn state(&self, state: u8) -> &str {
        &self.states[usize::from(state)]
    }

    /// `TCP_ABORT_ON_CLOSE`, `NO_SOCKET`, ... as this kernel names them;
    /// `REASON_<n>` for a number it does not list.
    pub fn reason(&self, reason: u32) -> Cow<'_, str> {
        match self.reasons.get(&reason) {
            Some(name) => name.as_str().into(),
            None => format!("REASON_{reason}").into(),
        }
    }

    /// `NETFILTER_DROP`, `NO_SOCKET`, ... as this kernel names its
    /// `enum skb_drop_reason`; `DROP_REASON_<n>` for a number it does not
    /// list (a subsystem's reason, or a kernel without reasons).
    pub fn drop_reason(&self, reason: u32) -> Cow<'_, str> {
        match self.drop_reasons.get(&reason) {
            Some(name) => name.as_str().into(),
            None => format!("DROP_REASON_{reason}").into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_names() {
        let names = Names::new(
            BTreeMap::from([(1, "TCP_ESTABLISHED".into())]),
            BTreeMap::from([(11, "TCP_ABORT_ON_CLOSE".into())]),
        );
        assert_eq!(names.state(1), "ESTABLISHED");
        assert_eq!(names.state(200), "STATE_200");
        assert_eq!(names.reason(11), "TCP_ABORT_ON_CLOSE");
        assert_eq!(names.reason(99), "REASON_99");
        let names = names.with_drop_reasons(BTreeMap::from([(6, "NETFILTER_DROP".into())]));
        assert_eq!(names.drop_reason(6), "NETFILTER_DROP");
        assert_eq!(names.drop_reason(7), "DROP_REASON_7");
        assert_eq!(names.reason(11), "TCP_ABORT_ON_CLOSE");
    }
}
