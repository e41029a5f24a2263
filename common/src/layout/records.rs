//! The SR's records, kept in the image-meta of its header image ([`HEADER_IMAGE`]).
//!
//! Why there: all metadata lives in Ceph (any host sees it; `SR.probe` rediscovers an SR
//! from the cluster alone), and one `rbd image-meta list` reads every record of the SR, so
//! `SR.ls` and `Volume.stat` cost one Ceph command whatever the number of volumes; the
//! listing is parsed in one pass ([`Records::parse`]).
//!
//! Every record or field is its own key ([`MetaKey`]), and each `image-meta set` replaces
//! one key atomically, so concurrent calls that touch different keys cannot lose each
//! other's updates: `Volume.set` of two keys, renames, creates and snapshots all write
//! distinct keys. The volume record itself is written once at creation and rewritten only
//! by `Volume.resize`.
//!
//! Values are stored percent-encoded behind a `%` ([`encode`], [`super::escape`]), so any
//! bytes xapi sends come back exactly and none can be read back as structure. Layout 1
//! stored them verbatim behind a `=`; such values are still read.
//!
//! A record that cannot be read is never dropped: it is kept in [`Records::unreadable`],
//! the volume it belongs to cannot be used until it is repaired, `SR.ls` refuses to answer
//! (xapi would otherwise forget the volume), and the consistency check reports it without
//! touching anything.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::escape;
use super::names::{MetaKey, HEADER_IMAGE, LAYOUT_VERSION};
use super::uri::SrUri;
use crate::ceph::rbd::{self, Action};
use crate::ceph::{CephError, Conn, Kind};
use crate::error::{OpError, RequestError};

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
    /// Changed block tracking: set at creation for a snapshot of a volume that had it on
    /// (its RBD snapshot is then an anchor later diffs start from); for a writable volume,
    /// the `v.<uuid>.cbt` key says, applied here by [`Records::parse`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub cbt: bool,
    /// A snapshot volume whose data was destroyed (`Volume.data_destroy`): only its RBD
    /// snapshot is kept, as the anchor of later diffs; it cannot be attached or cloned.
    /// Set by the `v.<uuid>.data-destroyed` key, applied here by [`Records::parse`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub data_destroyed: bool,
}

// serde's `skip_serializing_if` takes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(value: &bool) -> bool {
    !*value
}

impl VolumeRecord {
    /// Whether the volume still holds data a VM or a backup can read: a writable volume,
    /// or a snapshot whose data was not destroyed.
    pub fn has_data(&self) -> bool {
        !self.data_destroyed
    }

    /// The RBD image or snapshot holding the volume: `image` or `image@snap`.
    pub fn leaf(&self) -> String {
        self.snap.as_ref().map_or_else(|| self.image.clone(), |s| format!("{}@{s}", self.image))
    }
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

/// A record of ours that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The stored key.
    pub key: String,
    /// The volume it belongs to, if any.
    pub volume: Option<Uuid>,
    /// Why it cannot be read.
    pub reason: String,
}

/// The longest `Volume.set` key name accepted, in bytes.
pub const MAX_KEY: usize = 1024;
/// The longest `Volume.set` value accepted, in bytes.
pub const MAX_VALUE: usize = 16 * 1024;
/// The longest name or description accepted, in bytes.
pub const MAX_TEXT: usize = 8 * 1024;

/// Refuses a text longer than `limit` bytes: every stored value travels as one command-line
/// argument, encoded (up to three bytes per byte), and the kernel caps one argument at
/// 128 KiB.
pub fn check_text(field: &'static str, text: &str, limit: usize) -> Result<(), RequestError> {
    if text.len() > limit {
        return Err(RequestError::TooLong { field, length: text.len(), limit });
    }
    Ok(())
}

/// Encodes a value for `image-meta set`: `%` and the value percent-encoded.
pub fn encode(value: &str) -> String {
    format!("%{}", escape::encode(value, escape::META))
}

/// Decodes a stored value: `%<encoded>` (layout 2) or `=<verbatim>` (layout 1).
pub fn decode(stored: &str) -> Result<String, String> {
    if let Some(encoded) = stored.strip_prefix('%') {
        escape::decode(encoded).ok_or_else(|| "malformed percent-encoding".to_owned())
    } else if let Some(verbatim) = stored.strip_prefix('=') {
        Ok(verbatim.to_owned())
    } else {
        Err("no encoding marker (not written by cephrbd)".to_owned())
    }
}

