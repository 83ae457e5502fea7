//! Classic pcap records: large reads of the file, one frame at a time out.
//!
//! The file header (magic, byte order, nanosecond flag, snap length, link type) is read by
//! the caller (the Python `CaptureFile`, through scapy, which also owns the messages for a
//! file that is not a capture); this reader starts at the first record. Damage is never an
//! error: the reader stops and `damage` says where and why, in fields the caller words.

use std::io::Read;

/// A pcap record longer than this is corruption, not a packet (pcap.py's MAX_RECORD).
pub const MAX_RECORD: u32 = 256 * 1024 * 4;
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside a record header: `have` of 16 bytes.
    TruncatedHeader { offset: u64, record: u64, have: usize },
    /// The file ends inside a record: `have` of `caplen` bytes.
    TruncatedRecord { offset: u64, record: u64, have: usize, caplen: u32 },
    /// A record header claims more than MAX_RECORD bytes.
    BadLength { offset: u64, record: u64, caplen: u32 },
}

/// The first record that was empty or longer than the snap length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRecord {
    pub offset: u64,
    pub record: u64,
    pub caplen: u32,
}

pub struct Record<'a> {
    pub sec: u32,
    pub frac: u32,
    pub data: &'a [u8],
}

pub struct PcapRecords<R: Read> {
    source: R,
    big_endian: bool,
    snap: u32,
    buf: Vec<u8>,
    i: usize,
    /// File offset of buf[0].
    pos: u64,
    eof: bool,
    pub packets: u64,
    pub bad_records: u64,
    pub first_bad: Option<BadRecord>,
    pub damage: Option<Damage>,
    done: bool,
}

impl<R: Read> PcapRecords<R> {
    /// `start` is the file offset of the first record (24 after the file header).
    pub fn new(source: R, start: u64, big_endian: bool, snaplen: u32) -> Self {
        // An absurd snap length is only a hint.
        let snap = if snaplen > 0 && snaplen <= MAX_RECORD { snaplen } else { MAX_RECORD };
        PcapRecords {
            source,
            big_endian,
            snap,
            buf: Vec::new(),
            i: 0,
            pos: start,
            eof: false,
            packets: 0,
            bad_records: 0,
            first_bad: None,
            damage: None,
            done: false,
        }
    }

    /// Bytes of the file consumed so far.
    pub fn position(&self) -> u64 {
        self.pos + self.i as u64
    }

    /// Drop what was consumed and read until `want` bytes are buffered or the file ends.
    fn fill(&mut self, want: usize) -> std::io::Result<()> {
        if self.i > 0 {
            self.buf.drain(..self.i);
            self.pos += self.i as u64;
            self.i = 0;
        }
        while self.buf.len() < want && !self.eof {
            let have = self.buf.len();
            let grow = CHUNK.max(want - have);
            self.buf.resize(have + grow, 0);
            let mut got = 0;
            while got < grow {
                match self.source.read(&mut self.buf[have + got..]) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.buf.truncate(have + got);
                        return Err(e);
                    }
                }
            }
            self.buf.truncate(have + got);
        }
        Ok(())
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [self.buf[at], self.buf[at + 1], self.buf[at + 2], self.buf[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// The next record, or None at the end of the file or at damage (then `damage` is set).
    pub fn next_record(&mut self) -> std::io::Result<Option<Record<'_>>> {
        if self.done {
            return Ok(None);
        }
        if self.buf.len() - self.i < 16 {
            self.fill(16)?;
            if self.buf.len() < 16 {
                if !self.buf.is_empty() {
                    self.damage = Some(Damage::TruncatedHeader {
                        offset: self.pos,
                        record: self.packets + 1,
                        have: self.buf.len(),
                    });
                }
                self.done = true;
                return Ok(None);
            }
        }
        let i = self.i;
        let (sec, frac, caplen) = (self.u32_at(i), self.u32_at(i + 4), self.u32_at(i + 8));
        if caplen > MAX_RECORD {
            self.damage = Some(Damage::BadLength { offset: self.pos + i as u64, record: self.packets + 1, caplen });
            self.done = true;
            return Ok(None);
        }
        let need = 16 + caplen as usize;
        if self.buf.len() - self.i < need {
            self.fill(need)?;
            if self.buf.len() < need {
                self.damage = Some(Damage::TruncatedRecord {
                    offset: self.pos,
                    record: self.packets + 1,
                    have: self.buf.len() - 16,
                    caplen,
                });
                self.done = true;
                return Ok(None);
            }
        }
        let start = self.i + 16;
        let stop = start + caplen as usize;
        self.packets += 1;
        self.i = stop;
        if !(caplen > 0 && caplen <= self.snap) {
            if self.bad_records == 0 {
                self.first_bad =
                    Some(BadRecord { offset: self.pos + (start - 16) as u64, record: self.packets, caplen });
            }
            self.bad_records += 1;
        }
        Ok(Some(Record { sec, frac, data: &self.buf[start..stop] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sec: u32, data: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [sec, 5, data.len() as u32, data.len() as u32] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(data);
        r
    }

    #[test]
    fn reads_records_in_order() {
        let mut file = record(1, b"abc");
        file.extend(record(2, b""));
        file.extend(record(3, &vec![7u8; CHUNK - 5]));
        let mut r = PcapRecords::new(&file[..], 24, false, 65535);
        let a = r.next_record().unwrap().unwrap();
        assert_eq!((a.sec, a.frac, a.data), (1, 5, &b"abc"[..]));
        assert_eq!(r.next_record().unwrap().unwrap().data.len(), 0);
        assert_eq!(r.next_record().unwrap().unwrap().data.len(), CHUNK - 5);
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.packets, 3);
        assert_eq!(r.damage, None);
        // The empty record and the one over the snap length are both "bad".
        assert_eq!(r.bad_records, 2);
        assert_eq!(r.first_bad, Some(BadRecord { offset: 24 + 19, record: 2, caplen: 0 }));
        assert_eq!(r.position(), 24 + file.len() as u64);
    }

    #[test]
    fn damage_is_reported_where_it_is() {
        let mut file = record(1, b"abc");
        file.extend_from_slice(&[1, 2, 3]);
        let mut r = PcapRecords::new(&file[..], 24, false, 0);
        assert!(r.next_record().unwrap().is_some());
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.damage, Some(Damage::TruncatedHeader { offset: 24 + 19, record: 2, have: 3 }));

        let mut cut = record(1, b"abcdef");
        cut.truncate(20);
        let mut r = PcapRecords::new(&cut[..], 24, false, 0);
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.damage, Some(Damage::TruncatedRecord { offset: 24, record: 1, have: 4, caplen: 6 }));

        let mut huge = record(1, b"");
        huge[8..12].copy_from_slice(&(MAX_RECORD + 1).to_le_bytes());
        let mut r = PcapRecords::new(&huge[..], 24, false, 0);
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.damage, Some(Damage::BadLength { offset: 24, record: 1, caplen: MAX_RECORD + 1 }));
    }

    #[test]
    fn big_endian_headers() {
        let mut file = Vec::new();
        for v in [9u32, 8, 2, 2] {
            file.extend_from_slice(&v.to_be_bytes());
        }
        file.extend_from_slice(b"hi");
        let mut r = PcapRecords::new(&file[..], 24, true, 65535);
        let a = r.next_record().unwrap().unwrap();
        assert_eq!((a.sec, a.frac, a.data), (9, 8, &b"hi"[..]));
    }
}
