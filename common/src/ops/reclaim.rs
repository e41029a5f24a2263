//! Reclaiming the storage of destroyed volumes (the garbage collector).
//!
//! Destroy never flattens: a volume whose image or snapshot still has dependants leaves a
//! garbage mark (`g.<image>[@snap]`) in the SR's records when its record goes, and its
//! storage is removed when the last dependant goes, walking up the parent chain
//! ([`reclaim_chain`]). Hidden clone bases (`c-<uuid>` snapshots) go with their last clone.
//! Images leave through the RBD trash, so a destroy takes the same short time whatever
//! the image's size ([`purge_later`]).

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::ceph::rbd;
use crate::ceph::Kind;
use crate::error::{chain, OpError};
use crate::host::lock::lock_file;
use crate::host::Host;
use crate::layout::names::{MetaKey, Object};
use crate::layout::records::{self, GarbageRecord, Header, Records, SnapRef};
use crate::layout::uri::SrUri;
use crate::process::runner::{Cmd, CommandError, Program};

/// Removes an image unless it has snapshots (hidden clone bases whose clones are gone do
/// not count, and go first); true if it is gone. The image is moved to the RBD trash, which
/// takes the same short time whatever its size; its data is deleted later, by the purge
/// [`purge_later`] starts.
pub fn remove_image_if_free(sr: &SrUri, image: &str) -> Result<bool, OpError> {
    let spec = sr.spec(image);
    let snaps = match rbd::snap_ls(&sr.conn, &spec) {
        Ok(snaps) => snaps,
        Err(e) if e.kind() == Kind::NotFound => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    let mut left = 0;
    for snap in snaps {
        let hidden = matches!(Object::parse(&snap.name), Some(Object::CloneBase(_)));
        if !(hidden && remove_snapshot_if_free(sr, &format!("{image}@{}", snap.name))?) {
            left += 1;
        }
    }
    if left > 0 {
        return Ok(false);
    }
    rbd::trash_move(&sr.conn, &spec)?;
    Ok(true)
}

/// Removes a snapshot unless it has clones; true if it is gone.
pub fn remove_snapshot_if_free(sr: &SrUri, leaf: &str) -> Result<bool, OpError> {
    let spec = sr.spec(leaf);
    match rbd::snap_remove(&sr.conn, &spec) {
        Ok(_) => Ok(true),
        // Protected: it may have clones.
        Err(e) if e.kind() == Kind::Busy => {
            match rbd::children(&sr.conn, &spec) {
                Ok(children) if !children.is_empty() => return Ok(false),
                Ok(_) => {}
                // Gone meanwhile (another host reclaimed it): nothing left to remove.
                Err(e) if e.kind() == Kind::NotFound => return Ok(true),
                Err(e) => return Err(e.into()),
            }
            match rbd::snap_unprotect(&sr.conn, &spec) {
                // A clone appeared since, or one in the trash the listing did not show.
                Err(e) if e.kind() == Kind::Busy => return Ok(false),
                other => other?,
            };
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
    forget_snapshot_marks(sr, records, image)?;
    info!(image, "storage of a destroyed volume reclaimed");
    Ok(mark.parent.clone())
}

/// Removes the marks of the snapshots of `image`, which has just gone with them (a hidden
/// base marked while its clone waited in the trash). A mark this call did not read yet is
/// left for the purge's reclaim pass, which removes marks of storage that is gone.
pub fn forget_snapshot_marks(sr: &SrUri, records: &Records, image: &str) -> Result<(), OpError> {
    let prefix = format!("{image}@");
    for (what, _) in records.garbage_marks().filter(|(what, _)| what.starts_with(&prefix)) {
        Header::of(sr).remove(&MetaKey::Garbage(what.clone()))?;
    }
    Ok(())
}

/// Walks up from a snapshot something depended on: a hidden clone base or a garbage-marked
/// snapshot with no clones left is removed, then its image if that is garbage with no
/// snapshots left, then that image's own parent, and so on.
///
/// A hidden base whose clone is still in the trash (not purged yet) cannot go: it gets a
/// garbage mark, and the purge that empties the trash carries on from it
/// ([`purge_and_reclaim`]).
pub fn reclaim_chain(sr: &SrUri, records: &Records, mut next: Option<SnapRef>) -> Result<(), OpError> {
    while let Some(base) = next.take() {
        let leaf = base.leaf();
        let hidden = matches!(Object::parse(&base.snap), Some(Object::CloneBase(_)));
        let marked = records.garbage(&leaf).is_some();
        if !(hidden || marked) {
            return Ok(());
        }
        if !remove_snapshot_if_free(sr, &leaf)? {
            if hidden && !marked {
                Header::of(sr).set_json(&MetaKey::Garbage(leaf), &GarbageRecord::default())?;
            }
            return Ok(());
        }
        if marked {
            Header::of(sr).remove(&MetaKey::Garbage(leaf))?;
        }
        next = reclaim_image_if_garbage(sr, records, &base.image)?;
    }
    Ok(())
}

/// Reclaims the storage a garbage mark names (`image` or `image@snap`) if its dependants
/// are gone, and walks up its parents.
pub fn reclaim_marked(sr: &SrUri, records: &Records, what: &str) -> Result<(), OpError> {
    match what.split_once('@') {
        Some((image, snap)) => {
            reclaim_chain(sr, records, Some(SnapRef { image: image.to_owned(), snap: snap.to_owned() }))
        }
        None => {
            let next = reclaim_image_if_garbage(sr, records, what)?;
            reclaim_chain(sr, records, next)
        }
    }
}

/// Reclaims every garbage mark whose dependants are gone (SR.destroy).
pub fn reclaim_all(sr: &SrUri, records: &Records) -> Result<(), OpError> {
    for (what, _) in records.garbage_marks() {
        reclaim_marked(sr, records, what)?;
    }
    Ok(())
}

/// Removes an image of ours that no record or mark knows (left by a crash), with the
/// snapshots it has that have no clones; false if some snapshot still has clones (then the
/// image stays).
pub fn reclaim_image(sr: &SrUri, image: &str) -> Result<bool, OpError> {
    let snaps = match rbd::snap_ls(&sr.conn, &sr.spec(image)) {
        Ok(snaps) => snaps,
        Err(e) if e.kind() == Kind::NotFound => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    let mut left = 0;
    for snap in snaps {
        if !remove_snapshot_if_free(sr, &format!("{image}@{}", snap.name))? {
            left += 1;
        }
    }
    if left > 0 {
        return Ok(false);
    }
    rbd::trash_move(&sr.conn, &sr.spec(image))?;
    Ok(true)
}

/// Deletes the data of the images in the SR's trash, and reclaims what their going frees
/// (a hidden clone base or a destroyed parent kept while a clone was in the trash), over
/// and over until nothing is left or the call's time runs out. What is left stays for the
/// next purge. One purge per SR and host at a time: this waits (until `until`) for the
/// background purge ([`purge_later`]) to finish. Returns how many rounds ran.
pub fn purge_and_reclaim(host: &Host, sr: &SrUri, until: Instant) -> Result<usize, OpError> {
    let _held = lock_file(&purge_lock(host, sr), until.saturating_duration_since(Instant::now()), "the trash purge")?;
    purge_rounds(sr, until)
}

/// The lock that keeps purges of an SR to one per host.
fn purge_lock(host: &Host, sr: &SrUri) -> std::path::PathBuf {
    host.run_dir.join(format!("purge-{}.lock", sr.uuid))
}

/// Rounds without progress (the trash as full as before) after which a purge gives up:
/// what is left waits for the next one.
const STALLED_ROUNDS: usize = 8;

fn purge_rounds(sr: &SrUri, until: Instant) -> Result<usize, OpError> {
    let (mut rounds, mut stalled) = (0, 0);
    let mut pause = Duration::from_millis(250);
    while Instant::now() < until {
        rounds += 1;
        let before = rbd::trash_ls(&sr.conn, &sr.pool, &sr.namespace)?.len();
        if before > 0 {
            // The purge may take long (every object of an image without object-map): it
            // gets all the time left, not one command's limit (each request keeps that).
            match rbd::trash_purge(&sr.conn, &sr.pool, &sr.namespace, until.saturating_duration_since(Instant::now())) {
                Ok(()) => {}
                // Another host's purge is removing an image of this trash (it holds it open,
                // or removed it under us), or a stale client still watches one. Reclaiming
                // still goes on: that other purge may have reclaimed before a destroy on a
                // third host marked what it frees.
                Err(e) if matches!(e.kind(), Kind::Busy | Kind::NotFound) => {
                    info!(sr = %sr.uuid, "trash contended: {}", chain(&e));
                }
                Err(e) => return Err(e.into()),
            }
        }
        reclaim_all(sr, &records::load(sr)?)?;
        let after = rbd::trash_ls(&sr.conn, &sr.pool, &sr.namespace)?.len();
        if after == 0 {
            break;
        }
        if before > 0 && after >= before {
            stalled += 1;
            if stalled >= STALLED_ROUNDS {
                warn!(sr = %sr.uuid, left = after, "trash purge makes no progress: left for the next purge");
                break;
            }
            std::thread::sleep(pause.min(until.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_secs(5));
        } else {
            stalled = 0;
        }
    }
    Ok(rounds)
}

/// Starts [`purge_and_reclaim`] of the SR in a process of its own that outlives this call:
/// this very executable, run as `<exe> --purge <SR string>` (a lock on the host keeps it to
/// one per SR; a purge already running goes round once more instead). Failing to start it is only logged: the next destroy, `SR.attach`,
/// `SR.destroy` or `volume --check --repair` purges.
pub fn purge_later(host: &Host, sr: &SrUri) {
    if let Err(e) = std::fs::write(purge_wanted(host, sr), b"") {
        warn!(sr = %sr.uuid, "cannot leave the purge request, left for the next call: {e}");
    }
    let started = std::env::current_exe()
        .map_err(|source| CommandError::Spawn { program: "this executable".to_owned(), source })
        .and_then(|exe| Program::at("purge", &exe))
        .and_then(|exe| {
            Cmd::new(&exe, PURGE_LIMIT)
                .args(["--purge", &sr.render()])
                .env("CEPHRBD_RUN_DIR", host.run_dir.display().to_string())
                .spawn_detached()
        });
    if let Err(e) = started {
        warn!(sr = %sr.uuid, "cannot start the trash purge, left for the next call: {}", chain(&e));
    }
}

/// The longest a background purge runs.
pub const PURGE_LIMIT: Duration = Duration::from_secs(3600);

/// `<exe> --purge <SR string>`: the background purge [`purge_later`] starts. Exits at once
/// if another purge of the SR runs on this host.
pub fn purge_main(mut args: impl Iterator<Item = String>) -> std::process::ExitCode {
    crate::process::log::init("cephrbd-purge");
    let Some(Ok(sr)) = args.next().map(|text| SrUri::parse(&text)) else {
        eprintln!("usage: --purge <SR string>");
        return std::process::ExitCode::from(2);
    };
    let host = Host::from_env();
    let wanted = purge_wanted(&host, &sr);
    loop {
        // Held by another purge: it sees the request (below) and goes round again.
        let Ok(held) = lock_file(&purge_lock(&host, &sr), Duration::ZERO, "the trash purge") else {
            return std::process::ExitCode::SUCCESS;
        };
        // Taken before the first round reads the records: a mark written after that read
        // comes with a new request.
        let _ = std::fs::remove_file(&wanted);
        let purged = purge_rounds(&sr, Instant::now() + PURGE_LIMIT);
        drop(held);
        match purged {
            Ok(rounds) => info!(sr = %sr.uuid, rounds, "trash purged"),
            Err(e) => {
                warn!(sr = %sr.uuid, "trash purge: {}", chain(&e));
                return std::process::ExitCode::FAILURE;
            }
        }
        // A destroy that asked while this purge held the lock found it taken and left:
        // its mark may be newer than this purge's last look at the records.
        if !wanted.exists() {
            return std::process::ExitCode::SUCCESS;
        }
    }
}

/// The request a destroy leaves before starting a purge ([`purge_later`]), so that a purge
/// already running (which the new one cannot lock out) goes round once more.
fn purge_wanted(host: &Host, sr: &SrUri) -> std::path::PathBuf {
    host.run_dir.join(format!("purge-{}.wanted", sr.uuid))
}
