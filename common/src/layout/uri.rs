//! The two strings cephrbd hands xapi and gets back: the SR string (`SR.attach`'s result,
//! passed as `sr` to every later call) and a volume's URIs (`Volume.stat`'s `uri`, passed
//! unchanged to the datapath).
//!
//! Both are self-describing, so no call needs per-host state to find its cluster:
//!
//! ```text
//! cephrbd://<pool>/<namespace>?sr_uuid=…&conf=…&id=…[&keyring=…][&mon_host=…]&timeout=…[&features=…][&datapath=…]
//! <scheme>://<pool>/<namespace>/<image>[@<snap>]?volume=…&conf=…&id=…[&keyring=…][&mon_host=…]&timeout=…
//! ```
//!
//! They carry paths and names only, never a key: the key stays in the keyring file.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use super::names;
use crate::ceph::conn;
use crate::ceph::{Conn, ImageSpec};
use crate::config::{DeviceConfig, DEFAULT_FEATURES};
use crate::error::RequestError;

/// The scheme of SR strings.
pub const SR_SCHEME: &str = "cephrbd";

/// Datapath URI schemes, in the default order of preference. Each is the name of a
/// datapath plugin directory.
pub const DATAPATH_SCHEMES: &[&str] = &["cephrbd+krbd", "cephrbd+qsd"];

/// The datapath names accepted in device-config `datapath`, with their scheme.
pub const DATAPATHS: &[(&str, &str)] = &[("krbd", "cephrbd+krbd"), ("qsd", "cephrbd+qsd")];

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
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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

