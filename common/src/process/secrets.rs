//! The secrets this process can know, by value, and [`scrub`]: the one function that hides
//! them in any text cephrbd emits.
//!
//! cephrbd never puts a key on a command line, in a URI or in a record, but the tools it
//! runs may print one: when Ceph cannot decode a keyring it writes
//! `error setting modifier for [client.x] type=key val=<KEY>` on stderr, and that stderr
//! would reach the SMAPIv3 error object, the SMAPIv1 fault string and the log. Pattern
//! redaction (`key=…`, [`crate::process::runner::redact`]) cannot know every way a tool
//! prints a secret, so secrets are also hidden by value, whatever surrounds them.
//!
//! Values are learnt from every file that holds keys the driver is given or that Ceph would
//! read for it ([`learn_keyring`]: each `key = <value>` line of a keyring or ceph.conf, or
//! a key file's single token), once per path and process, before the first command that
//! could print them. [`scrub`] is applied at every exit: a command's stderr and command
//! line ([`crate::process::runner`]), every log line ([`crate::process::log`]), the SMAPIv3
//! error object (`smapi::error`) and the legacy fault string (`legacy::fault`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Values shorter than this are not learnt: a cephx key is 40 characters, and scrubbing a
/// short word (a mistyped `key = x`) would mangle ordinary text without protecting anything.
pub const MIN_LEN: usize = 8;

/// Keyring files larger than this are not read (a keyring is a few hundred bytes).
const MAX_FILE: u64 = 1 << 20;

#[derive(Default)]
struct Known {
    /// Secret values, longest first (so a value that contains another is hidden whole).
    values: Vec<String>,
    /// Files already read.
    files: BTreeSet<PathBuf>,
}

static KNOWN: Mutex<Known> = Mutex::new(Known { values: Vec::new(), files: BTreeSet::new() });

fn known() -> std::sync::MutexGuard<'static, Known> {
    // A panic while holding the lock cannot leave it half-updated in a harmful way.
    KNOWN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remembers `value` as a secret (ignored when shorter than [`MIN_LEN`]).
pub fn learn(value: &str) {
    let value = value.trim();
    if value.len() < MIN_LEN {
        return;
    }
    let mut k = known();
    if !k.values.iter().any(|v| v == value) {
        k.values.push(value.to_owned());
        k.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// Reads the keys of a keyring, a ceph.conf or a key file at `path` (once per path and
/// process) and remembers them. A file that cannot be read holds nothing to hide.
pub fn learn_keyring(path: &Path) {
    if !known().files.insert(path.to_path_buf()) {
        return;
    }
    let Ok(meta) = std::fs::metadata(path) else { return };
    if !meta.is_file() || meta.len() > MAX_FILE {
        return;
    }
    let Ok(bytes) = std::fs::read(path) else { return };
    for value in keys_in(&String::from_utf8_lossy(&bytes)) {
        learn(&value);
    }
}

/// The secret values in the text of a keyring or ceph.conf (`key = <value>` in any
/// section, the value also without quotes or a trailing comment), or of a key file (one
/// bare token).
pub fn keys_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let [single] = lines.as_slice() {
        if !single.contains(char::is_whitespace) && !single.starts_with(['[', '#', ';']) {
            out.push((*single).to_owned());
        }
    }
    for line in lines {
        let Some((name, value)) = line.split_once('=') else { continue };
        if option_name(name) != "key" {
            continue;
        }
        // The value as written, and without a trailing comment, each also without quotes.
        let raw = value.trim();
        let unquoted = raw.trim_start_matches(['"', '\'']);
        let bare = unquoted.find(['"', '\'', ' ', '\t', '#', ';']).map_or(unquoted, |cut| &unquoted[..cut]);
        out.extend([raw, unquoted, bare].map(str::to_owned));
    }
    out.retain(|v| v.len() >= MIN_LEN);
    out.sort();
    out.dedup();
    out
}

/// A Ceph option name as Ceph compares them: trimmed, lowercase, `-` and ` ` as `_`.
pub fn option_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['-', ' '], "_")
}

/// `text` with every known secret replaced by [`REDACTED`].
///
/// ```
/// use common::process::secrets;
/// secrets::learn("AQBsecretsecretsecret==");
/// assert_eq!(secrets::scrub("val=AQBsecretsecretsecret==: Malformed"), "val=<redacted>: Malformed");
/// ```
pub fn scrub(text: &str) -> String {
    let k = known();
    let mut out = text.to_owned();
    for value in &k.values {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_keyrings_confs_and_key_files() {
        let keyring = "[client.xcp]\n\tkey = AQAzSQ1rAAAAABAArYJCNVVasPJ3Jsrg9UGdzw==\n\tcaps mon = \"allow r\"\n";
        assert_eq!(keys_in(keyring), ["AQAzSQ1rAAAAABAArYJCNVVasPJ3Jsrg9UGdzw=="]);
        let conf = "[global]\nmon host = 1.2.3.4\n[client.a]\nKey = \"AQBquotedquotedquoted==\" # inline\n";
        let found = keys_in(conf);
        assert!(found.contains(&"AQBquotedquotedquoted==".to_owned()), "{found:?}");
        assert_eq!(keys_in("AQBbarekeybarekey==\n"), ["AQBbarekeybarekey=="]);
        assert!(keys_in("[client.a]\nkeyring = /etc/ceph/k\nkey = short\n").is_empty());
    }

    #[test]
    fn scrub_hides_learnt_values_whatever_surrounds_them() {
        let dir = std::env::temp_dir().join(format!("cephrbd-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("keyring");
        std::fs::write(&path, "[client.t]\n\tkey = AQBtestkeytestkeytestkeyAAAA=\n").expect("write");
        learn_keyring(&path);
        for text in [
            "type=key val=AQBtestkeytestkeytestkeyAAAA=: Malformed input",
            "secret:AQBtestkeytestkeytestkeyAAAA=,next",
            "\"AQBtestkeytestkeytestkeyAAAA=\"",
        ] {
            let clean = scrub(text);
            assert!(!clean.contains("AQBtestkey"), "{clean}");
            assert!(clean.contains(REDACTED), "{clean}");
        }
        assert_eq!(scrub("nothing secret here"), "nothing secret here");
        let _ = std::fs::remove_dir_all(dir);
    }
}
