//! Every name cephrbd gives a thing in Ceph, built and parsed in one place.
//!
//! Layout of an SR ([`LAYOUT_VERSION`] 2), in pool `P`:
//! - RADOS namespace `cephrbd-<sr-uuid>` (or the device-config `namespace`);
//! - in it, the header image [`HEADER_IMAGE`] (size 0, feature layering only) whose
//!   image-meta holds every record of the SR (see [`MetaKey`]);
//! - one RBD image `v-<uuid>` per writable volume; a snapshot volume is the RBD snapshot
//!   `s-<uuid>` of its source's image; a clone of a writable volume is taken from a hidden
//!   snapshot `c-<clone-uuid>`.
//!
//! Volume keys are uuids and are mapped to images by their records, never derived from
//! image names by callers, so an image can be moved without breaking a key.

use std::fmt;

use uuid::Uuid;

use super::escape;
use crate::error::{RequestError, Violation};

/// The layout version written into new SR records. Version 1 stored `Volume.set` keys and
/// every value verbatim; version 2 encodes them ([`escape`]). This version reads both, and
/// refuses an SR whose layout is newer than it knows.
pub const LAYOUT_VERSION: u32 = 2;

/// The image whose image-meta holds the SR's records.
pub const HEADER_IMAGE: &str = "cephrbd-sr";

/// The prefix of default namespaces.
const NAMESPACE_PREFIX: &str = "cephrbd-";

/// The namespace of an SR created without an explicit `namespace` key.
pub fn default_namespace(sr: &Uuid) -> String {
    format!("{NAMESPACE_PREFIX}{sr}")
}

/// Parses a uuid given in request field `field` (an SR or volume key xapi chose).
pub fn parse_uuid(field: &str, text: &str) -> Result<Uuid, RequestError> {
    Uuid::try_parse(text).map_err(|e| RequestError::Invalid {
        method: field.to_owned(),
        violation: Violation { path: field.to_owned(), message: format!("not a uuid: {e}") },
    })
}

/// What an RBD image or snapshot name of ours means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// `v-<uuid>`: the image of a writable volume.
    Image(Uuid),
    /// `s-<uuid>`: the snapshot backing a snapshot volume.
    Snapshot(Uuid),
    /// `c-<uuid>`: the hidden snapshot a clone of a writable volume was taken from.
    CloneBase(Uuid),
}

impl Object {
    fn prefix(self) -> &'static str {
        match self {
            Object::Image(_) => "v-",
            Object::Snapshot(_) => "s-",
            Object::CloneBase(_) => "c-",
        }
    }

    fn uuid(self) -> Uuid {
        match self {
            Object::Image(u) | Object::Snapshot(u) | Object::CloneBase(u) => u,
        }
    }

    /// Parses an image or snapshot name; `None` for names that are not ours.
    ///
    /// ```
    /// use common::layout::names::Object;
    /// let u = uuid::Uuid::new_v4();
    /// assert_eq!(Object::parse(&Object::Image(u).to_string()), Some(Object::Image(u)));
    /// assert_eq!(Object::parse("someone-elses-image"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Object> {
        let (prefix, rest) = name.split_at_checked(2)?;
        let uuid = Uuid::try_parse(rest).ok()?;
        match prefix {
            "v-" => Some(Object::Image(uuid)),
            "s-" => Some(Object::Snapshot(uuid)),
            "c-" => Some(Object::CloneBase(uuid)),
            _ => None,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix(), self.uuid().hyphenated())
    }
}

/// The keys of the header image's image-meta.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// `sr`: the SR record (JSON).
    Sr,
    /// `sr.name`: the SR's name, when changed after creation.
    SrName,
    /// `sr.description`: the SR's description, when changed after creation.
    SrDescription,
    /// `v.<uuid>`: a volume record (JSON).
    Volume(Uuid),
    /// `v.<uuid>.name`: a volume's name, when changed after creation.
    VolumeName(Uuid),
    /// `v.<uuid>.description`: a volume's description, when changed after creation.
    VolumeDescription(Uuid),
    /// `v.<uuid>.cbt`: `true` or `false`, whether changed block tracking is on for a
    /// writable volume (`Volume.enable_cbt`/`disable_cbt`). Absent: as the record says.
    VolumeCbt(Uuid),
    /// `v.<uuid>.data-destroyed`: `true` once `Volume.data_destroy` kept only the snapshot
    /// volume's changed-block anchor (docs/cbt.md).
    VolumeDataDestroyed(Uuid),
    /// `u.<uuid>.<encoded key>`: one `Volume.set` key, its name percent-encoded so that any
    /// bytes round-trip and none can be read back as structure.
    UserKey(Uuid, String),
    /// `k.<uuid>.<key>`: one `Volume.set` key as layout 1 stored it, verbatim. Read, never
    /// written; a [`MetaKey::UserKey`] of the same name wins over it.
    LegacyUserKey(Uuid, String),
    /// `g.<image>` or `g.<image>@<snap>`: an image or snapshot no volume uses any more,
    /// kept until its last dependant is gone (JSON). Only names of ours are accepted.
    Garbage(String),
}

