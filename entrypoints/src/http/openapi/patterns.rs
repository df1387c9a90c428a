//! Regular expressions for the document's `pattern`s, built from the rules the validating code applies.
//!
//! A pattern written by hand would be a second copy of a rule, free to drift from the first. These
//! functions derive each one instead: from a byte predicate, from a validating constructor probed byte
//! by byte, or, for cursors, from the bytes a cursor encodes, through base64url.
//! The patterns use only what ECMA-262, Python and Rust regular expressions read alike: classes,
//! ranges, non-capturing groups, alternation and bounded repetition.

use std::collections::{BTreeMap, BTreeSet};

/// The base64url alphabet, in the order of the values its characters stand for.
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The bytes in `0..=127` that `accepts` accepts (every rule here is about ASCII).
pub(crate) fn ascii_set(accepts: impl Fn(u8) -> bool) -> BTreeSet<u8> {
    (0..=127u8).filter(|&b| accepts(b)).collect()
}

/// True for the characters that have a meaning of their own in a pattern, outside a class.
fn is_syntax(b: u8) -> bool {
    b"^$\\.*+?()[]{}|".contains(&b)
}

/// One byte as a pattern atom outside a class.
fn literal_byte(b: u8) -> String {
    let c = char::from(b);
    if is_syntax(b) { format!("\\{c}") } else { c.to_string() }
}

/// One byte inside a class.
fn class_byte(b: u8) -> String {
    let c = char::from(b);
    if b"\\]^-[".contains(&b) {
        format!("\\{c}")
    } else if b.is_ascii_graphic() {
        c.to_string()
    } else {
        format!("\\x{b:02X}")
    }
}

/// Which group of characters a byte belongs to, so that a class reads `0-9:` rather than `0-:`.
fn category(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => 0,
        b'A'..=b'Z' => 1,
        b'a'..=b'z' => 2,
        _ => 3,
    }
}

/// A pattern atom matching exactly one of `set`'s bytes: the byte itself, or a class.
///
/// Runs of consecutive bytes become ranges; a short run is split where digits, capitals and small
/// letters begin, and a run of 16 or more (such as `!-~`, every visible ASCII character) is kept whole.
pub(crate) fn class(set: &BTreeSet<u8>) -> String {
    let bytes: Vec<u8> = set.iter().copied().collect();
    if let [only] = bytes.as_slice() {
        return literal_byte(*only);
    }
    let mut runs: Vec<Vec<u8>> = Vec::new();
    for &b in &bytes {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|&last| u16::from(last) + 1 == u16::from(b)) => run.push(b),
            _ => runs.push(vec![b]),
        }
    }
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    for run in runs {
        if run.len() >= 16 {
            pieces.push(run);
            continue;
        }
        let mut piece: Vec<u8> = Vec::new();
        for b in run {
            if piece.last().is_some_and(|&last| category(last) != category(b)) {
                pieces.push(std::mem::take(&mut piece));
            }
            piece.push(b);
        }
        pieces.push(piece);
    }
    let mut out = String::from("[");
    for piece in pieces {
        match piece.as_slice() {
            [] => {}
            [one] => out.push_str(&class_byte(*one)),
            [first, second] => {
                out.push_str(&class_byte(*first));
                out.push_str(&class_byte(*second));
            }
            [first, .., last] => {
                out.push_str(&class_byte(*first));
                out.push('-');
                out.push_str(&class_byte(*last));
            }
        }
    }
    out.push(']');
    out
}

/// `text` matched without regard to the case of its ASCII letters (`[aA][pP]...`), spelled out
/// because ECMA-262 patterns in a schema have no flags.
pub(crate) fn ascii_case_insensitive(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphabetic() {
                format!(
                    "[{}{}]",
                    char::from(b.to_ascii_lowercase()),
                    char::from(b.to_ascii_uppercase())
                )
            } else {
                literal_byte(b)
            }
        })
        .collect()
}

/// `alternatives` as one atom: itself when there is one, else a non-capturing group.
fn alternation(alternatives: Vec<String>) -> String {
    match alternatives.as_slice() {
        [only] => only.clone(),
        _ => format!("(?:{})", alternatives.join("|")),
    }
}

