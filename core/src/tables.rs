//! The protocol tables of `analyzer/msnp/tables.py`, for the reader.
//!
//! A copy of data, not of rules: `tests/msnp/test_reader_core.py` checks every entry here
//! against the Python tables (through `analyzer._core.tables()`), so they cannot drift.

use std::sync::LazyLock;

pub const KNOWN_COMMANDS: &[&str] = &[
    "ACK", "ADC", "ADD", "ADG", "ADL", "ANS", "BLP", "BPR", "BYE", "CAL", "CHG", "CHL", "CVQ", "CVR", "FLN",
    "FQY", "GCF", "GTC", "ILN", "IMS", "INF", "IPG", "IRO", "JOI", "LSG", "LST", "MSG", "NAK", "NLN", "NOT",
    "OUT", "PAG", "PGD", "PNG", "PRP", "PUT", "QNG", "QRY", "REA", "REG", "REM", "RFS", "RMG", "RML", "RNG",
    "SBP", "SBS", "SDC", "SDG", "SND", "SYN", "UBM", "UBN", "UBX", "URL", "USR", "UUM", "UUN", "UUX", "VER",
    "XFR", "GET", "DEL", "NFY",
];

pub const C2S_PAYLOAD: &[(&str, u64)] = &[
    ("MSG", 0), ("QRY", 0), ("PAG", 0), ("UUX", 10), ("ADL", 13), ("RML", 13), ("FQY", 13), ("UUN", 13),
    ("UUM", 13), ("PUT", 18), ("DEL", 18),
];
pub const S2C_PAYLOAD: &[(&str, u64)] = &[
    ("MSG", 0), ("NOT", 0), ("UBX", 11), ("GCF", 11), ("UUX", 10), ("ADL", 13), ("RML", 13), ("UBN", 13),
    ("UBM", 13), ("IPG", 13), ("FQY", 13), ("NFY", 18), ("SDG", 18), ("PUT", 18), ("DEL", 18),
];
pub const STRICT_LENGTH: &[&str] = &["MSG", "QRY", "PAG", "NOT", "IPG", "UBX"];
pub const ERROR_PAYLOAD_VERSION: u64 = 13;
pub const S2C_NO_TRID: &[&str] = &[
    "NLN", "FLN", "BPR", "UBX", "UBN", "UBM", "JOI", "BYE", "OUT", "RFS", "MSG", "NOT", "IPG", "RNG", "QNG",
    "NFY", "SDG",
];
pub const S2C_NO_TRID_SYN_BLOCK: &[&str] = &["LSG", "LST"];
pub const SYN_BLOCK_VERSION: u64 = 8;
pub const C2S_NO_TRID: &[&str] = &["PNG", "OUT"];
pub const S2C_NEEDS_TRID: &[&str] = &[
    "VER", "CVR", "XFR", "CHG", "ILN", "SYN", "ADC", "ADG", "RMG", "REG", "REA", "CAL", "ANS", "IRO", "ACK",
    "NAK", "QRY", "CHL",
];
pub const TRID_MAX: u64 = 4294967295;

pub const ERROR_CODES: &[u16] = &[
    200, 201, 205, 206, 207, 208, 209, 210, 215, 216, 217, 218, 219, 223, 224, 225, 229, 230, 231, 280, 281,
    300, 302, 500, 501, 502, 510, 520, 540, 600, 601, 602, 603, 604, 605, 707, 710, 711, 712, 713, 714, 715,
    717, 731, 800, 910, 911, 912, 913, 918, 919, 920, 921, 922, 923, 924, 928, 931,
];

pub fn is_known(code: &[u8]) -> bool {
    KNOWN_COMMANDS.iter().any(|c| c.as_bytes() == code)
}

fn contains(list: &[&str], code: &[u8]) -> bool {
    list.iter().any(|c| c.as_bytes() == code)
}

