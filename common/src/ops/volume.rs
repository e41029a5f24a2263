//! The Volume interface: `Volume.create`, `destroy`, `stat`, `set`, `unset`, `set_name`,
//! `set_description`, `resize`, `snapshot`, `clone`.
//!
//! A writable volume is an RBD image; a snapshot volume is an RBD snapshot (read-only); a
//! clone is an RBD clone of a protected snapshot: copy-on-write, metadata only, O(1) in
//! size. A clone of a writable volume is taken from a hidden snapshot of it.
//!
//! Destroy never flattens and never fails because of dependants: a volume that still has
//! snapshots or clones vanishes from `SR.ls` at once (its record goes, a garbage mark stays)
//! and its storage is reclaimed when its last dependant is destroyed ([`super::reclaim`]).
//!
//! Ceph commands per call, on success (each `rbd` call ≈ 25–30 ms here):
//! - `stat`: 1 `image-meta list` (+1 `rbd du` when the SR's images have fast-diff);
//! - `create`: 1 `rbd create` + 1 `image-meta set`;
//! - `snapshot`: 1 `image-meta list` + 1 `snap create` + 1 `image-meta set`;
//! - `clone`: 1 `image-meta list` (+1 `snap create` from a writable volume) + 1 `snap
//!   protect` + 1 `rbd clone` + 1 `image-meta set`;
//! - `set`, `unset`, `set_name`, `set_description`: 1 `image-meta get` and 1 write, run in
//!   parallel;
//! - `resize`: 1 `image-meta list` + 1 `rbd resize` + 1 `image-meta set`;
//! - `destroy`: 1 `image-meta list` + 1 `rbd rm`/`snap rm` + 1 `image-meta remove` per key
//!   of the volume, plus what reclaiming its parents takes.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::info;
use uuid::Uuid;

use super::datapath;
use super::reclaim::{
    forget_snapshot_marks, purge_later, reclaim_chain, reclaim_image_if_garbage, reclaim_marked, remove_image_if_free,
    remove_snapshot_if_free,
};
use super::undo::{self, Step, Undo};
use crate::ceph::rbd;
use crate::ceph::{CephError, Kind};
use crate::error::{OpError, RequestError};
use crate::host::lock::SrLock;
use crate::host::Host;
use crate::layout::names::{MetaKey, Object};
use crate::layout::records::{self, GarbageRecord, Header, Records, SnapRef, VolumeRecord, VolumeView};
use crate::layout::uri::{SrUri, VolumeUri, VOLUME_SCHEME};
use crate::smapi::wire::{int64, Volume};

/// Sizes are rounded up to whole sectors.
pub const SECTOR: u64 = 512;
/// The largest volume accepted: 1 PiB.
pub const MAX_SIZE: u64 = 1 << 50;

/// A requested size as an image size: not negative, at most [`MAX_SIZE`], rounded up to
/// whole sectors (never down: the disk is at least as large as asked). 0 is a size: the
/// IDL's size is "a minimum", and xapi's own self-test creates 0-byte volumes.
pub fn image_size(requested: i64) -> Result<u64, RequestError> {
    let bad = |reason: String| RequestError::BadSize { size: requested, reason };
    let bytes = u64::try_from(requested).map_err(|_| bad("must not be negative".to_owned()))?;
    if bytes > MAX_SIZE {
        return Err(bad(format!("larger than the maximum volume size ({MAX_SIZE} bytes, 1 PiB)")));
    }
    let rounded = bytes.div_ceil(SECTOR) * SECTOR;
    debug_assert!(rounded >= bytes);
    Ok(rounded)
}

pub(super) fn volume_uuid(key: &str) -> Result<Uuid, OpError> {
    Uuid::try_parse(key).map_err(|_| OpError::VolumeDoesNotExist { key: key.to_owned() })
}

/// The volume `key` names; `Volume_does_not_exist`, or the error naming its unreadable
/// records.
pub(super) fn find<'r>(records: &'r Records, key: &str) -> Result<&'r VolumeView, OpError> {
    let uuid = volume_uuid(key)?;
    records.volume(uuid).ok_or_else(|| {
        records.unreadable_volume(uuid).unwrap_or_else(|| OpError::VolumeDoesNotExist { key: key.to_owned() })
    })
}

