//! The TCP fast lane: the common case of `TcpTracker.segment` (analyzer/capture/tcp.py) in Rust.
//!
//! The Python tracker stays the owner of every flow and the reference for every rule. When a
//! flow is in the fast state (open, an MSNP connection that has not failed, both directions
//! started, nothing pending out of order, no FIN seen) it hands the flow's sequence state to
//! the lane: per direction the raw sequence number of the next byte (`nxt`, wraps at 2^32),
//! its stream offset (`pos`) and the delivered bytes the peer has not acknowledged (`sent`,
//! at most `unacked`), and the flow's last segment time (`last`). A segment that continues
//! one of those directions in order (a direction that has not started, in a connection whose
//! capture holds only one side, takes none), carries data and no SYN, FIN or RST, at a capture time
//! that crosses none of the tracker's horizons (see `Horizon`), is then taken here: the same
//! updates as tcp.py's common case (the quiet release, `_ack_sent` on the other direction,
//! then the stream advances and `_remember` keeps the bytes). Anything else goes back to
//! Python, which first takes the flow's state back.
//!
//! The quiet release (tcp.py `released`): a flow silent for more than the quiet interval
//! (`UNACKED_QUIET`, or the reorder timeout when shorter) drops the unacknowledged bytes of
//! both directions before its next segment is handled (their ACK is not in the capture). The
//! lane applies it exactly there (`LaneFlow::arrive`); for the memory of flows that stay
//! silent, `QuietQueue` looks at each flow holding bytes again once it may have gone quiet,
//! on the lane's own clock, and drops them by the same rule (which only drops what the next
//! segment would drop anyway: the clock never goes back). The tracker's deadlines are left to
//! what needs Python (pairing timeouts, idle closes).
//!
//! This module is plain Rust (no Python) so `cargo test` checks the rules; the binding
//! (python.rs, `FastLane`) feeds the connection's readers and calls Python per segment.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
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
    /// False for a direction that has not started (tcp.py's `nxt` is None: a one-sided
    /// connection, only one direction in the capture): the lane takes none of its segments.
    pub started: bool,
    pub pos: u64,
    /// Delivered bytes not yet acknowledged: stream offsets `[pos - len, pos)`. None when there
    /// are none, as tcp.py keeps None there (never an empty buffer): boxed, because thousands
    /// of idle flows sit in the lane at once on a busy server's capture holding nothing, and a
    /// `VecDeque` inline cost each direction 32 bytes where the box costs 8.
    pub sent: Option<Box<VecDeque<u8>>>,
}

impl LaneHalf {
    /// A direction as tcp.py hands it to the lane: `nxt` None when it has not started, `sent`
    /// its unacknowledged bytes (empty: none, kept as None).
    pub fn new(nxt: Option<u32>, pos: u64, sent: Vec<u8>) -> Self {
        let sent = (!sent.is_empty()).then(|| Box::new(VecDeque::from(sent)));
        LaneHalf { nxt: nxt.unwrap_or(0), started: nxt.is_some(), pos, sent }
    }

    /// How many unacknowledged bytes this direction keeps.
    pub fn unacked(&self) -> usize {
        self.sent.as_ref().map_or(0, |sent| sent.len())
    }

    /// Those bytes, oldest first.
    pub fn sent_bytes(&self) -> Vec<u8> {
        let Some(sent) = self.sent.as_ref() else { return Vec::new() };
        let (a, b) = sent.as_slices();
        let mut all = Vec::with_capacity(sent.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        all
    }

    /// tcp.py `_ack_sent`: the peer acknowledged this direction up to `ack`.
    pub fn ack_sent(&mut self, ack: u32) {
        let d = self.nxt.wrapping_sub(ack);
        if d == 0 || d >= MASK_HALF {
            self.sent = None; // everything (or more) acknowledged: nothing kept
            return;
        }
        let Some(sent) = self.sent.as_mut() else { return };
        let d = d as usize;
        if d < sent.len() {
            let cut = sent.len() - d;
            sent.drain(..cut);
            // Memory follows what is kept, as a Python bytearray's does when it shrinks to
            // less than half: thousands of open flows must not each hold UNACKED.
            if sent.capacity() > 2 * sent.len() + 64 {
                sent.shrink_to_fit();
            }
        }
    }

    /// tcp.py's common case after the ACK: the stream advances past `payload` (which starts
    /// at `nxt`) and the bytes are kept until acknowledged, at most `unacked` of them.
    pub fn advance(&mut self, payload: &[u8], unacked: usize) {
        let n = payload.len();
        self.nxt = self.nxt.wrapping_add(n as u32);
        self.pos += n as u64;
        if n == 0 {
            return;
        }
        let sent = self.sent.get_or_insert_with(Box::default);
        if n >= unacked {
            sent.clear();
            sent.extend(&payload[n - unacked..]);
            return;
        }
        let over = (sent.len() + n).saturating_sub(unacked);
        if over > 0 {
            sent.drain(..over);
        }
        sent.extend(payload);
    }
}

/// The lane's flow table: a segment's key (its two addresses then its two ports, as tcp.py's
/// keys) -> the slot of its flow and the half that key names. Twenty thousand flows in the lane
/// (two keys each) are a busy server's capture: an IPv4 key (12 bytes, nearly every one) is
/// held inline with its slot and half packed in 4 bytes (16 bytes an entry), where a boxed key
/// and two `usize`s cost 32 bytes an entry plus a 32-byte allocation per key. Other keys (IPv6,
/// or a slot past 2^31) are held boxed in a second map.
#[derive(Debug, Default)]
pub struct LaneKeys {
    v4: HashMap<[u8; 12], u32>,
    other: HashMap<Box<[u8]>, (usize, usize)>,
}

impl LaneKeys {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.other.is_empty()
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    /// The slot and half index `key` names.
    pub fn get(&self, key: &[u8]) -> Option<(usize, usize)> {
        if let Ok(inline) = <[u8; 12]>::try_from(key) {
            if let Some(&packed) = self.v4.get(&inline) {
                return Some(((packed >> 1) as usize, (packed & 1) as usize));
            }
            if self.other.is_empty() {
                return None;
            }
        }
        self.other.get(key).copied()
    }

