//! JSON Lines text, byte for byte as the Python writer (`analyzer/outputs/jsonl.py`) writes it.
//!
//! The Python writer's rule is `json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))`
//! (orjson where it writes the same). These are the pieces of that rule the compiled writer
//! needs, for the values it handles; for anything else it answers "not mine" and the Python
//! writer formats the record:
//! - `push_str`: a string, quoted, with `"`, `\`, and the control characters below U+0020
//!   escaped as `json` escapes them (`\n`, `\r`, `\t`, `\b`, `\f`, else `\u00XX`, lower-case hex);
//!   every other code point is written as it is.
//! - `push_bytes_text`: wire bytes as Python's `bytes.decode("utf-8", "backslashreplace")`
//!   shows them (each byte that is not part of valid UTF-8 becomes the four characters `\xNN`),
//!   then quoted as `push_str` quotes.
//! - `push_float`: a float as Python's `repr` writes it, for the plain range only
//!   (0, or 1e-4 <= |x| < 1e16, where repr and orjson agree and use no exponent); None outside it.
//!
//! Secrets are masked by `crate::redact` before a value gets here.

use std::fmt::Write;

/// `s` as a JSON string (with its quotes) onto `out`.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

fn escape_into(out: &mut String, s: &str) {
    // As analyzer/outputs/jsonl.py `reference` writes a string: control characters, quote
    // and backslash escaped, and (`one_line`) U+0085, U+2028 and U+2029 too, which other
    // line splitters than "\n" split on (Python's str.splitlines, JavaScript).
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight plain ASCII bytes at a time (the common text): none below 0x20, none a quote
        // or a backslash, none from 0x80 (where U+0085, U+2028 and U+2029 start).
        while let Some(chunk) = bytes.get(i..i + 8) {
            if !plain_ascii(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]))) {
                break;
            }
            i += 8;
        }
        while i < bytes.len() && PLAIN[bytes[i] as usize] {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else { break };
        let skip = match b {
            0xC2 if bytes.get(i + 1) == Some(&0x85) => 2,
            0xE2 if bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xA8) | Some(0xA9)) => 3,
            _ if b >= 0x20 && b != b'"' && b != b'\\' => 0,
            _ => 1,
        };
        if skip == 0 {
            i += 1;
            continue;
        }
        out.push_str(&s[start..i]); // `b` is ASCII or a lead byte: `i` is a char boundary
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            0xC2 => out.push_str("\\u0085"),
            0xE2 if bytes[i + 2] == 0xA8 => out.push_str("\\u2028"),
            0xE2 => out.push_str("\\u2029"),
            _ => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        i += skip;
        start = i;
    }
    out.push_str(&s[start..]);
}

/// The bytes a JSON string holds as they are, whatever follows them: not a control character,
/// a quote or a backslash, and not 0xC2 or 0xE2 (which start U+0085, U+2028 and U+2029).
const PLAIN: [bool; 256] = {
    let mut table = [true; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = false;
        b += 1;
    }
    table[b'"' as usize] = false;
    table[b'\\' as usize] = false;
    table[0xC2] = false;
    table[0xE2] = false;
    table
};

/// Whether all eight bytes of `word` are ASCII that a JSON string holds as it is.
fn plain_ascii(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit in `has_zero(v)` is set when that byte of v is zero (the lowest such
    // byte exactly; higher ones may be false alarms, which only send the scan byte by byte).
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (word & HIGH) == 0 && below_space == 0 && has_zero(word ^ (ONES * b'"' as u64)) == 0
        && has_zero(word ^ (ONES * b'\\' as u64)) == 0
}

/// Wire bytes as a JSON string, decoded as `decode("utf-8", "backslashreplace")` decodes them.
pub fn push_bytes_text(out: &mut String, raw: &[u8]) {
    out.push('"');
    let mut rest = raw;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                escape_into(out, text);
                break;
            }
            Err(err) => {
                let good = err.valid_up_to();
                // The prefix was just checked: this cannot fail.
                escape_into(out, std::str::from_utf8(&rest[..good]).unwrap_or_default());
                let bad = err.error_len().unwrap_or(rest.len() - good);
                for b in &rest[good..good + bad] {
                    // `\xNN` in the text, so `\\xNN` in JSON.
                    let _ = write!(out, "\\\\x{:02x}", b);
                }
                rest = &rest[good + bad..];
            }
        }
    }
    out.push('"');
}

