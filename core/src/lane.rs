//! The TCP fast lane: the common case of `TcpTracker.segment` (analyzer/capture/tcp.py) in Rust.
//!
//! The Python tracker stays the owner of every flow and the reference for every rule. When a
//! flow is in the fast state (open, an MSNP connection that has not failed, both directions
//! started, nothing pending out of order, no FIN seen) it hands the flow's sequence state to
//! the lane: per direction the raw sequence number of the next byte (`nxt`, wraps at 2^32),
//! its stream offset (`pos`) and the delivered bytes the peer has not acknowledged (`sent`,
//! at most `unacked`). A segment that continues one of those directions in order, carries
//! data and no SYN, FIN or RST, at a capture time that crosses none of the tracker's horizons
//! (see `Horizon`), is then taken here: the same updates as tcp.py's common case
//! (`_ack_sent` on the other direction, then the stream advances and `_remember` keeps the
//! bytes). Anything else goes back to Python, which first takes the flow's state back.
//!
//! This module is plain Rust (no Python) so `cargo test` checks the rules; the binding
//! (python.rs, `FastLane`) feeds the connection's readers and calls Python per segment.

use std::collections::VecDeque;

pub const MASK_HALF: u32 = 0x8000_0000;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// One direction of a flow in the lane (tcp.py's `HalfStream`: `nxt`, `pos`, `sent`).
#[derive(Debug, Default, Clone)]
pub struct LaneHalf {
    pub nxt: u32,
    pub pos: u64,
    /// Delivered bytes not yet acknowledged: stream offsets `[pos - len, pos)`. Empty here is
    /// `None` there (tcp.py never keeps an empty buffer).
    pub sent: VecDeque<u8>,
}

impl LaneHalf {
    /// tcp.py `_ack_sent`: the peer acknowledged this direction up to `ack`.
    pub fn ack_sent(&mut self, ack: u32) {
        let d = self.nxt.wrapping_sub(ack);
        if d == 0 || d >= MASK_HALF {
            self.sent = VecDeque::new(); // everything (or more) acknowledged: nothing kept
            return;
        }
        let d = d as usize;
        if d < self.sent.len() {
            let cut = self.sent.len() - d;
            self.sent.drain(..cut);
            // Memory follows what is kept, as a Python bytearray's does when it shrinks to
            // less than half: thousands of open flows must not each hold UNACKED.
            if self.sent.capacity() > 2 * self.sent.len() + 64 {
                self.sent.shrink_to_fit();
            }
        }
    }

    /// tcp.py's common case after the ACK: the stream advances past `payload` (which starts
    /// at `nxt`) and the bytes are kept until acknowledged, at most `unacked` of them.
    pub fn advance(&mut self, payload: &[u8], unacked: usize) {
        let n = payload.len();
        self.nxt = self.nxt.wrapping_add(n as u32);
        self.pos += n as u64;
        if n >= unacked {
            self.sent.clear();
            self.sent.extend(&payload[n - unacked..]);
            return;
        }
        let over = (self.sent.len() + n).saturating_sub(unacked);
        if over > 0 {
            self.sent.drain(..over);
        }
        self.sent.extend(payload);
    }
}

/// When capture time would make the tracker do more than the common case: `segment` first
/// updates `now` and, when time moved on, runs the deadline heap (`head`: its first entry)
/// and the tombstone expiry (`stones`: the oldest's time), and closes start windows
/// (`window`: `_window_ts` while any window is open). The comparisons are tcp.py's, on the
/// same floats; `head` may be earlier than the heap's real head (the lane is then only more
/// careful), never later.
#[derive(Debug, Clone)]
pub struct Horizon {
    pub now: f64,
    pub head: f64,
    pub stones: Option<f64>,
    pub window: Option<f64>,
    pub tombstone_seconds: f64,
    pub start_window: f64,
}

impl Horizon {
    pub fn new(tombstone_seconds: f64, start_window: f64) -> Self {
        Horizon { now: 0.0, head: f64::INFINITY, stones: None, window: None, tombstone_seconds, start_window }
    }

