//! The consistency check of one SR, and its repair where that is safe
//! (`volume --check <sr> [--repair]`; tests call [`check`] after every injected fault).
//!
//! The check first builds the whole list of findings, each saying what the repair would
//! do (or why it would leave it alone); `--repair` then carries out exactly that list. So
//! the report without `--repair` shows everything the repair would do.
//!
//! What must hold:
//! - every record can be read (an unreadable one is reported and never acted on; while
//!   one exists, no storage is removed at all, since it might be what that record names);
//! - every volume record has its storage (its image, or its snapshot);
//! - every image and snapshot of ours in the namespace is used by a record, is the base
//!   of a clone, or carries a garbage mark;
//! - garbage marks name storage that still exists and still has dependants;
//! - every changed-block anchor (a snapshot whose data was destroyed) has a volume of its
//!   disk that still holds data to be compared with;
//! - every key belongs to a volume that exists, in the current (encoded) form;
//! - the trash holds no image waiting to be purged;
//! - on this host, no daemon or mapping is left without its attachment.
//!
//! Storage that nothing records is removed only when it is older than a grace period
//! ([`default_grace`]): a call
//! under way creates an image or snapshot before it records it, and the check must never
//! take that for a leftover. Repairs only remove what nothing can use: a snapshot or image
//! that still has clones is never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use uuid::Uuid;

use crate::ceph::{rbd, Kind};
use crate::error::{chain, OpError};
use crate::host::Host;
use crate::layout::names::{MetaKey, Object, HEADER_IMAGE};
use crate::layout::records::{self, Header, Records};
use crate::layout::uri::SrUri;
use crate::ops::{datapath, reclaim, volume};

/// Something that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A record of ours that cannot be read.
    Unreadable {
        /// The stored key.
        key: String,
        /// Why.
        reason: String,
    },
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
        /// How old it is, if known.
        age: Option<Duration>,
    },
    /// A snapshot of ours nothing refers to (a visible one never recorded, or a clone
    /// base whose clones are gone).
    OrphanSnapshot {
        /// `image@snap`.
        snapshot: String,
        /// How old it is, if known.
        age: Option<Duration>,
    },
    /// A garbage mark whose storage is gone.
    StaleMark {
        /// What the mark names.
        what: String,
    },
    /// Storage kept for dependants that are all gone: it can be reclaimed.
    Unreclaimed {
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
    /// `Volume.set` keys stored verbatim by layout 1, to be re-encoded.
    LegacyKeys {
        /// How many.
        count: usize,
    },
    /// A changed-block anchor (a snapshot volume whose data was destroyed) of a disk none
    /// of whose volumes holds data any more: nothing can be compared with it.
    OrphanedAnchor {
        /// The anchor volume.
        volume: Uuid,
        /// Its image.
        image: String,
    },
    /// Images in the namespace's trash, not purged yet.
    Trash {
        /// How many.
        count: usize,
    },
    /// Something a crash left on this host.
    HostLeftover(datapath::Leftover),
}

