//! Packet delay for tests, without `sch_netem` (this kernel has none).
//!
//! A `Delay` puts an iptables rule in a namespace's OUTPUT chain that sends
//! matching TCP packets to an NFQUEUE, and a thread that reads the queue
//! over netlink (nfnetlink_queue, spoken directly through libc) and gives
//! each packet its ACCEPT verdict `delay` after it was queued. Verdicts go
//! out in arrival order, so packets keep their order, as with netem.
//!
//! Which packets to delay decides what a test measures. A namespace's
//! OUTPUT chain sees the packets that namespace sends: delaying all TCP
//! output of the server side of a `NetnsPair` delays its SYN-ACKs, so a
//! client connect takes `delay` longer (one direction delayed, not both).
//! On a single namespace's loopback both sides share one OUTPUT chain: use
//! `Delay::matching` with, e.g., `["--tcp-flags", "SYN,ACK", "SYN,ACK"]`
//! to delay only SYN-ACKs.
//!
//! Bounds: the kernel queue holds at most `QUEUE_MAX_LEN` packets; beyond
//! that the kernel drops new packets (TCP retransmits them), as netem drops
//! beyond its limit. The delay is exact to the scheduling of one thread
//! (tens of microseconds), not to the nanosecond.
//!
//! Dropping the `Delay` removes the rule first, then releases every packet
//! still held, so nothing is lost and the namespace is as it was.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use tests::{NetnsPair, delay::Delay};
//! let pair = NetnsPair::new("lat");
//! let delay = Delay::new(&pair.b, Duration::from_millis(20)); // b's packets leave 20 ms late
//! // ... connect from a to b: about 20 ms ...
//! assert!(delay.packets() > 0);
//! drop(delay); // rule gone, back to normal
//! ```

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::Netns;

/// Packets the kernel keeps queued for us at most.
pub const QUEUE_MAX_LEN: u32 = 4096;

/// Queue numbers in use by this process (each `Delay` takes its own).
static NEXT_QUEUE: AtomicU16 = AtomicU16::new(4200);

