//! The sans-IO MSNP reader, one per direction: bytes in any chunking in, events out.
//!
//! A port of `analyzer/msnp/reader.py`, which stays the reference: the same framing,
//! TrID rules by version and direction, payload lengths, resynchronisation after gaps and
//! garbage, and the same anomalies with the same words. `tests/msnp/test_reader_core.py`
//! runs both on the same inputs (whole, byte by byte, re-segmented at random) and compares
//! every event field. Every byte fed comes back in exactly one `Command` or `Skipped`.
//!
//! Numbers on the wire have no size limit (a TrID of 30 digits is hostile but legal to
//! send), so `Num` keeps the exact decimal text of anything that does not fit in a u64.

use crate::tables::{self, CodeTable, TridMode};

pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
pub const DEFAULT_MAX_PAYLOAD: u64 = 1024 * 1024;

/// A decimal number from the wire: its value (saturated) and, past u64, its exact digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Num {
    pub value: u64,
    pub big: Option<Box<str>>,
}

impl Num {
    /// The number an all-ASCII-digit token spells (the caller checked `is_digits`).
    pub fn parse(digits: &[u8]) -> Num {
        let mut value: u64 = 0;
        for &d in digits {
            match value.checked_mul(10).and_then(|v| v.checked_add((d - b'0') as u64)) {
                Some(v) => value = v,
                None => {
                    let first = digits.iter().position(|&c| c != b'0').unwrap_or(digits.len());
                    let text = std::str::from_utf8(&digits[first..]).unwrap_or("0");
                    return Num { value: u64::MAX, big: Some(text.into()) };
                }
            }
        }
        Num { value, big: None }
    }

    pub fn small(value: u64) -> Num {
        Num { value, big: None }
    }

    fn is_zero(&self) -> bool {
        self.big.is_none() && self.value == 0
    }

    fn exceeds(&self, limit: u64) -> bool {
        self.big.is_some() || self.value > limit
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.big {
            Some(text) => f.write_str(text),
            None => write!(f, "{}", self.value),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (&self.big, &other.big) {
            (None, None) => self.value.cmp(&other.value),
            (Some(_), None) => std::cmp::Ordering::Greater,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(a), Some(b)) => (a.len(), a).cmp(&(b.len(), b)),
        }
    }
}

/// What both directions of one connection know about its dialect.
#[derive(Debug, Clone, Default)]
pub struct ProtocolState {
    /// Negotiated (the server's VER reply), or None.
    pub version: Option<Num>,
    /// Versions the client offered.
    pub offered: Vec<Num>,
    /// Lower bound inferred from features seen (kept by the analysis layer).
    pub min_version: u64,
    /// Upper bound inferred from the lines seen (7: the MSNP2-7 dialect), or 0.
    pub max_version: u64,
}