/// The stored text of a flag key ([`MetaKey::VolumeCbt`], [`MetaKey::VolumeDataDestroyed`]).
pub fn flag_text(on: bool) -> &'static str {
    if on {
        "true"
    } else {
        "false"
    }
}

fn flag(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("not a flag (true or false): {other:?}")),
    }
}

fn json<T: DeserializeOwned>(value: &str) -> Result<T, String> {
    serde_json::from_str(value).map_err(|e| format!("not a record: {e}"))
}

/// Every record of one SR, as read by one `rbd image-meta list` and parsed in one pass.
#[derive(Debug, Clone, Default)]
pub struct Records {
    sr: Option<SrRecord>,
    volumes: BTreeMap<Uuid, VolumeView>,
    keys: BTreeMap<Uuid, Vec<MetaKey>>,
    garbage: BTreeMap<String, GarbageRecord>,
    unreadable: Vec<Unreadable>,
}

/// What one stored entry says, before the volumes are assembled.
#[derive(Default)]
struct Pieces {
    records: BTreeMap<Uuid, VolumeRecord>,
    names: BTreeMap<Uuid, String>,
    descriptions: BTreeMap<Uuid, String>,
    cbt: BTreeMap<Uuid, bool>,
    data_destroyed: BTreeMap<Uuid, bool>,
    keys: BTreeMap<Uuid, BTreeMap<String, String>>,
    legacy_keys: BTreeMap<Uuid, BTreeMap<String, String>>,
    sr_name: Option<String>,
    sr_description: Option<String>,
}

impl Records {
    /// Parses raw image-meta (stored keys and encoded values) in one pass. Keys that are
    /// not ours are ignored; entries of ours that cannot be read are kept as
    /// [`Unreadable`].
    pub fn parse(raw: &BTreeMap<String, String>) -> Self {
        let mut out = Records::default();
        let mut pieces = Pieces::default();
        for (stored_key, stored_value) in raw {
            let Some(key) = MetaKey::parse(stored_key) else { continue };
            let volume = key.volume();
            if let Some(u) = volume {
                out.keys.entry(u).or_default().push(key.clone());
            }
            let mut unreadable = |reason: String| {
                out.unreadable.push(Unreadable { key: stored_key.clone(), volume, reason });
            };
            let value = match decode(stored_value) {
                Ok(value) => value,
                Err(reason) => {
                    unreadable(reason);
                    continue;
                }
            };
            match key {
                MetaKey::Sr => match json(&value) {
                    Ok(sr) => out.sr = Some(sr),
                    Err(reason) => unreadable(reason),
                },
                MetaKey::SrName => pieces.sr_name = Some(value),
                MetaKey::SrDescription => pieces.sr_description = Some(value),
                MetaKey::Volume(u) => match json(&value) {
                    Ok(record) => {
                        pieces.records.insert(u, record);
                    }
                    Err(reason) => unreadable(reason),
                },
                MetaKey::VolumeName(u) => {
                    pieces.names.insert(u, value);
                }
                MetaKey::VolumeDescription(u) => {
                    pieces.descriptions.insert(u, value);
                }
                MetaKey::VolumeCbt(u) => match flag(&value) {
                    Ok(on) => {
                        pieces.cbt.insert(u, on);
                    }
                    Err(reason) => unreadable(reason),
                },
                MetaKey::VolumeDataDestroyed(u) => match flag(&value) {
                    Ok(on) => {
                        pieces.data_destroyed.insert(u, on);
                    }
                    Err(reason) => unreadable(reason),
                },
                MetaKey::UserKey(u, k) => {
                    pieces.keys.entry(u).or_default().insert(k, value);
                }
                MetaKey::LegacyUserKey(u, k) => {
                    pieces.legacy_keys.entry(u).or_default().insert(k, value);
                }
                MetaKey::Garbage(what) => match json(&value) {
                    Ok(mark) => {
                        out.garbage.insert(what, mark);
                    }
                    Err(reason) => unreadable(reason),
                },
            }
        }
        if let Some(sr) = &mut out.sr {
            if let Some(name) = pieces.sr_name {
                sr.name = name;
            }
            if let Some(description) = pieces.sr_description {
                sr.description = description;
            }
        }
        let broken: Vec<Uuid> = out.unreadable.iter().filter_map(|u| u.volume).collect();
        for (uuid, mut record) in pieces.records {
            if broken.contains(&uuid) {
                continue;
            }
            if let Some(name) = pieces.names.remove(&uuid) {
                record.name = name;
            }
            if let Some(description) = pieces.descriptions.remove(&uuid) {
                record.description = description;
            }
            if let Some(on) = pieces.cbt.remove(&uuid) {
                record.cbt = on;
            }
            if let Some(on) = pieces.data_destroyed.remove(&uuid) {
                record.data_destroyed = on;
            }
            let mut keys = pieces.legacy_keys.remove(&uuid).unwrap_or_default();
            keys.extend(pieces.keys.remove(&uuid).unwrap_or_default());
            out.volumes.insert(uuid, VolumeView { uuid, record, keys });
        }
        out
    }