    /// `key` names half `index` (0 or 1) of the flow in `slot` (replacing what it named).
    pub fn insert(&mut self, key: &[u8], slot: usize, index: usize) {
        if let Ok(inline) = <[u8; 12]>::try_from(key) {
            if slot < (1 << 31) {
                self.other.remove(key);
                self.v4.insert(inline, ((slot as u32) << 1) | (index as u32 & 1));
                return;
            }
            self.v4.remove(&inline);
        }
        self.other.insert(key.into(), (slot, index));
    }

    /// Forget `key` if it names a half of the flow in `slot`.
    pub fn remove_if(&mut self, key: &[u8], slot: usize) {
        if matches!(self.get(key), Some((s, _)) if s == slot) {
            if let Ok(inline) = <[u8; 12]>::try_from(key) {
                self.v4.remove(&inline);
            }
            self.other.remove(key);
        }
    }
}

/// tcp.py `released`, the quiet release's rule: a flow whose last segment was at `last` keeps no
/// unacknowledged bytes once the tracker's clock `now` is more than `quiet` seconds past it.
pub fn released(now: f64, last: f64, quiet: f64) -> bool {
    now - last > quiet
}

/// The part of a flow in the lane that the rules touch (python.rs adds its Python objects):
/// each direction's sequence state and the flow's last segment time (tcp.py `Flow.last_ts`).
#[derive(Debug, Clone)]
pub struct LaneState {
    pub halves: [LaneHalf; 2],
    pub last: f64,
    /// Which flow this is: slots are reused, and the quiet queue's entries name the flow.
    pub stamp: u32,
    /// Whether the quiet queue holds an entry for this flow.
    pub queued: bool,
}

impl LaneState {
    pub fn new(halves: [LaneHalf; 2], last: f64, stamp: u32) -> Self {
        LaneState { halves, last, stamp, queued: false }
    }

    /// Whether either direction keeps unacknowledged bytes.
    pub fn holding(&self) -> bool {
        self.halves[0].sent.is_some() || self.halves[1].sent.is_some()
    }

    /// Drop both directions' unacknowledged bytes (tcp.py `_release_quiet`).
    pub fn release(&mut self) {
        for half in self.halves.iter_mut() {
            half.sent = None;
        }
    }

    /// A segment of this flow at `ts`, the tracker's clock being `now` (`ts` or later) once it
    /// passed: the quiet release first, as `segment` does it, then `last` follows. True when
    /// bytes were released.
    pub fn arrive(&mut self, now: f64, ts: f64, quiet: f64) -> bool {
        let drop = released(now, self.last, quiet) && self.holding();
        if drop {
            self.release();
        }
        self.last = ts;
        drop
    }
}

/// Gives the `LaneState` of what the lane keeps in a slot (python.rs's `LaneFlow`).
pub trait Laned {
    fn state(&mut self) -> &mut LaneState;
}

impl Laned for LaneState {
    fn state(&mut self) -> &mut LaneState {
        self
    }
}

/// An entry of the quiet queue: look at the flow in `slot` (if it is still flow `stamp`) once the
/// clock is past `due`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    due: f64,
    slot: u32,
    stamp: u32,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.due.total_cmp(&other.due).then(self.slot.cmp(&other.slot)).then(self.stamp.cmp(&other.stamp))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

/// The memory side of the quiet release: each flow in the lane holding unacknowledged bytes has
/// one entry, at its last segment plus the quiet interval (set again, later, when it spoke
/// since). A flow that speaks again is released exactly at that segment (`LaneState::arrive`);
/// this queue is for the flows that stay silent, so that thousands of idle connections hold no
/// bytes. It drops them only where the rule says so (`released` at the lane's clock, which
/// never goes back), so when it runs does not change what the next segment finds.
#[derive(Debug)]
pub struct QuietQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    pub quiet: f64,
    /// Flows whose bytes the queue released.
    pub released: u64,
}

