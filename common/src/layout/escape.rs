//! Percent-encoding, the one escaping scheme of the layout: for the SR string and volume
//! URIs ([`URI`]), and for every name and value cephrbd stores in Ceph ([`META`]).
//!
//! What is stored must come back exactly and can never be read back as structure: `rbd
//! image-meta list --format json` prints key names without any JSON escaping (a key with a
//! `"` breaks the listing for the whole SR, and can inject fake entries), and a NUL cannot
//! pass through a command line at all. Everything stored is therefore encoded into
//! printable ASCII without `"`, `\` or `%`, whatever bytes xapi sent.

use std::fmt::Write as _;

/// Which bytes pass through unencoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safe {
    /// Unreserved characters of RFC 3986 only (`A-Z a-z 0-9 - . _ ~`): URIs and key names.
    Strict,
    /// Printable ASCII except `"`, `\` and `%`: stored values, still readable by an operator
    /// running `rbd image-meta list`.
    Printable,
}

/// For URI components.
pub const URI: Safe = Safe::Strict;
/// For stored values.
pub const META: Safe = Safe::Printable;

impl Safe {
    fn keeps(self, b: u8) -> bool {
        match self {
            Safe::Strict => b.is_ascii_alphanumeric() || b"-._~".contains(&b),
            Safe::Printable => (0x20..0x7f).contains(&b) && !b"\"\\%".contains(&b),
        }
    }
}

/// Encodes every byte `safe` does not keep as `%XX`.
///
/// ```
/// use common::layout::escape::{decode, encode, Safe};
/// let key = "a\"b\\c\u{1}é %";
/// let stored = encode(key, Safe::Printable);
/// assert_eq!(stored, "a%22b%5Cc%01%C3%A9 %25");
/// assert_eq!(decode(&stored).as_deref(), Some(key));
/// ```
pub fn encode(text: &str, safe: Safe) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if safe.keeps(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
pub fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_and_nothing_structural_survives() {
        let all: String = (0u32..0x800).filter_map(char::from_u32).collect();
        for safe in [Safe::Strict, Safe::Printable] {
            let stored = encode(&all, safe);
            assert!(!stored.contains(['"', '\\', '\0', '\n']), "{safe:?}");
            assert!(stored.bytes().all(|b| (0x20..0x7f).contains(&b)), "{safe:?}");
            assert_eq!(decode(&stored).as_deref(), Some(all.as_str()), "{safe:?}");
        }
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%+1"), None);
        assert_eq!(decode("%C3"), None, "not UTF-8");
    }
}
