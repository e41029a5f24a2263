//! The Datapath interface: `Datapath.open`, `attach`, `activate`, `activate_readonly`,
//! `deactivate`, `detach`, `close`, in two modes chosen by the URI scheme:
//!
//! - `cephrbd+krbd`: kernel RBD. attach maps the image (`rbd device map -o noshare`,
//!   read-only for snapshots), reusing a mapping sysfs already shows; it returns
//!   `XenDisk{backend_type: "vbd", params: /dev/rbdN}` and `BlockDevice`. detach unmaps.
//! - `cephrbd+qsd`: userspace. activate starts one qemu-storage-daemon exporting the image
//!   as NBD on a unix socket; deactivate stops it. attach returns `XenDisk{backend_type:
//!   "qdisk"}` and `Nbd{uri}` (the socket path is fixed by the volume, so attach needs no
//!   daemon).
//!
//! attach is not exclusive (both hosts hold a volume during live migration) and is
//! reference-counted by (uri, domain), dom0's `u0_*` domains included. **activate is the
//! fence**: before a read-write activation, every other client watching the image (a
//! stale writer on the previous host: its qemu-storage-daemon or its noshare kernel
//! mapping) is blocklisted in the OSD map, so it can no longer write, whatever it does;
//! only then is the image opened here. `activate_readonly` fences nobody. detach never
//! fails: problems are logged, and the next `SR.attach` reaps what was left ([`reap`]).
//!
//! What this host holds of each volume is kept in [`crate::host::attachments`], changed
//! under the volume's lock.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use crate::ceph::{krbd, qsd, rbd, Conn};
use crate::error::{chain, OpError, RequestError};
use crate::host::attachments::{self, Active, Attachment, Held, Mode};
use crate::host::Host;
use crate::layout::uri::{SrUri, VolumeUri};
use crate::smapi::wire::{Backend, Implementation};

/// How long a blocklist entry lasts (seconds): long enough for any stale writer to be
/// killed by its own host.
pub const FENCE_SECONDS: u32 = 3600;

fn mode_of(uri: &VolumeUri) -> Mode {
    if uri.scheme == "cephrbd+krbd" {
        Mode::Krbd
    } else {
        Mode::Qsd
    }
}

fn lock_limit(uri: &VolumeUri) -> Duration {
    uri.conn.timeout.saturating_mul(4)
}

fn not_attached(uri: &VolumeUri) -> OpError {
    RequestError::BadUri {
        what: "volume",
        uri: uri.render(),
        reason: "not attached on this host: Datapath.attach comes first".to_owned(),
    }
    .into()
}

fn backend(host: &Host, uri: &VolumeUri, state: &Attachment) -> Backend {
    let implementations = match state.mode {
        Mode::Krbd => {
            let device = state.device.clone().unwrap_or_default();
            vec![
                Implementation::XenDisk { params: device.clone(), backend_type: "vbd".to_owned() },
                Implementation::BlockDevice { path: device },
            ]
        }
        Mode::Qsd => vec![
            Implementation::XenDisk { params: format!("vdi:{}", uri.volume), backend_type: "qdisk".to_owned() },
            Implementation::Nbd { uri: qsd::daemon(&host.datapath_dir(), &uri.volume).nbd_uri() },
        ],
    };
    Backend { implementations }
}

/// `Datapath.attach`: makes the volume reachable on this host (kernel mode: maps it) and
/// counts the (uri, domain) reference. Not exclusive; idempotent.
pub fn attach(host: &Host, uri: &VolumeUri, domain: &str) -> Result<Backend, OpError> {
    let mode = mode_of(uri);
    let held = Held::open(host, uri.volume, lock_limit(uri))?;
    let mut state = held.load().unwrap_or_else(|| Attachment {
        uri: uri.render(),
        mode,
        domains: BTreeSet::new(),
        device: None,
        mapping: false,
        active: None,
    });
    if state.mode != mode {
        return Err(RequestError::BadUri {
            what: "volume",
            uri: uri.render(),
            reason: format!("already attached on this host through {:?} mode", state.mode),
        }
        .into());
    }
    if mode == Mode::Krbd {
        let found = krbd::find(&host.sysfs, &uri.pool, &uri.namespace, &uri.image, uri.snap.as_deref());
        state.device = match found {
            Some(mapping) => Some(mapping.device().display().to_string()),
            None => {
                state.mapping = true;
                held.save(&state)?;
                let device = krbd::map(&uri.conn, &uri.image_spec().to_string(), uri.snap.is_some())?;
                info!(device = %device.display(), "mapped");
                Some(device.display().to_string())
            }
        };
        state.mapping = false;
    }
    state.domains.insert(domain.to_owned());
    held.save(&state)?;
    info!(volume = %uri.volume, domain, references = state.domains.len(), "attached");
    Ok(backend(host, uri, &state))
}

