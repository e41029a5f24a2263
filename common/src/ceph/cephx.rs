//! cephx key types, and which Ceph clients can read them (docs/ceph-versions.md §4).
//!
//! Ceph 19.2.6 and 20.2.4 added a second key type, `aes256k`, for CVE-2025-30156; a fresh
//! 20.2.4 cluster makes and accepts only those. XCP-ng's clients (14.2, 15.2) and its 4.19
//! kernel read only `aes` keys: an aes256k key in the keyring makes every `rbd` call fail
//! with "error setting modifier … Malformed input", and an aes key against a cluster that
//! allows only aes256k is refused at authentication. Both errors say so, with the fix
//! ([`crate::ceph::CephError::KeyTypeUnsupported`], [`crate::ceph::CephError::AuthRefused`]),
//! and `volume --doctor` checks the key against the local client.
//!
//! An encoded cephx secret starts with its type as a little-endian u16 (`CryptoKey::encode`
//! in ceph/ceph `src/auth/Crypto.cc`): 1 is aes, 2 is aes256k, so base64 text starts `AQ`
//! or `Ag`. Only that prefix is looked at; the key itself is never kept or shown.

use std::path::Path;
use std::time::Duration;

use crate::process::runner::{Cmd, Program};
use crate::process::secrets;

/// The type of a cephx key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `CEPH_CRYPTO_AES` (1): read by every Ceph client and every kernel.
    Aes,
    /// `CEPH_CRYPTO_AES256KRB5` (2): Ceph 19.2.6, 20.2.4 and later; Linux 7.0 and later.
    Aes256k,
    /// Anything else (`CEPH_CRYPTO_NONE` is 0).
    Other(u16),
}

impl KeyType {
    /// The name Ceph uses (`--key_type`).
    pub fn name(self) -> String {
        match self {
            KeyType::Aes => "aes".to_owned(),
            KeyType::Aes256k => "aes256k".to_owned(),
            KeyType::Other(n) => format!("type {n}"),
        }
    }
}

/// The type of the base64 key `text` (`None` when it is not base64 of at least 2 bytes).
pub fn key_type(text: &str) -> Option<KeyType> {
    let sextet = |c: u8| -> Option<u16> {
        Some(u16::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let bytes = text.trim().as_bytes();
    let [a, b, c, ..] = bytes else { return None };
    let (a, b, c) = (sextet(*a)?, sextet(*b)?, sextet(*c)?);
    let first = (a << 2) | (b >> 4);
    let second = ((b & 0xf) << 4) | (c >> 2);
    Some(match first | (second << 8) {
        1 => KeyType::Aes,
        2 => KeyType::Aes256k,
        n => KeyType::Other(n),
    })
}

/// The types of the keys in the keyring (or key file) at `path`, in the order found.
pub fn key_types_in(path: &Path) -> Vec<KeyType> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let mut out: Vec<KeyType> = secrets::keys_in(&text).iter().filter_map(|k| key_type(k)).collect();
    out.dedup();
    out
}

/// A Ceph release number, `major.minor.patch`.
pub type Version = (u32, u32, u32);

/// The version `rbd --version` reports ("ceph version 14.2.21 (…) nautilus (stable)").
pub fn client_version(limit: Duration) -> Option<Version> {
    let program = Program::resolve("rbd").ok()?;
    let out = Cmd::new(&program, limit).arg("--version").run().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// The version in `ceph version X.Y.Z…` text.
pub fn parse_version(text: &str) -> Option<Version> {
    let rest = text.split("ceph version ").nth(1)?;
    let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// True when a client of `version` can read aes256k keys: 19.2.6 and later 19.2, 20.2.4
/// and later 20.2, 21 and later.
pub fn reads_aes256k(version: Version) -> bool {
    match version {
        (19, 2, patch) => patch >= 6,
        (20, 2, patch) => patch >= 4,
        (major, _, _) => major >= 21,
    }
}

/// What to do about an aes256k key on XCP-ng, for the user `user`.
pub fn aes_fix(user: &str) -> String {
    format!(
        "on the cluster allow aes keys again (`ceph mon set auth_allowed_ciphers aes,aes256k`) and give the \
         XCP-ng hosts a key of type aes: `ceph auth get-or-create client.{user} mon 'profile rbd' osd 'profile \
         rbd pool=<pool>' --key_type aes` (XCP-ng's Ceph 14.2/15.2 clients and its 4.19 kernel read only aes keys)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_come_from_the_encoded_prefix() {
        // An aes key as `ceph-authtool --gen-print-key` makes them, and an aes256k one
        // (20.2.4's default): 16 and 32 secret bytes after type, time and length.
        assert_eq!(key_type("AQBsecretsecretsecretsecretsecretsecretse=="), Some(KeyType::Aes));
        assert_eq!(key_type("AgBsecretsecretsecretsecretsecretsecretsecretsecretsecretsecr=="), Some(KeyType::Aes256k));
        assert_eq!(key_type("AAAA"), Some(KeyType::Other(0)));
        assert_eq!(key_type("A"), None);
        assert_eq!(key_type("**not base64**"), None);
    }

    #[test]
    fn versions_that_read_aes256k() {
        for (text, version, reads) in [
            ("ceph version 14.2.21 (5ef401921d7a88aea18ec7558f7f9374ebd8f5a6) nautilus (stable)", (14, 2, 21), false),
            ("ceph version 16.2.15 (618f440892089921c3e944a991122ddc44e60516) pacific (stable)", (16, 2, 15), false),
            ("ceph version 19.2.5 (x) squid (stable)", (19, 2, 5), false),
            ("ceph version 19.2.6 (x) squid (stable)", (19, 2, 6), true),
            ("ceph version 20.2.3 (x) tentacle (stable)", (20, 2, 3), false),
            ("ceph version 20.2.4 (x) tentacle (stable)", (20, 2, 4), true),
            ("ceph version 21.1.0-100-gabc (x) umbrella (dev)", (21, 1, 0), true),
        ] {
            assert_eq!(parse_version(text), Some(version), "{text}");
            assert_eq!(reads_aes256k(version), reads, "{text}");
        }
        assert_eq!(parse_version("rbd: unrecognised option"), None);
    }
}
