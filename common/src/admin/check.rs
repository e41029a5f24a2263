//! The consistency check of one SR, and its repair where that is safe
//! (`volume --check <sr> [--repair]`; tests call [`check`] after every injected fault).
//!
//! What must hold:
//! - every volume record has its storage (its image, or its snapshot);
//! - every image and snapshot of ours in the namespace is used by a record, is the base of
//!   a clone, or carries a garbage mark;
//! - garbage marks name storage that still exists and still has dependants;
//! - every key belongs to a volume that exists;
//! - on this host, no daemon or mapping is left without its attachment.
//!
//! Repairs only remove what nothing can use: storage no record or clone refers to (left by
//! a crash between creating it and recording it), records whose storage is gone (their
//! data is gone with it), keys of volumes that do not exist, marks whose dependants are
//! gone. A snapshot or image that still has clones is never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use uuid::Uuid;

use crate::ceph::{rbd, Kind};
use crate::error::{chain, OpError};
use crate::host::Host;
use crate::layout::names::{MetaKey, Object, HEADER_IMAGE};
use crate::layout::records::{self, Header};
use crate::layout::uri::SrUri;
use crate::ops::{datapath, reclaim};

/// Something that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A volume whose image is gone.
    RecordWithoutImage {
        /// The volume.
        volume: Uuid,
        /// The missing image.
        image: String,
    },
    /// A snapshot volume whose snapshot is gone.
    RecordWithoutSnapshot {
        /// The volume.
        volume: Uuid,
        /// `image@snap`.
        snapshot: String,
    },
    /// An image of ours nothing refers to.
    OrphanImage {
        /// The image.
        image: String,
    },
    /// A snapshot of ours nothing refers to (a visible one never recorded, or a clone
    /// base whose clones are gone).
    OrphanSnapshot {
        /// `image@snap`.
        snapshot: String,
    },
    /// A garbage mark whose storage is gone, or whose dependants are all gone.
    Garbage {
        /// What the mark names.
        what: String,
    },
    /// Keys of a volume that has no record.
    OrphanKeys {
        /// The volume uuid the keys name.
        volume: Uuid,
        /// How many.
        count: usize,
    },
    /// Daemons or mappings on this host without their attachment.
    HostLeftovers {
        /// What was found.
        what: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::RecordWithoutImage { volume, image } => write!(f, "volume {volume}: its image {image} is gone"),
            Problem::RecordWithoutSnapshot { volume, snapshot } => {
                write!(f, "volume {volume}: its snapshot {snapshot} is gone")
            }
            Problem::OrphanImage { image } => write!(f, "image {image} is not used by any volume"),
            Problem::OrphanSnapshot { snapshot } => write!(f, "snapshot {snapshot} is not used by any volume"),
            Problem::Garbage { what } => write!(f, "{what} is kept for dependants that are gone"),
            Problem::OrphanKeys { volume, count } => write!(f, "{count} keys of volume {volume}, which does not exist"),
            Problem::HostLeftovers { what } => write!(f, "on this host: {what}"),
        }
    }
}

/// One finding: the problem, and whether it was repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was wrong.
    pub problem: Problem,
    /// True once repaired.
    pub repaired: bool,
}

