//! The secret parameters of MSNP command lines and their masks, as `analyzer/analysis/redact.py`
//! `Redactor.params` and `Redactor.payload` find and mask them.
//!
//! The table is not written here: the Python side hands its one definition (COMMAND_SECRETS,
//! PAYLOAD_SECRETS, UNNUMBERED: `redact.core_table()`) to the extension module, which builds a
//! `SecretTable` from it. What is copied is the code that applies the table
//! (`Redactor.secret_params` and `_secret_indexes`) and the mask (`Redactor.mask`: the first
//! 8 hex digits of HMAC-SHA256 of the secret's bytes under the run's key, as
//! `<redacted:xxxxxxxx>`). tests/outputs/test_jsonl_core.py holds the compiled JSON writer,
//! which uses both, to the Python writer record for record (hypothesis-made commands, with and
//! without redaction); the tests below hold the rules' corner cases.
//!
//! Codes are ASCII here: the JSON writer leaves a command whose code is not ASCII to Python
//! (`str.upper` of other code points is Unicode's, not an ASCII upper case).

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

/// Python's `str.isupper` for ASCII: a cased character, and none in lower case.
fn is_upper(code: &str) -> bool {
    code.bytes().any(|b| b.is_ascii_uppercase()) && !code.bytes().any(|b| b.is_ascii_lowercase())
}

impl SecretTable {
    /// The rules of `code` as `_RULES.get(code) or _RULES.get(code.upper())` finds them.
    fn rules_of<'a>(&'a self, code: &'a str) -> impl Iterator<Item = &'a ParamRule> + 'a {
        let exact = self.rules.iter().any(|r| r.code == code);
        let upper = code.to_ascii_uppercase();
        self.rules.iter().filter(move |r| if exact { r.code == code } else { r.code == upper })
    }

    /// Whether `code` is in SECRET_COMMANDS as `Redactor.params` asks (the code itself, or,
    /// when it is not all upper case, its upper case).
    pub fn is_secret(&self, code: &str) -> bool {
        let listed = |c: &str| self.rules.iter().any(|r| r.code == c) || self.payloads.iter().any(|(p, _)| p == c);
        listed(code) || (!is_upper(code) && listed(&code.to_ascii_uppercase()))
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
    fn secret_codes_as_redactor_params_asks() {
        let t = table();
        for code in ["USR", "usr", "Usr", "QRY", "qry", "RNG"] {
            assert!(t.is_secret(code), "{code}");
        }
        for code in ["CHG", "US", "USRX", ""] {
            assert!(!t.is_secret(code), "{code}");
        }
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
}