/// `Datapath.activate` (`read_only` false): the exclusive point. Fences every other writer
/// of the image, then opens it here read-write (snapshots stay read-only).
/// `Datapath.activate_readonly` (`read_only` true): opens the volume read-only here; fences
/// nobody. Idempotent.
pub fn activate(host: &Host, uri: &VolumeUri, domain: &str, read_only: bool) -> Result<(), OpError> {
    let read_only = read_only || uri.snap.is_some();
    let held = Held::open(host, uri.volume, lock_limit(uri))?;
    let Some(mut state) = held.load().filter(|s| !s.domains.is_empty()) else {
        return Err(not_attached(uri));
    };
    if state.active.as_ref().is_some_and(|a| a.read_only == read_only) {
        return Ok(());
    }
    let daemon = qsd::daemon(&host.datapath_dir(), &uri.volume);
    if !read_only {
        let own = match state.mode {
            Mode::Krbd => krbd::find(&host.sysfs, &uri.pool, &uri.namespace, &uri.image, None).and_then(|m| m.client),
            Mode::Qsd => None,
        };
        // A read-only daemon of ours must go before we fence: it would be fenced too.
        daemon.stop();
        fence(&uri.conn, &uri.image_spec().to_string(), own)?;
    }
    // Recorded before the daemon starts, so a crash in between leaves a state reap() sees.
    state.active = Some(Active { domain: domain.to_owned(), read_only });
    held.save(&state)?;
    if state.mode == Mode::Qsd {
        if let Err(e) = daemon.start(&uri.conn, &uri.image_spec(), read_only) {
            state.active = None;
            held.save(&state)?;
            return Err(e.into());
        }
    }
    info!(volume = %uri.volume, domain, read_only, "activated");
    Ok(())
}

/// Blocklists every client watching `spec` except `own`: after this, a stale writer
/// elsewhere cannot write to the image, whatever it does.
pub fn fence(conn: &Conn, spec: &str, own: Option<u64>) -> Result<usize, OpError> {
    let mut fenced = 0;
    for w in rbd::watchers(conn, spec)?.iter().filter(|w| Some(w.client) != own) {
        rbd::blocklist_add(conn, &w.address, FENCE_SECONDS)?;
        warn!(image = spec, client = w.client, address = %w.address, "fenced a previous user of the image (blocklisted)");
        fenced += 1;
    }
    Ok(fenced)
}

/// `Datapath.deactivate`: closes the volume here (stops the daemon). Deactivating what is
/// not active succeeds.
pub fn deactivate(host: &Host, uri: &VolumeUri, domain: &str) -> Result<(), OpError> {
    let held = Held::open(host, uri.volume, lock_limit(uri))?;
    let Some(mut state) = held.load() else { return Ok(()) };
    qsd::daemon(&host.datapath_dir(), &uri.volume).stop();
    state.active = None;
    held.save(&state)?;
    info!(volume = %uri.volume, domain, "deactivated");
    Ok(())
}

/// `Datapath.detach`: drops the (uri, domain) reference; the last one stops the daemon and
/// unmaps the device. Never fails: what cannot be undone now is logged and left for
/// [`reap`]. Takes the URI as xapi sent it: even a URI that cannot be parsed is not an
/// error here.
pub fn detach(host: &Host, uri: &str, domain: &str) {
    if let Err(e) = VolumeUri::parse(uri).map_err(OpError::from).and_then(|uri| detach_inner(host, &uri, domain)) {
        warn!(uri, domain, "detach left something behind: {}", chain(&e));
    }
}

fn detach_inner(host: &Host, uri: &VolumeUri, domain: &str) -> Result<(), OpError> {
    let held = Held::open(host, uri.volume, lock_limit(uri))?;
    let Some(mut state) = held.load() else { return Ok(()) };
    state.domains.remove(domain);
    if state.domains.is_empty() {
        release(host, &uri.conn, &uri.volume, &mut state);
    }
    held.save(&state)?;
    info!(volume = %uri.volume, domain, references = state.domains.len(), "detached");
    Ok(())
}

/// Stops the daemon and unmaps the device of a volume nobody holds any more.
fn release(host: &Host, conn: &Conn, volume: &Uuid, state: &mut Attachment) {
    qsd::daemon(&host.datapath_dir(), volume).stop();
    state.active = None;
    if let Some(device) = state.device.take() {
        let still_there = krbd::mappings(&host.sysfs).iter().any(|m| m.device().display().to_string() == device);
        if still_there {
            if let Err(e) = krbd::unmap(conn, Path::new(&device)) {
                warn!(device, "unmap failed, left for SR.attach to reap: {}", chain(&e));
                state.device = Some(device);
            }
        }
    }
}

/// `Datapath.open`: persistent opens need nothing. Non-persistent ones are not offered
/// (the plugin does not declare NONPERSISTENT, so xapi uses clone-on-boot instead).
pub fn open(persistent: bool) -> Result<(), OpError> {
    if persistent {
        Ok(())
    } else {
        Err(RequestError::UnknownMethod {
            name: "Datapath.open with persistent=false".to_owned(),
            known: "persistent=true (reset-on-boot uses Volume.clone)".to_owned(),
        }
        .into())
    }
}