impl ProtocolState {
    /// The version that decides framing: negotiated, else the client's best offer.
    pub fn effective(&self) -> Option<&Num> {
        self.version.as_ref().or_else(|| self.offered.iter().max())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command<T = f64> {
    /// The code as sent (a lowercase code keeps its case).
    pub code: String,
    pub trid: Option<Num>,
    /// Byte ranges in `line` of the tokens after the code (the TrID's included).
    pub args: Vec<(u32, u32)>,
    /// The line with its line end.
    pub line: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub payload_len: Option<Num>,
    pub offset: u64,
    pub ts: Option<T>,
}

impl<T> Command<T> {
    pub fn arg(&self, i: usize) -> &[u8] {
        let (a, b) = self.args[i];
        &self.line[a as usize..b as usize]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event<T = f64> {
    Command(Command<T>),
    Skipped { raw: Vec<u8>, offset: u64, ts: Option<T> },
    Anomaly { name: &'static str, detail: String, offset: u64, ts: Option<T>, trid: Option<Num> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Line,
    Payload,
    Discard,
    Skip,
}

/// Python's `repr()` of a bytes object, as the reference's anomaly details show it.
pub fn bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') { b'"' } else { b'\'' };
    let mut s = String::with_capacity(b.len() + 3);
    s.push('b');
    s.push(quote as char);
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            c if c == quote => {
                s.push('\\');
                s.push(c as char);
            }
            32..=126 => s.push(c as char),
            c => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push(quote as char);
    s
}

/// `framing.HUGE`: a length token too long to convert means "the rest of the stream".
pub const HUGE: u64 = 1 << 62;

/// `framing.to_length`: an all-digit token as a length (19 digits or more is HUGE).
pub fn to_length(token: &[u8]) -> u64 {
    if token.len() < 19 { Num::parse(token).value } else { HUGE }
}

/// An LST/LSG line of the MSNP2-7 shape: TrID, list version, then (LST) a list name or
/// (LSG) item number, count and group id, all numbers (`_old_list_line` in the reference).
fn old_list_line(lookup: &[u8], tokens: &[(usize, usize)], content: &[u8]) -> bool {
    let tok = |i: usize| &content[tokens[i].0..tokens[i].1];
    let n = tokens.len();
    if n < 3 || !is_digits(tok(1)) {
        return false;
    }
    if lookup == b"LST" {
        return matches!(tok(2), b"FL" | b"AL" | b"BL" | b"RL");
    }
    n >= 7 && (1..6).all(|i| is_digits(tok(i)))
}

fn is_digits(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
}

fn find(hay: &[u8], needle: u8, from: usize) -> Option<usize> {
    hay[from..].iter().position(|&c| c == needle).map(|i| i + from)
}

/// `bytes.strip(b" ")`.
fn strip_spaces(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b' ').map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

fn too_long_detail(max_line: usize, head: &[u8]) -> String {
    // The same text whether the line arrived whole or in pieces (chunking must not show).
    format!("no line end within {max_line} bytes (starts {})", bytes_repr(head))
}

fn head(b: &[u8], n: usize) -> &[u8] {
    &b[..b.len().min(n)]
}

/// Generic over the timestamp `T` the caller passes (f64 seconds; the Python binding passes
/// a handle to the caller's own object, so an int or float comes back as it went in).
pub struct CommandReader<T: Copy = f64> {
    pub client: bool,
    pub max_line: usize,
    pub max_payload: u64,
    table: &'static CodeTable,
    pending: Vec<u8>,
    offset: u64,
    mode: Mode,
    /// Boxed: a reader spends nearly all its life without one, and a `Command` inline would
    /// cost every idle reader its size (thousands are open at once on a busy server).
    partial: Option<Box<Command<T>>>,
    need: u64,
    garbage: bool,
}

fn versions_text(offered: &[Num]) -> String {
    offered.iter().map(|v| format!("MSNP{v}")).collect::<Vec<_>>().join(", ")
}

/// `framing.parse_version`: the number in an `MSNPn` token of at most 7 digits.
pub fn parse_version(token: &[u8]) -> Option<Num> {
    (token.len() > 4 && token.len() < 12 && &token[..4] == b"MSNP" && is_digits(&token[4..]))
        .then(|| Num::parse(&token[4..]))
}

impl<T: Copy> CommandReader<T> {
    pub fn new(client: bool, max_line: usize, max_payload: u64) -> Self {
        CommandReader {
            client,
            max_line,
            max_payload,
            table: CodeTable::shared(client),
            pending: Vec::new(),
            offset: 0,
            mode: Mode::Line,
            partial: None,
            need: 0,
            garbage: false,
        }
    }

    /// Stream offset of the next byte not yet turned into an event.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The time of the command waiting for its payload, if one is.
    pub fn partial_ts(&self) -> Option<T> {
        self.partial.as_ref().and_then(|c| c.ts)
    }

    fn anomaly(&self, out: &mut Vec<Event<T>>, name: &'static str, detail: String, offset: u64, ts: Option<T>,
               trid: Option<Num>) {
        out.push(Event::Anomaly { name, detail, offset, ts, trid });
    }

    pub fn feed(&mut self, state: &mut ProtocolState, data: &[u8], ts: Option<T>, out: &mut Vec<Event<T>>) {
        if data.is_empty() {
            return;
        }
        let mut data = data;
        if self.mode == Mode::Skip || self.mode == Mode::Discard {
            data = self.skip(data, ts, out);
            if data.is_empty() {
                return;
            }
        }
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(data);
            if self.mode == Mode::Line {
                if !data.contains(&b'\n') {
                    if self.pending.len() > self.max_line {
                        self.overlong_pending(ts, out);
                    }
                    return;
                }
            } else if (self.pending.len() as u64) < self.need {
                return;
            }
            let buf = std::mem::take(&mut self.pending);
            self.parse(state, &buf, ts, out);
        } else {
            if self.mode == Mode::Payload && (data.len() as u64) < self.need {
                self.pending.extend_from_slice(data);
                return;
            }
            self.parse(state, data, ts, out);
        }
    }

    /// End of stream: flush whatever is pending, as truncated.
    pub fn close(&mut self, ts: Option<T>, out: &mut Vec<Event<T>>) {
        if self.mode == Mode::Payload && self.partial.is_some() {
            let mut cmd = *self.partial.take().unwrap();
            let have = std::mem::take(&mut self.pending);
            let n = have.len() as u64;
            cmd.payload = Some(have);
            if ts.is_some() {
                cmd.ts = ts;
            }
            let detail = format!(
                "{} announced {} bytes, stream ended after {}",
                cmd.code,
                cmd.payload_len.as_ref().map_or("None".to_string(), |l| l.to_string()),
                n
            );
            self.anomaly(out, "msnp.payload.truncated", detail, cmd.offset, ts, cmd.trid.clone());
            out.push(Event::Command(cmd));
            self.offset += n;
        } else if !self.pending.is_empty() {
            let have = std::mem::take(&mut self.pending);
            let detail = format!("stream ended inside a line of {} bytes: {}", have.len(), bytes_repr(head(&have, 40)));
            self.anomaly(out, "msnp.line.truncated", detail, self.offset, ts, None);
            let n = have.len() as u64;
            out.push(Event::Skipped { raw: have, offset: self.offset, ts });
            self.offset += n;
        }
        self.pending.clear();
        self.partial = None;
        self.mode = Mode::Line;
    }

    /// `size` bytes are missing here; drop what depended on them and resynchronise.
    pub fn gap(&mut self, size: u64, ts: Option<T>, out: &mut Vec<Event<T>>) {
        if self.mode == Mode::Payload && self.partial.is_some() {
            let mut cmd = *self.partial.take().unwrap();
            let have = self.pending.len() as u64;
            let announced = cmd.payload_len.as_ref().map_or(0, |l| l.value);
            cmd.payload = None; // damaged: the bytes we hold are not the payload
            if ts.is_some() {
                cmd.ts = ts;
            }
            out.push(Event::Command(cmd));
            if have > 0 {
                out.push(Event::Skipped { raw: std::mem::take(&mut self.pending), offset: self.offset, ts });
            }
            self.offset += have + size;
            self.pending.clear();
            // Payloads in Payload mode are at most max_payload, so the value is exact.
            if announced > have.saturating_add(size) {
                self.mode = Mode::Skip;
                self.need = announced - have - size;
            } else {
                // The gap ran past the payload's end: the next line may start mid-way.
                self.mode = Mode::Line;
                self.garbage = true;
            }
            return;
        }
        if self.mode == Mode::Skip {
            self.offset += size;
            if self.need <= size {
                self.need = 0;
                self.mode = Mode::Line;
                self.garbage = true;
            } else {
                self.need -= size;
            }
            return;
        }
        if !self.pending.is_empty() {
            let raw = std::mem::take(&mut self.pending);
            let n = raw.len() as u64;
            out.push(Event::Skipped { raw, offset: self.offset, ts });
            self.offset += n;
        }
        self.offset += size;
        self.mode = Mode::Line;
        self.garbage = true;
    }

    /// Consume bytes of an overlong line (Discard) or a damaged payload (Skip).
    fn skip<'a>(&mut self, data: &'a [u8], ts: Option<T>, out: &mut Vec<Event<T>>) -> &'a [u8] {
        if self.mode == Mode::Discard {
            return match find(data, b'\n', 0) {
                None => {
                    out.push(Event::Skipped { raw: data.to_vec(), offset: self.offset, ts });
                    self.offset += data.len() as u64;
                    &[]
                }
                Some(nl) => {
                    out.push(Event::Skipped { raw: data[..nl + 1].to_vec(), offset: self.offset, ts });
                    self.offset += (nl + 1) as u64;
                    self.mode = Mode::Line;
                    self.garbage = true;
                    &data[nl + 1..]
                }
            };
        }
        let take = self.need.min(data.len() as u64) as usize;
        out.push(Event::Skipped { raw: data[..take].to_vec(), offset: self.offset, ts });
        self.offset += take as u64;
        self.need -= take as u64;
        if self.need == 0 {
            self.mode = Mode::Line;
        }
        &data[take..]
    }

    fn overlong_pending(&mut self, ts: Option<T>, out: &mut Vec<Event<T>>) {
        let have = std::mem::take(&mut self.pending);
        self.anomaly(out, "msnp.line.too_long", too_long_detail(self.max_line, head(&have, 40)), self.offset, ts, None);
        let n = have.len() as u64;
        out.push(Event::Skipped { raw: have, offset: self.offset, ts });
        self.offset += n;
        self.mode = Mode::Discard;
    }

    fn parse(&mut self, state: &mut ProtocolState, buf: &[u8], ts: Option<T>, out: &mut Vec<Event<T>>) {
        let n = buf.len();
        let base = self.offset;
        let mut pos = 0usize;
        if self.mode == Mode::Payload {
            let mut cmd = *self.partial.take().expect("payload mode has a partial command");
            let need = self.need as usize;
            cmd.payload = Some(buf[..need].to_vec());
            cmd.ts = ts;
            out.push(Event::Command(cmd));
            self.mode = Mode::Line;
            pos = need;
        }
        let client = self.client;
        let mut tokens: Vec<(usize, usize)> = Vec::with_capacity(8);
        while let Some(nl) = find(buf, b'\n', pos) {
            let off = base + pos as u64;
            if nl - pos > self.max_line {
                self.anomaly(out, "msnp.line.too_long", too_long_detail(self.max_line, head(&buf[pos..], 40)), off, ts,
                             None);
                out.push(Event::Skipped { raw: buf[pos..nl + 1].to_vec(), offset: off, ts });
                pos = nl + 1;
                self.garbage = true;
                continue;
            }
            let content_end = if nl > pos && buf[nl - 1] == b'\r' {
                nl - 1
            } else {
                self.anomaly(out, "msnp.newline.bare_lf", "line ended with \\n only".into(), off, ts, None);
                nl
            };
            let content = &buf[pos..content_end];
            // Tokens as ranges of `content` (split on single spaces, as the fast path does).
            tokens.clear();
            let mut start = 0;
            for (i, &c) in content.iter().enumerate() {
                if c == b' ' {
                    tokens.push((start, i));
                    start = i + 1;
                }
            }
            tokens.push((start, content.len()));
            let first = &content[tokens[0].0..tokens[0].1];
            let fast = self.table.get(first);
            let odd = tokens.iter().any(|&(a, b)| a == b) || content.contains(&b'\r') || content.contains(&b'\t');
            let (text, mode, minver, known, lookup): (String, TridMode, Option<u64>, bool, Vec<u8>);
            if fast.is_none() || odd {
                if !self.slow_tokens(content, &mut tokens, off, ts, out) {
                    out.push(Event::Skipped { raw: buf[pos..nl + 1].to_vec(), offset: off, ts });
                    pos = nl + 1;
                    continue;
                }
                let code = &content[tokens[0].0..tokens[0].1];
                let upper = code.to_ascii_uppercase();
                let info = self.table.get(&upper);
                text = String::from_utf8_lossy(code).into_owned();
                match info {
                    Some(i) => {
                        mode = i.trid;
                        // A code frames a payload only as the client reads it, exactly ("msg" is
                        // not MSG): see analyzer/msnp/framing.py.
                        minver = if upper.as_slice() == code { i.payload_from } else { None };
                        known = true;
                    }
                    None => {
                        mode = if client || is_digits(&upper) { TridMode::Always } else { TridMode::IfNumber };
                        minver = None;
                        known = false;
                    }
                }
                lookup = upper;
            } else {
                let info = fast.unwrap();
                text = String::from_utf8_lossy(first).into_owned();
                mode = info.trid;
                minver = info.payload_from;
                known = true;
                lookup = first.to_vec();
            }
            if self.garbage {
                self.garbage = false;
            }
            let ntok = tokens.len();
            let tok = |i: usize| &content[tokens[i].0..tokens[i].1];
            // -- TrID
            let mut trid: Option<Num> = None;
            let mut mode = mode;
            if mode != TridMode::Never {
                if mode == TridMode::SynBlock {
                    mode = if self.syn_block_line(state, &lookup, &tokens, content) {
                        TridMode::Never
                    } else {
                        TridMode::IfNumber
                    };
                }
                if mode != TridMode::Never && ntok > 1 && is_digits(tok(1)) {
                    let t = Num::parse(tok(1));
                    if t.exceeds(tables::TRID_MAX) || (t.is_zero() && client) {
                        self.trid_anomalies(&tokens, content, off, ts, out, &text);
                    }
                    trid = Some(t);
                } else if mode == TridMode::Always {
                    trid = self.trid_anomalies(&tokens, content, off, ts, out, &text);
                }
                if tok(0) == b"VER" {
                    self.learn_version(state, &tokens, content, &trid, off, ts, out);
                }
            }
            let line_end = nl + 1;
            let make = |payload: Option<Vec<u8>>, payload_len: Option<Num>, trid: Option<Num>, stop: usize| {
                // Args as ranges of the line: content starts at the line's start.
                Command {
                    code: text.clone(),
                    trid,
                    args: tokens[1..].iter().map(|&(a, b)| (a as u32, b as u32)).collect(),
                    line: buf[pos..stop].to_vec(),
                    payload,
                    payload_len,
                    offset: off,
                    ts,
                }
            };
            // -- payload
            let length: u64;
            match minver {
                None => {
                    if !known && is_digits(&lookup) {
                        match self.error_shape(state, &lookup, &tokens, content, &trid, off, ts, out) {
                            Some(l) => length = l,
                            None => {
                                out.push(Event::Command(make(None, None, trid, line_end)));
                                pos = line_end;
                                continue;
                            }
                        }
                    } else {
                        out.push(Event::Command(make(None, None, trid, line_end)));
                        pos = line_end;
                        continue;
                    }
                }
                Some(minver) => {
                    let mut found = None;
                    let enough = ntok >= if trid.is_none() { 2 } else { 3 };
                    // `(effective or minver) >= minver`: a version of 0 counts as unknown.
                    let version_ok = minver == 0
                        || match state.effective() {
                            Some(v) if !v.is_zero() => v.big.is_some() || v.value >= minver,
                            _ => true,
                        };
                    if enough && version_ok {
                        let last = tok(ntok - 1);
                        if is_digits(last) {
                            found = Some(to_length(last));
                        } else if tables::strict_length(&lookup) {
                            self.anomaly(out, "msnp.payload.bad_length",
                                         format!("{text} length field {}", bytes_repr(head(last, 20))), off, ts,
                                         trid.clone());
                        }
                    } else if tables::strict_length(&lookup) && lookup != b"UBX" {
                        self.anomaly(out, "msnp.payload.bad_length", format!("{text} has no length field"), off, ts,
                                     trid.clone());
                    }
                    match found {
                        Some(l) => length = l,
                        None => {
                            out.push(Event::Command(make(None, None, trid, line_end)));
                            pos = line_end;
                            continue;
                        }
                    }
                }
            }
            let start = line_end;
            let end = start + length as usize; // length <= HUGE (2^62): no overflow
            if length > self.max_payload {
                // Framed as the client frames it (the length is honoured), but not kept.
                self.anomaly(out, "msnp.payload.too_large",
                             format!("{text} announces {length} bytes (cap {}); skipped, not kept", self.max_payload),
                             off, ts, trid.clone());
                out.push(Event::Command(make(None, Some(Num::small(length)), trid, start)));
                if end <= n {
                    if length > 0 {
                        out.push(Event::Skipped { raw: buf[start..end].to_vec(), offset: base + start as u64, ts });
                    }
                    pos = end;
                    continue;
                }
                if start < n {
                    out.push(Event::Skipped { raw: buf[start..].to_vec(), offset: base + start as u64, ts });
                }
                self.mode = Mode::Skip;
                self.need = (end - n) as u64;
                self.offset = base + n as u64;
                self.pending.clear();
                return;
            }
            if end <= n {
                let payload = buf[start..end].to_vec();
                out.push(Event::Command(make(Some(payload), Some(Num::small(length)), trid, start)));
                pos = end;
                continue;
            }
            // The payload is not all here yet.
            self.need = length;
            self.partial = Some(Box::new(make(None, Some(Num::small(length)), trid, start)));
            self.mode = Mode::Payload;
            self.offset = base + start as u64;
            self.pending.clear();
            self.pending.extend_from_slice(&buf[start..]);
            return;
        }
        self.offset = base + pos as u64;
        self.pending.clear();
        if pos < n {
            self.pending.extend_from_slice(&buf[pos..]);
            if self.pending.len() > self.max_line {
                self.overlong_pending(ts, out);
            }
        }
    }

    /// Tokens of an unusual line (odd white space, unknown code); false to skip it.
    fn slow_tokens(&mut self, content: &[u8], tokens: &mut Vec<(usize, usize)>, off: u64, ts: Option<T>,
                   out: &mut Vec<Event<T>>) -> bool {
        let has_tab = content.contains(&b'\t');
        if has_tab || tokens.iter().any(|&(a, b)| a == b) {
            if has_tab {
                self.anomaly(out, "msnp.whitespace.tab", "tab used as a separator".into(), off, ts, None);
            }
            let spaced: Vec<u8> = content.iter().map(|&c| if c == b'\t' { b' ' } else { c }).collect();
            if spaced.first() == Some(&b' ') {
                self.anomaly(out, "msnp.whitespace.leading", "white space before the command code".into(), off, ts,
                             None);
            }
            let stripped = strip_spaces(&spaced);
            if spaced.last() == Some(&b' ') && !stripped.is_empty() {
                self.anomaly(out, "msnp.whitespace.trailing", "white space at the end of the line".into(), off, ts,
                             None);
            }
            if stripped.windows(2).any(|w| w == b"  ") {
                self.anomaly(out, "msnp.whitespace.multiple_spaces",
                             "more than one space between parameters".into(), off, ts, None);
            }
            tokens.clear();
            let mut start = 0;
            for (i, &c) in spaced.iter().enumerate() {
                if c == b' ' {
                    if i > start {
                        tokens.push((start, i));
                    }
                    start = i + 1;
                }
            }
            if spaced.len() > start {
                tokens.push((start, spaced.len()));
            }
            if tokens.is_empty() {
                let what = if content.is_empty() { "empty line" } else { "line of white space only" };
                self.anomaly(out, "msnp.line.empty", what.into(), off, ts, None);
                return false;
            }
        }
        if content.contains(&b'\r') {
            self.anomaly(out, "msnp.newline.bare_cr", "bare \\r inside a line".into(), off, ts, None);
        }
        let code = &content[tokens[0].0..tokens[0].1];
        if tables::is_known(code) {
            return true;
        }
        let plain = code.len() == 3 && code.is_ascii();
        let ascii = |c: &[u8]| String::from_utf8_lossy(c).into_owned();
        if plain && is_digits(code) {
            if self.client {
                self.anomaly(out, "msnp.error.from_client", format!("client sent error code {}", ascii(code)), off,
                             ts, None);
            }
            return true;
        }
        if plain && code.iter().all(u8::is_ascii_alphabetic) && !self.garbage {
            if code.iter().all(u8::is_ascii_uppercase) {
                self.anomaly(out, "msnp.command.unknown", format!("unknown command {}", ascii(code)), off, ts, None);
                return true;
            }
            self.anomaly(out, "msnp.command.lowercase", format!("command code '{}'", ascii(code)), off, ts, None);
            return true;
        }
        if !self.garbage {
            if !code.is_ascii() && code.len() <= 6 {
                self.anomaly(out, "msnp.command.non_ascii", format!("command code {}", bytes_repr(head(code, 12))), off,
                             ts, None);
            } else {
                self.anomaly(out, "msnp.line.garbage", format!("undecodable line {}", bytes_repr(head(content, 40))),
                             off, ts, None);
            }
            self.garbage = true;
        }
        false
    }

    /// Whether an LSG/LST line has the MSNP8+ shape (no TrID).
    fn syn_block_line(&self, state: &mut ProtocolState, lookup: &[u8], tokens: &[(usize, usize)],
                      content: &[u8]) -> bool {
        if let Some(v) = state.effective() {
            return v.big.is_some() || v.value >= tables::SYN_BLOCK_VERSION;
        }
        // Unknown version (the capture starts after VER): the lines seen tell the dialect
        // (`_syn_block_line` in the reference). Once one line has shown the MSNP2-7 shape,
        // the ambiguous ones are read in it.
        if state.max_version != 0 && state.max_version < tables::SYN_BLOCK_VERSION {
            return false;
        }
        if state.min_version >= tables::SYN_BLOCK_VERSION {
            return true;
        }
        if old_list_line(lookup, tokens, content) {
            state.max_version = tables::SYN_BLOCK_VERSION - 1;
            return false;
        }
        true
    }

    /// The TrID anomalies of a line (`_trid` in the reference); the TrID when it is a number.
    #[allow(clippy::too_many_arguments)]
    fn trid_anomalies(&self, tokens: &[(usize, usize)], content: &[u8], off: u64, ts: Option<T>,
                      out: &mut Vec<Event<T>>, text: &str) -> Option<Num> {
        if tokens.len() < 2 {
            self.anomaly(out, "msnp.trid.missing", format!("{text} without a TrID"), off, ts, None);
            return None;
        }
        let token = &content[tokens[1].0..tokens[1].1];
        if !is_digits(token) {
            self.anomaly(out, "msnp.trid.not_integer", format!("{text} TrID {}", bytes_repr(head(token, 20))), off, ts,
                         None);
            return None;
        }
        let trid = Num::parse(token);
        if trid.exceeds(tables::TRID_MAX) {
            self.anomaly(out, "msnp.trid.out_of_range", format!("{text} TrID {trid}"), off, ts, Some(trid.clone()));
        } else if trid.is_zero() && self.client {
            self.anomaly(out, "msnp.trid.zero_from_client", format!("{text} 0"), off, ts, Some(trid.clone()));
        }
        Some(trid)
    }

    /// Payload length of a numeric error, or None; flags odd shapes.
    #[allow(clippy::too_many_arguments)]
    fn error_shape(&self, state: &ProtocolState, code: &[u8], tokens: &[(usize, usize)], content: &[u8],
                   trid: &Option<Num>, off: u64, ts: Option<T>, out: &mut Vec<Event<T>>) -> Option<u64> {
        let number = Num::parse(code);
        if !tables::known_error(number.value) {
            self.anomaly(out, "msnp.error.unknown_code", format!("error {number}"), off, ts, trid.clone());
        }
        let ntok = tokens.len();
        if ntok <= 2 {
            return None;
        }
        let third = &content[tokens[2].0..tokens[2].1];
        let version_ok = match state.effective() {
            None => true,
            Some(v) => v.big.is_some() || v.value >= tables::ERROR_PAYLOAD_VERSION,
        };
        if ntok == 3 && is_digits(third) && version_ok {
            return Some(to_length(third));
        }
        self.anomaly(out, "msnp.error.with_params", format!("error {number} with {} extra parameter(s)", ntok - 2),
                     off, ts, trid.clone());
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn learn_version(&self, state: &mut ProtocolState, tokens: &[(usize, usize)], content: &[u8],
                     trid: &Option<Num>, off: u64, ts: Option<T>, out: &mut Vec<Event<T>>) {
        let rest = if tokens.len() > 2 { &tokens[2..] } else { &[][..] };
        let versions: Vec<Num> = rest.iter().filter_map(|&(a, b)| parse_version(&content[a..b])).collect();
        if self.client {
            if !versions.is_empty() {
                state.offered = versions;
            }
            return;
        }
        if let Some(chosen) = versions.into_iter().next() {
            if !state.offered.is_empty() && !state.offered.contains(&chosen) {
                self.anomaly(out, "msnp.version.not_offered",
                             format!("server chose MSNP{chosen}; client offered {}", versions_text(&state.offered)),
                             off, ts, trid.clone());
            }
            state.version = Some(chosen);
        } else if rest.first().is_some_and(|&(a, b)| &content[a..b] == b"0") {
            let offered =
                if state.offered.is_empty() { "the offered versions".to_string() } else { versions_text(&state.offered) };
            self.anomaly(out, "msnp.version.rejected", format!("server supports none of {offered}"), off, ts,
                         trid.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(client: bool, chunks: &[&[u8]]) -> Vec<Event> {
        let mut state = ProtocolState::default();
        let mut reader = CommandReader::new(client, DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD);
        let mut out = Vec::new();
        for c in chunks {
            reader.feed(&mut state, c, Some(1.0), &mut out);
        }
        reader.close(Some(2.0), &mut out);
        out
    }

    fn raw(events: &[Event]) -> Vec<u8> {
        let mut all = Vec::new();
        for e in events {
            match e {
                Event::Command(c) => {
                    all.extend_from_slice(&c.line);
                    if let Some(p) = &c.payload {
                        all.extend_from_slice(p);
                    }
                }
                Event::Skipped { raw, .. } => all.extend_from_slice(raw),
                Event::Anomaly { .. } => {}
            }
        }
        all
    }

    const SESSION: &[u8] = b"VER 1 MSNP8 CVR0\r\nUSR 2 TWN I bob@example.com\r\nMSG 3 A 5\r\nhello\
PNG\r\n  bad\tline\r\n\x01\x02garbage\r\nmsg 4 U 2\r\nhiOUT\r\n";

    #[test]
    fn every_byte_comes_back_however_it_is_chopped() {
        let whole = run(true, &[SESSION]);
        assert_eq!(raw(&whole), SESSION);
        let bytes: Vec<&[u8]> = SESSION.chunks(1).collect();
        let one = run(true, &bytes);
        assert_eq!(raw(&one), SESSION);
        let strip = |events: Vec<Event>| {
            events
                .into_iter()
                .filter_map(|e| match e {
                    Event::Command(c) => Some(format!("{} {:?} {:?} {}", c.code, c.trid, c.payload, c.offset)),
                    Event::Anomaly { name, detail, offset, .. } => Some(format!("{name} {detail} {offset}")),
                    Event::Skipped { .. } => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(whole), strip(one));
    }

    #[test]
    fn trids_payloads_and_anomalies() {
        let events = run(true, &[SESSION]);
        let cmds: Vec<&Command> = events.iter().filter_map(|e| if let Event::Command(c) = e { Some(c) } else { None }).collect();
        assert_eq!(cmds[0].code, "VER");
        assert_eq!(cmds[0].trid, Some(Num::small(1)));
        assert_eq!(cmds[2].payload.as_deref(), Some(&b"hello"[..]));
        assert_eq!(cmds[3].code, "PNG");
        assert_eq!(cmds[3].trid, None);
        let names: Vec<&str> = events.iter().filter_map(|e| if let Event::Anomaly { name, .. } = e { Some(*name) } else { None }).collect();
        assert!(names.contains(&"msnp.whitespace.tab"));
        assert!(names.contains(&"msnp.command.lowercase"));
        assert!(names.contains(&"msnp.line.garbage") || names.contains(&"msnp.command.non_ascii"));
    }

    #[test]
    fn huge_numbers_keep_their_digits() {
        let events = run(true, &[b"CHG 000123456789012345678901234567890 NLN\r\n"]);
        let Event::Anomaly { detail, .. } = &events[0] else { panic!("{events:?}") };
        assert_eq!(detail, "CHG TrID 123456789012345678901234567890");
        assert_eq!(Num::parse(b"0007").to_string(), "7");
    }

    #[test]
    fn python_bytes_repr() {
        assert_eq!(bytes_repr(b"a'b"), "b\"a'b\"");
        assert_eq!(bytes_repr(b"a'\"b"), "b'a\\'\"b'");
        assert_eq!(bytes_repr(b"\x00\xff\t\\"), "b'\\x00\\xff\\t\\\\'");
    }

    #[test]
    fn gaps_resynchronise() {
        let mut state = ProtocolState::default();
        let mut reader = CommandReader::new(false, DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD);
        let mut out = Vec::new();
        reader.feed(&mut state, b"MSG a@b A 10\r\nhel", Some(1.0), &mut out);
        reader.gap(3, Some(2.0), &mut out);
        reader.feed(&mut state, b"lo\r\nNLN NLN a@b A\r\n", Some(3.0), &mut out);
        assert!(matches!(&out[0], Event::Command(c) if c.payload.is_none()));
        assert!(matches!(&out[1], Event::Skipped { raw, .. } if raw == b"hel"));
        assert!(matches!(&out[2], Event::Skipped { raw, .. } if raw == b"lo\r\n"));
        assert!(matches!(&out[3], Event::Command(c) if c.code == "NLN"));
        assert_eq!(reader.offset(), 14 + 10 + 15);
    }
}
