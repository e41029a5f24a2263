//! Changed block tracking: `Volume.enable_cbt`, `disable_cbt`, `data_destroy` and
//! `list_changed_blocks` (docs/cbt.md).
//!
//! RBD tracks changes by itself: every snapshot of an image is a point in time that
//! `rbd diff --from-snap` compares with any later one from RADOS metadata alone. So CBT
//! needs no log of its own:
//!
//! - `enable_cbt`/`disable_cbt` set one flag of a writable volume (`v.<key>.cbt`); a
//!   snapshot taken while it is on records `cbt` (its RBD snapshot is then an *anchor*);
//! - `list_changed_blocks(key, key2)` runs one `rbd diff` between the two volumes' points
//!   in time on their common image and turns the extents into the 64 KiB bitmap
//!   ([`super::bitmap`]);
//! - `data_destroy` marks a CBT snapshot's data as gone (`v.<key>.data-destroyed`): it
//!   keeps its RBD snapshot, the anchor the next diff needs, and can no longer be attached
//!   or cloned;
//! - `disable_cbt` also destroys the anchors of the volume's image, which only CBT needed.
//!
//! Ceph commands per call, on success:
//! - `enable_cbt`, `disable_cbt`, `data_destroy`: 1 `image-meta list`, then 1 `image-meta
//!   set` with 2 `image-meta get` in parallel (the SR and the volume still exist);
//!   `disable_cbt` then destroys each anchor of the image ([`super::volume::destroy`]);
//! - `list_changed_blocks`: 1 `image-meta list` + 1 `rbd diff` (2 when the older volume is
//!   passed second: librbd refuses, and the diff is run the other way round).

use tracing::info;
use uuid::Uuid;

use super::bitmap::{self, Window, GRANULARITY};
use super::volume::{self, find, volume_uuid, write_fields};
use crate::ceph::{rbd, Conn, Kind};
use crate::error::OpError;
use crate::host::Host;
use crate::layout::names::MetaKey;
use crate::layout::records::{self, flag_text, Records, VolumeRecord};
use crate::layout::uri::{SrUri, VolumeUri};
use crate::smapi::wire::{int64, ChangedBlocks};

/// `Volume.enable_cbt`: snapshots of the volume taken from now on are changed-block
/// anchors. Idempotent. Refused for snapshots (xapi enables CBT on disks only).
pub fn enable(host: &Host, sr: &SrUri, key: &str) -> Result<(), OpError> {
    set_tracking(host, sr, key, true, "enable_cbt").map(drop)
}

/// `Volume.disable_cbt`: snapshots taken from now on are plain snapshots, and the anchors
/// of the volume's image (snapshots whose data was destroyed: they served only CBT) are
/// destroyed. Idempotent: run again after a failure, it finishes dropping the anchors.
/// Snapshots that still hold data are kept, with their own flag.
pub fn disable(host: &Host, sr: &SrUri, key: &str) -> Result<(), OpError> {
    let records = set_tracking(host, sr, key, false, "disable_cbt")?;
    let Some(view) = records.volume(volume_uuid(key)?) else { return Ok(()) };
    // The anchors as read before the flag was written: the write changes none of them.
    let anchors: Vec<Uuid> = records
        .volumes()
        .filter(|v| v.record.image == view.record.image && v.record.data_destroyed)
        .map(|v| v.uuid)
        .collect();
    for anchor in anchors {
        info!(volume = %anchor, of = %view.uuid, "changed block tracking disabled: anchor destroyed");
        volume::destroy(host, sr, &anchor.to_string())?;
    }
    Ok(())
}

/// Writes the CBT flag of writable volume `key`; returns the records read before.
fn set_tracking(host: &Host, sr: &SrUri, key: &str, on: bool, action: &'static str) -> Result<Records, OpError> {
    let records = records::load(sr)?;
    let view = find(&records, key)?;
    if view.record.snap.is_some() {
        return Err(OpError::ReadOnly { key: key.to_owned(), action });
    }
    // Written even when the record already agrees: an explicit value wins over a record
    // that a resize rewrote, and the call then also repairs what a crash left.
    write_fields(host, sr, key, &[MetaKey::VolumeCbt(view.uuid)], Some(flag_text(on)))?;
    info!(volume = %view.uuid, cbt = on, "changed block tracking set");
    Ok(records)
}

