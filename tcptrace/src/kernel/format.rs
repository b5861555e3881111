//! Parser of tracepoint format files
//! (`/sys/kernel/tracing/events/<cat>/<name>/format`): field offsets for
//! the kernel programs, and the enum tables of `print fmt` to name states
//! and reset reasons exactly as this kernel numbers them.

use std::collections::BTreeMap;

use tcptrace_common::{RECORD_BYTES, TracepointLayout, field};

/// One `field:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name (`saddr`, `newstate`, ...).
    pub name: String,
    /// Byte offset in the record.
    pub offset: u16,
    /// Size in bytes.
    pub size: u16,
}

/// A parsed format file.
#[derive(Debug, Clone, Default)]
pub struct Format {
    /// Every field, in record order.
    pub fields: Vec<Field>,
    /// The `print fmt:` line (holds the enum symbol tables).
    pub print_fmt: String,
}

/// A format file that could not be parsed, with what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("malformed tracepoint format: {0}")]
pub struct FormatError(String);

impl Format {
    /// Parses the text of a tracefs `format` file.
    pub fn parse(text: &str) -> Result<Format, FormatError> {
        let mut format = Format::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("field:") {
                format.fields.push(parse_field(rest)?);
            } else if let Some(rest) = line.strip_prefix("print fmt:") {
                format.print_fmt = rest.trim().to_string();
            }
        }
        if format.fields.is_empty() {
            return Err(FormatError("no fields".into()));
        }
        Ok(format)
    }

    /// The field named `name`, if the record has it.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offsets of the fields the kernel programs read. The programs copy
    /// the record's first `RECORD_BYTES` at most; a field past that is
    /// left absent (degraded, never read out of bounds).
    pub fn layout(&self) -> TracepointLayout {
        let mut layout = TracepointLayout::default();
        for (slot, name) in field::NAMES.iter().enumerate() {
            if let Some(f) = self.field(name)
                && usize::from(f.offset) + usize::from(f.size) <= RECORD_BYTES
            {
                layout.offsets[slot] = f.offset;
            }
        }
        let end = self
            .fields
            .iter()
            .map(|f| usize::from(f.offset) + usize::from(f.size))
            .max()
            .unwrap_or(0);
        layout.record_bytes = end.min(RECORD_BYTES) as u16;
        // Since 6.10 tcp_send_reset carries sockaddr images (28 bytes)
        // instead of separate family/port/address fields.
        if self.field("saddr").is_some_and(|f| f.size >= 16) && self.field("family").is_none() {
            layout.sockaddr_style = 1;
        }
        layout
    }

    /// The `{ value, "NAME" }` table of `__print_symbolic(REC->field, ...)`.
    /// Entries whose value is a bare macro name (not a number) are skipped.
    pub fn symbols(&self, field_name: &str) -> BTreeMap<u32, String> {
        let mut table = BTreeMap::new();
        let needle = format!("__print_symbolic(REC->{field_name},");
        let Some(start) = self.print_fmt.find(&needle) else {
            return table;
        };
        let mut rest = &self.print_fmt[start + needle.len()..];
        loop {
            rest = rest.trim_start();
            let Some(body) = rest.strip_prefix('{') else {
                break;
            };
            let Some(end) = body.find('}') else { break };
            let entry = &body[..end];
            rest = body[end + 1..].trim_start().trim_start_matches(',');
            let Some((value, name)) = entry.split_once(',') else {
                continue;
            };
            let name = name.trim().trim_matches('"');
            if let Ok(value) = parse_int(value.trim()) {
                table.insert(value, name.to_string());
            }
        }
        table
    }
}

fn parse_int(text: &str) -> Result<u32, std::num::ParseIntError> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
}

