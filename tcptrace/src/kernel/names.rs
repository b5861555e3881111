//! The names this kernel gives to TCP states and reset reasons, read from
//! the symbol tables in the tracepoints' `print fmt` (`__print_symbolic`
//! of `sock:inet_sock_set_state`'s `newstate` and of
//! `tcp:tcp_send_reset`'s `reason`, include/trace/events/sock.h and
//! tcp.h), never from hard-coded numbers.

use std::{borrow::Cow, collections::BTreeMap};

/// State and reset-reason names, looked up without allocating (they are
/// printed for every event).
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// By state number: `ESTABLISHED`, `SYN_SENT`, ... (without `TCP_`);
    /// `STATE_<n>` for a number the kernel does not list.
    states: Vec<String>,
    /// `enum sk_rst_reason` value -> name (kernels >= 6.10).
    reasons: BTreeMap<u32, String>,
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
        Names { states, reasons }
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
    }
}
