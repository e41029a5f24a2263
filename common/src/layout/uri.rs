//! The two strings cephrbd hands xapi and gets back: the SR string (`SR.attach`'s result,
//! passed as `sr` to every later call) and a volume's URIs (`Volume.stat`'s `uri`, passed
//! unchanged to the datapath).
//!
//! Both are self-describing, so no call needs per-host state to find its cluster:
//!
//! ```text
//! cephrbd://<pool>/<namespace>?sr_uuid=…&conf=…&id=…[&keyring=…][&mon_host=…]&timeout=…[&features=…][&datapath=…]
//! <scheme>://<pool>/<namespace>/<image>[@<snap>]?volume=…&conf=…&id=…[&keyring=…][&mon_host=…]&timeout=…[&data_destroyed=1]
//! ```
//!
//! `data_destroyed=1` marks the URI of a snapshot volume whose data was destroyed
//! (`Volume.data_destroy`): `Volume.stat` renders it before every datapath call, so the
//! datapath, which receives nothing but the URI, refuses to attach it.
//!
//! They carry paths and names only, never a key: the key stays in the keyring file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use uuid::Uuid;

use super::escape;
use super::names::{self, Object};
use crate::ceph::{Conn, ImageSpec};
use crate::config::{self, Datapath, DeviceConfig, DEFAULT_FEATURES, KNOWN_FEATURES};
use crate::error::RequestError;

/// The scheme of SR strings.
pub const SR_SCHEME: &str = "cephrbd";

/// The scheme of volume URIs: the name of the datapath plugin directory xapi-storage-script
/// picks for them. The URI carries the SR's policy (`datapath=`); each host turns it into a
/// mode of its own, so the URI says nothing that depends on the host.
pub const VOLUME_SCHEME: &str = "cephrbd";

/// Schemes of volume URIs made before the policy: each named one mode. Still served (their
/// plugin directories stay installed), as that mode's policy.
pub const OLD_SCHEMES: &[(&str, Datapath)] = &[("cephrbd+krbd", Datapath::Krbd), ("cephrbd+qsd", Datapath::Qsd)];

/// Every datapath plugin directory: the scheme of today's URIs, then the old ones.
pub const DATAPATH_SCHEMES: &[&str] = &[VOLUME_SCHEME, "cephrbd+krbd", "cephrbd+qsd"];

/// A parsed URI of ours: scheme, percent-decoded path segments, query pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts {
    scheme: String,
    segments: Vec<String>,
    query: Vec<(String, String)>,
}