/// The base64url characters standing for `values` (each below 64).
fn base64_class(values: impl IntoIterator<Item = u8>) -> String {
    let set: BTreeSet<u8> = values
        .into_iter()
        .filter_map(|v| BASE64URL.get(usize::from(v)).copied())
        .collect();
    class(&set)
}

/// The first two characters of a base64 quantum whose first byte is in `first` and whose second
/// byte's high four bits are `high` (so the second character's low four bits are `high`).
fn leading_pair(first: &BTreeSet<u8>, high: u8) -> String {
    // The first character is the first byte's top six bits; its low two bits go into the second.
    let mut low_bits: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::new();
    for &b in first {
        low_bits.entry(b >> 2).or_default().insert(b & 3);
    }
    let mut by_low_bits: BTreeMap<BTreeSet<u8>, BTreeSet<u8>> = BTreeMap::new();
    for (top, lows) in low_bits {
        by_low_bits.entry(lows).or_default().insert(top);
    }
    alternation(
        by_low_bits
            .into_iter()
            .map(|(lows, tops)| {
                format!(
                    "{}{}",
                    base64_class(tops),
                    base64_class(lows.iter().map(|l| (l << 4) | high))
                )
            })
            .collect(),
    )
}

/// The four characters encoding three bytes drawn from `first`, `second` and `third`.
fn quantum(first: &BTreeSet<u8>, second: &BTreeSet<u8>, third: &BTreeSet<u8>) -> String {
    let highs: BTreeSet<u8> = second.iter().map(|b| b >> 4).collect();
    let tops: BTreeSet<u8> = third.iter().map(|b| b >> 6).collect();
    let alternatives = highs
        .into_iter()
        .map(|high| {
            let lows: Vec<u8> = second.iter().filter(|b| *b >> 4 == high).map(|b| b & 15).collect();
            let tail = alternation(
                tops.iter()
                    .map(|&top| {
                        let last = third.iter().filter(|b| *b >> 6 == top).map(|b| b & 63);
                        format!(
                            "{}{}",
                            base64_class(lows.iter().map(|l| (l << 2) | top)),
                            base64_class(last)
                        )
                    })
                    .collect(),
            );
            format!("{}{tail}", leading_pair(first, high))
        })
        .collect();
    alternation(alternatives)
}

/// The two characters encoding one last byte from `first`, without padding.
fn last_one(first: &BTreeSet<u8>) -> String {
    leading_pair(first, 0)
}

/// The three characters encoding two last bytes from `first` and `second`, without padding.
fn last_two(first: &BTreeSet<u8>, second: &BTreeSet<u8>) -> String {
    let highs: BTreeSet<u8> = second.iter().map(|b| b >> 4).collect();
    alternation(
        highs
            .into_iter()
            .map(|high| {
                let lows = second.iter().filter(|b| *b >> 4 == high).map(|b| (b & 15) << 2);
                format!("{}{}", leading_pair(first, high), base64_class(lows))
            })
            .collect(),
    )
}

/// `atom` repeated `min` to `max` times.
fn repeat(atom: &str, min: usize, max: usize) -> String {
    match (min, max) {
        (_, 0) => String::new(),
        (0, 1) => format!("(?:{atom})?"),
        (1, 1) => atom.to_owned(),
        (min, max) if min == max => format!("(?:{atom}){{{min}}}"),
        (min, max) => format!("(?:{atom}){{{min},{max}}}"),
    }
}