impl Problem {
    /// What the problem is about (one record, image, snapshot or mark), whatever its age.
    pub fn subject(&self) -> String {
        match self {
            Problem::Unreadable { key, .. } => format!("key {key}"),
            Problem::RecordWithoutImage { volume, .. } | Problem::RecordWithoutSnapshot { volume, .. } => {
                format!("volume {volume}")
            }
            Problem::OrphanImage { image, .. } => format!("image {image}"),
            Problem::OrphanSnapshot { snapshot, .. } => format!("snapshot {snapshot}"),
            Problem::StaleMark { what } | Problem::Unreclaimed { what } => format!("mark {what}"),
            Problem::OrphanKeys { volume, .. } => format!("keys {volume}"),
            Problem::OrphanedAnchor { volume, .. } => format!("anchor {volume}"),
            Problem::LegacyKeys { .. } => "legacy keys".to_owned(),
            Problem::Trash { .. } => "trash".to_owned(),
            Problem::HostLeftover(leftover) => format!("host {leftover}"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let age =
            |age: &Option<Duration>| age.map_or_else(|| "age unknown".to_owned(), |a| format!("{} s old", a.as_secs()));
        match self {
            Problem::Unreadable { key, reason } => write!(f, "record {key:?} cannot be read: {reason}"),
            Problem::RecordWithoutImage { volume, image } => write!(f, "volume {volume}: its image {image} is gone"),
            Problem::RecordWithoutSnapshot { volume, snapshot } => {
                write!(f, "volume {volume}: its snapshot {snapshot} is gone")
            }
            Problem::OrphanImage { image, age: a } => write!(f, "image {image} is not used by any volume ({})", age(a)),
            Problem::OrphanSnapshot { snapshot, age: a } => {
                write!(f, "snapshot {snapshot} is not used by any volume ({})", age(a))
            }
            Problem::StaleMark { what } => write!(f, "garbage mark of {what}, which is gone"),
            Problem::Unreclaimed { what } => write!(f, "{what} is kept for dependants that are all gone"),
            Problem::OrphanKeys { volume, count } => write!(f, "{count} keys of volume {volume}, which does not exist"),
            Problem::LegacyKeys { count } => write!(f, "{count} keys stored verbatim (layout 1)"),
            Problem::OrphanedAnchor { volume, image } => write!(
                f,
                "volume {volume} keeps only changed-block metadata, and no volume of its disk {image} holds data \
                 to compare it with"
            ),
            Problem::Trash { count } => write!(f, "{count} destroyed images in the trash, not purged yet"),
            Problem::HostLeftover(leftover) => write!(f, "on this host: {leftover}"),
        }
    }
}

/// What the repair does about a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It repairs it this way.
    Repair(String),
    /// It leaves it alone, for this reason.
    Leave(String),
}

/// One finding: the problem, what the repair does about it, and whether it was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong.
    pub problem: Problem,
    /// What the repair does (or why it does nothing).
    pub plan: Plan,
    /// True once repaired.
    pub repaired: bool,
}

impl Finding {
    fn repair(problem: Problem, how: &str) -> Finding {
        Finding { problem, plan: Plan::Repair(how.to_owned()), repaired: false }
    }

    fn leave(problem: Problem, why: &str) -> Finding {
        Finding { problem, plan: Plan::Leave(why.to_owned()), repaired: false }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match (&self.plan, self.repaired) {
            (_, true) => "REPAIRED",
            (Plan::Repair(_), false) => "FOUND   ",
            (Plan::Leave(_), false) => "LEFT    ",
        };
        match &self.plan {
            Plan::Repair(how) => write!(f, "{tag} {} (repair: {how})", self.problem),
            Plan::Leave(why) => write!(f, "{tag} {} (left alone: {why})", self.problem),
        }
    }
}

/// How old unrecorded storage must be, by default, before the repair removes it: a call
/// creates its image or snapshot a moment before it records it, and may be slowed by its
/// Ceph calls up to its time limit. Ten minutes, or ten time limits if that is longer. An
/// operator who knows no call is running on the SR may pass a shorter one (`--grace`).
pub fn default_grace(sr: &SrUri) -> Duration {
    sr.conn.timeout.saturating_mul(10).max(Duration::from_secs(600))
}

/// What the namespace holds: images and their snapshots, with their ages.
struct Storage {
    images: BTreeSet<String>,
    snapshots: BTreeMap<String, BTreeMap<String, Option<SystemTime>>>,
}