impl QuietQueue {
    pub fn new(quiet: f64) -> Self {
        QuietQueue { heap: BinaryHeap::new(), quiet, released: 0 }
    }

    /// When the queue next has something to look at (infinity: nothing).
    pub fn next(&self) -> f64 {
        self.heap.peek().map_or(f64::INFINITY, |e| e.0.due)
    }

    /// Entries queued (some may name flows that left the lane).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The flow in `slot` may hold bytes now (it entered the lane, or took a segment): queue it,
    /// unless it is queued already or holds nothing.
    pub fn note(&mut self, slot: usize, state: &mut LaneState) {
        if !state.queued && state.holding() {
            state.queued = true;
            self.heap.push(Reverse(Entry { due: state.last + self.quiet, slot: slot as u32, stamp: state.stamp }));
        }
    }

    /// The clock reached `now`: the flows queued before it that are quiet drop their bytes, the
    /// others that still hold some are queued again at their own last segment plus the quiet
    /// interval. Returns how many were released.
    pub fn sweep<F: Laned>(&mut self, now: f64, flows: &mut [Option<F>]) -> usize {
        let mut n = 0;
        while let Some(&Reverse(entry)) = self.heap.peek() {
            if !(entry.due < now) {
                break;
            }
            self.heap.pop();
            let Some(Some(flow)) = flows.get_mut(entry.slot as usize) else { continue };
            let state = flow.state();
            if state.stamp != entry.stamp {
                continue; // that flow left the lane; another took its slot
            }
            state.queued = false;
            if !state.holding() {
                continue;
            }
            if released(now, state.last, self.quiet) {
                state.release();
                n += 1;
                continue;
            }
            // It spoke since: again at its own time (not before `now`, so this loop ends even
            // where `last + quiet < now` and `now - last > quiet` disagree by a rounding).
            let due = state.last + self.quiet;
            state.queued = true;
            self.heap.push(Reverse(Entry { due: if due < now { now } else { due }, ..entry }));
        }
        self.released += n as u64;
        n
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

/// Whether a segment may take the lane at all (before its flow is looked up): data or a bare
/// ACK, and no SYN, FIN or RST.
pub fn lane_flags(flags: u8, payload_len: usize) -> bool {
    flags & (SYN | FIN | RST) == 0 && (payload_len > 0 || flags & ACK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(nxt: u32, pos: u64, sent: &[u8]) -> LaneHalf {
        LaneHalf::new(Some(nxt), pos, sent.to_vec())
    }

    fn bytes(h: &LaneHalf) -> Vec<u8> {
        h.sent_bytes()
    }

    #[test]
    fn lane_keys_inline_and_boxed() {
        let mut k = LaneKeys::default();
        assert!(k.is_empty());
        let v4a = [1u8, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        let v4b = [5u8, 6, 7, 8, 1, 2, 3, 4, 0, 2, 0, 1];
        let v6 = [9u8; 36];
        k.insert(&v4a, 7, 0);
        k.insert(&v4b, 7, 1);
        k.insert(&v6, 3, 1);
        assert_eq!((k.get(&v4a), k.get(&v4b), k.get(&v6), k.len()), (Some((7, 0)), Some((7, 1)), Some((3, 1)), 3));
        assert_eq!(k.get(&v4a[..11]), None);
        k.insert(&v4a, 9, 1); // the same key names another flow's half now
        assert_eq!(k.get(&v4a), Some((9, 1)));
        k.remove_if(&v4a, 7); // not the flow in slot 7 any more: kept
        assert_eq!(k.get(&v4a), Some((9, 1)));
        k.remove_if(&v4a, 9);
        k.remove_if(&v6, 3);
        assert_eq!((k.get(&v4a), k.get(&v6), k.len()), (None, None, 1));
        // A slot past what the packed value holds goes to the boxed map, and back.
        let big = 1usize << 31;
        k.insert(&v4b, big, 1);
        assert_eq!((k.get(&v4b), k.len()), (Some((big, 1)), 1));
        k.insert(&v4b, 4, 0);
        assert_eq!((k.get(&v4b), k.len()), (Some((4, 0)), 1));
        k.remove_if(&v4b, 4);
        assert!(k.is_empty());
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
        assert!(h.sent.is_none());
        let mut h = half(100, 10, b"0123");
        h.ack_sent(101); // past what was sent: all acknowledged
        assert!(h.sent.is_none());
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
    fn the_quiet_release_rule() {
        assert!(!released(110.0, 100.0, 10.0)); // exactly the quiet interval: still kept
        assert!(released(110.000_001, 100.0, 10.0));
        assert!(!released(105.0, 100.0, 10.0));
        assert!(released(103.5, 100.0, 3.0)); // a shorter reorder timeout is the interval
        assert!(!released(50.0, 100.0, 10.0)); // a clock behind the flow's last segment
    }

    fn state(last: f64, sent0: &[u8], sent1: &[u8], stamp: u32) -> LaneState {
        LaneState::new([half(0, 0, sent0), half(0, 0, sent1)], last, stamp)
    }

    #[test]
    fn a_segment_after_a_quiet_spell_finds_nothing_kept() {
        let mut s = state(100.0, b"abc", b"de", 1);
        assert!(!s.arrive(110.0, 110.0, 10.0)); // not quiet: kept, and last follows
        assert_eq!((bytes(&s.halves[0]), bytes(&s.halves[1]), s.last), (b"abc".to_vec(), b"de".to_vec(), 110.0));
        // The clock (another flow's segment) is past the quiet interval; this segment's own
        // time is earlier (capture time went back): the clock decides, as in tcp.py.
        assert!(s.arrive(120.5, 119.0, 10.0));
        assert!(s.halves[0].sent.is_none() && s.halves[1].sent.is_none());
        assert_eq!(s.last, 119.0);
        assert!(!s.arrive(200.0, 200.0, 10.0)); // nothing kept: nothing to release
    }

    #[test]
    fn the_quiet_queue_releases_silent_flows_by_the_same_rule() {
        let mut q = QuietQueue::new(10.0);
        let mut flows: Vec<Option<LaneState>> = vec![
            Some(state(100.0, b"abc", b"", 1)),   // silent from 100
            Some(state(100.0, b"", b"xyz", 2)),   // speaks again at 105
            Some(state(100.0, b"", b"", 3)),      // holds nothing: never queued
            Some(state(101.0, b"q", b"", 4)),     // leaves the lane; slot 3 is then another flow's
        ];
        for (slot, flow) in flows.iter_mut().enumerate() {
            q.note(slot, flow.as_mut().unwrap());
        }
        assert_eq!(q.len(), 3);
        assert!(!flows[2].as_ref().unwrap().queued);
        assert_eq!(q.next(), 110.0);
        flows[1].as_mut().unwrap().arrive(105.0, 105.0, 10.0);
        flows[3] = Some(state(104.0, b"new", b"", 5));
        assert_eq!(q.sweep(110.0, &mut flows), 0); // due at 110 is not before 110
        assert_eq!(q.sweep(110.5, &mut flows), 1);
        assert!(!flows[0].as_ref().unwrap().holding());
        assert!(flows[1].as_ref().unwrap().holding() && flows[1].as_ref().unwrap().queued);
        assert_eq!(q.next(), 111.0); // the entry of the flow that left slot 3
        assert_eq!(q.sweep(111.5, &mut flows), 0);
        assert_eq!(bytes(&flows[3].as_ref().unwrap().halves[0]), b"new".to_vec()); // it did not touch the new one
        assert_eq!(q.next(), 115.0);
        assert_eq!(q.sweep(116.0, &mut flows), 1);
        assert!(!flows[1].as_ref().unwrap().holding());
        assert!(q.is_empty() && q.released == 2);
        // A time where `last + quiet < now` but not `now - last > quiet` (a rounding): the
        // entry comes back at `now`, and the sweep ends.
        let (last, quiet, now) = (0.6120383236846554, 3.3, 3.9120383236846554);
        assert!(last + quiet < now && !released(now, last, quiet));
        let mut q = QuietQueue::new(quiet);
        flows[0] = Some(state(last, b"a", b"", 6));
        q.note(0, flows[0].as_mut().unwrap());
        assert_eq!(q.sweep(now, &mut flows), 0);
        assert!(flows[0].as_ref().unwrap().holding() && q.next() == now);
    }

    #[test]
    fn flags_of_the_lane() {
        assert!(lane_flags(ACK, 1));
        assert!(lane_flags(ACK | 0x08, 10));
        assert!(lane_flags(ACK, 0)); // a bare ACK
        assert!(!lane_flags(0, 0)); // neither data nor an ACK: Python's
        assert!(!lane_flags(ACK | RST, 0));
        assert!(!lane_flags(ACK | FIN, 10));
        assert!(!lane_flags(SYN, 10));
        assert!(!lane_flags(RST, 10));
    }
}