impl Parts {
    fn parse(text: &str, what: &'static str) -> Result<Parts, RequestError> {
        let bad = |reason: &str| RequestError::BadUri { what, uri: text.to_owned(), reason: reason.to_owned() };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let segments = path.split('/').map(decode).collect::<Option<Vec<_>>>().ok_or_else(|| bad("bad escape"))?;
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                Some((decode(k)?, decode(v)?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("bad escape"))?;
        Ok(Parts { scheme: scheme.to_owned(), segments, query })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn render(&self) -> String {
        let mut out = format!("{}://", self.scheme);
        let path: Vec<String> = self.segments.iter().map(|s| encode(s)).collect();
        out.push_str(&path.join("/"));
        for (i, (k, v)) in self.query.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            let _ = write!(out, "{}={}", encode(k), encode(v));
        }
        out
    }
}

fn encode(text: &str) -> String {
    escape::encode(text, escape::URI)
}

fn decode(text: &str) -> Option<String> {
    escape::decode(text)
}

/// Pool and namespace as device-config accepts them (never an option, never a split spec).
fn check_names(pool: &str, namespace: &str, bad: &dyn Fn(&str) -> RequestError) -> Result<(), RequestError> {
    config::check_name("pool", pool).map_err(|e| bad(&e.to_string()))?;
    config::check_name("namespace", namespace).map_err(|e| bad(&e.to_string()))
}

/// Connection query pairs shared by both URI kinds.
fn conn_query(conn: &Conn) -> Vec<(String, String)> {
    let mut q = vec![("conf".to_owned(), conn.conf.display().to_string()), ("id".to_owned(), conn.id.clone())];
    if let Some(k) = &conn.keyring {
        q.push(("keyring".to_owned(), k.display().to_string()));
    }
    if let Some(m) = &conn.mon_host {
        q.push(("mon_host".to_owned(), m.clone()));
    }
    q.push(("timeout".to_owned(), conn.timeout.as_secs().to_string()));
    q
}

/// The connection a URI describes, checked exactly as device-config is: a URI is only ever
/// made from a checked device-config, so anything device-config would refuse is forged.
fn conn_from(parts: &Parts, pool: &str, text: &str, what: &'static str) -> Result<Conn, RequestError> {
    let bad = |reason: &str| RequestError::BadUri { what, uri: text.to_owned(), reason: reason.to_owned() };
    let mut config = BTreeMap::from([("pool".to_owned(), pool.to_owned())]);
    for (key, name) in [
        ("conf", "ceph_conf"),
        ("id", "ceph_user"),
        ("keyring", "keyring"),
        ("mon_host", "mon_host"),
        ("timeout", "timeout"),
    ] {
        if let Some(value) = parts.get(key) {
            config.insert(name.to_owned(), value.to_owned());
        }
    }
    for required in ["conf", "id", "timeout"] {
        if parts.get(required).is_none() {
            return Err(bad(&format!("no {required}")));
        }
    }
    let conn = DeviceConfig::parse(&config).map_err(|e| bad(&e.to_string()))?.conn();
    // A URI is as untrusted as device-config: no value may become a Ceph option.
    if let Some((name, value, reason)) = conn.problem() {
        return Err(bad(&format!("{name} {value:?} {reason}")));
    }
    Ok(conn)
}

/// The SR string: everything a call needs to reach the SR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrUri {
    /// The pool.
    pub pool: String,
    /// The RADOS namespace.
    pub namespace: String,
    /// The SR's uuid.
    pub uuid: Uuid,
    /// How to reach the cluster.
    pub conn: Conn,
    /// Image features for new volumes.
    pub features: Vec<String>,
    /// How hosts reach its volumes.
    pub datapath: Datapath,
}

impl SrUri {
    /// The SR string of an SR created with `config` (which must carry `sr_uuid`).
    pub fn from_config(config: &DeviceConfig, uuid: Uuid) -> Self {
        let features =
            config.image_features.clone().unwrap_or_else(|| DEFAULT_FEATURES.iter().map(|f| (*f).to_owned()).collect());
        SrUri {
            pool: config.pool.clone(),
            namespace: config.namespace.clone().unwrap_or_else(|| names::default_namespace(&uuid)),
            uuid,
            conn: config.conn(),
            features,
            datapath: config.datapath,
        }
    }

    /// Parses an SR string.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let what = "SR";
        let bad = |reason: &str| RequestError::BadUri { what, uri: text.to_owned(), reason: reason.to_owned() };
        let parts = Parts::parse(text, what)?;
        if parts.scheme != SR_SCHEME {
            return Err(bad("not a cephrbd SR (wrong scheme)"));
        }
        let [pool, namespace] = parts.segments.as_slice() else { return Err(bad("expected <pool>/<namespace>")) };
        check_names(pool, namespace, &bad)?;
        let uuid = parts.get("sr_uuid").and_then(|u| Uuid::try_parse(u).ok()).ok_or_else(|| bad("no valid sr_uuid"))?;
        let list = |key: &str, default: &[&str]| -> Vec<String> {
            parts.get(key).map_or_else(
                || default.iter().map(|s| (*s).to_owned()).collect(),
                |v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            )
        };
        let features = list("features", DEFAULT_FEATURES);
        if let Some(f) = features.iter().find(|f| !KNOWN_FEATURES.contains(&f.as_str())) {
            return Err(bad(&format!("unknown image feature {f:?}")));
        }
        let datapath = match parts.get("datapath") {
            None => Datapath::Auto,
            Some(word) => Datapath::parse(word)
                .or_else(|| old_datapath(word))
                .ok_or_else(|| bad(&format!("unknown datapath {word:?}")))?,
        };
        Ok(SrUri {
            pool: pool.clone(),
            namespace: namespace.clone(),
            uuid,
            conn: conn_from(&parts, pool, text, what)?,
            features,
            datapath,
        })
    }

    /// The string form.
    pub fn render(&self) -> String {
        let mut query = vec![("sr_uuid".to_owned(), self.uuid.to_string())];
        query.extend(conn_query(&self.conn));
        query.push(("features".to_owned(), self.features.join(",")));
        query.push(("datapath".to_owned(), self.datapath.name().to_owned()));
        Parts { scheme: SR_SCHEME.to_owned(), segments: vec![self.pool.clone(), self.namespace.clone()], query }
            .render()
    }

    /// `pool/namespace/name`: an image spec in this SR.
    pub fn spec(&self, image: &str) -> String {
        format!("{}/{}/{image}", self.pool, self.namespace)
    }
}