/// Something a crash left on this host for one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// The volume is recorded as active in userspace mode, but its daemon is dead.
    DeadDaemon(Uuid),
    /// A daemon runs for a volume this host does not hold active.
    OrphanDaemon(Uuid),
    /// A kernel map was interrupted: `device` was mapped but never recorded as attached
    /// (`None`: the map never happened, only the record of it is left).
    InterruptedMap {
        /// The volume.
        volume: Uuid,
        /// The mapping the kernel has, if any.
        device: Option<String>,
        /// True when nobody holds the volume, so the mapping must go; false when it only
        /// has to be recorded.
        unused: bool,
    },
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::DeadDaemon(v) => write!(f, "volume {v}: recorded active, its qemu-storage-daemon is dead"),
            Leftover::OrphanDaemon(v) => write!(f, "volume {v}: a qemu-storage-daemon runs without an activation"),
            Leftover::InterruptedMap { volume, device: Some(d), unused: true } => {
                write!(f, "volume {volume}: {d} was mapped by an interrupted attach and nobody holds it")
            }
            Leftover::InterruptedMap { volume, device: Some(d), unused: false } => {
                write!(f, "volume {volume}: {d} was mapped by an interrupted attach and is not recorded")
            }
            Leftover::InterruptedMap { volume, device: None, .. } => {
                write!(f, "volume {volume}: an interrupted attach left its record behind")
            }
        }
    }
}

/// What crashes left on this host for volumes of `sr`, without changing anything.
pub fn survey(host: &Host, sr: &SrUri) -> Result<Vec<Leftover>, OpError> {
    let mut found = Vec::new();
    for volume in attachments::volumes(host) {
        let held = Held::open(host, volume, sr.conn.timeout)?;
        found.extend(leftovers(host, sr, volume, &held));
    }
    Ok(found)
}

fn leftovers(host: &Host, sr: &SrUri, volume: Uuid, held: &Held) -> Vec<Leftover> {
    let daemon = qsd::daemon(&host.datapath_dir(), &volume);
    let Some(state) = held.load() else {
        return daemon.running().map(|_| Leftover::OrphanDaemon(volume)).into_iter().collect();
    };
    let Ok(uri) = VolumeUri::parse(&state.uri) else { return Vec::new() };
    if uri.pool != sr.pool || uri.namespace != sr.namespace {
        return Vec::new();
    }
    let mut found = Vec::new();
    if state.mode == Mode::Qsd {
        match (&state.active, daemon.running()) {
            (Some(_), None) => found.push(Leftover::DeadDaemon(volume)),
            (None, Some(_)) => found.push(Leftover::OrphanDaemon(volume)),
            _ => {}
        }
    }
    if state.mapping {
        let device = krbd::find(&host.sysfs, &uri.pool, &uri.namespace, &uri.image, uri.snap.as_deref())
            .map(|m| m.device().display().to_string());
        let unused = state.device.is_none() && state.domains.is_empty();
        found.push(Leftover::InterruptedMap { volume, device, unused });
    }
    found
}

/// Cleans what crashes left on this host for volumes of `sr` ([`survey`]): activations
/// whose daemon died, daemons with no activation, mappings made by an interrupted attach.
/// Called by `SR.attach` and the consistency check's repair; returns what it cleaned.
pub fn reap(host: &Host, sr: &SrUri) -> Result<Vec<Leftover>, OpError> {
    let mut reaped = Vec::new();
    for volume in attachments::volumes(host) {
        let held = Held::open(host, volume, sr.conn.timeout)?;
        let found = leftovers(host, sr, volume, &held);
        if found.is_empty() {
            continue;
        }
        let daemon = qsd::daemon(&host.datapath_dir(), &volume);
        let mut state = held.load();
        for leftover in &found {
            match leftover {
                Leftover::DeadDaemon(_) | Leftover::OrphanDaemon(_) => {
                    daemon.stop();
                    if let (Leftover::DeadDaemon(_), Some(state)) = (leftover, state.as_mut()) {
                        state.active = None;
                    }
                }
                Leftover::InterruptedMap { device, unused, .. } => {
                    let Some(state) = state.as_mut() else { continue };
                    match (device, unused) {
                        (Some(device), true) => {
                            let uri = VolumeUri::parse(&state.uri)?;
                            krbd::unmap(&uri.conn, Path::new(device))?;
                        }
                        (Some(device), false) => state.device = Some(device.clone()),
                        (None, _) => {}
                    }
                    state.mapping = false;
                }
            }
        }
        if let Some(state) = &state {
            held.save(state)?;
        }
        reaped.extend(found);
    }
    if !reaped.is_empty() {
        info!(count = reaped.len(), sr = %sr.uuid, "reaped what crashes left on this host");
    }
    Ok(reaped)
}