/// A float as Python's `repr` (and orjson) writes it, when it is in the plain range; else false.
pub fn push_float(out: &mut String, x: f64) -> bool {
    if !(x == 0.0 || (1e-4..1e16).contains(&x.abs())) {
        return false; // NaN, infinities, and exponent notation: the Python writer's
    }
    if x == 0.0 || !push_float_fixed(out, x) {
        push_float_shortest(out, x);
    }
    true
}

/// `push_float` for any `x` in the plain range, by Rust's shortest digits (and repr's choice
/// of digits where two strings of that length read back as `x`).
fn push_float_shortest(out: &mut String, x: f64) {
    let start = out.len();
    // Rust's `Display` for f64 writes the shortest digits that read back as `x` (as repr
    // does), in plain notation (without repr's `.0` on whole numbers). When the exact value
    // lies halfway between two such strings the two can pick differently; repr writes the
    // correctly rounded one (ties to even), which is what exact formatting to the same number
    // of significant digits writes: the digits come from there, their count from `Display`.
    let _ = write!(out, "{}", x);
    if !may_tie(x) {
        if !out[start..].contains('.') {
            out.push_str(".0");
        }
        return;
    }
    let shortest = out[start..].trim_start_matches(['-', '0', '.']).replace('.', "");
    let n = shortest.trim_end_matches('0').len().max(1);
    out.truncate(start);
    let exact = format!("{:.*e}", n - 1, x);
    let (mantissa, exponent) = exact.split_once('e').unwrap_or((exact.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if mantissa.starts_with('-') {
        out.push('-');
    }
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    if exponent >= 0 {
        let int_len = exponent as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            out.extend(std::iter::repeat('0').take(int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat('0').take((-exponent - 1) as usize));
        out.push_str(if digits.is_empty() { "0" } else { digits });
    }
    if !out[start..].contains('.') {
        out.push_str(".0");
    }
}

/// Powers of ten up to 10^22, all exact as f64.
const POW10: [f64; 23] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                          1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/// `x` (non-zero, in the plain range) as `repr` writes it, by the fewest decimals `d` whose
/// grid holds a number that reads back as `x`, when that is quick to prove; false (nothing
/// written) otherwise, and `push_float` takes the general way.
///
/// Why it is exact: Python reads a decimal string as the double nearest to it, so
/// `n / 10^d` (both exact doubles, the quotient correctly rounded) equals `x` exactly when the
/// string `n·10^-d` reads back as `x`. The numbers that read back as `x` lie in an interval
/// no wider than `ulp`, the gap from `x` up to the next double; while `10^d * ulp < 1` the grid
/// of step `10^-d` holds at most one of them, and it is the integer nearest to the exact
/// `x * 10^d` (within 1/2 of it), which `nearest_integer` finds. Take the largest such `d`: if
/// its grid holds no such number, no coarser grid does (each is part of it), and the general
/// way decides. If it holds `n`, a coarser grid holds one exactly when `n` ends in zeros (that
/// one is `n` without them): so `n` without its trailing zeros is the shortest string, and the
/// only one of its length (repr's choice among equally short strings never comes into it).
/// Timestamps (six decimals) and latencies take this way.
fn push_float_fixed(out: &mut String, x: f64) -> bool {
    let magnitude = x.abs();
    let bits = magnitude.to_bits();
    let ulp = f64::from_bits(bits + 1) - magnitude; // exact: neighbours; 2^k, k = exponent - 1075
    let k = ((bits >> 52) & 0x7ff) as i64 - 1075;
    if k >= 0 {
        return false; // whole numbers are ulp apart: the general way
    }
    // The largest d with 10^d < 2^-k: floor(-k log10 2), never within rounding of a whole number here.
    let mut d = ((-k) as f64 * std::f64::consts::LOG10_2) as usize;
    if d >= POW10.len() || POW10[d] * ulp >= 1.0 {
        return false;
    }
    let scale = POW10[d];
    let Some(mut n) = nearest_integer(magnitude, scale) else { return false };
    if n as f64 / scale != magnitude {
        return false;
    }
    while d > 0 && n % 10 == 0 {
        n /= 10;
        d -= 1;
    }
    // [-]digits.digits, the point before the last d digits (at least one digit before it),
    // written from the end.
    let mut text = [b'0'; 32];
    let mut at = text.len();
    if d == 0 {
        at -= 2;
        text[at] = b'.'; // and the '0' after it is there already
    }
    let (mut rest, mut written) = (n, 0);
    loop {
        at -= 1;
        text[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        written += 1;
        if written == d {
            at -= 1;
            text[at] = b'.';
        }
        if rest == 0 && written > d {
            break;
        }
    }
    if x < 0.0 {
        at -= 1;
        text[at] = b'-';
    }
    out.push_str(std::str::from_utf8(&text[at..]).unwrap_or_default()); // ASCII
    true
}

/// The integer nearest to the exact product `x * scale` (x > 0), when it is below 2^53; None
/// past that. The product rounded to a double is off by at most half its ulp; `mul_add` gives
/// that error exactly, so the nearest integer of the exact product is found (a tie, exactly
/// half way, cannot matter: see `push_float_fixed`, its grid point does not read back as x).
fn nearest_integer(x: f64, scale: f64) -> Option<u64> {
    let product = x * scale;
    if product >= 9007199254740992.0 {
        return None;
    }
    let error = x.mul_add(scale, -product); // exact: x * scale - product
    let n = product.round();
    let rest = (product - n) + error; // product - n is exact (both below 2^53, n the nearest integer)
    let n = n as u64;
    Some(if rest > 0.5 {
        n + 1
    } else if rest < -0.5 {
        n.checked_sub(1)?
    } else {
        n
    })
}

/// Whether the exact value of `x` (in the plain range) may lie halfway between two
/// shortest strings: only when its exact decimal expansion has at most 18 significant digits
/// (it ends in a 5 one place past the shortest digits, and those are at most 17). Times and
/// latencies have 20 and more, so the exact re-formatting is rare.
fn may_tie(x: f64) -> bool {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = if exponent == 0 { (fraction, -1074) } else { (fraction | (1 << 52), exponent - 1075) };
    if mantissa == 0 {
        return false;
    }
    let k = exponent + i64::from(mantissa.trailing_zeros()); // x = odd * 2^k
    if k >= 0 {
        return false; // a whole number below 1e16: its digits are exact, there is no tie
    }
    // -k fractional decimal digits, the last one a 5.
    let magnitude = x.abs();
    let significant = if magnitude >= 1.0 {
        (magnitude.trunc() as u64).to_string().len() as i64 - k
    } else {
        -k - 4 // at most 4 zeros after the point above 1e-4: a lower bound
    };
    significant <= 18
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(raw: &[u8]) -> String {
        let mut s = String::new();
        push_bytes_text(&mut s, raw);
        s
    }

    #[test]
    fn strings_are_escaped_as_json_escapes_them() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n\r\t\x08\x0c\x01\x1f\x7f é\u{2028}\u{2029}\u{85}\u{2027}\u{86}");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\x7f é\\u2028\\u2029\\u0085\u{2027}\u{86}\"");
    }

    #[test]
    fn bytes_decode_with_backslashreplace() {
        assert_eq!(text(b"MSG"), "\"MSG\"");
        assert_eq!(text(b"a\xffb"), "\"a\\\\xffb\"");
        assert_eq!(text("é".as_bytes()), "\"é\"");
        assert_eq!(text(b"\xe2\x82"), "\"\\\\xe2\\\\x82\""); // cut short at the end
        assert_eq!(text(b"\xe0\x80A"), "\"\\\\xe0\\\\x80A\""); // overlong: two bad bytes
        assert_eq!(text(b"\xed\xa0\x80"), "\"\\\\xed\\\\xa0\\\\x80\""); // a surrogate is not UTF-8
    }

    #[test]
    fn floats_as_repr_in_the_plain_range_only() {
        let cases: [(f64, Option<&str>); 12] = [
            (0.0, Some("0.0")),
            (-0.0, Some("-0.0")),
            (1.0, Some("1.0")),
            (1234567890.123456, Some("1234567890.123456")),
            (0.0001, Some("0.0001")),
            (0.1 + 0.2, Some("0.30000000000000004")),
            (1e15, Some("1000000000000000.0")),
            (204.090118408203125, Some("204.09011840820312")), // a tie at 17 digits: to even
            (931288779406768.25, Some("931288779406768.2")), // a tie at 16 digits
            (931288779406768.75, Some("931288779406768.8")),
            (1e16, None),
            (f64::NAN, None),
        ];
        for (x, want) in cases {
            let mut s = String::new();
            let ok = push_float(&mut s, x);
            assert_eq!(ok.then_some(s.as_str()), want, "{x}");
        }
        assert!(!push_float(&mut String::new(), 0.00009));
        assert!(!push_float(&mut String::new(), f64::INFINITY));
    }

    #[test]
    fn plain_ascii_words() {
        assert!(plain_ascii(u64::from_le_bytes(*b"MSG 5 A ")));
        assert!(plain_ascii(u64::from_le_bytes(*b" !~}#[]\x7f")));
        for bad in [b'"', b'\\', 0x00, 0x1f, 0x0a, 0x80, 0xc2, 0xe2, 0xff] {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = bad;
                assert!(!plain_ascii(u64::from_le_bytes(word)), "{bad:#x} at {at}");
            }
        }
    }

    #[test]
    fn escapes_are_found_at_every_place_in_long_strings() {
        for special in ["\"", "\\", "\n", "\u{1}", "\u{85}", "\u{2028}", "\u{2029}", "é", "\u{2027}"] {
            for at in 0..20 {
                let text = format!("{}{}{}", "a".repeat(at), special, "b".repeat(19 - at));
                let mut fast = String::new();
                push_str(&mut fast, &text);
                let mut slow = String::from("\"");
                for c in text.chars() {
                    let mut one = String::new();
                    escape_into(&mut one, &c.to_string());
                    slow.push_str(&one);
                }
                slow.push('"');
                assert_eq!(fast, slow, "{special:?} at {at}");
            }
        }
    }

    /// A small deterministic generator (xorshift) for the float comparisons.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn the_fixed_point_way_writes_what_the_shortest_way_writes() {
        let mut state = 0x2545_f491_4f6c_dd1d;
        let mut values = vec![1115371249.437368, 1700000000.123456, 1732950000.5, 62.632, 0.0001, 9999999999999998.0,
                              0.1 + 0.2, 204.090118408203125, 931288779406768.25, 1.5, 3.0, 1e15, 123456.0];
        for _ in 0..200_000 {
            let r = next(&mut state);
            values.push(match r % 5 {
                0 => f64::from_bits(r >> 2) % 1e16,                                      // any bits
                1 => (1.0e9 + (r % 1_000_000_000) as f64) + ((r >> 34) % 1_000_000) as f64 / 1e6, // pcap times
                2 => ((r >> 8) % 100_000_000) as f64 / 1e3,                              // latencies in ms
                3 => ((r >> 8) % (1 << 40)) as f64 / 1024.0,                             // binary fractions
                _ => 1e-4 + ((r >> 11) as f64 / (1u64 << 53) as f64) * 10f64.powi((r % 20) as i32),
            });
        }
        let mut taken = 0;
        for x in values {
            for x in [x, -x] {
                if !(1e-4..1e16).contains(&x.abs()) {
                    continue;
                }
                let (mut fast, mut slow) = (String::new(), String::new());
                push_float_shortest(&mut slow, x);
                if push_float_fixed(&mut fast, x) {
                    taken += 1;
                    assert_eq!(fast, slow, "{x:e}");
                } else {
                    assert!(fast.is_empty());
                }
            }
        }
        assert!(taken > 100_000, "{taken}"); // the fixed-point way is the common one
    }
}