/// Delays TCP packets a namespace sends, until dropped.
pub struct Delay<'a> {
    netns: &'a Netns,
    /// iptables match and target, as given to `-A OUTPUT` (and `-D` at the end).
    rule: Vec<String>,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl<'a> Delay<'a> {
    /// Delays every TCP packet (IPv4 and IPv6) that `netns` sends by `delay`.
    pub fn new(netns: &'a Netns, delay: Duration) -> Delay<'a> {
        Delay::matching(netns, delay, &[])
    }

    /// Delays the TCP packets `netns` sends that also match these iptables
    /// match arguments, e.g. `&["--sport", "8080"]` or
    /// `&["--tcp-flags", "SYN,ACK", "SYN,ACK"]`.
    pub fn matching(netns: &'a Netns, delay: Duration, matches: &[&str]) -> Delay<'a> {
        let number = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed);
        // The netlink socket must belong to the namespace whose packets it
        // queues: create it there; the descriptor then works from anywhere.
        let queue = netns
            .run(|| Queue::bind(number))
            .unwrap_or_else(|e| panic!("NFQUEUE {number}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, packets) = (Arc::clone(&stop), Arc::clone(&packets));
            std::thread::Builder::new()
                .name(format!("delay-{number}"))
                .spawn(move || queue.delay_until_stopped(delay, &stop, &packets))
                .expect("spawn delay thread")
        };
        let mut rule: Vec<String> = ["-p", "tcp"].iter().map(|s| s.to_string()).collect();
        rule.extend(matches.iter().map(|s| s.to_string()));
        rule.extend(
            ["-j", "NFQUEUE", "--queue-num", &number.to_string()]
                .iter()
                .map(|s| s.to_string()),
        );
        let delay = Delay {
            netns,
            rule,
            stop,
            packets,
            thread: Some(thread),
        };
        for tables in ["iptables", "ip6tables"] {
            delay
                .iptables(tables, "-A")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        delay
    }

    /// Packets delayed so far: a test can check the rule really matched.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    fn iptables(&self, tables: &str, action: &str) -> Result<(), String> {
        let mut cmd = self.netns.command(tables);
        cmd.args(["-w", action, "OUTPUT"]).args(&self.rule);
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {tables}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{tables} {action} OUTPUT {:?}: {}",
                self.rule,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

impl Drop for Delay<'_> {
    fn drop(&mut self) {
        // Rule first, so nothing new is queued; then release what is held.
        for tables in ["iptables", "ip6tables"] {
            if let Err(e) = self.iptables(tables, "-D") {
                eprintln!("delay: {e}");
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("delay: queue thread failed: {e}"),
                Err(_) => eprintln!("delay: queue thread panicked"),
            }
        }
    }
}

// nfnetlink_queue protocol (linux/netfilter/nfnetlink_queue.h).
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// One bound queue: a netlink socket speaking nfnetlink_queue.
struct Queue {
    fd: OwnedFd,
    number: u16,
}

impl Queue {
    fn bind(number: u16) -> io::Result<Queue> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let queue = Queue {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            number,
        };
        // SAFETY: a zeroed sockaddr_nl is "any port id, no groups".
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_nl of `len` bytes.
        if unsafe { libc::bind(raw, (&raw const addr).cast(), len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // A full socket buffer must not turn into recv errors: the kernel
        // queue length is the bound that matters.
        queue.setsockopt(libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1)?;
        queue.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20)?;

        queue.configure(&[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])])?;
        // Metadata only: we need the packet id, not its bytes.
        let mut params = 0u32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_META);
        queue.configure(&[(NFQA_CFG_PARAMS, &params)])?;
        queue.configure(&[(NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAX_LEN.to_be_bytes())])?;
        Ok(queue)
    }

    fn setsockopt(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        let len = size_of::<i32>() as libc::socklen_t;
        // SAFETY: `value` is a live i32 of `len` bytes.
        if unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                len,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends a config message and waits for the kernel's acknowledgement.
    fn configure(&self, attrs: &[(u16, &[u8])]) -> io::Result<()> {
        self.send(&message(
            NFQNL_MSG_CONFIG,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            self.number,
            attrs,
        ))?;
        let mut buf = vec![0u8; 8192];
        let len = self.recv(&mut buf, 0)?;
        for (msg_type, payload) in messages(&buf[..len]) {
            if msg_type == libc::NLMSG_ERROR as u16 {
                let errno = payload
                    .get(..4)
                    .map_or(-libc::EPROTO, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                return if errno == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-errno))
                };
            }
        }
        Err(io::Error::other("no acknowledgement from nfnetlink_queue"))
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: msg is a valid buffer; the kernel is the default destination.
        if unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8], flags: i32) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn accept(&self, packet_id: u32) -> io::Result<()> {
        let mut verdict = NF_ACCEPT.to_be_bytes().to_vec();
        verdict.extend_from_slice(&packet_id.to_be_bytes());
        self.send(&message(
            NFQNL_MSG_VERDICT,
            libc::NLM_F_REQUEST as u16,
            self.number,
            &[(NFQA_VERDICT_HDR, &verdict)],
        ))
    }

    /// Reads every packet waiting on the socket, without blocking.
    fn receive_all(&self, buf: &mut [u8], mut packet: impl FnMut(u32)) -> io::Result<()> {
        loop {
            let len = match self.recv(buf, libc::MSG_DONTWAIT) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for (msg_type, payload) in messages(&buf[..len]) {
                if msg_type == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) {
                    if let Some(id) = packet_id(payload) {
                        packet(id);
                    }
                } else if msg_type == libc::NLMSG_ERROR as u16 {
                    let errno = payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
            }
        }
    }

    /// The delay loop: queue arrivals with their release time, release
    /// the head when due, sleep in ppoll until the next arrival or release.
    fn delay_until_stopped(
        self,
        delay: Duration,
        stop: &AtomicBool,
        packets: &AtomicU64,
    ) -> io::Result<()> {
        let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let now = Instant::now();
            while let Some(&(due, id)) = held.front() {
                if due > now {
                    break;
                }
                self.accept(id)?;
                held.pop_front();
            }
            if stop.load(Ordering::Relaxed) {
                // The rule is gone: let through whatever is still here.
                self.receive_all(&mut buf, |id| held.push_back((now, id)))?;
                for (_, id) in held.drain(..) {
                    self.accept(id)?;
                }
                return Ok(());
            }
            // Wake at the next release, or now and then to see `stop`.
            let wait = held
                .front()
                .map_or(Duration::from_millis(20), |(due, _)| *due - now)
                .min(Duration::from_millis(20));
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: wait.as_nanos() as libc::c_long,
            };
            let mut poll = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, a valid timespec, no signal mask.
            let ready = unsafe { libc::ppoll(&mut poll, 1, &timeout, std::ptr::null()) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            } else if ready > 0 {
                self.receive_all(&mut buf, |id| {
                    held.push_back((Instant::now() + delay, id));
                    packets.fetch_add(1, Ordering::Relaxed);
                })?;
            }
        }
    }
}

/// An nfnetlink message to the queue subsystem.
fn message(msg_type: u16, flags: u16, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut msg = vec![0u8; NLMSG_HDRLEN];
    // nfgenmsg: family AF_UNSPEC, NFNETLINK_V0, queue number (big endian).
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    msg.extend_from_slice(&queue.to_be_bytes());
    for (attr_type, payload) in attrs {
        msg.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        msg.extend_from_slice(&attr_type.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize(msg.len().next_multiple_of(4), 0);
    }
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | msg_type).to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg
}

/// Splits a netlink datagram into (type, payload after nlmsghdr).
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg_type = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((msg_type, payload))
    })
}

/// The packet id from a queued packet's NFQA_PACKET_HDR attribute.
fn packet_id(payload: &[u8]) -> Option<u32> {
    let mut attrs = payload.get(NFGENMSG_LEN..)?;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes(attrs[0..2].try_into().unwrap()) as usize;
        // The top bits flag nested / byte-order attributes.
        let attr_type = u16::from_ne_bytes(attrs[2..4].try_into().unwrap()) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if attr_type == NFQA_PACKET_HDR && len >= 8 {
            return Some(u32::from_be_bytes(attrs[4..8].try_into().unwrap()));
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_messages_round_trip() {
        let msg = message(
            NFQNL_MSG_PACKET,
            0,
            7,
            &[(9, &[1, 2, 3]), (NFQA_PACKET_HDR, &[0, 0, 1, 2, 8, 0, 3])],
        );
        assert_eq!(msg.len() % 4, 0);
        let parsed: Vec<_> = messages(&msg).collect();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET);
        assert_eq!(&parsed[0].1[2..4], &7u16.to_be_bytes());
        assert_eq!(packet_id(parsed[0].1), Some(0x0102));
        assert_eq!(packet_id(&parsed[0].1[..8]), None, "truncated attributes");
    }
}