    /// The SR record with name and description overrides applied, if this is an SR.
    pub fn sr(&self) -> Option<&SrRecord> {
        self.sr.as_ref()
    }

    /// One volume, if it exists and can be read.
    pub fn volume(&self, uuid: Uuid) -> Option<&VolumeView> {
        self.volumes.get(&uuid)
    }

    /// The changed-block anchors of `image` that nothing can be compared with any more:
    /// when no volume of the image other than `except` still holds data, every anchor of it
    /// (snapshot whose data was destroyed) other than `except`; otherwise none.
    pub fn orphaned_anchors(&self, image: &str, except: Option<Uuid>) -> Vec<Uuid> {
        let others: Vec<_> = self.volumes().filter(|v| v.record.image == image && Some(v.uuid) != except).collect();
        if others.iter().any(|v| v.record.has_data()) {
            return Vec::new();
        }
        others.iter().map(|v| v.uuid).collect()
    }

    /// Every readable volume, in key order.
    pub fn volumes(&self) -> impl ExactSizeIterator<Item = &VolumeView> + '_ {
        self.volumes.values()
    }

    /// Every key that belongs to volume `uuid` (its record last).
    pub fn keys_of(&self, uuid: Uuid) -> Vec<MetaKey> {
        let mut keys: Vec<MetaKey> =
            self.keys.get(&uuid).into_iter().flatten().filter(|k| **k != MetaKey::Volume(uuid)).cloned().collect();
        keys.push(MetaKey::Volume(uuid));
        keys
    }

    /// Keys of volumes that have no record (readable or not): left by a call that raced
    /// a destroy, or by a crash.
    pub fn orphan_keys(&self) -> impl Iterator<Item = (Uuid, &[MetaKey])> + '_ {
        self.keys
            .iter()
            .filter(|(u, keys)| !keys.contains(&MetaKey::Volume(**u)))
            .map(|(u, keys)| (*u, keys.as_slice()))
    }

    /// Keys in the layout-1 form (`k.<uuid>.<verbatim>`), to be rewritten encoded.
    pub fn legacy_keys(&self) -> impl Iterator<Item = &MetaKey> + '_ {
        self.keys.values().flatten().filter(|k| matches!(k, MetaKey::LegacyUserKey(..)))
    }

    /// The garbage mark of `what` (`image` or `image@snap`), if any.
    pub fn garbage(&self, what: &str) -> Option<&GarbageRecord> {
        self.garbage.get(what)
    }

    /// Every readable garbage mark.
    pub fn garbage_marks(&self) -> impl Iterator<Item = (&String, &GarbageRecord)> + '_ {
        self.garbage.iter()
    }

    /// Entries of ours that cannot be read.
    pub fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }

    /// The error for a volume whose records cannot be read, if `uuid` is one.
    pub fn unreadable_volume(&self, uuid: Uuid) -> Option<OpError> {
        let broken: Vec<&Unreadable> = self.unreadable.iter().filter(|u| u.volume == Some(uuid)).collect();
        (!broken.is_empty()).then(|| unreadable_error(&broken))
    }
}

