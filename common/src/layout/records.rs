//! The SR's records, kept in the image-meta of its header image ([`HEADER_IMAGE`]).
//!
//! Why there: all metadata lives in Ceph (any host sees it; `SR.probe` rediscovers an SR
//! from the cluster alone), and one `rbd image-meta list` reads every record of the SR, so
//! `SR.ls` and `Volume.stat` cost one Ceph command whatever the number of volumes.
//!
//! Every record or field is its own key ([`MetaKey`]), and each `image-meta set` replaces
//! one key atomically, so concurrent calls that touch different keys cannot lose each
//! other's updates: `Volume.set` of two keys, renames, creates and snapshots all write
//! distinct keys. The volume record itself is written once at creation and rewritten only
//! by `Volume.resize`.
//!
//! Values are stored with a leading `=` ([`encode`]): `rbd image-meta set` refuses an empty
//! value, and user values may be empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::names::{MetaKey, HEADER_IMAGE};
use super::uri::SrUri;
use crate::ceph::rbd::{self, Action};
use crate::ceph::{CephError, Conn, Kind};
use crate::error::OpError;

/// The SR record (`sr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrRecord {
    /// The layout version ([`super::names::LAYOUT_VERSION`]).
    pub layout: u32,
    /// The SR's uuid.
    pub uuid: Uuid,
    /// The name given at creation.
    pub name: String,
    /// The description given at creation.
    pub description: String,
}

/// An RBD snapshot: `image@snap` in the SR's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapRef {
    /// The image.
    pub image: String,
    /// The snapshot.
    pub snap: String,
}

impl SnapRef {
    /// `image@snap`.
    pub fn leaf(&self) -> String {
        format!("{}@{}", self.image, self.snap)
    }
}

/// A volume record (`v.<uuid>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The name given at creation.
    pub name: String,
    /// The description given at creation.
    pub description: String,
    /// The RBD image holding the data.
    pub image: String,
    /// For a snapshot volume, the RBD snapshot of `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snap: Option<String>,
    /// The size in bytes.
    pub size: u64,
    /// Whether several hosts may attach it at once.
    pub sharable: bool,
    /// For a clone, the snapshot it was cloned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapRef>,
}

/// A garbage mark (`g.<image>` or `g.<image>@<snap>`): storage no volume uses any more,
/// kept while something still depends on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageRecord {
    /// For an image that is a clone, the snapshot it was cloned from (to reclaim next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapRef>,
}

/// A volume as the records describe it, with its later changes applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    /// The key.
    pub uuid: Uuid,
    /// The record, with `name`/`description` overrides applied.
    pub record: VolumeRecord,
    /// Its `Volume.set` keys.
    pub keys: BTreeMap<String, String>,
}

/// Encodes a value for `image-meta set`.
pub fn encode(value: &str) -> String {
    format!("={value}")
}

/// Decodes a stored value (values written by others are taken as they are).
pub fn decode(stored: &str) -> &str {
    stored.strip_prefix('=').unwrap_or(stored)
}

/// Every record of one SR, as read by one `rbd image-meta list`.
#[derive(Debug, Clone, Default)]
pub struct Records {
    entries: BTreeMap<String, String>,
}

impl Records {
    /// Records from raw image-meta (stored, encoded values).
    pub fn from_raw(raw: BTreeMap<String, String>) -> Self {
        Records { entries: raw.into_iter().map(|(k, v)| (k, decode(&v).to_owned())).collect() }
    }

    fn get(&self, key: &MetaKey) -> Option<&str> {
        self.entries.get(&key.to_string()).map(String::as_str)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, key: &MetaKey) -> Option<T> {
        self.get(key).and_then(|v| serde_json::from_str(v).ok())
    }

    /// The SR record with name and description overrides applied, if this is an SR.
    pub fn sr(&self) -> Option<SrRecord> {
        let mut sr: SrRecord = self.json(&MetaKey::Sr)?;
        if let Some(name) = self.get(&MetaKey::SrName) {
            name.clone_into(&mut sr.name);
        }
        if let Some(description) = self.get(&MetaKey::SrDescription) {
            description.clone_into(&mut sr.description);
        }
        Some(sr)
    }

    /// One volume, if it exists.
    pub fn volume(&self, uuid: Uuid) -> Option<VolumeView> {
        let mut record: VolumeRecord = self.json(&MetaKey::Volume(uuid))?;
        if let Some(name) = self.get(&MetaKey::VolumeName(uuid)) {
            name.clone_into(&mut record.name);
        }
        if let Some(description) = self.get(&MetaKey::VolumeDescription(uuid)) {
            description.clone_into(&mut record.description);
        }
        let keys = self
            .parsed()
            .filter_map(|(key, value)| match key {
                MetaKey::UserKey(u, k) if u == uuid => Some((k, value.to_owned())),
                _ => None,
            })
            .collect();
        Some(VolumeView { uuid, record, keys })
    }

    /// Every volume, in key order.
    pub fn volumes(&self) -> Vec<VolumeView> {
        self.parsed()
            .filter_map(|(key, _)| match key {
                MetaKey::Volume(u) => self.volume(u),
                _ => None,
            })
            .collect()
    }

