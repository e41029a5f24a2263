//! The Volume interface: `Volume.create`, `destroy`, `stat`, `set`, `unset`, `set_name`,
//! `set_description`, `resize`, `snapshot`, `clone`.
//!
//! A writable volume is an RBD image; a snapshot volume is an RBD snapshot (read-only); a
//! clone is an RBD clone of a protected snapshot: copy-on-write, metadata only, O(1) in
//! size. A clone of a writable volume is taken from a hidden snapshot of it.
//!
//! Destroy never flattens and never fails because of dependants: a volume that still has
//! snapshots or clones vanishes from `SR.ls` at once (its record goes, a garbage mark stays)
//! and its storage is reclaimed when its last dependant is destroyed ([`reclaim_chain`]).
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

use serde::Deserialize;
use tracing::info;
use uuid::Uuid;

use crate::ceph::{CephError, Kind};
use crate::error::{OpError, RequestError};
use crate::exec::Ctx;
use crate::lock::SrLock;
use crate::meta::{GarbageRecord, Header, Records, SnapRef, VolumeRecord, VolumeView};
use crate::names::{MetaKey, Object};
use crate::protocol::{int64, Volume};
use crate::rbd::{self, Action};
use crate::sr;
use crate::undo::Undo;
use crate::uri::{SrUri, VolumeUri};

/// Sizes are rounded up to whole sectors.
pub const SECTOR: u64 = 512;
/// The largest volume accepted: 1 PiB.
pub const MAX_SIZE: u64 = 1 << 50;

/// Arguments naming one volume.
#[derive(Debug, Deserialize)]
pub struct KeyArgs {
    /// The SR string.
    pub sr: String,
    /// The volume key.
    pub key: String,
}

/// `Volume.create` arguments.
#[derive(Debug, Deserialize)]
pub struct CreateArgs {
    /// The SR string.
    pub sr: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Minimum size in bytes.
    pub size: i64,
    /// Whether several hosts may attach it at once.
    pub sharable: bool,
}

/// `Volume.set` arguments.
#[derive(Debug, Deserialize)]
pub struct SetArgs {
    /// The SR string.
    pub sr: String,
    /// The volume key.
    pub key: String,
    /// The key to set.
    pub k: String,
    /// Its value.
    pub v: String,
}

/// `Volume.unset` arguments.
#[derive(Debug, Deserialize)]
pub struct UnsetArgs {
    /// The SR string.
    pub sr: String,
    /// The volume key.
    pub key: String,
    /// The key to remove.
    pub k: String,
}

/// `Volume.set_name` arguments.
#[derive(Debug, Deserialize)]
pub struct SetNameArgs {
    /// The SR string.
    pub sr: String,
    /// The volume key.
    pub key: String,
    /// The new name.
    pub new_name: String,
}

/// `Volume.set_description` arguments.
#[derive(Debug, Deserialize)]
pub struct SetDescriptionArgs {
    /// The SR string.
    pub sr: String,
    /// The volume key.
    pub key: String,
    /// The new description.
    pub new_description: String,
}

/// `Volume.resize` arguments.
#[derive(Debug, Deserialize)]
pub struct ResizeArgs {
    /// The SR string.
    pub sr: String,
    /// The volume key.
    pub key: String,
    /// The minimum new size in bytes.
    pub new_size: i64,
}

/// A requested size as an image size: positive, at most [`MAX_SIZE`], rounded up to whole
/// sectors (never down: the disk is at least as large as asked).
pub fn image_size(requested: i64) -> Result<u64, RequestError> {
    let bad = |reason: String| RequestError::BadSize { size: requested, reason };
    let bytes = u64::try_from(requested).map_err(|_| bad("must be positive".to_owned()))?;
    if bytes == 0 {
        return Err(bad("must be positive".to_owned()));
    }
    if bytes > MAX_SIZE {
        return Err(bad(format!("larger than the maximum volume size ({MAX_SIZE} bytes, 1 PiB)")));
    }
    let rounded = bytes.div_ceil(SECTOR) * SECTOR;
    debug_assert!(rounded >= bytes);
    Ok(rounded)
}