fn conn_from(parts: &Parts, text: &str, what: &'static str) -> Result<Conn, RequestError> {
    let bad = |reason: &str| RequestError::BadUri { what, uri: text.to_owned(), reason: reason.to_owned() };
    let timeout =
        parts.get("timeout").ok_or_else(|| bad("no timeout"))?.parse::<u64>().map_err(|_| bad("bad timeout"))?;
    let conn = Conn {
        conf: PathBuf::from(parts.get("conf").ok_or_else(|| bad("no conf"))?),
        id: parts.get("id").ok_or_else(|| bad("no id"))?.to_owned(),
        keyring: parts.get("keyring").map(PathBuf::from),
        mon_host: parts.get("mon_host").map(str::to_owned),
        timeout: Duration::from_secs(timeout.max(1)),
    };
    // A URI is as untrusted as device-config: no value may become a Ceph option.
    if let Some((name, value, reason)) = conn.problem() {
        return Err(bad(&format!("{name} {value:?} {reason}")));
    }
    for segment in parts.segments.iter().take(2) {
        if let Some(reason) = conn::name_problem(segment) {
            return Err(bad(&format!("pool or namespace {segment:?} {reason}")));
        }
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
    /// Datapath schemes for volume URIs, most preferred first.
    pub schemes: Vec<String>,
}

impl SrUri {
    /// The SR string of an SR created with `config` (which must carry `sr_uuid`).
    pub fn from_config(config: &DeviceConfig, uuid: Uuid) -> Self {
        let features =
            config.image_features.clone().unwrap_or_else(|| DEFAULT_FEATURES.iter().map(|f| (*f).to_owned()).collect());
        let preferred =
            config.datapath.as_deref().and_then(|d| DATAPATHS.iter().find(|(n, _)| *n == d)).map(|(_, s)| *s);
        let mut schemes: Vec<String> = preferred.into_iter().map(str::to_owned).collect();
        schemes.extend(DATAPATH_SCHEMES.iter().filter(|s| Some(**s) != preferred).map(|s| (*s).to_owned()));
        SrUri {
            pool: config.pool.clone(),
            namespace: config.namespace.clone().unwrap_or_else(|| names::default_namespace(&uuid)),
            uuid,
            conn: config.conn(),
            features,
            schemes,
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
        let uuid = parts.get("sr_uuid").and_then(|u| Uuid::try_parse(u).ok()).ok_or_else(|| bad("no valid sr_uuid"))?;
        let list = |key: &str, default: &[&str]| -> Vec<String> {
            parts.get(key).map_or_else(
                || default.iter().map(|s| (*s).to_owned()).collect(),
                |v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            )
        };
        Ok(SrUri {
            pool: pool.clone(),
            namespace: namespace.clone(),
            uuid,
            conn: conn_from(&parts, text, what)?,
            features: list("features", DEFAULT_FEATURES),
            schemes: list("datapath", DATAPATH_SCHEMES),
        })
    }

    /// The string form.
    pub fn render(&self) -> String {
        let mut query = vec![("sr_uuid".to_owned(), self.uuid.to_string())];
        query.extend(conn_query(&self.conn));
        query.push(("features".to_owned(), self.features.join(",")));
        query.push(("datapath".to_owned(), self.schemes.join(",")));
        Parts { scheme: SR_SCHEME.to_owned(), segments: vec![self.pool.clone(), self.namespace.clone()], query }
            .render()
    }

    /// `pool/namespace/name`: an image spec in this SR.
    pub fn spec(&self, image: &str) -> String {
        format!("{}/{}/{image}", self.pool, self.namespace)
    }
}

/// A volume's URI, as the datapath receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUri {
    /// The datapath scheme.
    pub scheme: String,
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
        Parts { scheme: self.scheme.clone(), segments: vec![self.pool.clone(), self.namespace.clone(), leaf], query }
            .render()
    }

    /// Parses a volume URI.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let what = "volume";
        let bad = |reason: &str| RequestError::BadUri { what, uri: text.to_owned(), reason: reason.to_owned() };
        let parts = Parts::parse(text, what)?;
        if !DATAPATH_SCHEMES.contains(&parts.scheme.as_str()) {
            return Err(bad("unknown datapath scheme"));
        }
        let [pool, namespace, leaf] = parts.segments.as_slice() else {
            return Err(bad("expected <pool>/<namespace>/<image>[@<snap>]"));
        };
        let (image, snap) = match leaf.split_once('@') {
            Some((i, s)) => (i.to_owned(), Some(s.to_owned())),
            None => (leaf.clone(), None),
        };
        let volume = parts.get("volume").and_then(|u| Uuid::try_parse(u).ok()).ok_or_else(|| bad("no valid volume"))?;
        Ok(VolumeUri {
            scheme: parts.scheme.clone(),
            pool: pool.clone(),
            namespace: namespace.clone(),
            image,
            snap,
            volume,
            conn: conn_from(&parts, text, what)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn {
            conf: PathBuf::from("/etc/ceph/my ceph.conf"),
            id: "xcp".to_owned(),
            keyring: Some(PathBuf::from("/etc/ceph/k&k")),
            mon_host: Some("[v2:10.0.0.1:3300],10.0.0.2".to_owned()),
            timeout: Duration::from_secs(17),
        }
    }

    #[test]
    fn sr_uri_round_trips() {
        let sr = SrUri {
            pool: "rbd".to_owned(),
            namespace: "cephrbd-x".to_owned(),
            uuid: Uuid::new_v4(),
            conn: conn(),
            features: vec!["layering".to_owned()],
            schemes: vec!["cephrbd+qsd".to_owned()],
        };
        let text = sr.render();
        assert!(text.starts_with("cephrbd://rbd/cephrbd-x?sr_uuid="), "{text}");
        assert_eq!(SrUri::parse(&text), Ok(sr));
    }

    #[test]
    fn volume_uri_round_trips() {
        let v = VolumeUri {
            scheme: "cephrbd+krbd".to_owned(),
            pool: "p".to_owned(),
            namespace: "n".to_owned(),
            image: "v-1".to_owned(),
            snap: Some("s-2".to_owned()),
            volume: Uuid::new_v4(),
            conn: conn(),
        };
        assert_eq!(VolumeUri::parse(&v.render()), Ok(v));
    }

    /// Issue 14 item 7: a URI cannot smuggle options either.
    #[test]
    fn uris_whose_values_could_become_options_are_refused() {
        let mut v = VolumeUri {
            scheme: "cephrbd+qsd".to_owned(),
            pool: "p".to_owned(),
            namespace: "n".to_owned(),
            image: "v-1".to_owned(),
            snap: None,
            volume: Uuid::new_v4(),
            conn: conn(),
        };
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
    }
}