/// Checks `sr` (and this host's state for it); with `repair`, repairs what is safe.
pub fn check(host: &Host, sr: &SrUri, repair: bool) -> Result<Vec<Finding>, OpError> {
    let conn = &sr.conn;
    let header = Header::of(sr);
    let records = records::load(sr)?;
    let volumes = records.volumes();
    let images: BTreeSet<String> =
        rbd::ls(conn, &sr.pool, &sr.namespace)?.into_iter().filter(|i| i != HEADER_IMAGE).collect();
    let mut snapshots: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for image in &images {
        match rbd::snap_ls(conn, &sr.spec(image)) {
            Ok(snaps) => {
                snapshots.insert(image.clone(), snaps.into_iter().map(|s| s.name).collect());
            }
            // Removed since the listing: nothing to check.
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut findings = Vec::new();
    let mut used_images = BTreeSet::new();
    let mut used_snaps = BTreeSet::new();
    let mut note = |problem: Problem, repaired: bool| findings.push(Finding { problem, repaired });

    for v in &volumes {
        let r = &v.record;
        used_images.insert(r.image.clone());
        let gone = match &r.snap {
            None if !images.contains(&r.image) => {
                Some(Problem::RecordWithoutImage { volume: v.uuid, image: r.image.clone() })
            }
            Some(snap) if !snapshots.get(&r.image).is_some_and(|s| s.contains(snap)) => {
                Some(Problem::RecordWithoutSnapshot { volume: v.uuid, snapshot: format!("{}@{snap}", r.image) })
            }
            Some(snap) => {
                used_snaps.insert(format!("{}@{snap}", r.image));
                None
            }
            None => None,
        };
        // A record whose storage is gone no longer holds its clone base.
        if let (None, Some(p)) = (&gone, &r.parent) {
            used_images.insert(p.image.clone());
            used_snaps.insert(p.leaf());
        }
        if let Some(problem) = gone {
            // Its data is gone with its storage: the record can only mislead.
            if repair {
                for key in records.keys_of(v.uuid) {
                    header.remove(&key)?;
                }
            }
            note(problem, repair);
        }
    }
    let marks = records.garbage_marks();
    for (what, mark) in &marks {
        let exists = match what.split_once('@') {
            Some((image, snap)) => snapshots.get(image).is_some_and(|s| s.contains(snap)),
            None => images.contains(what),
        };
        if let Some(p) = &mark.parent {
            used_images.insert(p.image.clone());
            used_snaps.insert(p.leaf());
        }
        match what.split_once('@') {
            Some((image, _)) => {
                used_images.insert(image.to_owned());
                used_snaps.insert(what.clone());
            }
            None => {
                used_images.insert(what.clone());
            }
        }
        if !exists {
            if repair {
                header.remove(&MetaKey::Garbage(what.clone()))?;
            }
            note(Problem::Garbage { what: what.clone() }, repair);
        }
    }
    // Images first: removing an unrecorded clone frees the clone base it was taken from.
    for image in &images {
        if used_images.contains(image) || Object::parse(image).is_none() {
            continue;
        }
        if repair {
            reclaim::reclaim_image(sr, image)?;
        }
        note(Problem::OrphanImage { image: image.clone() }, repair);
    }
    // Snapshots of ours that nothing uses (a crash between `snap create` and its record,
    // or a clone base whose clones are gone), and images that nothing uses.
    for (image, snaps) in &snapshots {
        for snap in snaps {
            let leaf = format!("{image}@{snap}");
            if Object::parse(snap).is_none() || used_snaps.contains(&leaf) {
                continue;
            }
            // A snapshot with clones is used by them, record or not: never removed here.
            if !rbd::children(conn, &sr.spec(&leaf))?.is_empty() {
                continue;
            }
            let repaired = repair && reclaim::remove_snapshot_if_free(sr, &leaf)?;
            note(Problem::OrphanSnapshot { snapshot: leaf }, repaired);
        }
    }
    let mut orphan_keys: BTreeMap<Uuid, Vec<MetaKey>> = BTreeMap::new();
    for key in records.keys() {
        if let Some(u) = key.volume() {
            if records.volume(u).is_none() {
                orphan_keys.entry(u).or_default().push(key);
            }
        }
    }
    for (u, keys) in orphan_keys {
        if repair {
            for key in &keys {
                header.remove(key)?;
            }
        }
        note(Problem::OrphanKeys { volume: u, count: keys.len() }, repair);
    }
    if repair {
        // Marks whose dependants went while nothing reclaimed them (a crash in destroy).
        reclaim::reclaim_all(sr, &records::load(sr)?)?;
        let reaped = datapath::reap(host, sr)?;
        if reaped != datapath::Reaped::default() {
            note(Problem::HostLeftovers { what: format!("{reaped:?}") }, true);
        }
    }
    Ok(findings)
}

/// `volume --check <sr string> [--repair]`: prints each finding; exit 1 if any remains.
pub fn main(mut args: impl Iterator<Item = String>) -> std::process::ExitCode {
    crate::process::log::init("volume");
    let usage = || {
        eprintln!("usage: volume --check <SR string (from SR.attach)> [--repair]");
        std::process::ExitCode::from(2)
    };
    let Some(sr) = args.next() else { return usage() };
    let repair = match args.next().as_deref() {
        None => false,
        Some("--repair") => true,
        Some(_) => return usage(),
    };
    let sr = match SrUri::parse(&sr) {
        Ok(sr) => sr,
        Err(e) => {
            eprintln!("{e}");
            return usage();
        }
    };
    match check(&Host::from_env(), &sr, repair) {
        Ok(findings) => {
            for f in &findings {
                println!("{} {}", if f.repaired { "REPAIRED" } else { "FOUND   " }, f.problem);
            }
            let left = findings.iter().filter(|f| !f.repaired).count();
            println!("{} findings, {left} left", findings.len());
            if left == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("check failed: {}", chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