/// `Volume.data_destroy`: the snapshot volume `key` keeps only what a later
/// `list_changed_blocks` needs, its RBD snapshot (the anchor), and loses its meaning as
/// data: it can no longer be attached or cloned, and reports `vdi-type` `cbt_metadata`.
/// Its cost in Ceph is that snapshot's own objects (docs/cbt.md); destroying the volume
/// later reclaims them. Idempotent. Refused for writable volumes and for snapshots taken
/// without CBT (xapi checks both too).
pub fn data_destroy(host: &Host, sr: &SrUri, key: &str) -> Result<(), OpError> {
    let records = records::load(sr)?;
    let view = find(&records, key)?;
    let r = &view.record;
    if r.snap.is_none() {
        return Err(OpError::NotSnapshot { key: key.to_owned(), action: "data_destroy" });
    }
    if !r.cbt {
        return Err(OpError::NoCbtMetadata { key: key.to_owned() });
    }
    write_fields(host, sr, key, &[MetaKey::VolumeDataDestroyed(view.uuid)], Some(flag_text(true)))?;
    info!(volume = %view.uuid, "data destroyed: only the changed-block anchor is kept");
    Ok(())
}

/// `Volume.list_changed_blocks`: the 64 KiB blocks whose data may differ between volumes
/// `key` and `key2` in `[offset, offset + length)` (a negative `length`: to the end), as a
/// base64 bitmap sized to the larger of the two. Both must be the same disk at two points
/// in time (snapshots of one image, or one of them the disk itself), in either order;
/// otherwise [`OpError::Unrelated`]. Computed by `rbd diff` from RADOS metadata, never by
/// reading data: with fast-diff at object granularity (fast whatever the size), without it
/// at extent granularity (one RADOS request per object of the image, hence a time limit
/// that grows with the size: [`DIFF_BYTES_PER_LIMIT`]).
pub fn list_changed_blocks(
    sr: &SrUri,
    key: &str,
    key2: &str,
    offset: i64,
    length: i64,
) -> Result<ChangedBlocks, OpError> {
    let records = records::load(sr)?;
    let (from, to) = (&find(&records, key)?.record, &find(&records, key2)?.record);
    let size = from.size.max(to.size);
    let window = Window::of(size, offset, length)?;
    let changes = changed_extents(sr, &diff_conn(&sr.conn, size), key, from, key2, to)?;
    let map = bitmap::bitmap(window, changes.iter().map(|e| (e.offset, e.length)));
    Ok(ChangedBlocks { granularity: int64(GRANULARITY), bitmap: bitmap::base64(&map) })
}

/// Bytes of volume per time limit the diff is given: without fast-diff (or with an invalid
/// object map) librbd visits every object of the image, measured at 14 ms per GiB on the
/// loaded 2-CPU test machine (BENCHMARKS.md), so 512 GiB take about a quarter of the
/// default 30 s.
pub const DIFF_BYTES_PER_LIMIT: u64 = 512 << 30;
/// The most time limits a diff is given, whatever the size.
pub const DIFF_MAX_LIMITS: u32 = 8;

/// The connection for the diff of a volume of `size` bytes: one time limit per
/// [`DIFF_BYTES_PER_LIMIT`], at least one, at most [`DIFF_MAX_LIMITS`] (a 2 TiB volume
/// gets four: 120 s at the default limit). The diff only reads; a larger bound costs
/// nothing but the wait on a stalled cluster, where the records read before it has already
/// answered within one limit.
fn diff_conn(conn: &Conn, size: u64) -> Conn {
    let limits = u32::try_from(size.div_ceil(DIFF_BYTES_PER_LIMIT)).unwrap_or(u32::MAX).clamp(1, DIFF_MAX_LIMITS);
    Conn { timeout: conn.timeout.saturating_mul(limits), ..conn.clone() }
}