/// Writes (`Some(value)`) or removes (`None`) fields of volume `key`, checking in parallel
/// that the volume exists: one command's time instead of two. If it does not exist, what
/// was just written is removed again and the answer is `Volume_does_not_exist`; nothing
/// stays. Holds the SR's lock shared, so a destroy on this host (which takes it
/// exclusively) never runs in between.
pub(super) fn write_fields(
    host: &Host,
    sr: &SrUri,
    key: &str,
    fields: &[MetaKey],
    value: Option<&str>,
) -> Result<(), OpError> {
    let uuid = volume_uuid(key)?;
    let header = Header::of(sr);
    let _lock = SrLock::shared(host, sr.uuid, lock_limit(sr))?;
    let (verified, found, written) = std::thread::scope(|s| {
        let verify = s.spawn(|| records::verify_sr(sr));
        let check = s.spawn(|| header.get(&MetaKey::Volume(uuid)));
        let written: Vec<_> = fields
            .iter()
            .map(|field| {
                s.spawn(|| match value {
                    Some(v) => header.set(field, v),
                    None => header.remove(field).map(drop),
                })
            })
            .collect();
        let check = check.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let written = written
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>, CephError>>();
        (verify.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), check, written)
    });
    let undo_write = || -> Result<(), OpError> {
        if value.is_some() && written.is_ok() {
            for field in fields {
                header.remove(field)?;
            }
        }
        Ok(())
    };
    if let Err(e) = verified {
        undo_write()?;
        return Err(e);
    }
    match found? {
        Some(_) => written.map(drop).map_err(OpError::from),
        None => {
            undo_write()?;
            Err(OpError::VolumeDoesNotExist { key: key.to_owned() })
        }
    }
}

/// Bytes used per `image` or `image@snap`, when the SR's images have fast-diff (otherwise
/// measuring would read every object: `None`).
pub fn usage(sr: &SrUri, image: Option<&str>) -> Result<Option<BTreeMap<String, u64>>, CephError> {
    if !sr.features.iter().any(|f| f == "fast-diff") {
        return Ok(None);
    }
    let spec = image.map(|i| sr.spec(i));
    let entries = rbd::du(&sr.conn, &sr.pool, &sr.namespace, spec.as_deref())?;
    Ok(Some(
        entries
            .into_iter()
            .map(|u| (u.snapshot.map_or_else(|| u.name.clone(), |s| format!("{}@{s}", u.name)), u.used_size))
            .collect(),
    ))
}

/// The `vdi-type` xapi gives a volume whose data was destroyed (its daemon sets it with
/// `Volume.set` after `Volume.data_destroy`; reported here whatever the keys say, so a
/// crash between the two cannot make xapi's next scan type it as a disk again).
pub const CBT_METADATA_TYPE: &str = "cbt_metadata";

/// The IDL record of a volume. Without a usage measurement, `physical_utilisation` is the
/// provisioned size (an upper bound: thin images use at most that).
pub fn to_volume(sr: &SrUri, view: &VolumeView, usage: Option<&BTreeMap<String, u64>>) -> Volume {
    let r = &view.record;
    let leaf = r.leaf();
    let used = usage.map_or(r.size, |u| u.get(&leaf).copied().unwrap_or(0));
    let mut keys = view.keys.clone();
    if r.data_destroyed {
        keys.insert("vdi-type".to_owned(), CBT_METADATA_TYPE.to_owned());
    }
    // One URI: the policy, not a mode, so the first datapath xapi finds serves every host.
    let uri = vec![VolumeUri {
        scheme: VOLUME_SCHEME.to_owned(),
        datapath: sr.datapath,
        pool: sr.pool.clone(),
        namespace: sr.namespace.clone(),
        image: r.image.clone(),
        snap: r.snap.clone(),
        volume: view.uuid,
        conn: sr.conn.clone(),
        data_destroyed: r.data_destroyed,
    }
    .render()];
    Volume {
        key: view.uuid.to_string(),
        uuid: Some(view.uuid.to_string()),
        name: r.name.clone(),
        description: r.description.clone(),
        read_write: r.snap.is_none(),
        sharable: r.sharable,
        virtual_size: int64(r.size),
        physical_utilisation: int64(used),
        uri,
        keys,
        cbt_enabled: r.cbt,
    }
}

/// Writes a new volume record; a missing header means the SR is gone.
fn record(sr: &SrUri, uuid: Uuid, record: &VolumeRecord) -> Result<(), OpError> {
    Header::of(sr).set_json(&MetaKey::Volume(uuid), record).map_err(|e| match e.kind() {
        Kind::NotFound => OpError::SrDoesNotExist {
            uuid: sr.uuid.to_string(),
            pool: sr.pool.clone(),
            namespace: sr.namespace.clone(),
        },
        _ => e.into(),
    })
}