fn volume_uuid(key: &str) -> Result<Uuid, OpError> {
    Uuid::try_parse(key).map_err(|_| OpError::VolumeDoesNotExist { key: key.to_owned() })
}

fn find(records: &Records, key: &str) -> Result<VolumeView, OpError> {
    records.volume(volume_uuid(key)?).ok_or_else(|| OpError::VolumeDoesNotExist { key: key.to_owned() })
}

/// Writes (`Some(value)`) or removes (`None`) one key of volume `key`, checking in parallel
/// that the volume exists: one command's time instead of two. If it does not exist, a key
/// just written is removed again and the answer is `Volume_does_not_exist`; nothing stays.
fn write_key(
    header: &Header<'_>,
    key: &str,
    field: impl FnOnce(Uuid) -> MetaKey,
    value: Option<&str>,
) -> Result<(), OpError> {
    let uuid = volume_uuid(key)?;
    let field = field(uuid);
    let (found, written) = std::thread::scope(|s| {
        let check = s.spawn(|| header.get(&MetaKey::Volume(uuid)));
        let written = match value {
            Some(v) => header.set(&field, v),
            None => header.remove(&field).map(drop),
        };
        (check.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), written)
    });
    match found? {
        Some(_) => Ok(written?),
        None => {
            if value.is_some() && written.is_ok() {
                header.remove(&field)?;
            }
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

/// The IDL record of a volume. Without a usage measurement, `physical_utilisation` is the
/// provisioned size (an upper bound: thin images use at most that).
pub fn to_volume(sr: &SrUri, view: &VolumeView, usage: Option<&BTreeMap<String, u64>>) -> Volume {
    let r = &view.record;
    let leaf = r.snap.as_ref().map_or_else(|| r.image.clone(), |s| format!("{}@{s}", r.image));
    let used = usage.map_or(r.size, |u| u.get(&leaf).copied().unwrap_or(0));
    let uri = sr
        .schemes
        .iter()
        .map(|scheme| {
            VolumeUri {
                scheme: scheme.clone(),
                pool: sr.pool.clone(),
                namespace: sr.namespace.clone(),
                image: r.image.clone(),
                snap: r.snap.clone(),
                volume: view.uuid,
                conn: sr.conn.clone(),
            }
            .render()
        })
        .collect();
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
        keys: view.keys.clone(),
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
pub fn create(_ctx: &Ctx, req: CreateArgs) -> Result<Volume, OpError> {
    let sr = SrUri::parse(&req.sr)?;
    let size = image_size(req.size)?;
    let uuid = Uuid::new_v4();
    let image = Object::Image(uuid).to_string();
    let spec = sr.spec(&image);
    let new = VolumeRecord {
        name: req.name,
        description: req.description,
        image,
        snap: None,
        size,
        sharable: req.sharable,
        parent: None,
    };
    Undo::run(|undo| {
        rbd::create(&sr.conn, &spec, size, &sr.features)?;
        undo.push(format!("remove {spec}"), || rbd::remove(&sr.conn, &spec).map(drop));
        record(&sr, uuid, &new)
    })?;
    info!(volume = %uuid, size, "volume created");
    fresh(&sr, uuid, new)
}

/// `Volume.snapshot`: a read-only volume holding the source's data now (an RBD snapshot).
/// Name and description are copied, keys are not.
pub fn snapshot(_ctx: &Ctx, req: KeyArgs) -> Result<Volume, OpError> {
    let sr = SrUri::parse(&req.sr)?;
    let source = find(&sr::load(&sr)?, &req.key)?;
    if source.record.snap.is_some() {
        return Err(OpError::ReadOnly { key: req.key, action: "snapshot" });
    }
    let uuid = Uuid::new_v4();
    let base = SnapRef { image: source.record.image.clone(), snap: Object::Snapshot(uuid).to_string() };
    let spec = sr.spec(&base.leaf());
    let new = VolumeRecord { snap: Some(base.snap.clone()), parent: None, ..source.record.clone() };
    Undo::run(|undo| {
        rbd::snap_create(&sr.conn, &spec)?;
        undo.push(format!("remove {spec}"), || rbd::snap_remove(&sr.conn, &spec).map(drop));
        record(&sr, uuid, &new)
    })?;
    info!(volume = %uuid, of = %source.uuid, "snapshot created");
    fresh(&sr, uuid, new)
}

/// `Volume.clone`: a writable copy-on-write volume (an RBD clone, O(1)). From a snapshot
/// volume it clones that snapshot; from a writable volume it clones a hidden snapshot taken
/// now. Name and description are copied, keys are not.
pub fn clone(_ctx: &Ctx, req: KeyArgs) -> Result<Volume, OpError> {
    let sr = SrUri::parse(&req.sr)?;
    let conn = &sr.conn;
    let source = find(&sr::load(&sr)?, &req.key)?;
    let uuid = Uuid::new_v4();
    let image = Object::Image(uuid).to_string();
    let spec = sr.spec(&image);
    let new = Undo::run(|undo| {
        let base = match &source.record.snap {
            Some(snap) => SnapRef { image: source.record.image.clone(), snap: snap.clone() },
            None => {
                let base = SnapRef { image: source.record.image.clone(), snap: Object::CloneBase(uuid).to_string() };
                let base_spec = sr.spec(&base.leaf());
                rbd::snap_create(conn, &base_spec)?;
                undo.push(format!("remove {base_spec}"), move || rbd::snap_remove(conn, &base_spec).map(drop));
                base
            }
        };
        let base_spec = sr.spec(&base.leaf());
        if rbd::snap_protect(conn, &base_spec)? == Action::Done && source.record.snap.is_none() {
            let base_spec = base_spec.clone();
            undo.push(format!("unprotect {base_spec}"), move || rbd::snap_unprotect(conn, &base_spec).map(drop));
        }
        rbd::clone(conn, &base_spec, &spec, &sr.features)?;
        undo.push(format!("remove {spec}"), || rbd::remove(conn, &spec).map(drop));
        let new = VolumeRecord { image: image.clone(), snap: None, parent: Some(base), ..source.record.clone() };
        record(&sr, uuid, &new)?;
        Ok(new)
    })?;
    info!(volume = %uuid, of = %source.uuid, "clone created");
    fresh(&sr, uuid, new)
}

/// `Volume.stat`: one read of the SR's records (plus one `rbd du` with fast-diff).
pub fn stat(_ctx: &Ctx, req: KeyArgs) -> Result<Volume, OpError> {
    let sr = SrUri::parse(&req.sr)?;
    let view = find(&sr::load(&sr)?, &req.key)?;
    let used = usage(&sr, Some(&view.record.image))?;
    Ok(to_volume(&sr, &view, used.as_ref()))
}

/// `Volume.set`: stores `k` = `v` verbatim (one key of its own: concurrent sets of other
/// keys cannot be lost).
pub fn set(_ctx: &Ctx, req: SetArgs) -> Result<(), OpError> {
    let sr = SrUri::parse(&req.sr)?;
    write_key(&Header::of(&sr), &req.key, |u| MetaKey::UserKey(u, req.k.clone()), Some(&req.v))
}

/// `Volume.unset`: removes `k`; removing an absent key succeeds.
pub fn unset(_ctx: &Ctx, req: UnsetArgs) -> Result<(), OpError> {
    let sr = SrUri::parse(&req.sr)?;
    write_key(&Header::of(&sr), &req.key, |u| MetaKey::UserKey(u, req.k.clone()), None)
}

/// `Volume.set_name`.
pub fn set_name(_ctx: &Ctx, req: SetNameArgs) -> Result<(), OpError> {
    let sr = SrUri::parse(&req.sr)?;
    write_key(&Header::of(&sr), &req.key, MetaKey::VolumeName, Some(&req.new_name))
}

/// `Volume.set_description`.
pub fn set_description(_ctx: &Ctx, req: SetDescriptionArgs) -> Result<(), OpError> {
    let sr = SrUri::parse(&req.sr)?;
    write_key(&Header::of(&sr), &req.key, MetaKey::VolumeDescription, Some(&req.new_description))
}

/// `Volume.resize`: grows to at least `new_size`; shrinking is refused. If the record update
/// fails after the image grew, the next resize (or stat after it) repairs the record.
pub fn resize(_ctx: &Ctx, req: ResizeArgs) -> Result<(), OpError> {
    let sr = SrUri::parse(&req.sr)?;
    let view = find(&sr::load(&sr)?, &req.key)?;
    if view.record.snap.is_some() {
        return Err(OpError::ReadOnly { key: req.key, action: "resize" });
    }
    let size = image_size(req.new_size)?;
    if size < view.record.size {
        return Err(OpError::Shrink { key: req.key, current: view.record.size, requested: req.new_size });
    }
    if size == view.record.size {
        return Ok(());
    }
    rbd::resize(&sr.conn, &sr.spec(&view.record.image), size)?;
    record(&sr, view.uuid, &VolumeRecord { size, ..view.record })?;
    info!(volume = %view.uuid, size, "volume resized");
    Ok(())
}

/// How long destroy waits for another destroy on this host to finish reclaiming.
fn lock_limit(sr: &SrUri) -> Duration {
    sr.conn.timeout.saturating_mul(4)
}

/// `Volume.destroy`: removes the volume at once from the SR. Its storage goes now if
/// nothing depends on it; otherwise when its last dependant goes. Never flattens. A second
/// destroy of the same key is `Volume_does_not_exist`; a destroy that failed half-way can be
/// repeated.
pub fn destroy(_ctx: &Ctx, req: KeyArgs) -> Result<(), OpError> {
    let sr = SrUri::parse(&req.sr)?;
    let _lock = SrLock::acquire(sr.uuid, lock_limit(&sr))?;
    let records = sr::load(&sr)?;
    let view = find(&records, &req.key)?;
    let r = &view.record;
    let header = Header::of(&sr);
    let leaf = r.snap.as_ref().map_or_else(|| r.image.clone(), |s| format!("{}@{s}", r.image));
    let gone = match &r.snap {
        None => remove_image_if_free(&sr, &r.image)?,
        Some(_) => remove_snapshot_if_free(&sr, &leaf)?,
    };
    if !gone {
        // Kept for its dependants: mark it before its record goes, so a crash in between
        // leaves a volume that can be destroyed again, never an unmarked orphan.
        header.set_json(&MetaKey::Garbage(leaf.clone()), &GarbageRecord { parent: r.parent.clone() })?;
        info!(volume = %view.uuid, "volume kept for its dependants; reclaimed when they are gone");
    }
    for key in records.keys_of(view.uuid) {
        header.remove(&key)?;
    }
    info!(volume = %view.uuid, storage_reclaimed = gone, "volume destroyed");
    if gone {
        let next = match &r.snap {
            None => r.parent.clone(),
            Some(_) => reclaim_image_if_garbage(&sr, &records, &r.image)?,
        };
        reclaim_chain(&sr, &records, next)?;
    }
    Ok(())
}

/// Removes an image unless it has snapshots; true if it is gone.
fn remove_image_if_free(sr: &SrUri, image: &str) -> Result<bool, OpError> {
    match rbd::remove(&sr.conn, &sr.spec(image)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == Kind::HasSnapshots => {
            // Hidden clone bases whose clones are all gone do not count as dependants.
            let mut left = 0;
            for snap in rbd::snap_ls(&sr.conn, &sr.spec(image))? {
                let hidden = matches!(Object::parse(&snap.name), Some(Object::CloneBase(_)));
                if !(hidden && remove_snapshot_if_free(sr, &format!("{image}@{}", snap.name))?) {
                    left += 1;
                }
            }
            if left == 0 {
                rbd::remove(&sr.conn, &sr.spec(image))?;
                Ok(true)
            } else {
                Ok(false)
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes a snapshot unless it has clones; true if it is gone.
pub(crate) fn remove_snapshot_if_free(sr: &SrUri, leaf: &str) -> Result<bool, OpError> {
    let spec = sr.spec(leaf);
    match rbd::snap_remove(&sr.conn, &spec) {
        Ok(_) => Ok(true),
        // Protected: it may have clones.
        Err(e) if e.kind() == Kind::Busy => {
            if !rbd::children(&sr.conn, &spec)?.is_empty() {
                return Ok(false);
            }
            rbd::snap_unprotect(&sr.conn, &spec)?;
            rbd::snap_remove(&sr.conn, &spec)?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// If `image` is marked as garbage and has no snapshots left, removes it and its mark;
/// returns the snapshot it was cloned from (the next link to look at).
fn reclaim_image_if_garbage(sr: &SrUri, records: &Records, image: &str) -> Result<Option<SnapRef>, OpError> {
    let Some(mark) = records.garbage(image) else { return Ok(None) };
    if !remove_image_if_free(sr, image)? {
        return Ok(None);
    }
    Header::of(sr).remove(&MetaKey::Garbage(image.to_owned()))?;
    info!(image, "storage of a destroyed volume reclaimed");
    Ok(mark.parent)
}

/// Walks up from a snapshot something depended on: a hidden clone base or a garbage-marked
/// snapshot with no clones left is removed, then its image if that is garbage with no
/// snapshots left, then that image's own parent, and so on.
pub fn reclaim_chain(sr: &SrUri, records: &Records, mut next: Option<SnapRef>) -> Result<(), OpError> {
    while let Some(base) = next.take() {
        let leaf = base.leaf();
        let hidden = matches!(Object::parse(&base.snap), Some(Object::CloneBase(_)));
        let marked = records.garbage(&leaf).is_some();
        if !(hidden || marked) || !remove_snapshot_if_free(sr, &leaf)? {
            return Ok(());
        }
        if marked {
            Header::of(sr).remove(&MetaKey::Garbage(leaf))?;
        }
        next = reclaim_image_if_garbage(sr, records, &base.image)?;
    }
    Ok(())
}

/// Reclaims every garbage mark whose dependants are gone (SR.destroy, repair).
pub fn reclaim_all(sr: &SrUri, records: &Records) -> Result<(), OpError> {
    for (what, _) in records.garbage_marks() {
        match what.split_once('@') {
            Some((image, snap)) => {
                reclaim_chain(sr, records, Some(SnapRef { image: image.to_owned(), snap: snap.to_owned() }))?;
            }
            None => {
                let next = reclaim_image_if_garbage(sr, records, &what)?;
                reclaim_chain(sr, records, next)?;
            }
        }
    }
    Ok(())
}

/// Removes an image of ours that no record or mark knows (left by a crash), with any
/// snapshots it has.
pub fn reclaim_image(sr: &SrUri, image: &str) -> Result<(), OpError> {
    if !remove_image_if_free(sr, image)? {
        for snap in rbd::snap_ls(&sr.conn, &sr.spec(image))? {
            remove_snapshot_if_free(sr, &format!("{image}@{}", snap.name))?;
        }
        rbd::remove(&sr.conn, &sr.spec(image))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_sectors_and_bad_sizes_are_refused() {
        assert_eq!(image_size(1), Ok(512));
        assert_eq!(image_size(512), Ok(512));
        assert_eq!(image_size(1_073_741_825), Ok(1_073_742_336));
        for bad in [0, -1, i64::MIN, i64::MAX, (1 << 50) + 1] {
            assert!(image_size(bad).is_err(), "{bad}");
        }
    }
}