/// The error naming unreadable records.
pub fn unreadable_error(broken: &[&Unreadable]) -> OpError {
    OpError::Unreadable {
        what: broken.iter().map(|u| format!("{:?}: {}", u.key, u.reason)).collect::<Vec<_>>().join("; "),
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
        rbd::meta_list(self.conn, &self.spec).map(|raw| Records::parse(&raw))
    }

    /// One value (one `rbd image-meta get`), `None` if absent. A stored value that cannot
    /// be decoded is returned as stored (callers parse it and report it).
    pub fn get(&self, key: &MetaKey) -> Result<Option<String>, CephError> {
        Ok(rbd::meta_get(self.conn, &self.spec, &key.to_string())?.map(|v| decode(&v).unwrap_or(v)))
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

/// Reads the SR's records; a missing header is `SR_does_not_exist`, an unreadable SR
/// record or a layout newer than this version knows is an error that says so.
pub fn load(sr: &SrUri) -> Result<Records, OpError> {
    let records = match Header::of(sr).load() {
        Ok(records) => records,
        Err(e) if e.kind() == Kind::NotFound => return Err(sr_missing(sr)),
        Err(e) => return Err(e.into()),
    };
    check_sr(sr, &records)?;
    Ok(records)
}

/// Confirms, with one `image-meta get`, that the header holds `sr`'s record in a layout this
/// version understands: calls that write without reading the records first (create, set)
/// run it beside their write, so an SR string naming another SR's namespace under a
/// different uuid cannot write into it.
pub fn verify_sr(sr: &SrUri) -> Result<(), OpError> {
    let stored = match Header::of(sr).get(&MetaKey::Sr) {
        Ok(stored) => stored,
        Err(e) if e.kind() == Kind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let Some(text) = stored else { return Err(sr_missing(sr)) };
    let record: SrRecord = json(&text).map_err(|reason| OpError::Unreadable { what: format!("\"sr\": {reason}") })?;
    if record.uuid != sr.uuid {
        return Err(sr_missing(sr));
    }
    if record.layout > LAYOUT_VERSION {
        return Err(OpError::LayoutTooNew { found: record.layout, supported: LAYOUT_VERSION });
    }
    Ok(())
}

/// The SR record says this is `sr`, in a layout this version understands.
pub fn check_sr(sr: &SrUri, records: &Records) -> Result<(), OpError> {
    match records.sr() {
        Some(record) if record.uuid != sr.uuid => Err(sr_missing(sr)),
        Some(record) if record.layout > LAYOUT_VERSION => {
            Err(OpError::LayoutTooNew { found: record.layout, supported: LAYOUT_VERSION })
        }
        Some(_) => Ok(()),
        None => {
            let broken: Vec<&Unreadable> =
                records.unreadable().iter().filter(|u| u.key == MetaKey::Sr.to_string()).collect();
            Err(if broken.is_empty() { sr_missing(sr) } else { unreadable_error(&broken) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(u: Uuid) -> VolumeRecord {
        VolumeRecord {
            name: "a".to_owned(),
            description: "d".to_owned(),
            image: format!("v-{u}"),
            snap: None,
            size: 1,
            sharable: false,
            parent: None,
            cbt: false,
            data_destroyed: false,
        }
    }

    #[test]
    fn overrides_and_keys_are_applied_in_one_pass() {
        let u = Uuid::new_v4();
        let other = Uuid::new_v4();
        let raw: BTreeMap<String, String> = [
            (MetaKey::Volume(u).to_string(), encode(&serde_json::to_string(&record(u)).expect("json"))),
            (MetaKey::VolumeName(u).to_string(), encode("renamed")),
            (MetaKey::UserKey(u, "vdi-type".to_owned()).to_string(), encode("user")),
            (MetaKey::UserKey(u, "empty".to_owned()).to_string(), encode("")),
            (MetaKey::LegacyUserKey(u, "empty".to_owned()).to_string(), "=legacy loses".to_owned()),
            (MetaKey::LegacyUserKey(u, "old".to_owned()).to_string(), "=kept".to_owned()),
            (MetaKey::UserKey(other, "x".to_owned()).to_string(), encode("y")),
            ("foreign".to_owned(), "value".to_owned()),
        ]
        .into_iter()
        .collect();
        let records = Records::parse(&raw);
        let view = records.volume(u).expect("exists");
        assert_eq!(view.record.name, "renamed");
        assert_eq!(view.record.description, "d");
        assert_eq!(view.keys.len(), 3);
        assert_eq!(view.keys["empty"], "");
        assert_eq!(view.keys["old"], "kept");
        assert_eq!(records.volumes().len(), 1, "a key without a record is not a volume");
        assert_eq!(records.keys_of(u).last(), Some(&MetaKey::Volume(u)));
        assert_eq!(records.keys_of(u).len(), 6);
        assert_eq!(records.orphan_keys().map(|(o, _)| o).collect::<Vec<_>>(), [other]);
        assert_eq!(records.legacy_keys().count(), 2);
    }

    #[test]
    fn cbt_flags_override_the_record_and_bad_flags_are_unreadable() {
        let (u, snap, bad) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let snapshot = VolumeRecord { snap: Some(format!("s-{snap}")), cbt: true, ..record(u) };
        let raw: BTreeMap<String, String> = [
            (MetaKey::Volume(u).to_string(), encode(&serde_json::to_string(&record(u)).expect("json"))),
            (MetaKey::VolumeCbt(u).to_string(), encode("true")),
            (MetaKey::Volume(snap).to_string(), encode(&serde_json::to_string(&snapshot).expect("json"))),
            (MetaKey::VolumeDataDestroyed(snap).to_string(), encode("true")),
            (MetaKey::Volume(bad).to_string(), encode(&serde_json::to_string(&record(bad)).expect("json"))),
            (MetaKey::VolumeCbt(bad).to_string(), encode("yes")),
        ]
        .into_iter()
        .collect();
        let records = Records::parse(&raw);
        let head = &records.volume(u).expect("head").record;
        assert!(head.cbt && head.has_data());
        let anchor = &records.volume(snap).expect("snapshot").record;
        assert!(anchor.cbt && anchor.data_destroyed && !anchor.has_data());
        assert!(records.volume(bad).is_none() && records.unreadable_volume(bad).is_some());
        // A record written with the flags off keeps them out of its JSON: an older
        // cephrbd reads it unchanged.
        let text = serde_json::to_string(&record(u)).expect("json");
        assert!(!text.contains("cbt") && !text.contains("data_destroyed"), "{text}");
        // An explicit `false` wins over a record that says `true` (resize rewrites records
        // with the overrides applied).
        let raw: BTreeMap<String, String> = [
            (MetaKey::Volume(u).to_string(), encode(&serde_json::to_string(&head).expect("json"))),
            (MetaKey::VolumeCbt(u).to_string(), encode(flag_text(false))),
        ]
        .into_iter()
        .collect();
        assert!(!Records::parse(&raw).volume(u).expect("head").record.cbt);
    }

    #[test]
    fn any_value_round_trips_and_stays_printable() {
        for value in ["", "=", "%", "%41", "a\"b\\c", "\u{0}\u{1}\n\t\u{7f}", "é€😀", "--x", "{\"v.x\":1}"] {
            let stored = encode(value);
            assert!(stored.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'), "{stored:?}");
            assert_eq!(decode(&stored).as_deref(), Ok(value));
        }
        assert_eq!(decode("=verbatim \" kept").as_deref(), Ok("verbatim \" kept"), "layout 1");
        assert!(decode("no marker").is_err());
    }

    #[test]
    fn unreadable_records_are_kept_not_dropped() {
        let u = Uuid::new_v4();
        let raw: BTreeMap<String, String> = [
            (MetaKey::Volume(u).to_string(), encode("{not json")),
            (MetaKey::UserKey(u, "k".to_owned()).to_string(), encode("v")),
            (MetaKey::Garbage(format!("v-{u}")).to_string(), "%%zz".to_owned()),
        ]
        .into_iter()
        .collect();
        let records = Records::parse(&raw);
        assert!(records.volume(u).is_none());
        assert_eq!(records.unreadable().len(), 2);
        assert!(records.unreadable_volume(u).is_some());
        assert_eq!(records.orphan_keys().count(), 0, "the keys of an unreadable record are not orphans");
    }
}