fn fresh(sr: &SrUri, uuid: Uuid, record: VolumeRecord) -> Result<Volume, OpError> {
    let view = VolumeView { uuid, record, keys: BTreeMap::new() };
    let new_usage = usage_of_new(sr);
    Ok(to_volume(sr, &view, new_usage.as_ref()))
}

/// A volume just created uses nothing of its own yet (measurable only with fast-diff).
fn usage_of_new(sr: &SrUri) -> Option<BTreeMap<String, u64>> {
    sr.features.iter().any(|f| f == "fast-diff").then(BTreeMap::new)
}

/// `Volume.create`: a thin image of at least `size` bytes. On failure nothing is left.
pub fn create(
    host: &Host,
    sr: &SrUri,
    name: &str,
    description: &str,
    size: i64,
    sharable: bool,
) -> Result<Volume, OpError> {
    records::check_text("name", name, records::MAX_TEXT)?;
    records::check_text("description", description, records::MAX_TEXT)?;
    let size = image_size(size)?;
    let uuid = Uuid::new_v4();
    let image = Object::Image(uuid).to_string();
    let spec = sr.spec(&image);
    let new = VolumeRecord {
        name: name.to_owned(),
        description: description.to_owned(),
        image,
        snap: None,
        size,
        sharable,
        parent: None,
        cbt: false,
        data_destroyed: false,
    };
    undo::replay(host, sr)?;
    Undo::run(host, sr, |undo| {
        // The SR is confirmed beside the create, not before it: one command's time.
        let (verified, created) = std::thread::scope(|s| {
            let verify = s.spawn(|| records::verify_sr(sr));
            let created = rbd::create(&sr.conn, &spec, size, &sr.features);
            (verify.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), created)
        });
        // Pushed whatever the outcome: a create killed at its time limit may have made the
        // image all the same, and removing an image that is not there is no error.
        undo.push(Step::RemoveImage { spec: spec.clone() });
        verified?;
        created?;
        record(sr, uuid, &new)
    })?;
    info!(volume = %uuid, size, "volume created");
    fresh(sr, uuid, new)
}

/// `Volume.snapshot`: a read-only volume holding the source's data now (an RBD snapshot).
/// Name and description are copied, keys are not. A snapshot of a volume with changed
/// block tracking on has it on too: its RBD snapshot is an anchor later diffs start from.
pub fn snapshot(host: &Host, sr: &SrUri, key: &str) -> Result<Volume, OpError> {
    undo::replay(host, sr)?;
    let records = records::load(sr)?;
    let source = find(&records, key)?;
    if source.record.snap.is_some() {
        return Err(OpError::ReadOnly { key: key.to_owned(), action: "snapshot" });
    }
    let uuid = Uuid::new_v4();
    let base = SnapRef { image: source.record.image.clone(), snap: Object::Snapshot(uuid).to_string() };
    let spec = sr.spec(&base.leaf());
    let new = VolumeRecord {
        snap: Some(base.snap.clone()),
        parent: None,
        cbt: source.record.cbt,
        data_destroyed: false,
        ..source.record.clone()
    };
    Undo::run(host, sr, |undo| {
        // Before the command: one killed at its limit may have taken the snapshot anyway.
        undo.push(Step::RemoveSnapshot { spec: spec.clone() });
        rbd::snap_create(&sr.conn, &spec)?;
        record(sr, uuid, &new)
    })?;
    info!(volume = %uuid, of = %source.uuid, "snapshot created");
    fresh(sr, uuid, new)
}

/// `Volume.clone`: a writable copy-on-write volume (an RBD clone, O(1)). From a snapshot
/// volume it clones that snapshot; from a writable volume it clones a hidden snapshot taken
/// now. Name and description are copied, keys are not; changed block tracking is off on
/// the clone (a new disk, with no history of its own). Refused for a snapshot whose data
/// was destroyed.
pub fn clone(host: &Host, sr: &SrUri, key: &str) -> Result<Volume, OpError> {
    undo::replay(host, sr)?;
    let conn = &sr.conn;
    let records = records::load(sr)?;
    let source = find(&records, key)?;
    if source.record.data_destroyed {
        return Err(OpError::DataDestroyed { key: key.to_owned(), action: "clone" });
    }
    let uuid = Uuid::new_v4();
    let image = Object::Image(uuid).to_string();
    let spec = sr.spec(&image);
    let new = Undo::run(host, sr, |undo| {
        let base = match &source.record.snap {
            Some(snap) => SnapRef { image: source.record.image.clone(), snap: snap.clone() },
            None => {
                let base = SnapRef { image: source.record.image.clone(), snap: Object::CloneBase(uuid).to_string() };
                let base_spec = sr.spec(&base.leaf());
                undo.push(Step::RemoveSnapshot { spec: base_spec.clone() });
                rbd::snap_create(conn, &base_spec)?;
                base
            }
        };
        let base_spec = sr.spec(&base.leaf());
        if source.record.snap.is_none() {
            // Our hidden base: unprotected again on failure (before removal).
            undo.push(Step::Unprotect { spec: base_spec.clone() });
        }
        rbd::snap_protect(conn, &base_spec)?;
        undo.push(Step::RemoveImage { spec: spec.clone() });
        rbd::clone(conn, &base_spec, &spec, &sr.features)?;
        let new = VolumeRecord {
            image: image.clone(),
            snap: None,
            parent: Some(base),
            cbt: false,
            data_destroyed: false,
            ..source.record.clone()
        };
        record(sr, uuid, &new)?;
        Ok(new)
    })?;
    info!(volume = %uuid, of = %source.uuid, "clone created");
    fresh(sr, uuid, new)
}

