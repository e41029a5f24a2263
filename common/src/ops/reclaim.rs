//! Reclaiming the storage of destroyed volumes (the garbage collector).
//!
//! Destroy never flattens: a volume whose image or snapshot still has dependants leaves a
//! garbage mark (`g.<image>[@snap]`) in the SR's records when its record goes, and its
//! storage is removed when the last dependant goes, walking up the parent chain
//! ([`reclaim_chain`]). Hidden clone bases (`c-<uuid>` snapshots) go with their last clone.

use tracing::info;

use crate::ceph::rbd;
use crate::ceph::Kind;
use crate::error::OpError;
use crate::layout::names::{MetaKey, Object};
use crate::layout::records::{Header, Records, SnapRef};
use crate::layout::uri::SrUri;

/// Removes an image unless it has snapshots; true if it is gone.
pub fn remove_image_if_free(sr: &SrUri, image: &str) -> Result<bool, OpError> {
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
pub fn remove_snapshot_if_free(sr: &SrUri, leaf: &str) -> Result<bool, OpError> {
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
pub fn reclaim_image_if_garbage(sr: &SrUri, records: &Records, image: &str) -> Result<Option<SnapRef>, OpError> {
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
