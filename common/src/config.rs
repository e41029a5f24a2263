//! device-config: the keys an administrator writes in `xe sr-create device-config:…`.
//!
//! The same keys serve both front ends (docs/smapiv1.md and docs/smapiv3.md show where each
//! receives them). Parsing is strict: an unknown key is an error that names it and lists
//! the valid ones, because a typo (`device-config:keyrign=…`) silently ignored would
//! connect with the wrong identity.
//! Values are checked here, before any Ceph call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ceph::conn::{self, Conn};
use crate::error::RequestError;

/// Default path of the Ceph configuration file.
pub const DEFAULT_CEPH_CONF: &str = "/etc/ceph/ceph.conf";
/// Default cephx user (without the `client.` prefix).
pub const DEFAULT_CEPH_USER: &str = "admin";
/// Default time limit for one Ceph or kernel call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest time limit accepted (xapi itself waits forever; an hour is plenty).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Every accepted key, with the description `Plugin.Query` publishes for it.
pub const KEYS: &[(&str, &str)] = &[
    ("pool", "Ceph pool holding the SR (required; never created or deleted by cephrbd)"),
    ("ceph_conf", "Path of the Ceph configuration file (default /etc/ceph/ceph.conf; alias: conf)"),
    ("ceph_user", "cephx user, without the client. prefix (default admin; alias: user)"),
    ("keyring", "Path of the keyring holding the user's key (default: as ceph.conf says)"),
    ("mon_host", "Monitor addresses, overriding ceph.conf (e.g. 10.0.0.1,10.0.0.2)"),
    ("namespace", "RADOS namespace of the SR inside the pool (default: derived from the SR uuid)"),
    ("datapath", "How hosts reach volumes: auto (default: kernel RBD where this host's kernel maps the image, else rbd-nbd, else qemu-storage-daemon), krbd, nbd or qsd"),
    ("image_features", "RBD image features for new volumes, comma-separated (default layering,exclusive-lock)"),
    ("timeout", "Time limit in seconds for each Ceph or kernel call (default 30)"),
    ("sr_uuid", "The SR's uuid (written by SR.create; not for administrators)"),
];

/// Older spellings still accepted: (alias, key).
pub const ALIASES: &[(&str, &str)] = &[("conf", "ceph_conf"), ("user", "ceph_user")];

/// Image features used when device-config does not say: what XCP-ng's 4.19 kernel can map.
pub const DEFAULT_FEATURES: &[&str] = &["layering", "exclusive-lock"];

/// RBD image features cephrbd knows how to use.
pub const KNOWN_FEATURES: &[&str] =
    &["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten", "journaling"];

/// How a host reaches a volume: the policy device-config `datapath` sets for an SR. Each
/// host turns it into a mode when it first attaches a volume (docs/datapath.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Datapath {
    /// Kernel RBD where this host's kernel can map the image, else rbd-nbd, else
    /// qemu-storage-daemon.
    #[default]
    Auto,
    /// Kernel RBD only.
    Krbd,
    /// rbd-nbd only.
    Nbd,
    /// qemu-storage-daemon only.
    Qsd,
}

impl Datapath {
    /// Every policy, in the order `auto` tries the modes after itself.
    pub const ALL: [Datapath; 4] = [Datapath::Auto, Datapath::Krbd, Datapath::Nbd, Datapath::Qsd];

    /// The device-config word.
    pub fn name(self) -> &'static str {
        match self {
            Datapath::Auto => "auto",
            Datapath::Krbd => "krbd",
            Datapath::Nbd => "nbd",
            Datapath::Qsd => "qsd",
        }
    }

    /// The policy a device-config word names.
    pub fn parse(word: &str) -> Option<Datapath> {
        Datapath::ALL.into_iter().find(|d| d.name() == word)
    }
}

/// A checked device-config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The pool.
    pub pool: String,
    /// The Ceph configuration file.
    pub ceph_conf: PathBuf,
    /// The cephx id (no `client.` prefix).
    pub ceph_user: String,
    /// The keyring file, if given.
    pub keyring: Option<PathBuf>,
    /// Monitor addresses, if given.
    pub mon_host: Option<String>,
    /// The RADOS namespace, if given.
    pub namespace: Option<String>,
    /// How hosts reach volumes.
    pub datapath: Datapath,
    /// Image features for new volumes, if given.
    pub image_features: Option<Vec<String>>,
    /// The time limit per Ceph or kernel call.
    pub timeout: Duration,
    /// The SR uuid, once SR.create has added it.
    pub sr_uuid: Option<uuid::Uuid>,
}

impl DeviceConfig {
    /// Checks a device-config map. Nothing outside the map is consulted.
    pub fn parse(raw: &BTreeMap<String, String>) -> Result<Self, RequestError> {
        Self::parse_inner(raw, true)
    }