/// SR strings made before the policy listed URI schemes, most preferred first: `qsd` first
/// was an explicit choice; the old default (kernel RBD first) becomes `auto`.
fn old_datapath(list: &str) -> Option<Datapath> {
    let first = list.split(',').next()?;
    let all_known = list.split(',').all(|s| OLD_SCHEMES.iter().any(|(o, _)| *o == s));
    match first {
        "cephrbd+qsd" if all_known => Some(Datapath::Qsd),
        "cephrbd+krbd" if all_known => Some(Datapath::Auto),
        _ => None,
    }
}

/// A volume's URI, as the datapath receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUri {
    /// The scheme ([`VOLUME_SCHEME`], or an old one).
    pub scheme: String,
    /// The SR's policy (from `datapath=`, or the mode an old scheme named).
    pub datapath: Datapath,
    /// The pool.
    pub pool: String,
    /// The namespace.
    pub namespace: String,
    /// The RBD image.
    pub image: String,
    /// The RBD snapshot, for a snapshot volume (read-only).
    pub snap: Option<String>,
    /// The volume key (for logs and reference counts).
    pub volume: Uuid,
    /// How to reach the cluster.
    pub conn: Conn,
    /// The volume's data was destroyed (`Volume.data_destroy`): only its changed-block
    /// anchor is left, and the datapath refuses it.
    pub data_destroyed: bool,
}

impl VolumeUri {
    /// The image or snapshot this URI names.
    pub fn image_spec(&self) -> ImageSpec {
        ImageSpec {
            pool: self.pool.clone(),
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            snap: self.snap.clone(),
        }
    }

    /// The string form.
    pub fn render(&self) -> String {
        let mut leaf = self.image.clone();
        if let Some(snap) = &self.snap {
            leaf.push('@');
            leaf.push_str(snap);
        }
        let mut query = vec![("volume".to_owned(), self.volume.to_string())];
        query.extend(conn_query(&self.conn));
        if self.scheme == VOLUME_SCHEME {
            query.push(("datapath".to_owned(), self.datapath.name().to_owned()));
        }
        if self.data_destroyed {
            query.push(("data_destroyed".to_owned(), "1".to_owned()));
        }
        Parts { scheme: self.scheme.clone(), segments: vec![self.pool.clone(), self.namespace.clone(), leaf], query }
            .render()
    }