impl Storage {
    fn read(sr: &SrUri) -> Result<Storage, OpError> {
        let conn = &sr.conn;
        let mut images = BTreeSet::new();
        let mut snapshots = BTreeMap::new();
        for image in rbd::ls(conn, &sr.pool, &sr.namespace)?.into_iter().filter(|i| i != HEADER_IMAGE) {
            match rbd::snap_ls(conn, &sr.spec(&image)) {
                Ok(snaps) => {
                    let snaps = snaps.into_iter().map(|s| (s.name, rbd::parse_time(&s.timestamp))).collect();
                    snapshots.insert(image.clone(), snaps);
                    images.insert(image);
                }
                // Removed since the listing: nothing to check.
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Storage { images, snapshots })
    }

    fn has_image(&self, image: &str) -> bool {
        self.images.contains(image)
    }

    fn has_snapshot(&self, image: &str, snap: &str) -> bool {
        self.snapshots.get(image).is_some_and(|s| s.contains_key(snap))
    }

    fn exists(&self, what: &str) -> bool {
        match what.split_once('@') {
            Some((image, snap)) => self.has_snapshot(image, snap),
            None => self.has_image(what),
        }
    }
}

fn age(now: SystemTime, at: Option<SystemTime>) -> Option<Duration> {
    at.map(|t| now.duration_since(t).unwrap_or_default())
}

/// Checks `sr` (and this host's state for it); with `repair`, carries out the repairs the
/// report lists. Unrecorded storage younger than `grace` is left alone. Returns every
/// finding.
///
/// A repair can free more (purging the trash lets a clone's base go): the repair then
/// looks again, up to three times, and the findings it repairs then are added to the
/// report.
pub fn check(host: &Host, sr: &SrUri, repair: bool, grace: Duration) -> Result<Vec<Finding>, OpError> {
    let mut findings: Vec<Finding> = Vec::new();
    for pass in 0..3 {
        let records = records::load(sr)?;
        let storage = Storage::read(sr)?;
        let mut round = survey(sr, &records, &storage, grace)?;
        if pass == 0 {
            round.extend(datapath::survey(host, sr)?.into_iter().map(|leftover| {
                Finding::repair(
                    Problem::HostLeftover(leftover),
                    "stop the daemon or unmap, and correct this host's state",
                )
            }));
        }
        if !repair {
            return Ok(round);
        }
        apply(host, sr, &records, &mut round)?;
        let progress = round.iter().any(|f| f.repaired);
        if pass == 0 {
            findings = round;
        } else {
            for later in round.into_iter().filter(|f| f.repaired) {
                match findings.iter_mut().find(|f| f.problem.subject() == later.problem.subject()) {
                    Some(earlier) => earlier.repaired = true,
                    None => findings.push(later),
                }
            }
        }
        if !progress {
            break;
        }
    }
    Ok(findings)
}

/// The findings about the SR's records and storage, each with its plan.
fn survey(sr: &SrUri, records: &Records, storage: &Storage, grace: Duration) -> Result<Vec<Finding>, OpError> {
    let conn = &sr.conn;
    let now = SystemTime::now();
    let mut findings = Vec::new();
    for u in records.unreadable() {
        findings.push(Finding::leave(
            Problem::Unreadable { key: u.key.clone(), reason: u.reason.clone() },
            "an unreadable record is never acted on: restore it, or remove the key by hand once its volume is known",
        ));
    }
    let frozen = !records.unreadable().is_empty();
    let mut used_images = BTreeSet::new();
    let mut used_snaps = BTreeSet::new();
    // Storage an unreadable volume record might name is used, for all we know.
    for u in records.unreadable().iter().filter_map(|u| u.volume) {
        used_images.insert(Object::Image(u).to_string());
    }
    for v in records.volumes() {
        let r = &v.record;
        used_images.insert(r.image.clone());
        let gone = match &r.snap {
            None if !storage.has_image(&r.image) => {
                Some(Problem::RecordWithoutImage { volume: v.uuid, image: r.image.clone() })
            }
            Some(snap) if !storage.has_snapshot(&r.image, snap) => {
                Some(Problem::RecordWithoutSnapshot { volume: v.uuid, snapshot: format!("{}@{snap}", r.image) })
            }
            Some(snap) => {
                used_snaps.insert(format!("{}@{snap}", r.image));
                None
            }
            None => None,
        };
        match gone {
            // Its data is gone with its storage: the record can only mislead.
            Some(problem) => findings.push(Finding::repair(problem, "remove the record, whose data is gone")),
            // A record whose storage is gone no longer holds its clone base.
            None => {
                if let Some(p) = &r.parent {
                    used_images.insert(p.image.clone());
                    used_snaps.insert(p.leaf());
                }
            }
        }
    }
    for (what, mark) in records.garbage_marks() {
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
        if !storage.exists(what) {
            findings.push(Finding::repair(Problem::StaleMark { what: what.clone() }, "remove the mark"));
        } else if !has_dependants(sr, storage, what)? {
            let problem = Problem::Unreclaimed { what: what.clone() };
            findings.push(if frozen {
                Finding::leave(problem, "no storage is removed while records are unreadable")
            } else {
                Finding::repair(problem, "reclaim it and its parents, as the last dependant's destroy would have")
            });
        }
    }
    // Images first: removing an unrecorded clone frees the clone base it was taken from.
    for image in &storage.images {
        if used_images.contains(image) || Object::parse(image).is_none() {
            continue;
        }
        let created = rbd::info(conn, &sr.spec(image)).ok().and_then(|i| rbd::parse_time(&i.create_timestamp));
        let a = age(now, created);
        let problem = Problem::OrphanImage { image: image.clone(), age: a };
        findings.push(orphan_plan(problem, a, grace, frozen, "move it to the trash, with its snapshots"));
    }
    for (image, snaps) in &storage.snapshots {
        for (snap, taken) in snaps {
            let leaf = format!("{image}@{snap}");
            if Object::parse(snap).is_none() || used_snaps.contains(&leaf) {
                continue;
            }
            // A snapshot with clones is used by them, record or not: never removed here. One
            // that went since the listing (a purge runs beside) is no finding.
            match children(sr, &leaf)? {
                Some(c) if c.is_empty() => {}
                Some(_) | None => continue,
            }
            let a = age(now, *taken);
            let problem = Problem::OrphanSnapshot { snapshot: leaf, age: a };
            findings.push(orphan_plan(problem, a, grace, frozen, "remove the snapshot"));
        }
    }
    let images: BTreeSet<&str> = records.volumes().map(|v| v.record.image.as_str()).collect();
    for image in images {
        for volume in records.orphaned_anchors(image, None) {
            let problem = Problem::OrphanedAnchor { volume, image: image.to_owned() };
            findings.push(if frozen {
                Finding::leave(problem, "no storage is removed while records are unreadable")
            } else {
                Finding::repair(problem, "destroy it, as destroying the disk's last volume with data would have")
            });
        }
    }
    for (u, keys) in records.orphan_keys() {
        if records.unreadable().iter().any(|b| b.volume == Some(u)) {
            continue;
        }
        findings.push(Finding::repair(Problem::OrphanKeys { volume: u, count: keys.len() }, "remove the keys"));
    }
    let legacy = records.legacy_keys().count();
    if legacy > 0 {
        findings.push(Finding::repair(Problem::LegacyKeys { count: legacy }, "store each again encoded"));
    }
    let trash = rbd::trash_ls(conn, &sr.pool, &sr.namespace)?.len();
    if trash > 0 {
        findings.push(Finding::repair(Problem::Trash { count: trash }, "purge the trash"));
    }
    Ok(findings)
}

fn orphan_plan(problem: Problem, age: Option<Duration>, grace: Duration, frozen: bool, how: &str) -> Finding {
    if frozen {
        Finding::leave(problem, "no storage is removed while records are unreadable")
    } else if age.is_none_or(|a| a < grace) {
        let why = format!(
            "younger than {} s, or of unknown age: a call under way may be about to record it",
            grace.as_secs()
        );
        Finding::leave(problem, &why)
    } else {
        Finding::repair(problem, how)
    }
}

/// True when the storage a garbage mark names still has dependants: clones of a snapshot,
/// or snapshots (other than hidden clone bases without clones) of an image.
fn has_dependants(sr: &SrUri, storage: &Storage, what: &str) -> Result<bool, OpError> {
    match what.split_once('@') {
        Some(_) => Ok(children(sr, what)?.is_some_and(|c| !c.is_empty())),
        None => {
            for snap in storage.snapshots.get(what).into_iter().flat_map(|s| s.keys()) {
                let hidden = matches!(Object::parse(snap), Some(Object::CloneBase(_)));
                if !hidden || children(sr, &format!("{what}@{snap}"))?.is_some_and(|c| !c.is_empty()) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// The clones of a snapshot (those in the trash included); `None` if the snapshot is gone.
fn children(sr: &SrUri, leaf: &str) -> Result<Option<Vec<rbd::Child>>, OpError> {
    match rbd::children(&sr.conn, &sr.spec(leaf)) {
        Ok(children) => Ok(Some(children)),
        Err(e) if e.kind() == Kind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Carries out the plan of every finding that has one.
fn apply(host: &Host, sr: &SrUri, records: &Records, findings: &mut [Finding]) -> Result<(), OpError> {
    let header = Header::of(sr);
    let mut reaped = false;
    for finding in findings.iter_mut().filter(|f| matches!(f.plan, Plan::Repair(_))) {
        finding.repaired = match &finding.problem {
            Problem::RecordWithoutImage { volume, .. } | Problem::RecordWithoutSnapshot { volume, .. } => {
                for key in records.keys_of(*volume) {
                    header.remove(&key)?;
                }
                true
            }
            Problem::StaleMark { what } => {
                header.remove(&MetaKey::Garbage(what.clone()))?;
                true
            }
            Problem::Unreclaimed { what } => {
                reclaim::reclaim_marked(sr, records, what)?;
                true
            }
            Problem::OrphanImage { image, .. } => {
                reclaim::reclaim_image(sr, image)?;
                true
            }
            Problem::OrphanSnapshot { snapshot, .. } => reclaim::remove_snapshot_if_free(sr, snapshot)?,
            Problem::OrphanKeys { volume, .. } => {
                for (_, keys) in records.orphan_keys().filter(|(u, _)| u == volume) {
                    for key in keys {
                        header.remove(key)?;
                    }
                }
                true
            }
            Problem::LegacyKeys { .. } => {
                reencode_legacy_keys(sr, records)?;
                true
            }
            Problem::OrphanedAnchor { volume: anchor, .. } => {
                volume::destroy(host, sr, &anchor.to_string())?;
                true
            }
            // Purged last, below, with what the other repairs moved there.
            Problem::Trash { .. } => false,
            Problem::HostLeftover(_) => {
                if !reaped {
                    datapath::reap(host, sr)?;
                    reaped = true;
                }
                true
            }
            Problem::Unreadable { .. } => false,
        };
    }
    let trashed = findings.iter().any(|f| {
        f.repaired
            && matches!(
                f.problem,
                Problem::OrphanImage { .. } | Problem::Unreclaimed { .. } | Problem::OrphanedAnchor { .. }
            )
    });
    let trash = findings.iter_mut().find(|f| matches!(f.problem, Problem::Trash { .. }));
    if trashed || trash.is_some() {
        let purged = reclaim::purge_and_reclaim(host, sr, Instant::now() + reclaim::PURGE_LIMIT);
        if let Some(finding) = trash {
            finding.repaired = purged.is_ok();
        }
        purged?;
    }
    Ok(())
}

/// Stores every layout-1 key again in the encoded form (unless the encoded form already
/// exists, which wins), then removes the verbatim one. Keys of volumes that do not exist
/// are only removed.
fn reencode_legacy_keys(sr: &SrUri, records: &Records) -> Result<(), OpError> {
    let header = Header::of(sr);
    for key in records.legacy_keys() {
        let MetaKey::LegacyUserKey(u, k) = key else { continue };
        if let Some(view) = records.volume(*u) {
            let current = MetaKey::UserKey(*u, k.clone());
            if let Some(value) = view.keys.get(k) {
                header.set(&current, value)?;
            }
        }
        header.remove(key)?;
    }
    Ok(())
}

/// `volume --check <sr string> [--repair] [--grace SECONDS]`: prints each finding; exit 1
/// if any remains.
pub fn main(args: impl Iterator<Item = String>) -> std::process::ExitCode {
    crate::process::log::init("volume");
    let usage = || {
        eprintln!(
            "usage: volume --check <SR string (from SR.attach)> [--repair] [--grace SECONDS]\n  \
             --repair         carry out the repairs the report lists\n  \
             --grace SECONDS  remove unrecorded storage only when older than this (default: ten\n                   \
             minutes or ten time limits); 0 only when no call runs on the SR"
        );
        std::process::ExitCode::from(2)
    };
    let mut args = args.peekable();
    let Some(sr) = args.next() else { return usage() };
    let (mut repair, mut grace) = (false, None);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.peek().map(|v| v.parse::<u64>())) {
            ("--repair", _) => repair = true,
            ("--grace", Some(Ok(secs))) => {
                grace = Some(Duration::from_secs(secs));
                args.next();
            }
            _ => return usage(),
        }
    }
    let sr = match SrUri::parse(&sr) {
        Ok(sr) => sr,
        Err(e) => {
            eprintln!("{e}");
            return usage();
        }
    };
    let grace = grace.unwrap_or_else(|| default_grace(&sr));
    match check(&Host::from_env(), &sr, repair, grace) {
        Ok(findings) => {
            for f in &findings {
                println!("{f}");
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
