//! The secrets of MSNP commands and their masks, as `analyzer/analysis/redact.py`
//! `Redactor.params` and `Redactor.payload` find and mask them.
//!
//! The table is not written here: the Python side hands its one definition (COMMAND_SECRETS,
//! PAYLOAD_SECRETS, UNNUMBERED, MIME_SECRET_HEADERS: `Redactor.core_table()`) to the extension
//! module, which builds a `SecretTable` from it. What is copied is the code that applies the
//! table (`Redactor.secret_params` and `_secret_indexes`; of `Redactor.payload`, the chat-head
//! test, `_needed`'s gates and two of the free-text rules, the MIME header lines and the
//! `t=`/`p=` ticket fields: a payload another rule may apply to is left to Python) and the
//! mask (`Redactor.mask`: the first 8 hex digits of HMAC-SHA256 of the secret's bytes under
//! the run's key, as `<redacted:xxxxxxxx>`). tests/outputs/test_jsonl_core.py holds the compiled JSON writer,
//! which uses both, to the Python writer record for record (hypothesis-made commands, with and
//! without redaction); the tests below hold the rules' corner cases.
//!
//! Codes are ASCII here: the JSON writer leaves a command whose code is not ASCII to Python
//! (`str.upper` of other code points is Unicode's, not an ASCII upper case).

use std::borrow::Cow;
use std::ops::Range;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One condition of a rule: parameter `index` (counted after the TrID), upper-cased, is one
/// of `words` (or, with `negate`, none of them); a line without that parameter fails it.
#[derive(Clone, Debug)]
pub struct Word {
    pub index: usize,
    pub words: Vec<Vec<u8>>,
    pub negate: bool,
}

/// `redact.ParamRule`: the secret parameters of one command in one direction.
#[derive(Clone, Debug)]
pub struct ParamRule {
    pub code: String,
    pub direction: String,
    pub words: Vec<Word>,
    pub first: usize,
    pub to_end: bool,
}

/// The secret table, as the Python side defines it.
#[derive(Clone, Debug, Default)]
pub struct SecretTable {
    /// COMMAND_SECRETS in their order (the first rule that holds decides).
    pub rules: Vec<ParamRule>,
    /// PAYLOAD_SECRETS: (code, direction) whose payload is masked whole.
    pub payloads: Vec<(String, String)>,
    /// UNNUMBERED: codes whose first parameter is never a TrID the reader left among the
    /// parameters (RNG's session id is a number).
    pub unnumbered: Vec<String>,
    /// MIME_SECRET_HEADERS, sorted (the order of `_MIME_LINE`'s alternatives), as spelt there.
    pub mime_headers: Vec<Vec<u8>>,
}

/// `bytes.upper() in words`: ASCII upper case, as Python's `bytes.upper`.
fn upper_in(param: &[u8], words: &[Vec<u8>]) -> bool {
    words.iter().any(|w| w.len() == param.len() && w.iter().zip(param).all(|(a, b)| *a == b.to_ascii_uppercase()))
}