    /// Every key that belongs to volume `uuid` (its record last).
    pub fn keys_of(&self, uuid: Uuid) -> Vec<MetaKey> {
        let mut keys: Vec<MetaKey> =
            self.parsed().map(|(k, _)| k).filter(|k| k.volume() == Some(uuid) && *k != MetaKey::Volume(uuid)).collect();
        keys.push(MetaKey::Volume(uuid));
        keys
    }

    /// The garbage mark of `what` (`image` or `image@snap`), if any.
    pub fn garbage(&self, what: &str) -> Option<GarbageRecord> {
        let key = MetaKey::Garbage(what.to_owned());
        self.get(&key).map(|v| serde_json::from_str(v).unwrap_or_default())
    }

    /// Every garbage mark.
    pub fn garbage_marks(&self) -> Vec<(String, GarbageRecord)> {
        self.parsed()
            .filter_map(|(key, value)| match key {
                MetaKey::Garbage(what) => Some((what, serde_json::from_str(value).unwrap_or_default())),
                _ => None,
            })
            .collect()
    }

    /// Every key of ours.
    pub fn keys(&self) -> impl Iterator<Item = MetaKey> + '_ {
        self.parsed().map(|(k, _)| k)
    }

    fn parsed(&self) -> impl Iterator<Item = (MetaKey, &str)> + '_ {
        self.entries.iter().filter_map(|(k, v)| MetaKey::parse(k).map(|key| (key, v.as_str())))
    }
}

/// The header image of one SR: reads and writes its records.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    conn: &'a Conn,
    spec: String,
}

impl<'a> Header<'a> {
    /// The header of `sr`.
    pub fn of(sr: &'a SrUri) -> Self {
        Header { conn: &sr.conn, spec: sr.spec(HEADER_IMAGE) }
    }

    /// The header image's spec (`pool/namespace/cephrbd-sr`).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Every record (one `rbd image-meta list`).
    pub fn load(&self) -> Result<Records, CephError> {
        rbd::meta_list(self.conn, &self.spec).map(Records::from_raw)
    }

    /// One value (one `rbd image-meta get`), `None` if absent.
    pub fn get(&self, key: &MetaKey) -> Result<Option<String>, CephError> {
        Ok(rbd::meta_get(self.conn, &self.spec, &key.to_string())?.map(|v| decode(&v).to_owned()))
    }

    /// Writes one value.
    pub fn set(&self, key: &MetaKey, value: &str) -> Result<(), CephError> {
        rbd::meta_set(self.conn, &self.spec, &key.to_string(), &encode(value))
    }

    /// Writes one record as JSON.
    pub fn set_json<T: Serialize>(&self, key: &MetaKey, value: &T) -> Result<(), CephError> {
        let json = serde_json::to_string(value).expect("records serialize");
        self.set(key, &json)
    }

    /// Removes one key; `Identity` if absent.
    pub fn remove(&self, key: &MetaKey) -> Result<Action, CephError> {
        rbd::meta_remove(self.conn, &self.spec, &key.to_string())
    }
}

/// `SR_does_not_exist` for `sr`.
pub fn sr_missing(sr: &SrUri) -> OpError {
    OpError::SrDoesNotExist { uuid: sr.uuid.to_string(), pool: sr.pool.clone(), namespace: sr.namespace.clone() }
}

/// Reads the SR's records; a missing header is `SR_does_not_exist`.
pub fn load(sr: &SrUri) -> Result<Records, OpError> {
    match Header::of(sr).load() {
        Ok(records) if records.sr().is_some_and(|r| r.uuid == sr.uuid) => Ok(records),
        Ok(_) => Err(sr_missing(sr)),
        Err(e) if e.kind() == Kind::NotFound => Err(sr_missing(sr)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_keys_are_applied() {
        let u = Uuid::new_v4();
        let other = Uuid::new_v4();
        let record = VolumeRecord {
            name: "a".to_owned(),
            description: "d".to_owned(),
            image: format!("v-{u}"),
            snap: None,
            size: 1,
            sharable: false,
            parent: None,
        };
        let raw: BTreeMap<String, String> = [
            (MetaKey::Volume(u).to_string(), encode(&serde_json::to_string(&record).expect("json"))),
            (MetaKey::VolumeName(u).to_string(), encode("renamed")),
            (MetaKey::UserKey(u, "vdi-type".to_owned()).to_string(), encode("user")),
            (MetaKey::UserKey(u, "empty".to_owned()).to_string(), encode("")),
            (MetaKey::UserKey(other, "x".to_owned()).to_string(), encode("y")),
            ("foreign".to_owned(), "value".to_owned()),
        ]
        .into_iter()
        .collect();
        let records = Records::from_raw(raw);
        let view = records.volume(u).expect("exists");
        assert_eq!(view.record.name, "renamed");
        assert_eq!(view.record.description, "d");
        assert_eq!(view.keys.len(), 2);
        assert_eq!(view.keys["empty"], "");
        assert_eq!(records.volumes().len(), 1, "a key without a record is not a volume");
        assert_eq!(records.keys_of(u).last(), Some(&MetaKey::Volume(u)));
        assert_eq!(records.keys_of(u).len(), 4);
    }
}