/// The pattern of the unpadded base64url text of every byte string `head` followed by 0 to `max_tail`
/// bytes of `tail`, where `head` gives one set of allowed bytes per position.
///
/// Exactly the canonical encodings match (the unused low bits of a last character are zero), as a
/// strict decoder requires. `head` must be a whole number of three-byte quanta (cursors start with
/// `<kind>:` and one byte of their position); for any other length this answers `None`.
pub(crate) fn base64url(head: &[BTreeSet<u8>], tail: &BTreeSet<u8>, max_tail: usize) -> Option<String> {
    if head.is_empty() || !head.len().is_multiple_of(3) {
        return None;
    }
    let lead: String = head
        .chunks(3)
        .map(|q| match q {
            [a, b, c] => quantum(a, b, c),
            _ => String::new(),
        })
        .collect();
    let whole = quantum(tail, tail, tail);
    let partial = alternation(vec![last_one(tail), last_two(tail, tail)]);
    let (quanta, left) = (max_tail / 3, max_tail % 3);
    let rest = match (quanta, left) {
        (0, 0) => String::new(),
        (0, 1) => repeat(&last_one(tail), 0, 1),
        (_, 2) => format!("{}{}", repeat(&whole, 0, quanta), repeat(&partial, 0, 1)),
        (_, 1) => alternation(vec![
            format!("{}{}", repeat(&whole, 0, quanta - 1), repeat(&partial, 0, 1)),
            format!("{}{}", repeat(&whole, quanta, quanta), repeat(&last_one(tail), 0, 1)),
        ]),
        _ => alternation(vec![
            format!("{}{}", repeat(&whole, 0, quanta - 1), repeat(&partial, 0, 1)),
            repeat(&whole, quanta, quanta),
        ]),
    };
    Some(format!("^{lead}{rest}$"))
}

/// The set of single bytes `s` for which `accepts(prefix + s)` holds, for probing a validating
/// constructor position by position.
pub(crate) fn probe(prefix: &str, accepts: impl Fn(&str) -> bool) -> BTreeSet<u8> {
    ascii_set(|b| accepts(&format!("{prefix}{}", char::from(b))))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;
    use regex_lite::Regex;

    use super::*;

    fn digits() -> BTreeSet<u8> {
        ascii_set(|b| b.is_ascii_digit())
    }

    #[test]
    fn classes_read_as_ranges_split_at_letters_and_digits() {
        assert_eq!(class(&ascii_set(|b| b.is_ascii_graphic())), "[!-~]");
        assert_eq!(
            class(&ascii_set(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))),
            "[\\-.0-9:A-Z_a-z]"
        );
        assert_eq!(class(&ascii_set(|b| b == b'.')), "\\.");
        assert_eq!(ascii_case_insensitive("a/b.c"), "[aA]/[bB]\\.[cC]");
    }

    #[test]
    fn short_tails_are_bounded_exactly() {
        let head = [ascii_set(|b| b == b's'), ascii_set(|b| b == b':'), digits()];
        for max in 0..8 {
            let pattern = base64url(&head, &digits(), max).expect("three head bytes");
            let re = Regex::new(&pattern).expect("a valid pattern");
            for len in 0..12 {
                let text = format!("s:{}", "7".repeat(len + 1));
                assert_eq!(
                    re.is_match(&URL_SAFE_NO_PAD.encode(&text)),
                    len <= max,
                    "{text} against {pattern}"
                );
            }
        }
        assert!(base64url(&head[..2], &digits(), 3).is_none());
    }

    proptest! {
        #[test]
        fn every_encoding_of_the_language_matches(position in "[0-9]{1,19}") {
            let head = [ascii_set(|b| b == b's'), ascii_set(|b| b == b':'), digits()];
            let re = Regex::new(&base64url(&head, &digits(), 18).expect("three head bytes")).expect("valid");
            let text = format!("s:{}", position);
            prop_assert!(re.is_match(&URL_SAFE_NO_PAD.encode(text)));
        }

        #[test]
        fn every_match_decodes_into_the_language(text in "[A-Za-z0-9_-]{2,40}") {
            let head = [ascii_set(|b| b == b'v'), ascii_set(|b| b == b':'), digits()];
            let re = Regex::new(&base64url(&head, &digits(), 18).expect("three head bytes")).expect("valid");
            let decoded = URL_SAFE_NO_PAD.decode(&text).ok().and_then(|b| String::from_utf8(b).ok());
            let in_language = decoded.as_deref().and_then(|d| d.strip_prefix("v:")).is_some_and(|digits| {
                (1..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            });
            prop_assert_eq!(re.is_match(&text), in_language, "{}", text);
        }
    }
}