/// How a line's first parameter is read as a TrID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TridMode {
    /// Never a TrID.
    Never,
    /// A TrID when it is a number.
    IfNumber,
    /// Required: a missing or malformed one is an anomaly.
    Always,
    /// LSG/LST: none in an MSNP8+ SYN block, else as IfNumber.
    SynBlock,
}

/// What the reader needs of a known code in one direction: its TrID mode and the first
/// version with a payload (None: never a payload).
#[derive(Debug, Clone, Copy)]
pub struct CodeInfo {
    pub trid: TridMode,
    pub payload_from: Option<u64>,
}

pub fn code_info(code: &[u8], client: bool) -> Option<CodeInfo> {
    if !is_known(code) {
        return None;
    }
    let trid = if client {
        if contains(C2S_NO_TRID, code) { TridMode::Never } else { TridMode::Always }
    } else if contains(S2C_NO_TRID, code) {
        TridMode::Never
    } else if contains(S2C_NO_TRID_SYN_BLOCK, code) {
        TridMode::SynBlock
    } else if contains(S2C_NEEDS_TRID, code) {
        TridMode::Always
    } else {
        TridMode::IfNumber
    };
    let payloads = if client { C2S_PAYLOAD } else { S2C_PAYLOAD };
    let payload_from = payloads.iter().find(|(c, _)| c.as_bytes() == code).map(|&(_, v)| v);
    Some(CodeInfo { trid, payload_from })
}

pub fn strict_length(code: &[u8]) -> bool {
    contains(STRICT_LENGTH, code)
}

pub fn known_error(code: u64) -> bool {
    ERROR_CODES.iter().any(|&c| c as u64 == code)
}

/// The code table of one direction, indexed by the three uppercase letters (one lookup per line).
pub struct CodeTable {
    slots: Vec<Option<CodeInfo>>,
}

static CLIENT_TABLE: LazyLock<CodeTable> = LazyLock::new(|| CodeTable::new(true));
static SERVER_TABLE: LazyLock<CodeTable> = LazyLock::new(|| CodeTable::new(false));

impl CodeTable {
    /// The table of one side, built once per process and shared by every reader: a table is
    /// 26^3 slots (about 420 KB), so one per reader cost about 840 KB per open connection.
    pub fn shared(client: bool) -> &'static CodeTable {
        if client { &CLIENT_TABLE } else { &SERVER_TABLE }
    }

    pub fn new(client: bool) -> Self {
        let mut slots = vec![None; 26 * 26 * 26];
        for code in KNOWN_COMMANDS {
            let b = code.as_bytes();
            slots[Self::index(b).expect("known codes are three uppercase letters")] = code_info(b, client);
        }
        CodeTable { slots }
    }

    fn index(code: &[u8]) -> Option<usize> {
        if code.len() != 3 || !code.iter().all(u8::is_ascii_uppercase) {
            return None;
        }
        Some(((code[0] - b'A') as usize * 26 + (code[1] - b'A') as usize) * 26 + (code[2] - b'A') as usize)
    }

    pub fn get(&self, code: &[u8]) -> Option<CodeInfo> {
        Self::index(code).and_then(|i| self.slots[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lookups_agree_with_the_lists() {
        for client in [true, false] {
            let table = CodeTable::new(client);
            for code in KNOWN_COMMANDS {
                let a = table.get(code.as_bytes()).unwrap();
                let b = code_info(code.as_bytes(), client).unwrap();
                assert_eq!((a.trid, a.payload_from), (b.trid, b.payload_from));
            }
            assert!(table.get(b"ZZZ").is_none());
            assert!(table.get(b"msg").is_none());
            assert!(table.get(b"MSGX").is_none());
        }
        assert_eq!(code_info(b"MSG", true).unwrap().trid, TridMode::Always);
        assert_eq!(code_info(b"MSG", false).unwrap().trid, TridMode::Never);
        assert_eq!(code_info(b"LST", false).unwrap().trid, TridMode::SynBlock);
        assert_eq!(code_info(b"UUX", true).unwrap().payload_from, Some(10));
    }
}