/// `Volume.stat`: one read of the SR's records (plus one `rbd du` with fast-diff).
pub fn stat(sr: &SrUri, key: &str) -> Result<Volume, OpError> {
    let records = records::load(sr)?;
    let view = find(&records, key)?;
    let used = usage(sr, Some(&view.record.image))?;
    Ok(to_volume(sr, view, used.as_ref()))
}

/// `Volume.set`: stores `k` = `v` verbatim (one key of its own: concurrent sets of other
/// keys cannot be lost).
pub fn set(host: &Host, sr: &SrUri, key: &str, k: &str, v: &str) -> Result<(), OpError> {
    records::check_text("k", k, records::MAX_KEY)?;
    records::check_text("v", v, records::MAX_VALUE)?;
    let u = volume_uuid(key)?;
    write_fields(host, sr, key, &[MetaKey::UserKey(u, k.to_owned())], Some(v))
}

/// `Volume.unset`: removes `k`; removing an absent key succeeds.
pub fn unset(host: &Host, sr: &SrUri, key: &str, k: &str) -> Result<(), OpError> {
    let u = volume_uuid(key)?;
    // Both forms: a key layout 1 stored verbatim must not reappear once the encoded one goes.
    write_fields(host, sr, key, &[MetaKey::UserKey(u, k.to_owned()), MetaKey::LegacyUserKey(u, k.to_owned())], None)
}

/// `Volume.set_name`.
pub fn set_name(host: &Host, sr: &SrUri, key: &str, name: &str) -> Result<(), OpError> {
    records::check_text("new_name", name, records::MAX_TEXT)?;
    write_fields(host, sr, key, &[MetaKey::VolumeName(volume_uuid(key)?)], Some(name))
}

/// `Volume.set_description`.
pub fn set_description(host: &Host, sr: &SrUri, key: &str, description: &str) -> Result<(), OpError> {
    records::check_text("new_description", description, records::MAX_TEXT)?;
    write_fields(host, sr, key, &[MetaKey::VolumeDescription(volume_uuid(key)?)], Some(description))
}

/// `Volume.resize`: grows to at least `new_size`; shrinking is refused. If the record update
/// fails after the image grew, the next resize (or stat after it) repairs the record.
pub fn resize(host: &Host, sr: &SrUri, key: &str, new_size: i64) -> Result<(), OpError> {
    // Exclusive: a destroy racing the record's rewrite would bring the volume back.
    let _lock = SrLock::exclusive(host, sr.uuid, lock_limit(sr))?;
    let records = records::load(sr)?;
    let view = find(&records, key)?;
    if view.record.snap.is_some() {
        return Err(OpError::ReadOnly { key: key.to_owned(), action: "resize" });
    }
    let size = image_size(new_size)?;
    if size < view.record.size {
        return Err(OpError::Shrink { key: key.to_owned(), current: view.record.size, requested: new_size });
    }
    if size == view.record.size {
        return Ok(());
    }
    rbd::resize(&sr.conn, &sr.spec(&view.record.image), size)?;
    record(sr, view.uuid, &VolumeRecord { size, ..view.record.clone() })?;
    info!(volume = %view.uuid, size, "volume resized");
    Ok(())
}

/// How long destroy waits for another destroy on this host to finish reclaiming.
fn lock_limit(sr: &SrUri) -> Duration {
    sr.conn.timeout.saturating_mul(4)
}