/// `_TRID.match(param)` (`^\d+$` on bytes): ASCII digits, and `$` also matches before a
/// newline that ends the bytes.
fn is_trid(param: &[u8]) -> bool {
    let digits = param.strip_suffix(b"\n").unwrap_or(param);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

impl SecretTable {
    /// The rules of `code` as `_RULES.get(code) or _RULES.get(code.upper())` finds them.
    fn rules_of<'a>(&'a self, code: &'a str) -> impl Iterator<Item = &'a ParamRule> + 'a {
        let exact = self.rules.iter().any(|r| r.code == code);
        let upper = code.to_ascii_uppercase();
        self.rules.iter().filter(move |r| if exact { r.code == code } else { r.code == upper })
    }

    /// `Redactor.secret_params` (enabled): the indexes into the raw parameters (`params`, after
    /// the TrID when the reader took one: `trid_taken`) that hold secrets, as a range (one
    /// parameter, or all from the first secret one on); empty when none.
    pub fn secret_params(&self, code: &str, direction: &str, trid_taken: bool, params: &[&[u8]]) -> Range<usize> {
        if !trid_taken
            && params.first().is_some_and(|p| is_trid(p))
            && !self.unnumbered.iter().any(|u| u.eq_ignore_ascii_case(code))
        {
            // A code the reader does not know (`usr`) keeps its TrID among the parameters.
            let found = self.secret_indexes(code, direction, &params[1..]);
            return found.start + 1..found.end + 1;
        }
        self.secret_indexes(code, direction, params)
    }

    /// `_secret_indexes`: the first rule of `code` for `direction` whose conditions hold and
    /// whose first secret parameter is there.
    fn secret_indexes(&self, code: &str, direction: &str, params: &[&[u8]]) -> Range<usize> {
        let n = params.len();
        for rule in self.rules_of(code) {
            if rule.direction != direction {
                continue;
            }
            let holds = rule.words.iter().all(|w| w.index < n && upper_in(params[w.index], &w.words) != w.negate);
            if !holds || rule.first >= n {
                continue;
            }
            return rule.first..if rule.to_end { n } else { rule.first + 1 };
        }
        0..0
    }

    /// Whether the payload of `code` in `direction` is masked whole (`Redactor.payload`:
    /// `(code.upper(), direction) in PAYLOAD_SECRETS`).
    pub fn payload_is_secret(&self, code: &str, direction: &str) -> bool {
        self.payloads.iter().any(|(c, d)| d == direction && c.len() == code.len()
                                 && c.bytes().zip(code.bytes()).all(|(a, b)| a == b.to_ascii_uppercase()))
    }
}

/// `Redactor.mask` under one run's key: the HMAC's keyed state is set up once and copied for
/// each secret (two of the four SHA-256 blocks of a short secret's mask).
#[derive(Clone)]
pub struct Masker {
    keyed: Hmac<Sha256>,
}

impl Masker {
    pub fn new(key: &[u8]) -> Masker {
        // HMAC takes a key of any length (a long one is hashed first): this cannot fail.
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        Masker { keyed }
    }

    /// `<redacted:xxxxxxxx>`: the first 8 hex digits (lower case) of HMAC-SHA256(key, secret).
    pub fn mask(&self, secret: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(secret);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(19);
        out.push_str("<redacted:");
        for b in &digest[..4] {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out.push('>');
        out
    }
}

// -- payloads ---------------------------------------------------------------------------

/// The message heads whose body `Redactor.payload` leaves alone (`_CHAT_HEADS`: a chat or
/// typing message; only its header block is looked at).
const CHAT_HEADS: [&[u8]; 2] = [
    b"MIME-Version: 1.0\r\nContent-Type: text/plain",
    b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol",
];

/// The free-text rules `_needed` picks for a text (its gates, on the lower-cased text).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needed {
    pub mime: bool,
    pub from_pp: bool,
    pub password: bool,
    pub ticket: bool,
    pub soap: bool,
}