    /// Whether a segment at `ts` passes `segment`'s preamble without anything to do.
    pub fn admits(&self, ts: f64) -> bool {
        if ts > self.now {
            if self.head < ts {
                return false;
            }
            if let Some(stone) = self.stones {
                if stone < ts - self.tombstone_seconds {
                    return false;
                }
            }
        }
        if let Some(window) = self.window {
            if ts - window > self.start_window {
                return false;
            }
        }
        true
    }

    /// A fast segment at `ts` went through: `now` follows it, as in `segment`.
    pub fn passed(&mut self, ts: f64) {
        if ts > self.now {
            self.now = ts;
        }
    }
}

/// Whether a segment may take the lane at all (before its flow is looked up): data, and no
/// SYN, FIN or RST.
pub fn lane_flags(flags: u8, payload_len: usize) -> bool {
    payload_len > 0 && flags & (SYN | FIN | RST) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(nxt: u32, pos: u64, sent: &[u8]) -> LaneHalf {
        LaneHalf { nxt, pos, sent: sent.iter().copied().collect() }
    }

    fn bytes(h: &LaneHalf) -> Vec<u8> {
        h.sent.iter().copied().collect()
    }

    #[test]
    fn advance_keeps_at_most_unacked_bytes() {
        let mut h = half(10, 0, b"");
        h.advance(b"abcd", 6);
        assert_eq!((h.nxt, h.pos, bytes(&h)), (14, 4, b"abcd".to_vec()));
        h.advance(b"efgh", 6);
        assert_eq!((h.nxt, h.pos, bytes(&h)), (18, 8, b"cdefgh".to_vec()));
        h.advance(b"0123456789", 6);
        assert_eq!((h.nxt, h.pos, bytes(&h)), (28, 18, b"456789".to_vec()));
    }

    #[test]
    fn advance_wraps_the_sequence_number() {
        let mut h = half(0xFFFF_FFFE, 100, b"");
        h.advance(b"abcd", 16);
        assert_eq!((h.nxt, h.pos), (2, 104));
    }

    #[test]
    fn ack_trims_what_was_acknowledged() {
        let mut h = half(100, 10, b"0123456789"); // offsets 0..10 at seq 90..100
        h.ack_sent(94); // 6 bytes still unacknowledged
        assert_eq!(bytes(&h), b"456789".to_vec());
        h.ack_sent(90); // an old ACK: 10 unacknowledged, more than kept: nothing changes
        assert_eq!(bytes(&h), b"456789".to_vec());
        h.ack_sent(100);
        assert!(h.sent.is_empty());
        let mut h = half(100, 10, b"0123");
        h.ack_sent(101); // past what was sent: all acknowledged
        assert!(h.sent.is_empty());
    }

    #[test]
    fn ack_across_the_wrap() {
        let mut h = half(3, 10, b"abcdef"); // seq 0xFFFFFFFD..3
        h.ack_sent(0xFFFF_FFFF); // 4 unacknowledged
        assert_eq!(bytes(&h), b"cdef".to_vec());
        h.ack_sent(1);
        assert_eq!(bytes(&h), b"ef".to_vec());
    }

    #[test]
    fn horizon_comparisons() {
        let mut h = Horizon::new(120.0, 0.5);
        h.now = 10.0;
        h.head = 20.0;
        assert!(h.admits(5.0)); // time going back: nothing runs
        assert!(h.admits(20.0)); // the head fires when it is earlier than ts, not equal
        assert!(!h.admits(20.5));
        h.stones = Some(0.0);
        assert!(h.admits(20.0));
        h.head = f64::INFINITY;
        assert!(h.admits(120.0));
        assert!(!h.admits(120.5));
        h.stones = None;
        h.window = Some(9.8);
        assert!(h.admits(10.2));
        assert!(!h.admits(10.4));
        h.passed(30.0);
        assert_eq!(h.now, 30.0);
        h.passed(25.0);
        assert_eq!(h.now, 30.0);
    }

    #[test]
    fn flags_of_the_lane() {
        assert!(lane_flags(ACK, 1));
        assert!(lane_flags(ACK | 0x08, 10));
        assert!(!lane_flags(ACK, 0));
        assert!(!lane_flags(ACK | FIN, 10));
        assert!(!lane_flags(SYN, 10));
        assert!(!lane_flags(RST, 10));
    }
}