/// `unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;`
fn parse_field(text: &str) -> Result<Field, FormatError> {
    let mut parts = text.split(';').map(str::trim);
    let decl = parts.next().unwrap_or_default();
    let name = decl
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()
        .map(|n| n.split('[').next().unwrap_or(n))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| FormatError(format!("no field name in '{decl}'")))?;
    let mut offset = None;
    let mut size = None;
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.parse().ok();
        }
    }
    match (offset, size) {
        (Some(offset), Some(size)) => Ok(Field {
            name: name.to_string(),
            offset,
            size,
        }),
        _ => Err(FormatError(format!(
            "field '{name}' without offset or size"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::ABSENT_OFFSET;

    use super::*;

    const SEND_RESET_6_18: &str = include_str!("../../tests/fixtures/tcp_send_reset-6.18.format");
    const SEND_RESET_6_1: &str = include_str!("../../tests/fixtures/tcp_send_reset-6.1.format");
    const SET_STATE_6_18: &str =
        include_str!("../../tests/fixtures/inet_sock_set_state-6.18.format");
    const RETRANSMIT_6_1: &str = include_str!("../../tests/fixtures/tcp_retransmit_skb-6.1.format");
    const RECEIVE_RESET_6_1: &str =
        include_str!("../../tests/fixtures/tcp_receive_reset-6.1.format");
    const SET_STATE_6_1: &str = include_str!("../../tests/fixtures/inet_sock_set_state-6.1.format");
    const SYNACK_6_1: &str = include_str!("../../tests/fixtures/tcp_retransmit_synack-6.1.format");
    const SEND_RESET_6_12: &str = include_str!("../../tests/fixtures/tcp_send_reset-6.12.format");
    const RETRANSMIT_6_12: &str =
        include_str!("../../tests/fixtures/tcp_retransmit_skb-6.12.format");
    const RETRANSMIT_6_18: &str =
        include_str!("../../tests/fixtures/tcp_retransmit_skb-6.18.format");
    const KFREE_SKB_6_18: &str = include_str!("../../tests/fixtures/kfree_skb-6.18.format");
    const KFREE_SKB_6_12: &str = include_str!("../../tests/fixtures/kfree_skb-6.12.format");
    const KFREE_SKB_6_1: &str = include_str!("../../tests/fixtures/kfree_skb-6.1.format");

    #[test]
    fn a_field_past_the_copied_bytes_is_absent() {
        let text = "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
                    \tfield:int newstate;\toffset:200;\tsize:4;\tsigned:1;\n";
        let layout = Format::parse(text).unwrap().layout();
        assert_eq!(layout.offsets[field::SKADDR], 8);
        assert_eq!(layout.offsets[field::NEWSTATE], ABSENT_OFFSET);
        assert_eq!(usize::from(layout.record_bytes), RECORD_BYTES);
    }

    #[test]
    fn send_reset_on_6_18_uses_sockaddr_and_has_reason() {
        let f = Format::parse(SEND_RESET_6_18).unwrap();
        let layout = f.layout();
        assert_eq!(layout.sockaddr_style, 1);
        assert_eq!(layout.offsets[field::SKADDR], 16);
        assert_eq!(layout.offsets[field::STATE], 24);
        assert_eq!(layout.offsets[field::REASON], 28);
        assert_eq!(layout.offsets[field::SADDR], 32);
        assert_eq!(layout.offsets[field::DADDR], 60);
        assert_eq!(usize::from(layout.record_bytes), 60 + 28);
        assert_eq!(layout.offsets[field::FAMILY], ABSENT_OFFSET);
        let reasons = f.symbols("reason");
        assert_eq!(reasons.get(&1).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(
            reasons.get(&11).map(String::as_str),
            Some("TCP_ABORT_ON_CLOSE")
        );
        assert_eq!(reasons.get(&14).map(String::as_str), Some("TCP_STATE"));
    }

    #[test]
    fn send_reset_before_6_10_has_separate_fields_and_no_reason() {
        let f = Format::parse(SEND_RESET_6_1).unwrap();
        let layout = f.layout();
        assert_eq!(layout.sockaddr_style, 0);
        assert_eq!(layout.offsets[field::REASON], ABSENT_OFFSET);
        assert_eq!(layout.offsets[field::SPORT], 28);
        assert_eq!(layout.offsets[field::FAMILY], 32);
        assert_eq!(layout.offsets[field::SADDR], 34);
        assert_eq!(layout.offsets[field::SADDR_V6], 42);
        assert!(f.symbols("reason").is_empty());
    }

    #[test]
    fn state_names_come_from_print_fmt() {
        let f = Format::parse(SET_STATE_6_18).unwrap();
        let states = f.symbols("newstate");
        assert_eq!(states.len(), 12);
        assert_eq!(states[&1], "TCP_ESTABLISHED");
        assert_eq!(states[&12], "TCP_NEW_SYN_RECV");
        let layout = f.layout();
        assert_eq!(layout.offsets[field::PROTOCOL], 30);
        assert_eq!(layout.offsets[field::DADDR_V6], 56);
    }

    #[test]
    fn retransmit_before_6_17_has_no_err() {
        let f = Format::parse(RETRANSMIT_6_1).unwrap();
        assert_eq!(f.layout().offsets[field::ERR], ABSENT_OFFSET);
        // Symbolic values that are macro names are skipped, not guessed.
        assert!(f.symbols("state").is_empty());
    }

    #[test]
    fn receive_reset_on_6_1_has_separate_fields() {
        let f = Format::parse(RECEIVE_RESET_6_1).unwrap();
        let layout = f.layout();
        assert_eq!(layout.sockaddr_style, 0);
        assert_eq!(layout.offsets[field::SKADDR], 8);
        assert_eq!(layout.offsets[field::SPORT], 16);
        assert_eq!(layout.offsets[field::DPORT], 18);
        assert_eq!(layout.offsets[field::FAMILY], 20);
        assert_eq!(layout.offsets[field::SADDR], 22);
        assert_eq!(layout.offsets[field::DADDR], 26);
        assert_eq!(layout.offsets[field::SADDR_V6], 30);
        assert_eq!(layout.offsets[field::DADDR_V6], 46);
        // No state field: the programs read it from the socket.
        assert_eq!(layout.offsets[field::STATE], ABSENT_OFFSET);
        assert_eq!(layout.offsets[field::REASON], ABSENT_OFFSET);
    }

    #[test]
    fn set_state_on_6_1_matches_6_18() {
        let old = Format::parse(SET_STATE_6_1).unwrap();
        let new = Format::parse(SET_STATE_6_18).unwrap();
        assert_eq!(old.layout(), new.layout());
        let layout = old.layout();
        assert_eq!(layout.offsets[field::OLDSTATE], 16);
        assert_eq!(layout.offsets[field::NEWSTATE], 20);
        assert_eq!(layout.offsets[field::FAMILY], 28);
        assert_eq!(layout.offsets[field::PROTOCOL], 30);
        assert_eq!(layout.offsets[field::SADDR], 32);
        assert_eq!(old.symbols("newstate"), new.symbols("newstate"));
        assert_eq!(old.symbols("newstate")[&7], "TCP_CLOSE");
    }

    #[test]
    fn retransmits_on_6_1() {
        let skb = Format::parse(RETRANSMIT_6_1).unwrap().layout();
        assert_eq!(skb.offsets[field::SKADDR], 16);
        assert_eq!(skb.offsets[field::STATE], 24);
        assert_eq!(skb.offsets[field::SPORT], 28);
        assert_eq!(skb.offsets[field::DADDR_V6], 58);
        let synack = Format::parse(SYNACK_6_1).unwrap().layout();
        assert_eq!(synack.offsets[field::SKADDR], 8);
        assert_eq!(synack.offsets[field::SPORT], 24);
        assert_eq!(synack.offsets[field::FAMILY], 28);
        assert_eq!(synack.offsets[field::STATE], ABSENT_OFFSET);
    }

    /// 6.10 to 6.16: the 6.18 send_reset layout, retransmits without `err`.
    #[test]
    fn on_6_12_send_reset_is_new_and_retransmit_has_no_err() {
        let send_reset = Format::parse(SEND_RESET_6_12).unwrap();
        assert_eq!(
            send_reset.layout(),
            Format::parse(SEND_RESET_6_18).unwrap().layout()
        );
        assert_eq!(send_reset.symbols("reason")[&1], "NO_SOCKET");
        let retransmit = Format::parse(RETRANSMIT_6_12).unwrap().layout();
        assert_eq!(retransmit.offsets[field::ERR], ABSENT_OFFSET);
        let mut with_err = Format::parse(RETRANSMIT_6_18).unwrap().layout();
        assert_eq!(with_err.offsets[field::ERR], 76);
        assert_eq!(with_err.record_bytes, 80);
        assert_eq!(retransmit.record_bytes, 74);
        with_err.offsets[field::ERR] = ABSENT_OFFSET;
        with_err.record_bytes = retransmit.record_bytes;
        assert_eq!(retransmit, with_err);
        assert_eq!(retransmit, Format::parse(RETRANSMIT_6_1).unwrap().layout());
    }

    #[test]
    fn kfree_skb_on_6_18_has_reason_names_and_rx_sk() {
        let f = Format::parse(KFREE_SKB_6_18).unwrap();
        let layout = f.layout();
        assert_eq!(layout.offsets[field::SKBADDR], 8);
        assert_eq!(layout.offsets[field::RX_SK], 24);
        assert_eq!(layout.offsets[field::PROTOCOL], 32);
        assert_eq!(layout.offsets[field::REASON], 36);
        assert_eq!(layout.record_bytes, 40);
        let reasons = f.symbols("reason");
        assert_eq!(reasons[&12], "NETFILTER_DROP");
        assert_eq!(reasons[&3], "NO_SOCKET");
        assert_eq!(reasons[&93], "PKT_TOO_BIG");
        assert!(reasons.len() > 120, "6.18 lists ~127 reasons");
        assert!(
            reasons
                .keys()
                .all(|r| *r < tcptrace_common::DROP_REASON_SLOTS - 1),
            "every reason has its own in-kernel counter"
        );
    }

    /// The enum is renumbered between kernels: names only ever come from
    /// the running kernel's own table.
    #[test]
    fn kfree_skb_on_6_1_and_6_12() {
        let old = Format::parse(KFREE_SKB_6_1).unwrap();
        let layout = old.layout();
        assert_eq!(layout.offsets[field::SKBADDR], 8);
        assert_eq!(layout.offsets[field::PROTOCOL], 24);
        assert_eq!(layout.offsets[field::REASON], 28);
        assert_eq!(
            layout.offsets[field::RX_SK],
            ABSENT_OFFSET,
            "rx_sk came in 6.11"
        );
        assert_eq!(old.symbols("reason")[&7], "NETFILTER_DROP");
        let mid = Format::parse(KFREE_SKB_6_12).unwrap();
        assert_eq!(
            mid.layout(),
            Format::parse(KFREE_SKB_6_18).unwrap().layout(),
            "6.12 has the 6.18 layout"
        );
        assert_eq!(mid.symbols("reason")[&11], "NETFILTER_DROP");
        assert_eq!(mid.symbols("reason")[&80], "PKT_TOO_BIG");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Format::parse("").is_err());
        assert!(Format::parse("field:int x;\toffset:zz;\tsize:4;").is_err());
    }
}