impl Needed {
    fn any(self) -> bool {
        self.mime || self.from_pp || self.password || self.ticket || self.soap
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Non-overlapping occurrences, as `bytes.count` counts them.
fn count(hay: &[u8], needle: &[u8]) -> usize {
    let (mut n, mut i) = (0, 0);
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle {
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl SecretTable {
    /// `_MIME_GATE` at `text[i..]` (after a line feed), as it matches the lower-cased text:
    /// `[ \t]*(name)[ \t]*:` for a name of MIME_SECRET_HEADERS as the table spells it. `text`
    /// need not be lower-cased (its bytes are, one by one: a chat message's head is looked at
    /// without a lower-cased copy).
    fn gate_at(&self, low: &[u8], mut i: usize) -> bool {
        while i < low.len() && is_blank(low[i]) {
            i += 1;
        }
        self.mime_headers.iter().any(|name| {
            let rest = &low[i..];
            if rest.len() < name.len() || !rest.iter().zip(name).all(|(b, n)| b.to_ascii_lowercase() == *n) {
                return false;
            }
            let mut j = i + name.len();
            while j < low.len() && is_blank(low[j]) {
                j += 1;
            }
            j < low.len() && low[j] == b':'
        })
    }

    /// `_MIME_GATE.search(text.lower())`: a secret header name at the start of a line after a `\n`.
    fn gate(&self, low: &[u8]) -> bool {
        low.iter().enumerate().any(|(i, &b)| b == b'\n' && self.gate_at(low, i + 1))
    }

    /// `_needed(text.lower())`.
    pub fn needed(&self, text: &[u8]) -> Needed {
        let low = text.to_ascii_lowercase();
        let mut needed = Needed {
            // `_MIME_GATE.match(b"\n" + low[:16])`: a secret header on the first line, within 16 bytes.
            mime: self.gate(&low) || self.gate_at(&low[..low.len().min(16)], 0),
            ..Needed::default()
        };
        if low.contains(&b'=') {
            needed.from_pp = contains(&low, b"from-pp");
            needed.password = contains(&low, b"pwd=") || contains(&low, b"passw");
            needed.ticket = contains(&low, b"p=") || count(&low, b"t=") > count(&low, b"charset=");
        }
        needed.soap = low.contains(&b'<')
            && (contains(&low, b"password") || contains(&low, b"binarys") || contains(&low, b"ciphervalue"));
        needed
    }

    /// The length of a chat or typing message's header block (`Redactor.payload`: up to the
    /// first `\r\n\r\n`, its first `\r\n` included; the whole payload without one), or None
    /// when `payload` is not such a message.
    fn chat_head(payload: &[u8]) -> Option<usize> {
        if !CHAT_HEADS.iter().any(|h| payload.starts_with(h)) {
            return None;
        }
        Some(payload.windows(4).position(|w| w == b"\r\n\r\n").map_or(payload.len(), |end| end + 2))
    }

    /// Whether `Redactor.payload` (enabled, for a payload not masked whole) may change `payload`.
    pub fn payload_needs_redaction(&self, payload: &[u8]) -> bool {
        match Self::chat_head(payload) {
            Some(head) => self.gate(&payload[..head]),
            None => self.needed(payload).any(),
        }
    }

    /// `Redactor.payload` (enabled) for a payload not masked whole: the payload with its
    /// secrets masked (`mask`), when only the rules done here apply (the MIME header lines and
    /// the `t=`/`p=` ticket fields); None when another free-text rule may apply (`from-PP`,
    /// passwords, SOAP elements: the Python redactor's).
    pub fn redact_payload<'a>(&self, payload: &'a [u8], mask: &dyn Fn(&[u8]) -> String) -> Option<Cow<'a, [u8]>> {
        if let Some(head) = Self::chat_head(payload) {
            if !self.gate(&payload[..head]) {
                return Some(Cow::Borrowed(payload));
            }
            let mut out = self.mime_lines(&payload[..head], mask);
            out.extend_from_slice(&payload[head..]);
            return Some(Cow::Owned(out));
        }
        let needed = self.needed(payload);
        if needed.from_pp || needed.password || needed.soap {
            return None;
        }
        let mut text = Cow::Borrowed(payload);
        // In `_needed`'s order: the MIME lines, then the ticket fields (over the lines' output).
        if needed.mime {
            text = Cow::Owned(self.mime_lines(&text, mask));
        }
        if needed.ticket {
            text = Cow::Owned(ticket_fields(&text, mask));
        }
        Some(text)
    }

    /// `_MIME_LINE.sub(_free, text)`: `^[ \t]*(name)[ \t]*:[ \t]*` then the value
    /// (`[^\r\n]+`) at each line start (`^` with MULTILINE: the text's start and after each
    /// `\n`), names in any letter case (ASCII), the value masked unless it is a mask already.
    /// Greedy blanks after the colon give one back when the value would be empty: a value of
    /// only blanks is its last blank.
    fn mime_lines(&self, text: &[u8], mask: &dyn Fn(&[u8]) -> String) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 32);
        let mut line = 0;
        loop {
            let end = text[line..].iter().position(|&b| b == b'\r' || b == b'\n').map_or(text.len(), |at| line + at);
            match self.mime_value(&text[line..end]) {
                Some(value) if !text[line + value..end].starts_with(b"<redacted:") => {
                    out.extend_from_slice(&text[line..line + value]);
                    out.extend_from_slice(mask(&text[line + value..end]).as_bytes());
                }
                _ => out.extend_from_slice(&text[line..end]),
            }
            // On to the next line start: past the next `\n` (a lone `\r` ends a value, not a line).
            let Some(at) = text[end..].iter().position(|&b| b == b'\n') else {
                out.extend_from_slice(&text[end..]);
                return out;
            };
            out.extend_from_slice(&text[end..end + at + 1]);
            line = end + at + 1;
        }
    }