/// The extents that may differ between two volumes of one image.
fn changed_extents(
    sr: &SrUri,
    conn: &Conn,
    key: &str,
    from: &VolumeRecord,
    key2: &str,
    to: &VolumeRecord,
) -> Result<Vec<rbd::DiffExtent>, OpError> {
    if from.image != to.image {
        return Err(OpError::Unrelated { key: key.to_owned(), key2: key2.to_owned() });
    }
    // With fast-diff, librbd compares the object maps (milliseconds at any size); at
    // object granularity, a superset of the exact extents. Without it, every object is
    // visited either way, and the exact extents come at no extra cost.
    let whole_object = sr.features.iter().any(|f| f == "fast-diff");
    let (older, newer) = match (&from.snap, &to.snap) {
        (None, None) => return Ok(Vec::new()),
        (Some(a), Some(b)) if a == b => return Ok(Vec::new()),
        (Some(a), Some(_)) => (a.clone(), to.leaf()),
        (Some(a), None) => (a.clone(), to.leaf()),
        (None, Some(b)) => (b.clone(), from.leaf()),
    };
    match rbd::diff(conn, &older, &sr.spec(&newer), whole_object) {
        // Two snapshots passed newest first: librbd refuses (EINVAL); the changes between
        // two points in time are the same either way round.
        Err(e) if e.kind() == Kind::Invalid && from.snap.is_some() && to.snap.is_some() => {
            let (a, b) = (to.snap.clone().unwrap_or_default(), from.leaf());
            Ok(rbd::diff(conn, &a, &sr.spec(&b), whole_object)?)
        }
        other => Ok(other?),
    }
}

/// Refuses a URI whose volume's data was destroyed: the datapath's attach and activate,
/// and the legacy driver's, call it before anything else.
pub fn attachable(uri: &VolumeUri) -> Result<(), OpError> {
    if uri.data_destroyed {
        return Err(OpError::DataDestroyed { key: uri.volume.to_string(), action: "attach" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::layout::records::encode;

    fn record(image: &str, snap: Option<&str>, data_destroyed: bool) -> VolumeRecord {
        VolumeRecord {
            name: String::new(),
            description: String::new(),
            image: image.to_owned(),
            snap: snap.map(str::to_owned),
            size: 1,
            sharable: false,
            parent: None,
            cbt: true,
            data_destroyed,
        }
    }

    fn records(volumes: &[(Uuid, VolumeRecord)]) -> Records {
        let raw: BTreeMap<String, String> = volumes
            .iter()
            .map(|(u, r)| (MetaKey::Volume(*u).to_string(), encode(&serde_json::to_string(r).expect("json"))))
            .collect();
        Records::parse(&raw)
    }

    #[test]
    fn the_diff_gets_one_time_limit_per_512_gib() {
        let conn = Conn {
            conf: "/etc/ceph/ceph.conf".into(),
            id: "admin".to_owned(),
            keyring: None,
            mon_host: None,
            timeout: std::time::Duration::from_secs(30),
        };
        let secs = |size: u64| diff_conn(&conn, size).timeout.as_secs();
        assert_eq!([secs(0), secs(1 << 30), secs(512 << 30), secs((512 << 30) + 1)], [30, 30, 30, 60]);
        assert_eq!([secs(2 << 40), secs(1 << 50)], [120, 240]);
    }

    #[test]
    fn anchors_go_with_the_last_volume_that_holds_data() {
        let (head, snap, anchor, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let all = records(&[
            (head, record("v-a", None, false)),
            (snap, record("v-a", Some("s-1"), false)),
            (anchor, record("v-a", Some("s-2"), true)),
            (other, record("v-b", Some("s-3"), true)),
        ]);
        assert_eq!(all.orphaned_anchors("v-a", Some(head)), Vec::<Uuid>::new(), "a snapshot still holds data");
        assert_eq!(all.orphaned_anchors("v-a", None), Vec::<Uuid>::new());
        let without_snap = records(&[(head, record("v-a", None, false)), (anchor, record("v-a", Some("s-2"), true))]);
        assert_eq!(without_snap.orphaned_anchors("v-a", Some(head)), [anchor]);
        let only_anchor = records(&[(anchor, record("v-a", Some("s-2"), true))]);
        assert_eq!(only_anchor.orphaned_anchors("v-a", None), [anchor], "found by the check");
    }
}