    /// Parses a volume URI.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let what = "volume";
        let bad = |reason: &str| RequestError::BadUri { what, uri: text.to_owned(), reason: reason.to_owned() };
        let parts = Parts::parse(text, what)?;
        let datapath = if parts.scheme == VOLUME_SCHEME {
            match parts.get("datapath") {
                None => Datapath::Auto,
                Some(word) => Datapath::parse(word).ok_or_else(|| bad(&format!("unknown datapath {word:?}")))?,
            }
        } else {
            OLD_SCHEMES
                .iter()
                .find(|(s, _)| *s == parts.scheme)
                .map(|(_, d)| *d)
                .ok_or_else(|| bad("unknown datapath scheme"))?
        };
        let [pool, namespace, leaf] = parts.segments.as_slice() else {
            return Err(bad("expected <pool>/<namespace>/<image>[@<snap>]"));
        };
        check_names(pool, namespace, &bad)?;
        let (image, snap) = match leaf.split_once('@') {
            Some((i, s)) => (i.to_owned(), Some(s.to_owned())),
            None => (leaf.clone(), None),
        };
        let volume = parts.get("volume").and_then(|u| Uuid::try_parse(u).ok()).ok_or_else(|| bad("no valid volume"))?;
        // The key must be the one the storage's own name carries: a URI naming one
        // volume's image with another's key is forged.
        let named = match &snap {
            Some(s) => Object::parse(&image).is_some() && Object::parse(s) == Some(Object::Snapshot(volume)),
            None => Object::parse(&image) == Some(Object::Image(volume)),
        };
        if !named {
            return Err(bad("the image or snapshot is not the one the volume key names"));
        }
        let data_destroyed = match parts.get("data_destroyed") {
            None => false,
            Some("1") if snap.is_some() => true,
            Some(_) => return Err(bad("data_destroyed must be 1, and only on a snapshot")),
        };
        Ok(VolumeUri {
            scheme: parts.scheme.clone(),
            datapath,
            pool: pool.clone(),
            namespace: namespace.clone(),
            image,
            snap,
            volume,
            conn: conn_from(&parts, pool, text, what)?,
            data_destroyed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    /// An SR string of pool `rbd`, namespace `n`, policy `auto`.
    fn sr_uri() -> SrUri {
        SrUri {
            pool: "rbd".to_owned(),
            namespace: "n".to_owned(),
            uuid: Uuid::new_v4(),
            conn: conn(),
            features: vec!["layering".to_owned()],
            datapath: Datapath::Auto,
        }
    }

    fn conn() -> Conn {
        Conn {
            conf: PathBuf::from("/etc/ceph/my ceph.conf"),
            id: "xcp".to_owned(),
            keyring: Some(PathBuf::from("/etc/ceph/k&k")),
            mon_host: Some("[v2:10.0.0.1:3300],10.0.0.2".to_owned()),
            timeout: Duration::from_secs(17),
        }
    }

    /// SR strings and volume URIs made before the datapath policy keep working.
    #[test]
    fn strings_made_before_the_policy_still_parse() {
        let sr = sr_uri();
        let old = |list: &str| SrUri::parse(&sr.render().replace("datapath=auto", &format!("datapath={list}")));
        assert_eq!(old("cephrbd%2Bkrbd%2Ccephrbd%2Bqsd").map(|s| s.datapath), Ok(Datapath::Auto));
        assert_eq!(old("cephrbd%2Bqsd%2Ccephrbd%2Bkrbd").map(|s| s.datapath), Ok(Datapath::Qsd));
        let key = Uuid::new_v4();
        let mut v = VolumeUri {
            scheme: "cephrbd+krbd".to_owned(),
            datapath: Datapath::Krbd,
            pool: "p".to_owned(),
            namespace: "n".to_owned(),
            image: Object::Image(key).to_string(),
            snap: None,
            volume: key,
            conn: conn(),
            data_destroyed: false,
        };
        assert!(!v.render().contains("datapath="), "old URIs carry their mode in the scheme");
        assert_eq!(VolumeUri::parse(&v.render()), Ok(v.clone()));
        v.scheme = "cephrbd+nbd".to_owned();
        assert!(VolumeUri::parse(&v.render()).is_err());
    }

    #[test]
    fn sr_uri_round_trips() {
        let sr = SrUri {
            pool: "rbd".to_owned(),
            namespace: "cephrbd-x".to_owned(),
            uuid: Uuid::new_v4(),
            conn: conn(),
            features: vec!["layering".to_owned()],
            datapath: Datapath::Qsd,
        };
        let text = sr.render();
        assert!(text.starts_with("cephrbd://rbd/cephrbd-x?sr_uuid="), "{text}");
        assert_eq!(SrUri::parse(&text), Ok(sr));
    }

    fn volume(key: Uuid) -> VolumeUri {
        VolumeUri {
            scheme: VOLUME_SCHEME.to_owned(),
            datapath: Datapath::Nbd,
            pool: "p".to_owned(),
            namespace: "n".to_owned(),
            image: Object::Image(Uuid::new_v4()).to_string(),
            snap: Some(Object::Snapshot(key).to_string()),
            volume: key,
            conn: conn(),
            data_destroyed: false,
        }
    }

    #[test]
    fn volume_uri_round_trips() {
        let v = volume(Uuid::new_v4());
        assert_eq!(VolumeUri::parse(&v.render()), Ok(v.clone()));
        let destroyed = VolumeUri { data_destroyed: true, ..v };
        let text = destroyed.render();
        assert!(text.ends_with("&data_destroyed=1"), "{text}");
        assert_eq!(VolumeUri::parse(&text), Ok(destroyed));
        assert!(VolumeUri::parse(&text.replace("data_destroyed=1", "data_destroyed=0")).is_err());
    }

    /// A URI whose `volume=` is not the key its image or snapshot name carries would let a
    /// caller act on (stop the daemon of) another volume: forged, refused.
    #[test]
    fn forged_volume_uris_are_refused() {
        let mut v = volume(Uuid::new_v4());
        v.volume = Uuid::new_v4();
        assert!(VolumeUri::parse(&v.render()).is_err());
        let mut v = volume(Uuid::new_v4());
        v.snap = None;
        assert!(VolumeUri::parse(&v.render()).is_err(), "the head of another volume's image");
        let mut v = volume(Uuid::new_v4());
        v.pool = "-rf".to_owned();
        assert!(VolumeUri::parse(&v.render()).is_err());
        let text = volume(Uuid::new_v4()).render().replace("timeout=17", "timeout=0");
        assert!(VolumeUri::parse(&text).is_err());
    }

    /// Issue 14 item 7: a URI cannot smuggle options either.
    #[test]
    fn uris_whose_values_could_become_options_are_refused() {
        let mut v = VolumeUri {
            scheme: "cephrbd+qsd".to_owned(),
            datapath: Datapath::Qsd,
            pool: "p".to_owned(),
            namespace: "n".to_owned(),
            image: String::new(),
            snap: None,
            volume: Uuid::new_v4(),
            conn: conn(),
            data_destroyed: false,
        };
        v.image = Object::Image(v.volume).to_string();
        v.conn.mon_host = Some("127.0.0.1:3300 --log-file /tmp/x --debug-auth 30".to_owned());
        assert!(VolumeUri::parse(&v.render()).is_err());
        v.conn.mon_host = None;
        v.conn.keyring = Some(PathBuf::from("k"));
        assert!(VolumeUri::parse(&v.render()).is_err(), "relative keyring");
        v.conn.keyring = None;
        v.pool = "-p".to_owned();
        assert!(VolumeUri::parse(&v.render()).is_err(), "pool read as an option");
    }

    #[test]
    fn malformed_uris_are_refused() {
        for text in ["", "rbd://a/b", "cephrbd://a?sr_uuid=x", "cephrbd://a/b?sr_uuid=%zz", "cephrbd://a/b/c?timeout=1"]
        {
            assert!(SrUri::parse(text).is_err(), "{text}");
        }
        let good = sr_uri();
        for forged in [
            SrUri { pool: "a@b".to_owned(), ..good.clone() },
            SrUri { namespace: "--conf".to_owned(), ..good.clone() },
            SrUri { features: vec!["no-such-feature".to_owned()], ..good.clone() },
        ] {
            assert!(SrUri::parse(&forged.render()).is_err(), "{forged:?}");
        }
        assert!(SrUri::parse(&good.render().replace("datapath=auto", "datapath=file")).is_err());
    }
}