    /// Checks the device-config of `SR.probe`, where `pool` may be absent (then `pool` is
    /// empty: probe every pool).
    pub fn parse_for_probe(raw: &BTreeMap<String, String>) -> Result<Self, RequestError> {
        Self::parse_inner(raw, false)
    }

    /// The connection this device-config describes.
    pub fn conn(&self) -> Conn {
        Conn {
            conf: self.ceph_conf.clone(),
            id: self.ceph_user.clone(),
            keyring: self.keyring.clone(),
            mon_host: self.mon_host.clone(),
            timeout: self.timeout,
        }
    }

    /// Checks that the keyring, when one is named, can be read and holds a section for the
    /// user: without one, cephx would retry until the time limit instead of failing, and
    /// Ceph reports a keyring it cannot find as ENOENT, as if the pool were missing.
    pub fn check_keyring(&self) -> Result<(), RequestError> {
        let Some(path) = &self.keyring else { return Ok(()) };
        crate::process::secrets::learn_keyring(path);
        let text = std::fs::read_to_string(path).map_err(|e| RequestError::BadConfigValue {
            key: "keyring",
            value: path.display().to_string(),
            reason: format!("cannot be read: {e}"),
        })?;
        let entity = format!("client.{}", self.ceph_user);
        let sections: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
            .map(str::trim)
            .collect();
        if sections.contains(&entity.as_str()) {
            return Ok(());
        }
        Err(RequestError::BadConfigValue {
            key: "keyring",
            value: path.display().to_string(),
            reason: format!("it has no key for {entity} (it holds: {})", sections.join(", ")),
        })
    }