impl MetaKey {
    /// Parses a header key; `None` for keys that are not ours.
    pub fn parse(key: &str) -> Option<MetaKey> {
        match key {
            "sr" => return Some(MetaKey::Sr),
            "sr.name" => return Some(MetaKey::SrName),
            "sr.description" => return Some(MetaKey::SrDescription),
            _ => {}
        }
        if let Some(rest) = key.strip_prefix("g.") {
            let ours = match rest.split_once('@') {
                Some((image, snap)) => Object::parse(image).is_some() && Object::parse(snap).is_some(),
                None => Object::parse(rest).is_some(),
            };
            return ours.then(|| MetaKey::Garbage(rest.to_owned()));
        }
        let (kind, rest) = key.split_once('.')?;
        let (id, tail) = match rest.split_at_checked(36) {
            Some((id, tail)) => (Uuid::try_parse(id).ok()?, tail),
            None => return None,
        };
        match (kind, tail) {
            ("v", "") => Some(MetaKey::Volume(id)),
            ("v", ".name") => Some(MetaKey::VolumeName(id)),
            ("v", ".description") => Some(MetaKey::VolumeDescription(id)),
            ("v", ".cbt") => Some(MetaKey::VolumeCbt(id)),
            ("v", ".data-destroyed") => Some(MetaKey::VolumeDataDestroyed(id)),
            ("u", tail) => tail.strip_prefix('.').and_then(escape::decode).map(|k| MetaKey::UserKey(id, k)),
            ("k", tail) => tail.strip_prefix('.').map(|k| MetaKey::LegacyUserKey(id, k.to_owned())),
            _ => None,
        }
    }

    /// The uuid of the volume this key belongs to, if any.
    pub fn volume(&self) -> Option<Uuid> {
        match self {
            MetaKey::Volume(u)
            | MetaKey::VolumeName(u)
            | MetaKey::VolumeDescription(u)
            | MetaKey::VolumeCbt(u)
            | MetaKey::VolumeDataDestroyed(u)
            | MetaKey::UserKey(u, _)
            | MetaKey::LegacyUserKey(u, _) => Some(*u),
            MetaKey::Sr | MetaKey::SrName | MetaKey::SrDescription | MetaKey::Garbage(_) => None,
        }
    }
}

impl fmt::Display for MetaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaKey::Sr => write!(f, "sr"),
            MetaKey::SrName => write!(f, "sr.name"),
            MetaKey::SrDescription => write!(f, "sr.description"),
            MetaKey::Volume(u) => write!(f, "v.{}", u.hyphenated()),
            MetaKey::VolumeName(u) => write!(f, "v.{}.name", u.hyphenated()),
            MetaKey::VolumeDescription(u) => write!(f, "v.{}.description", u.hyphenated()),
            MetaKey::VolumeCbt(u) => write!(f, "v.{}.cbt", u.hyphenated()),
            MetaKey::VolumeDataDestroyed(u) => write!(f, "v.{}.data-destroyed", u.hyphenated()),
            MetaKey::UserKey(u, k) => write!(f, "u.{}.{}", u.hyphenated(), escape::encode(k, escape::URI)),
            MetaKey::LegacyUserKey(u, k) => write!(f, "k.{}.{k}", u.hyphenated()),
            MetaKey::Garbage(what) => write!(f, "g.{what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_round_trip() {
        let u = Uuid::new_v4();
        for o in [Object::Image(u), Object::Snapshot(u), Object::CloneBase(u)] {
            assert_eq!(Object::parse(&o.to_string()), Some(o));
        }
        assert_eq!(Object::parse("v-not-a-uuid"), None);
        assert_eq!(Object::parse(HEADER_IMAGE), None);
        assert_eq!(Object::parse("é"), None);
    }

    #[test]
    fn meta_keys_round_trip() {
        let u = Uuid::new_v4();
        for k in [
            MetaKey::Sr,
            MetaKey::SrName,
            MetaKey::SrDescription,
            MetaKey::Volume(u),
            MetaKey::VolumeName(u),
            MetaKey::VolumeDescription(u),
            MetaKey::VolumeCbt(u),
            MetaKey::VolumeDataDestroyed(u),
            MetaKey::UserKey(u, "vdi-type".to_owned()),
            MetaKey::UserKey(u, "with.dots and spaces".to_owned()),
            MetaKey::UserKey(u, String::new()),
            MetaKey::UserKey(u, "a\"b\\c\u{1}\né".to_owned()),
            MetaKey::LegacyUserKey(u, "verbatim".to_owned()),
            MetaKey::Garbage(format!("v-{u}@c-{u}")),
            MetaKey::Garbage(format!("v-{u}")),
        ] {
            assert_eq!(MetaKey::parse(&k.to_string()), Some(k.clone()), "{k}");
        }
        assert_eq!(MetaKey::parse("v.nope"), None);
        assert_eq!(MetaKey::parse("g.someone-elses-image"), None, "marks name only our storage");
        assert_eq!(MetaKey::parse(&format!("u.{u}.%zz")), None);
        let stored = MetaKey::UserKey(u, "a\"b".to_owned()).to_string();
        assert!(!stored.contains('"'), "{stored}");
        assert_eq!(MetaKey::parse(&format!("x.{u}")), None);
    }
}
