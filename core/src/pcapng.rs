//! pcapng blocks in, packets out: a port of `analyzer/capture/pcapng.py` (the reference).
//!
//! Section headers (byte order), interface descriptions (link type, snap length,
//! `if_tsresol`, `if_tsoffset`), enhanced, obsolete and simple packet blocks; every other
//! block is skipped by its length. Damage stops reading with the reference's anomaly name
//! and words; a packet block that names an undescribed interface or overruns its block is
//! counted and skipped (or cut). `tests/capture/test_pcap_core.py` compares both readers.

use std::io::Read;

const SHB: u32 = 0x0A0D0D0A;
const IDB: u32 = 1;
const PB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B3C4D;
/// A block longer than this is corruption, not a packet.
pub const MAX_BLOCK: u32 = 64 * 1024 * 1024;
const OPT_TSRESOL: u16 = 9;
const OPT_TSOFFSET: u16 = 14;

#[derive(Debug, Clone, Copy)]
struct Interface {
    /// -1: an interface block too short to say (its packets take the unknown-link path).
    linktype: i64,
    snaplen: u32,
    units: f64,
    offset: i64,
}

pub struct Packet<'a> {
    pub linktype: i64,
    pub ts: f64,
    pub data: &'a [u8],
}

pub struct PcapngBlocks<R: Read> {
    source: R,
    big_endian: bool,
    interfaces: Vec<Interface>,
    last_ts: f64,
    block: Vec<u8>,
    pos: u64,
    done: bool,
    pub packets: u64,
    /// Offset of the block being read (what `position` reports for progress).
    pub position: u64,
    pub simple_packets: u64,
    pub bad_blocks: u64,
    pub first_bad: Option<(u64, String)>,
    /// (name, offset, detail) of what stopped reading.
    pub anomalies: Vec<(&'static str, u64, String)>,
}

fn resolution(value: u8) -> f64 {
    // if_tsresol: the high bit picks base 2 (else 10), the rest is the negative exponent.
    let exponent = (value & 0x7F) as i32;
    if value & 0x80 != 0 {
        2f64.powi(exponent)
    } else {
        // Correctly rounded, as Python's float(10 ** exponent).
        format!("1e{exponent}").parse().unwrap_or(f64::INFINITY)
    }
}

impl<R: Read> PcapngBlocks<R> {
    pub fn new(source: R) -> Self {
        PcapngBlocks {
            source,
            big_endian: false,
            interfaces: Vec::new(),
            last_ts: 0.0,
            block: Vec::new(),
            pos: 0,
            done: false,
            packets: 0,
            position: 0,
            simple_packets: 0,
            bad_blocks: 0,
            first_bad: None,
            anomalies: Vec::new(),
        }
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big_endian { u32::from_be_bytes(v) } else { u32::from_le_bytes(v) }
    }

    fn u16_at(&self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.big_endian { u16::from_be_bytes(v) } else { u16::from_le_bytes(v) }
    }

    /// Read up to `n` bytes into `self.block` (appending); how many came.
    fn read_into(&mut self, n: usize) -> std::io::Result<usize> {
        let have = self.block.len();
        self.block.resize(have + n, 0);
        let mut got = 0;
        while got < n {
            match self.source.read(&mut self.block[have + got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.block.truncate(have + got);
                    return Err(e);
                }
            }
        }
        self.block.truncate(have + got);
        Ok(got)
    }

    fn stop(&mut self, name: &'static str, offset: u64, detail: String) {
        self.anomalies.push((name, offset, detail));
        self.done = true;
    }

    fn bad(&mut self, offset: u64, why: String) {
        self.bad_blocks += 1;
        if self.first_bad.is_none() {
            self.first_bad = Some((offset, why));
        }
    }

    /// The next packet, or None at the end of the file or at damage (see `anomalies`).
    pub fn next_packet(&mut self) -> Option<Packet<'_>> {
        loop {
            if self.done {
                return None;
            }
            match self.next_block() {
                Ok(Some(found)) => {
                    let (linktype, ts, start, stop) = found;
                    return Some(Packet { linktype, ts, data: &self.block[start..stop] });
                }
                Ok(None) => continue,
                Err(e) => {
                    let pos = self.pos;
                    self.stop("capture.truncated", pos,
                              format!("the capture cannot be read past here (OSError: {e})"));
                    return None;
                }
            }
        }
    }