    fn parse_inner(raw: &BTreeMap<String, String>, pool_required: bool) -> Result<Self, RequestError> {
        let mut canonical: BTreeMap<&'static str, &str> = BTreeMap::new();
        for (key, value) in raw {
            let name = canonical_key(key)
                .ok_or_else(|| RequestError::UnknownConfigKey { key: key.clone(), valid: valid_keys() })?;
            if let Some(previous) = canonical.insert(name, value) {
                if previous != value {
                    return Err(RequestError::BadConfigValue {
                        key: name,
                        value: value.clone(),
                        reason: format!("given twice (also as an alias) with different values ({previous:?})"),
                    });
                }
            }
        }
        let get = |k: &str| canonical.get(k).copied();
        let pool = match get("pool") {
            Some(pool) => {
                check_name("pool", pool)?;
                pool
            }
            None if pool_required => return Err(RequestError::MissingConfigKey { key: "pool" }),
            None => "",
        };
        let ceph_user = get("ceph_user").unwrap_or(DEFAULT_CEPH_USER);
        let ceph_user = ceph_user.strip_prefix("client.").unwrap_or(ceph_user);
        check_name("ceph_user", ceph_user)?;
        if let Some(ns) = get("namespace") {
            check_name("namespace", ns)?;
        }
        let timeout = match get("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(t) => parse_timeout(t)?,
        };
        // No value may ever be read by Ceph as an option, or split into several.
        if let Some(conf) = get("ceph_conf") {
            check_path("ceph_conf", conf)?;
        }
        if let Some(keyring) = get("keyring") {
            check_path("keyring", keyring)?;
        }
        if let Some(mon) = get("mon_host") {
            refuse("mon_host", mon, conn::mon_host_problem(mon))?;
        }
        let image_features = get("image_features").map(parse_features).transpose()?;
        let sr_uuid = get("sr_uuid")
            .map(|u| {
                uuid::Uuid::parse_str(u).map_err(|e| RequestError::BadConfigValue {
                    key: "sr_uuid",
                    value: u.to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        Ok(DeviceConfig {
            pool: pool.to_owned(),
            ceph_conf: PathBuf::from(get("ceph_conf").unwrap_or(DEFAULT_CEPH_CONF)),
            ceph_user: ceph_user.to_owned(),
            keyring: get("keyring").map(PathBuf::from),
            mon_host: get("mon_host").map(str::to_owned),
            namespace: get("namespace").map(str::to_owned),
            datapath: get("datapath")
                .map(|d| {
                    Datapath::parse(d).ok_or_else(|| RequestError::BadConfigValue {
                        key: "datapath",
                        value: d.to_owned(),
                        reason: format!("must be one of {}", Datapath::ALL.map(Datapath::name).join(", ")),
                    })
                })
                .transpose()?
                .unwrap_or_default(),
            image_features,
            timeout,
            sr_uuid,
        })
    }
}

fn canonical_key(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|(k, _)| *k)
        .find(|k| *k == key)
        .or_else(|| ALIASES.iter().find(|(alias, _)| *alias == key).map(|(_, k)| *k))
}

fn valid_keys() -> String {
    let mut keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    keys.extend(ALIASES.iter().map(|(a, _)| *a));
    keys.join(", ")
}

/// Pool, namespace and user names end up as `rbd` arguments and in image specs: refuse
/// anything that could be read as an option or split a spec ([`conn::name_problem`]).
pub fn check_name(key: &'static str, value: &str) -> Result<(), RequestError> {
    refuse(key, value, conn::name_problem(value))
}

/// ceph.conf and keyring paths: absolute, whole ([`conn::path_problem`]).
fn check_path(key: &'static str, value: &str) -> Result<(), RequestError> {
    refuse(key, value, conn::path_problem(Path::new(value)))
}

fn refuse(key: &'static str, value: &str, problem: Option<String>) -> Result<(), RequestError> {
    match problem {
        None => Ok(()),
        Some(reason) => Err(RequestError::BadConfigValue { key, value: value.to_owned(), reason }),
    }
}

fn parse_timeout(text: &str) -> Result<Duration, RequestError> {
    let bad = |reason: &str| RequestError::BadConfigValue {
        key: "timeout",
        value: text.to_owned(),
        reason: reason.to_owned(),
    };
    let secs: u64 = text.parse().map_err(|_| bad("must be a whole number of seconds"))?;
    let limit = Duration::from_secs(secs);
    if secs == 0 || limit > MAX_TIMEOUT {
        return Err(bad(&format!("must be between 1 and {}", MAX_TIMEOUT.as_secs())));
    }
    Ok(limit)
}

fn parse_features(text: &str) -> Result<Vec<String>, RequestError> {
    let features: Vec<String> = text.split(',').map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect();
    if let Some(unknown) = features.iter().find(|f| !KNOWN_FEATURES.contains(&f.as_str())) {
        return Err(RequestError::BadConfigValue {
            key: "image_features",
            value: text.to_owned(),
            reason: format!("unknown feature `{unknown}`; known: {}", KNOWN_FEATURES.join(", ")),
        });
    }
    if !features.iter().any(|f| f == "layering") {
        return Err(RequestError::BadConfigValue {
            key: "image_features",
            value: text.to_owned(),
            reason: "must include layering (snapshots and clones need it)".to_owned(),
        });
    }
    Ok(features)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_and_aliases() {
        let c = DeviceConfig::parse(&map(&[("pool", "rbd"), ("conf", "/x/ceph.conf"), ("user", "client.xcp")]))
            .expect("valid");
        assert_eq!(c.pool, "rbd");
        assert_eq!(c.ceph_conf, PathBuf::from("/x/ceph.conf"));
        assert_eq!(c.ceph_user, "xcp");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        let c = DeviceConfig::parse(&map(&[("pool", "rbd")])).expect("valid");
        assert_eq!(c.ceph_conf, PathBuf::from(DEFAULT_CEPH_CONF));
        assert_eq!(c.ceph_user, "admin");
    }

    #[test]
    fn unknown_key_is_named_with_the_valid_ones() {
        let err = DeviceConfig::parse(&map(&[("pool", "rbd"), ("keyrign", "/k")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`keyrign`"), "{text}");
        assert!(text.contains("keyring"), "{text}");
        assert!(text.contains("ceph_conf"), "{text}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(matches!(DeviceConfig::parse(&map(&[])), Err(RequestError::MissingConfigKey { key: "pool" })));
        for (k, v) in [
            ("pool", ""),
            ("pool", "-rf"),
            ("pool", "a/b"),
            ("timeout", "0"),
            ("timeout", "1.5"),
            ("timeout", "99999"),
            ("image_features", "journaling"),
            ("image_features", "exclusive-lock"),
            ("sr_uuid", "nope"),
            ("datapath", "fast"),
            ("datapath", "cephrbd+krbd"),
            ("mon_host", "127.0.0.1:3300 --log-file /tmp/x --debug-auth 30"),
            ("mon_host", "--debug-auth=30"),
            ("keyring", "relative/keyring"),
            ("keyring", "/etc/ceph/a,/tmp/b"),
            ("ceph_conf", "--log-file=/tmp/x"),
            ("ceph_conf", "/etc/ceph/ceph.conf\n"),
        ] {
            let mut m = map(&[("pool", "rbd")]);
            m.insert(k.to_owned(), v.to_owned());
            assert!(DeviceConfig::parse(&m).is_err(), "{k}={v} accepted");
        }
        let spaced = map(&[("pool", "rbd"), ("keyring", "/etc/ceph/my keyring"), ("ceph_conf", "/etc/my ceph/c.conf")]);
        assert!(DeviceConfig::parse(&spaced).is_ok(), "paths with spaces are accepted");
        let err = DeviceConfig::parse(&map(&[("pool", "rbd"), ("conf", "/a"), ("ceph_conf", "/b")])).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
