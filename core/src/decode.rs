//! Link, IP and TCP headers: one frame in, one TCP segment (or a reason to skip it) out.
//!
//! The rules are `analyzer/capture/pcap.py`'s (`link_offset`, `decode_ip`), which stay the
//! reference: the parity tests compare both on every capture. Every read is bounds-checked
//! against the frame; a frame too short for what its headers claim is skipped, never read past.

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPV6_FRAGMENT: u8 = 44;

/// The link types this decoder knows (the others are the Python reader's, through scapy).
pub fn known_linktype(linktype: u32) -> bool {
    matches!(
        linktype,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_LINUX_SLL2
            | LINKTYPE_RAW
            | 12
            | 14
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
    )
}

fn is_vlan(etype: u16) -> bool {
    matches!(etype, 0x8100 | 0x88A8 | 0x9100 | 0x9200)
}

fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Where the IP header starts in a frame of a known link type, or None (not IP). A link
/// layer that names the IP version (an EtherType, LINKTYPE_IPV4 and _IPV6) must find that
/// version in the header's first nibble (as Wireshark's "bogus IP version"): a frame whose
/// EtherType says IPv4 over a version-6 header is not decoded as either. `link_offset` in
/// analyzer/capture/pcap.py is the same rule.
pub fn link_offset(linktype: u32, data: &[u8]) -> Option<usize> {
    let n = data.len();
    match linktype {
        LINKTYPE_ETHERNET => {
            let mut o = 14;
            let mut etype = if n >= 14 { u16_at(data, 12) } else { 0 };
            while is_vlan(etype) && o + 4 <= n {
                etype = u16_at(data, o + 2);
                o += 4;
            }
            announced(data, o, etype)
        }
        LINKTYPE_RAW | 12 | 14 => Some(0),
        LINKTYPE_IPV4 => announced(data, 0, ETH_IPV4),
        LINKTYPE_IPV6 => announced(data, 0, ETH_IPV6),
        LINKTYPE_LINUX_SLL => {
            if n >= 16 { announced(data, 16, u16_at(data, 14)) } else { None }
        }
        LINKTYPE_LINUX_SLL2 => {
            if n >= 20 { announced(data, 20, u16_at(data, 0)) } else { None }
        }
        // The family is in host (NULL) or network (LOOP) order and its IPv6 value differs
        // per OS: the IP version nibble is the reliable test.
        LINKTYPE_NULL | LINKTYPE_LOOP => (n > 4 && matches!(data[4] >> 4, 4 | 6)).then_some(4),
        _ => None,
    }
}

/// `Some(o)` when `etype` names IPv4 or IPv6 and the header at `o` is of that version.
fn announced(data: &[u8], o: usize, etype: u16) -> Option<usize> {
    let want = match etype {
        ETH_IPV4 => 4,
        ETH_IPV6 => 6,
        _ => return None,
    };
    (o < data.len() && data[o] >> 4 == want).then_some(o)
}

/// One TCP segment, borrowing the frame it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Source address, destination address, source port, destination port (12 or 36 bytes):
    /// the flow key, laid out as the Python reader's.
    pub addrs: &'a [u8],
    pub ports: &'a [u8],
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: &'a [u8],
}

impl Segment<'_> {
    pub fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.addrs.len() + 4);
        key.extend_from_slice(self.addrs);
        key.extend_from_slice(self.ports);
        key
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Tcp(Segment<'a>),
    /// A fragment of a TCP datagram (not reassembled; counted by the reader).
    Fragment,
    /// Not TCP over IP.
    Other,
}

/// The TCP segment in the IP packet at `data[o..]` (the frame ends at `data.len()`).
pub fn decode_ip(data: &[u8], o: usize) -> Decoded<'_> {
    let end = data.len();
    if o >= end {
        return Decoded::Other;
    }
    let version = data[o] >> 4;
    let (addrs, t, mut stop);
    if version == 4 {
        if end - o < 20 || data[o + 9] != IPPROTO_TCP {
            return Decoded::Other;
        }
        if u16_at(data, o + 6) & 0x3FFF != 0 {
            return Decoded::Fragment; // the TCP header may not even be here
        }
        let total = u16_at(data, o + 2) as usize;
        t = o + (((data[o] & 15) as usize) << 2);
        stop = if total != 0 { o + total } else { end }; // 0: TSO capture, length unknown
        addrs = &data[o + 12..o + 20];
    } else if version == 6 {
        if end - o < 40 {
            return Decoded::Other;
        }
        let mut nh = data[o + 6];
        stop = o + 40 + u16_at(data, o + 4) as usize;
        addrs = &data[o + 8..o + 40];
        let mut at = o + 40;
        // Hop-by-hop, routing, destination options (8-byte units) and AH (4-byte units).
        while matches!(nh, 0 | 43 | 60 | 51) && at + 8 <= end {
            let len = data[at + 1] as usize;
            let step = if nh == 51 { (len + 2) << 2 } else { (len + 1) << 3 };
            nh = data[at];
            at += step;
        }
        if nh != IPPROTO_TCP {
            return if nh == IPV6_FRAGMENT { Decoded::Fragment } else { Decoded::Other };
        }
        if o + 40 == stop {
            return Decoded::Other; // jumbogram or empty
        }
        t = at;
    } else {
        return Decoded::Other;
    }
    if t + 20 > end {
        return Decoded::Other;
    }
    let offflags = u16_at(data, t + 12);
    let p = t + (((offflags >> 12) as usize) << 2);
    if stop > end {
        stop = end; // cut by the snap length: the missing bytes become a tcp.gap later
    }
    Decoded::Tcp(Segment {
        addrs,
        ports: &data[t..t + 4],
        seq: u32_at(data, t + 4),
        ack: u32_at(data, t + 8),
        flags: (offflags & 0x3F) as u8,
        payload: if p < stop { &data[p..stop] } else { &[] },
    })
}