    /// One block: Some((linktype, ts, data range in self.block)) for a packet to yield.
    #[allow(clippy::type_complexity)]
    fn next_block(&mut self) -> std::io::Result<Option<(i64, f64, usize, usize)>> {
        let pos = self.pos;
        self.position = pos;
        self.block.clear();
        let got = self.read_into(8)?;
        if got == 0 {
            self.done = true;
            return Ok(None);
        }
        if got < 8 {
            self.stop("capture.truncated", pos,
                      format!("the capture ends inside a block header ({got} of 8 bytes)"));
            return Ok(None);
        }
        let head: [u8; 8] = self.block[..8].try_into().expect("8 bytes");
        let kind = self.u32_at(&head, 0);
        let (length, need, body_start);
        if kind == SHB {
            let got = self.read_into(4)?;
            if got < 4 {
                self.stop("capture.truncated", pos, "the capture ends inside a section header".into());
                return Ok(None);
            }
            let magic: [u8; 4] = self.block[8..12].try_into().expect("4 bytes");
            if u32::from_le_bytes(magic) == BYTE_ORDER_MAGIC {
                self.big_endian = false;
            } else if u32::from_be_bytes(magic) == BYTE_ORDER_MAGIC {
                self.big_endian = true;
            } else {
                self.stop("capture.damaged", pos, "a section header with no byte-order magic".into());
                return Ok(None);
            }
            length = self.u32_at(&head, 4);
            need = length as i64 - 16;
            body_start = 8; // the body starts with the magic, as the reference's does
        } else {
            length = self.u32_at(&head, 4);
            need = length as i64 - 12;
            body_start = 8;
        }
        if length < 12 || length % 4 != 0 || length > MAX_BLOCK || (kind == SHB && length < 28) {
            self.stop("capture.damaged", pos, format!("block type {kind:#x} claims {length} bytes: not a block length"));
            return Ok(None);
        }
        let need = need as usize;
        let already = self.block.len() - body_start; // the SHB's magic
        let got = self.read_into(need + 4)?;
        if got < need + 4 {
            self.stop("capture.truncated", pos,
                      format!("the capture ends inside a block of {length} bytes ({} read)", 8 + already + got));
            return Ok(None);
        }
        let end_len = self.u32_at(&self.block, self.block.len() - 4);
        if end_len != length {
            self.stop("capture.damaged", pos, format!("block type {kind:#x}: its lengths differ (start and end)"));
            return Ok(None);
        }
        self.pos = pos + length as u64;
        let body = body_start..self.block.len() - 4;
        match kind {
            SHB => self.interfaces.clear(),
            IDB => {
                let iface = self.interface(body);
                self.interfaces.push(iface);
            }
            EPB | PB | SPB => {
                self.packets += 1;
                if let Some((linktype, ts, start, stop)) = self.packet(kind, body, pos) {
                    self.last_ts = ts;
                    return Ok(Some((linktype, ts, start, stop)));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn interface(&self, body: std::ops::Range<usize>) -> Interface {
        let b = &self.block[body];
        if b.len() < 8 {
            return Interface { linktype: -1, snaplen: 0, units: 1e6, offset: 0 };
        }
        let linktype = self.u16_at(b, 0) as i64;
        let snaplen = self.u32_at(b, 4);
        let (mut units, mut offset) = (1e6, 0i64);
        let mut pos = 8;
        while pos + 4 <= b.len() {
            let code = self.u16_at(b, pos);
            let size = self.u16_at(b, pos + 2) as usize;
            let value = &b[pos + 4..(pos + 4 + size).min(b.len())];
            if code == 0 || value.len() < size {
                break;
            }
            if code == OPT_TSRESOL && size >= 1 {
                units = resolution(value[0]);
            } else if code == OPT_TSOFFSET && size >= 8 {
                let v: [u8; 8] = value[..8].try_into().expect("8 bytes");
                offset = if self.big_endian { i64::from_be_bytes(v) } else { i64::from_le_bytes(v) };
            }
            pos += 4 + size + ((4 - size % 4) % 4);
        }
        Interface { linktype, snaplen, units, offset }
    }

    fn packet(&mut self, kind: u32, body: std::ops::Range<usize>, at: u64) -> Option<(i64, f64, usize, usize)> {
        let base = body.start;
        let len = body.len();
        if kind == SPB {
            if len < 4 {
                self.bad(at, "a simple packet block too short for its length field".into());
                return None;
            }
            let Some(&iface) = self.interfaces.first() else {
                self.bad(at, "a packet before any interface description".into());
                return None;
            };
            let wirelen = self.u32_at(&self.block, base) as usize;
            let mut caplen = wirelen.min(len - 4);
            if iface.snaplen != 0 {
                caplen = caplen.min(iface.snaplen as usize);
            }
            self.simple_packets += 1;
            return Some((iface.linktype, self.last_ts, base + 4, base + 4 + caplen));
        }
        if len < 20 {
            let what = if kind == EPB { "an enhanced packet block" } else { "a packet block" };
            self.bad(at, format!("{what} too short for its header"));
            return None;
        }
        let b = &self.block;
        let (intid, hi, lo, caplen) = if kind == EPB {
            (self.u32_at(b, base) as usize, self.u32_at(b, base + 4), self.u32_at(b, base + 8), self.u32_at(b, base + 12))
        } else {
            (self.u16_at(b, base) as usize, self.u32_at(b, base + 4), self.u32_at(b, base + 8), self.u32_at(b, base + 12))
        };
        if intid >= self.interfaces.len() {
            self.bad(at, format!("a packet on interface {intid}, which the section does not describe"));
            return None;
        }
        let mut caplen = caplen as usize;
        if caplen > len - 20 {
            self.bad(at, format!("a packet of {caplen} bytes in a block holding {}", len - 20));
            caplen = len - 20;
        }
        let iface = self.interfaces[intid];
        let t = ((hi as u64) << 32) | lo as u64;
        let ts = t as f64 / iface.units + iface.offset as f64;
        Some((iface.linktype, ts, base + 20, base + 20 + caplen))
    }
}