    /// Where the secret value starts in `line` (up to its first `\r` or `\n`) when it is a
    /// secret header line; None otherwise.
    fn mime_value(&self, line: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < line.len() && is_blank(line[i]) {
            i += 1;
        }
        for name in &self.mime_headers {
            if line.len() - i < name.len() || !line[i..i + name.len()].eq_ignore_ascii_case(name) {
                continue;
            }
            let mut j = i + name.len();
            while j < line.len() && is_blank(line[j]) {
                j += 1;
            }
            if j >= line.len() || line[j] != b':' {
                continue;
            }
            let colon = j + 1;
            let mut k = colon;
            while k < line.len() && is_blank(line[k]) {
                k += 1;
            }
            if k < line.len() {
                return Some(k);
            }
            if k > colon {
                return Some(k - 1); // only blanks: the last one is the value
            }
        }
        None
    }
}

/// `_NAME_BYTES`: what a longer name is made of (a match right after one is inside it).
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `_TICKET_FIELD.sub(_free, text)`: `[tTpP]=` and the value up to the next `&`, quote,
/// white space (`\s` of a bytes pattern) or `<`, masked unless the `t`/`p` ends a longer
/// name (`charset=`); matches do not overlap (the scan goes on after each, masked or not).
fn ticket_fields(text: &[u8], mask: &dyn Fn(&[u8]) -> String) -> Vec<u8> {
    let stop = |b: u8| matches!(b, b'&' | b'\'' | b'"' | b'<' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut out = Vec::with_capacity(text.len() + 32);
    let (mut last, mut i) = (0, 0);
    while i + 2 < text.len() {
        if matches!(text[i], b't' | b'T' | b'p' | b'P') && text[i + 1] == b'=' && !stop(text[i + 2]) {
            let end = text[i + 2..].iter().position(|&b| stop(b)).map_or(text.len(), |at| i + 2 + at);
            if i == 0 || !name_byte(text[i - 1]) {
                out.extend_from_slice(&text[last..i + 2]);
                out.extend_from_slice(mask(&text[i + 2..end]).as_bytes());
                last = end;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of analyzer/analysis/redact.py as it stands (the real one comes from Python).
    fn table() -> SecretTable {
        let words = |index, list: &[&[u8]], negate| Word { index, words: list.iter().map(|w| w.to_vec()).collect(), negate };
        let auth: &[&[u8]] = &[b"MD5", b"TWN", b"SSO", b"SHA"];
        let auth_ok: &[&[u8]] = &[b"MD5", b"TWN", b"SSO", b"SHA", b"OK"];
        let rule = |code: &str, direction: &str, words, first, to_end| ParamRule {
            code: code.into(), direction: direction.into(), words, first, to_end };
        SecretTable {
            rules: vec![
                rule("USR", "c2s", vec![words(0, auth, false), words(1, &[b"S", b"A"], false)], 2, true),
                rule("USR", "c2s", vec![words(0, auth_ok, true)], 1, false),
                rule("ANS", "c2s", vec![], 1, false),
                rule("XFR", "s2c", vec![words(0, &[b"SB"], false), words(2, &[b"CKI"], false)], 3, false),
                rule("RNG", "s2c", vec![words(2, &[b"CKI"], false)], 3, false),
            ],
            payloads: vec![("QRY".into(), "c2s".into())],
            unnumbered: vec!["RNG".into()],
            mime_headers: ["authcookie", "kv", "mspauth", "mspprof", "nonce", "sid"].map(|n| n.as_bytes().to_vec()).to_vec(),
        }
    }

    fn params<'a>(line: &'a str) -> Vec<&'a [u8]> {
        line.split(' ').filter(|t| !t.is_empty()).map(str::as_bytes).collect()
    }

    #[test]
    fn the_first_rule_that_holds_decides() {
        let t = table();
        assert_eq!(t.secret_params("USR", "c2s", true, &params("MD5 S 0123abcd")), 2..3);
        assert_eq!(t.secret_params("USR", "c2s", true, &params("SSO S ticket response extra")), 2..5);
        assert_eq!(t.secret_params("USR", "c2s", true, &params("md5 s x")), 2..3); // words in any case
        assert_eq!(t.secret_params("USR", "c2s", true, &params("MD5 I a@b.c")), 0..0); // the handle is not secret
        assert_eq!(t.secret_params("USR", "c2s", true, &params("a@b.c 1234.5678")), 1..2); // switchboard login
        assert_eq!(t.secret_params("USR", "c2s", true, &params("OK a@b.c")), 0..0);
        assert_eq!(t.secret_params("USR", "c2s", true, &params("MD5 S")), 0..0); // cut short: no secret there
        assert_eq!(t.secret_params("USR", "s2c", true, &params("OK a@b.c 1234.5678")), 0..0);
        assert_eq!(t.secret_params("XFR", "s2c", true, &params("SB 127.0.0.1:1863 CKI 17262740.1050826919")), 3..4);
        assert_eq!(t.secret_params("XFR", "s2c", true, &params("NS 127.0.0.1:1863 0")), 0..0);
        assert_eq!(t.secret_params("RNG", "s2c", true, &params("11752013 127.0.0.1:1863 CKI 8496.2 a@b.c Name")), 3..4);
        assert_eq!(t.secret_params("ANS", "c2s", true, &params("a@b.c cookie 11752013")), 1..2);
        assert_eq!(t.secret_params("ANS", "s2c", true, &params("OK")), 0..0);
        assert_eq!(t.secret_params("CHG", "c2s", true, &params("NLN 0")), 0..0);
    }

    #[test]
    fn a_trid_left_among_the_parameters_is_passed_over() {
        let t = table();
        assert_eq!(t.secret_params("usr", "c2s", false, &params("3 MD5 S 0123")), 3..4);
        assert_eq!(t.secret_params("usr", "c2s", false, &[b"3\n", b"MD5", b"S", b"0123"]), 3..4); // `$` before "\n"
        // Not a TrID: the switchboard login's rule (any first word but an auth method) takes it.
        assert_eq!(t.secret_params("usr", "c2s", false, &[b"3\n\n", b"MD5", b"S", b"0123"]), 1..2);
        assert_eq!(t.secret_params("ans", "c2s", false, &params("3 a@b.c cookie")), 2..3);
        // RNG's first parameter is its session id, never a TrID.
        assert_eq!(t.secret_params("RNG", "s2c", false, &params("117 127.0.0.1:1863 CKI 8496.2")), 3..4);
        assert_eq!(t.secret_params("rng", "s2c", false, &params("117 127.0.0.1:1863 CKI 8496.2")), 3..4);
    }

    #[test]
    fn payloads_masked_whole() {
        let t = table();
        assert!(t.payload_is_secret("QRY", "c2s") && t.payload_is_secret("qRy", "c2s"));
        assert!(!t.payload_is_secret("QRY", "s2c") && !t.payload_is_secret("QR", "c2s"));
    }

    #[test]
    fn masks_are_hmac_sha256_under_the_key() {
        // Python: hmac.digest(b"test", b"0123456789abcdef", "sha256").hex()[:8]
        assert_eq!(Masker::new(b"test").mask(b"0123456789abcdef"), "<redacted:15ac62f8>");
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?") = 5bdcc146...
        assert_eq!(Masker::new(b"Jefe").mask(b"what do ya want for nothing?"), "<redacted:5bdcc146>");
        let m = Masker::new(b"");
        assert_eq!(m.mask(b"x"), m.clone().mask(b"x")); // the keyed state is copied, not used up
    }

    #[test]
    fn payload_gates() {
        let t = table();
        let chat = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\npassword=x t=1 p=2";
        assert!(!t.payload_needs_redaction(chat)); // a typed body is not looked at
        let chat_sid = b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n  SID : 1\r\n\r\nhi";
        assert!(t.payload_needs_redaction(chat_sid));
        assert!(t.payload_needs_redaction(b"AuthCookie: 1"));
        assert!(t.payload_needs_redaction(b"x\n\tnonce\t:1"));
        assert!(!t.payload_needs_redaction(b"                sid:1")); // past the first 16 bytes, no line feed
        assert!(t.payload_needs_redaction(b"a=1&pwd=2"));
        assert!(t.payload_needs_redaction(b"t=1"));
        assert!(!t.payload_needs_redaction(b"Content-Type: text/x; charset=UTF-8")); // its t= is charset's
        assert!(t.payload_needs_redaction(b"charset=1 t=1"));
        assert!(t.payload_needs_redaction(b"<Password>x</Password>"));
        assert!(!t.payload_needs_redaction(b"<ml><d n=\"x\"/></ml>"));
        assert!(!t.payload_needs_redaction(b""));
    }

    fn redacted(t: &SecretTable, payload: &[u8]) -> Option<String> {
        let mask = |s: &[u8]| format!("<{}>", String::from_utf8_lossy(s).to_uppercase());
        t.redact_payload(payload, &mask).map(|text| String::from_utf8_lossy(&text).into_owned())
    }

    #[test]
    fn mime_lines_and_ticket_fields_are_masked_here_the_rest_is_python_s() {
        let t = table();
        let profile = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\nMSPAuth: 7Sd$$\r\nkv:\t 5\r\nsid:   \r\nsid:\r\n";
        assert_eq!(redacted(&t, profile).unwrap(),
                   "MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; charset=UTF-8\r\nMSPAuth: <7SD$$>\r\nkv:\t <5>\r\nsid:  < >\r\nsid:\r\n");
        // A line start is after "\n" only; a value ends at "\r"; a mask already there stays.
        assert_eq!(redacted(&t, b"x\rsid: 1\nSID:a\rb\n Nonce :<redacted:1234abcd>").unwrap(),
                   "x\rsid: 1\nSID:<A>\rb\n Nonce :<redacted:1234abcd>");
        // Ticket fields: not after a name byte (`charset=`), the scan goes on past each match.
        assert_eq!(redacted(&t, b"https://l/?t=abc&p=d%20e xt=1 T=x'y <c t=\"1\"/> p=").unwrap(),
                   "https://l/?t=<ABC>&p=<D%20E> xt=1 T=<X>'y <c t=\"1\"/> p=");
        // A chat message's body is not looked at, its head is (the MIME lines only).
        assert_eq!(redacted(&t, b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\nSID: 1\r\n\r\nSID: 2 t=3").unwrap(),
                   "MIME-Version: 1.0\r\nContent-Type: text/plain\r\nSID: <1>\r\n\r\nSID: 2 t=3");
        for python in [&b"from-PP='t=1'"[..], b"pwd=x", b"a=1&passwd=2", b"<Password>x</Password>"] {
            assert_eq!(redacted(&t, python), None, "{}", String::from_utf8_lossy(python));
        }
        assert!(matches!(t.redact_payload(b"hello", &|_| String::new()), Some(Cow::Borrowed(_))));
    }
}