/// `Volume.destroy`: removes the volume at once from the SR. Its storage goes now if
/// nothing depends on it (to the RBD trash, purged in the background); otherwise when its
/// last dependant goes. Never flattens. Refused while the volume is open (a VM uses it).
/// Idempotent: destroying a volume that is already gone succeeds (a retry after a crash),
/// and removes what that crash left of its keys.
///
/// Changed-block anchors (snapshots whose data was destroyed) never keep a disk alive: when
/// the last volume of an image that still holds data goes, the anchors of that image go
/// with it, since nothing is left to compare them with ([`Records::orphaned_anchors`]).
pub fn destroy(host: &Host, sr: &SrUri, key: &str) -> Result<(), OpError> {
    let uuid = volume_uuid(key)?;
    let _lock = SrLock::exclusive(host, sr.uuid, lock_limit(sr))?;
    undo::replay(host, sr)?;
    let records = records::load(sr)?;
    let destroyed = destroy_locked(host, sr, &records, uuid, key)?;
    if let Some(record) = destroyed.filter(VolumeRecord::has_data) {
        for anchor in records.orphaned_anchors(&record.image, Some(uuid)) {
            info!(volume = %anchor, "changed-block anchor left with nothing to compare with: destroyed too");
            destroy_locked(host, sr, &records::load(sr)?, anchor, &anchor.to_string())?;
        }
    }
    purge_later(host, sr);
    Ok(())
}

/// The body of [`destroy`], under the SR's lock, with `records` read after taking it.
/// Returns the record of the volume destroyed, `None` if it was already gone.
fn destroy_locked(
    host: &Host,
    sr: &SrUri,
    records: &Records,
    uuid: Uuid,
    key: &str,
) -> Result<Option<VolumeRecord>, OpError> {
    let header = Header::of(sr);
    let Some(view) = records.volume(uuid) else {
        if let Some(unreadable) = records.unreadable_volume(uuid) {
            return Err(unreadable);
        }
        for key in records.keys_of(uuid).iter().filter(|k| **k != MetaKey::Volume(uuid)) {
            header.remove(key)?;
        }
        info!(volume = %uuid, "volume already destroyed");
        return Ok(None);
    };
    let r = &view.record;
    if r.snap.is_none() && !rbd::watchers(&sr.conn, &sr.spec(&r.image))?.is_empty() {
        // A leftover of this host's (a mapping nobody holds) is released first; anything
        // else that holds it open is named.
        let holders = datapath::holders(host, sr, uuid, &r.image)?;
        if !holders.is_empty() {
            return Err(OpError::InUse { key: key.to_owned(), holders: holders.join("; ") });
        }
    }
    let leaf = r.leaf();
    let gone = match &r.snap {
        None => remove_image_if_free(sr, &r.image)?,
        Some(_) => remove_snapshot_if_free(sr, &leaf)?,
    };
    if !gone {
        // Kept for its dependants: mark it before its record goes, so a crash in between
        // leaves a volume that can be destroyed again, never an unmarked orphan.
        header.set_json(&MetaKey::Garbage(leaf.clone()), &GarbageRecord { parent: r.parent.clone() })?;
        info!(volume = %view.uuid, "volume kept for its dependants; reclaimed when they are gone");
    }
    if r.snap.is_none() {
        // A writer lock left by a host that crashed while the volume was active.
        rbd::remove_object(&sr.conn, &sr.pool, &sr.namespace, &rbd::writer_object(&uuid.to_string()))?;
    }
    // The record first: a call that writes a key of this volume from now on finds no
    // record and takes its key back; then the other keys.
    header.remove(&MetaKey::Volume(uuid))?;
    for key in records.keys_of(uuid).iter().filter(|k| **k != MetaKey::Volume(uuid)) {
        header.remove(key)?;
    }
    info!(volume = %view.uuid, storage_reclaimed = gone, "volume destroyed");
    if gone {
        if r.snap.is_none() {
            forget_snapshot_marks(sr, records, &r.image)?;
        }
        let next = match &r.snap {
            None => r.parent.clone(),
            Some(_) => reclaim_image_if_garbage(sr, records, &r.image)?,
        };
        reclaim_chain(sr, records, next)?;
    } else {
        // The last dependant may have been destroyed meanwhile (on another host) by a call
        // that read the records before the mark existed: look again now that it does.
        reclaim_marked(sr, &records::load(sr)?, &leaf)?;
    }
    Ok(Some(r.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_sectors_and_bad_sizes_are_refused() {
        assert_eq!(image_size(0), Ok(0), "issue 14 item 2: 0 is a size");
        assert_eq!(image_size(1), Ok(512));
        assert_eq!(image_size(512), Ok(512));
        assert_eq!(image_size(1_073_741_825), Ok(1_073_742_336));
        for bad in [-1, i64::MIN, i64::MAX, (1 << 50) + 1] {
            assert!(image_size(bad).is_err(), "{bad}");
        }
    }
}