/// A frame of a known link type: its TCP segment, a fragment, or something else.
pub fn decode_frame(linktype: u32, frame: &[u8]) -> Decoded<'_> {
    match link_offset(linktype, frame) {
        Some(o) => decode_ip(frame, o),
        None => Decoded::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_layers_ip_version_must_match_the_header() {
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        ip6.extend_from_slice(&[0; 32]);
        ip6.extend_from_slice(&[0; 20]);
        for (etype, ok) in [(0x0800u16, false), (0x86DD, true)] {
            let mut frame = vec![0; 12];
            frame.extend_from_slice(&etype.to_be_bytes());
            frame.extend_from_slice(&ip6);
            assert_eq!(link_offset(LINKTYPE_ETHERNET, &frame).is_some(), ok);
        }
        assert_eq!(link_offset(LINKTYPE_IPV4, &ip6), None);
        assert_eq!(link_offset(LINKTYPE_IPV6, &ip6), Some(0));
        assert_eq!(link_offset(LINKTYPE_RAW, &ip6), Some(0));
    }

    fn ipv4_tcp(payload: &[u8], total_override: Option<u16>) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2];
        let total = total_override.unwrap_or((40 + payload.len()) as u16);
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0x07, 0x47, 0xC0, 0x01]); // 1863 -> 49153
        p.extend_from_slice(&1000u32.to_be_bytes());
        p.extend_from_slice(&2000u32.to_be_bytes());
        p.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    fn ethernet(ip: &[u8], vlans: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        for _ in 0..vlans {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn ethernet_ipv4_tcp_payload() {
        let frame = ethernet(&ipv4_tcp(b"VER 1 MSNP8\r\n", None), 0);
        let Decoded::Tcp(s) = decode_frame(LINKTYPE_ETHERNET, &frame) else { panic!() };
        assert_eq!(s.payload, b"VER 1 MSNP8\r\n");
        assert_eq!((s.seq, s.ack, s.flags), (1000, 2000, 0x18));
        assert_eq!(s.key(), [127, 0, 0, 1, 127, 0, 0, 2, 0x07, 0x47, 0xC0, 0x01]);
    }

    #[test]
    fn vlan_tags_are_walked() {
        let frame = ethernet(&ipv4_tcp(b"x", None), 2);
        assert!(matches!(decode_frame(LINKTYPE_ETHERNET, &frame), Decoded::Tcp(s) if s.payload == b"x"));
    }

    #[test]
    fn padding_after_the_ip_length_is_not_payload() {
        let mut ip = ipv4_tcp(b"ab", None);
        ip.extend_from_slice(&[0; 6]); // Ethernet minimum-frame padding
        let frame = ethernet(&ip, 0);
        assert!(matches!(decode_frame(LINKTYPE_ETHERNET, &frame), Decoded::Tcp(s) if s.payload == b"ab"));
    }

    #[test]
    fn snapped_frames_give_what_is_there() {
        let ip = ipv4_tcp(b"abcdef", None);
        let frame = &ip[..ip.len() - 4];
        assert!(matches!(decode_frame(LINKTYPE_RAW, frame), Decoded::Tcp(s) if s.payload == b"ab"));
    }

    #[test]
    fn fragments_and_non_tcp() {
        let mut ip = ipv4_tcp(b"abc", None);
        ip[6] = 0x20; // more fragments
        assert_eq!(decode_frame(LINKTYPE_RAW, &ip), Decoded::Fragment);
        let mut udp = ipv4_tcp(b"abc", None);
        udp[9] = 17;
        assert_eq!(decode_frame(LINKTYPE_RAW, &udp), Decoded::Other);
    }

    #[test]
    fn every_truncation_of_a_frame_is_safe() {
        // A header that claims more than the frame holds is never read past.
        let mut ip = ipv4_tcp(b"hello", Some(0xFFFF));
        ip[0] = 0x4F; // IHL 15: options past the end
        for linktype in [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_NULL, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2] {
            let frame = ethernet(&ip, 1);
            for cut in 0..=frame.len() {
                let _ = decode_frame(linktype, &frame[..cut]);
            }
        }
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let tcp = &ipv4_tcp(b"MSG", None)[20..];
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        ip.extend_from_slice(&[0u8; 15]);
        ip.push(1);
        ip.extend_from_slice(&[0u8; 15]);
        ip.push(1);
        let ext = [6u8, 0, 0, 0, 0, 0, 0, 0]; // hop-by-hop, next header TCP
        ip[6] = 0;
        let plen = (ext.len() + tcp.len()) as u16;
        ip[4..6].copy_from_slice(&plen.to_be_bytes());
        ip.extend_from_slice(&ext);
        ip.extend_from_slice(tcp);
        let Decoded::Tcp(s) = decode_frame(LINKTYPE_IPV6, &ip) else { panic!() };
        assert_eq!(s.payload, b"MSG");
        assert_eq!(s.addrs.len(), 32);
        let mut frag = ip.clone();
        frag[6] = 44;
        assert_eq!(decode_frame(LINKTYPE_IPV6, &frag), Decoded::Fragment);
    }
}
