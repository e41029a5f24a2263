//! The Datapath interface: `Datapath.open`, `attach`, `activate`, `activate_readonly`,
//! `deactivate`, `detach`, `close` (docs/datapath.md).
//!
//! **Modes.** A volume's URI carries its SR's policy (`auto`, `krbd`, `nbd`, `qsd`), never a
//! mode: xapi takes the first URI whose scheme has a datapath plugin and never falls back,
//! and what works depends on the host. At its first attach on a host, a volume gets a mode
//! there ([`mode_for`]), kept in this host's state for every later call:
//!
//! - `krbd`, kernel RBD (`rbd device map --options=noshare`, read-only for snapshots),
//!   when the rbd module loads and this kernel maps the image's features;
//! - `nbd`, rbd-nbd (librbd in a daemon, `/dev/nbdN`), any feature, when `rbd-nbd` and the
//!   nbd module are there;
//! - `qsd`, qemu-storage-daemon (librbd, NBD on a unix socket), where it is installed (not
//!   on a stock XCP-ng 8.3: QEMU 4.2 has no qemu-storage-daemon).
//!
//! Block-device modes map at attach and return `XenDisk{vbd, /dev/…}` + `BlockDevice`; the
//! device stays mapped until the last detach. `qsd` starts its daemon at activate and
//! returns `XenDisk{qdisk}` + `Nbd` (the socket path is fixed by the volume).
//!
//! **Writers and fencing.** attach is not exclusive (both hosts hold a volume during a live
//! migration); activate is the exclusive point. A read-write activation takes the volume's
//! *writer lock*: an exclusive RADOS lock on an object of its own in the SR's namespace
//! (`cephrbd-writer.<key>`; atomic: of two hosts activating at once, one fails), whose
//! cookie names this host and the Ceph client of its mapping or daemon. (Not an advisory
//! lock on the image itself: librbd and kernel RBD take the image's lock to write.)
//! deactivate releases it. An activation that finds another host's writer lock (that host
//! died or hangs, it never deactivated) fences exactly that writer: the clients its lock
//! names, and the image's exclusive-lock owner if it is not ours (only a writer holds
//! it), by blocklisting their addresses; read-only users and other images' clients are
//! never touched. A cooperative migration (deactivate on A before activate on B) fences
//! nobody. detach never fails: what it cannot undo is left for the reaper ([`reap`]),
//! which retries.
//!
//! What this host holds of each volume is kept in [`crate::host::attachments`], changed
//! under the volume's lock.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use crate::ceph::{krbd, nbd, qsd, rbd, CephError, Conn, ImageSpec, Kind};
use crate::config::Datapath;
use crate::error::{chain, OpError, RequestError};
use crate::host::attachments::{self, Active, Attachment, Held, Mode};
use crate::host::Host;
use crate::layout::uri::{SrUri, VolumeUri};
use crate::smapi::wire::{Backend, Implementation};

/// How long a blocklist entry lasts (seconds). A fenced client never writes again: the
/// OSDs refuse it, and librbd and kernel RBD give up an image whose client was blocklisted
/// rather than reconnect; new clients get new addresses. The entry only has to outlive the
/// operations the fenced client still had in flight, and the hour leaves a host that was
/// frozen (not dead) time to be rebooted.
pub const FENCE_SECONDS: u32 = 3600;

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

/// The image head a URI names (locks and watchers are the head's, snapshots included).
fn head(uri: &VolumeUri) -> String {
    ImageSpec { snap: None, ..uri.image_spec() }.to_string()
}

/// The modes a policy tries, in order.
fn candidates(policy: Datapath) -> &'static [Mode] {
    match policy {
        Datapath::Auto => &MODES,
        Datapath::Krbd => &[Mode::Krbd],
        Datapath::Nbd => &[Mode::Nbd],
        Datapath::Qsd => &[Mode::Qsd],
    }
}

/// Why `mode` cannot serve the volume on this host (with the fix), or `None` if it can.
/// Loads the kernel module a mode needs if it can be loaded.
pub fn unusable(host: &Host, uri: &VolumeUri, mode: Mode) -> Result<Option<String>, OpError> {
    let features = || -> Result<Vec<String>, OpError> { Ok(rbd::info(&uri.conn, &head(uri))?.features) };
    unusable_for(host, mode, features, uri.conn.timeout, false)
}

/// Why `mode` cannot serve images with `features` (asked for only when it matters) on this
/// host, or `None` if it can; `dry_run` checks kernel modules without loading them (the
/// doctor).
pub fn unusable_for(
    host: &Host,
    mode: Mode,
    features: impl FnOnce() -> Result<Vec<String>, OpError>,
    limit: Duration,
    dry_run: bool,
) -> Result<Option<String>, OpError> {
    let module = |name: &'static str, present: bool| match krbd::load_module(name, present, limit, dry_run) {
        Ok(()) => Ok(None),
        Err(CephError::KernelModule { .. }) => {
            Ok(Some(format!("the {name} kernel module is missing (fix: `modprobe {name}`, or a kernel that ships it)")))
        }
        Err(e) => Err(OpError::from(e)),
    };
    match mode {
        Mode::Krbd => {
            if let Some(why) = module("rbd", krbd::available(&host.sysfs))? {
                return Ok(Some(why));
            }
            let Some(mask) = krbd::supported_features(&host.sysfs) else { return Ok(None) };
            let missing = krbd::unmappable(&features()?, mask);
            if missing.is_empty() {
                Ok(None)
            } else {
                Ok(Some(format!(
                    "this kernel cannot map the image features {} (it maps mask {mask:#x}; fix: a newer kernel, or \
                     image_features=layering,exclusive-lock for new SRs)",
                    missing.join(",")
                )))
            }
        }
        Mode::Nbd => {
            if nbd::program().is_err() {
                return Ok(Some(
                    "rbd-nbd is not installed (fix: install the rbd-nbd package of your Ceph release)".to_owned(),
                ));
            }
            module("nbd", nbd::available(&host.sysfs))
        }
        Mode::Qsd => Ok(qsd::program().err().map(|_| {
            "qemu-storage-daemon is not installed (QEMU 5.0 or later with its rbd block driver; not on a stock XCP-ng)"
                .to_owned()
        })),
    }
}

/// The modes `auto` tries, in order.
pub const MODES: [Mode; 3] = [Mode::Krbd, Mode::Nbd, Mode::Qsd];

/// The mode the URI's policy gives the volume on this host: the first that can serve it.
pub fn mode_for(host: &Host, uri: &VolumeUri) -> Result<Mode, OpError> {
    let mut reasons = Vec::new();
    for mode in candidates(uri.datapath) {
        match unusable(host, uri, *mode)? {
            None => return Ok(*mode),
            Some(why) => reasons.push(format!("{}: {why}", mode.name())),
        }
    }
    Err(OpError::NoDatapath { policy: uri.datapath.name(), reasons: reasons.join("; ") })
}

fn backend(host: &Host, uri: &VolumeUri, state: &Attachment) -> Backend {
    let implementations = match state.mode {
        Mode::Krbd | Mode::Nbd => {
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

/// The clients watching the image head (its open mappings and daemons, on every host).
fn watchers(uri: &VolumeUri) -> Result<Vec<rbd::Watcher>, OpError> {
    Ok(rbd::watchers(&uri.conn, &head(uri))?)
}

/// The one client among `after` that was not in `before`, if there is exactly one: the
/// mapping or daemon just opened here (a client opened elsewhere at the same moment makes
/// it ambiguous: then none is named and a takeover relies on the exclusive-lock owner).
fn new_client(before: &[rbd::Watcher], after: &[rbd::Watcher]) -> Option<u64> {
    let new: BTreeSet<u64> =
        after.iter().map(|w| w.client).filter(|c| !before.iter().any(|b| b.client == *c)).collect();
    (new.len() == 1).then(|| new.into_iter().next()).flatten()
}

/// Maps the volume in a block-device mode (unless this host already has it mapped) and
/// records the device and its client.
fn map(host: &Host, uri: &VolumeUri, held: &Held, state: &mut Attachment) -> Result<(), OpError> {
    let read_only = uri.snap.is_some();
    let image = uri.image_spec();
    match state.mode {
        Mode::Krbd => {
            if let Some(found) = krbd::find(&host.sysfs, &uri.pool, &uri.namespace, &uri.image, uri.snap.as_deref()) {
                state.device = Some(found.device().display().to_string());
                state.client = found.client;
                return Ok(());
            }
            state.mapping = true;
            held.save(state)?;
            let device = krbd::map(&uri.conn, &image.to_string(), read_only)?;
            state.client =
                krbd::mappings(&host.sysfs).into_iter().find(|m| m.device() == device).and_then(|m| m.client);
            state.device = Some(device.display().to_string());
        }
        Mode::Nbd => {
            if let Some(found) = nbd::mappings(&uri.conn)?.into_iter().find(|m| m.is_of(&image)) {
                state.device = Some(found.device);
                return Ok(());
            }
            state.mapping = true;
            held.save(state)?;
            let before = if read_only { Vec::new() } else { watchers(uri)? };
            let device = nbd::map(&uri.conn, &image, read_only)?;
            state.device = Some(device.display().to_string());
            if !read_only {
                state.client = new_client(&before, &watchers(uri)?);
            }
        }
        Mode::Qsd => {}
    }
    state.mapping = false;
    info!(volume = %uri.volume, mode = state.mode.name(), device = state.device.as_deref().unwrap_or(""), "mapped");
    Ok(())
}

/// `Datapath.attach`: makes the volume reachable on this host in its mode (chosen now if
/// this host holds nothing of it yet; block-device modes map it) and counts the (uri,
/// domain) reference. Not exclusive; idempotent. A failed first attach leaves nothing.
pub fn attach(host: &Host, uri: &VolumeUri, domain: &str) -> Result<Backend, OpError> {
    let held = Held::open(host, uri.volume, lock_limit(uri))?;
    let existing = held.load();
    let first = existing.is_none();
    let mut state = match existing {
        Some(state) => state,
        None => Attachment {
            uri: uri.render(),
            mode: mode_for(host, uri)?,
            domains: BTreeSet::new(),
            device: None,
            mapping: false,
            client: None,
            active: None,
        },
    };
    if state.device.is_none() {
        if let Err(e) = map(host, uri, &held, &mut state) {
            if first {
                // Nothing is held: nothing may stay (a later attach chooses afresh).
                release(host, &uri.conn, uri, &mut state);
            } else {
                state.mapping = false;
            }
            held.save(&state)?;
            return Err(e);
        }
    }
    state.domains.insert(domain.to_owned());
    held.save(&state)?;
    info!(volume = %uri.volume, domain, mode = state.mode.name(), references = state.domains.len(), "attached");
    Ok(backend(host, uri, &state))
}

/// True when the mapping or daemon the state records is really there.
fn writer_present(host: &Host, uri: &VolumeUri, state: &Attachment) -> Result<bool, OpError> {
    Ok(match state.mode {
        Mode::Krbd => state
            .device
            .as_deref()
            .is_some_and(|d| krbd::mappings(&host.sysfs).iter().any(|m| m.device().display().to_string() == d)),
        Mode::Nbd => {
            let device = state.device.as_deref().unwrap_or_default();
            nbd::mappings(&uri.conn)?.iter().any(|m| m.device == device)
        }
        Mode::Qsd => qsd::daemon(&host.datapath_dir(), &uri.volume).running().is_some(),
    })
}

/// A writer lock's cookie: `<host> <client ids, comma-separated, or ->`.
fn writer_cookie(host: &Host, client: Option<u64>) -> String {
    let clients = client.map_or_else(|| "-".to_owned(), |c| c.to_string());
    format!("{} {clients}", host.id)
}

/// A cookie's parts: (host, client ids).
fn parse_cookie(cookie: &str) -> (&str, Vec<u64>) {
    let mut words = cookie.split(' ');
    let host = words.next().unwrap_or_default();
    let clients = words.next().unwrap_or("-").split(',').filter_map(|c| c.parse().ok()).collect();
    (host, clients)
}

/// Fences every writer of the image that is not this host's: when another host holds the
/// volume's writer lock (it never deactivated), the clients its cookie names and the
/// image's exclusive-lock owner unless it is ours (only a writer holds that); then breaks
/// the lock (and one of this host's own, left by a crash). Returns how many clients were
/// blocklisted.
fn fence_other_writers(host: &Host, uri: &VolumeUri, ours: &[u64]) -> Result<usize, OpError> {
    let conn = &uri.conn;
    let object = rbd::writer_object(&uri.volume.to_string());
    let holders = rbd::writer_lock_holders(conn, &uri.pool, &uri.namespace, &object)?;
    let foreign: Vec<&rbd::Locker> = holders.iter().filter(|l| parse_cookie(&l.cookie).0 != host.id).collect();
    let mut fenced = 0;
    if !foreign.is_empty() {
        let spec = head(uri);
        let watching = watchers(uri)?;
        let mut addresses: BTreeSet<String> = BTreeSet::new();
        for lock in &foreign {
            let (_, clients) = parse_cookie(&lock.cookie);
            addresses.extend(watching.iter().filter(|w| clients.contains(&w.client)).map(|w| w.address.clone()));
        }
        for owner in rbd::locks(conn, &spec)?.iter().filter(|l| l.is_managed()) {
            let client = owner.locker.trim_start_matches("client.").parse::<u64>().ok();
            if !client.is_some_and(|c| ours.contains(&c)) {
                addresses.insert(owner.address.clone());
            }
        }
        for address in &addresses {
            rbd::blocklist_add(conn, address, FENCE_SECONDS)?;
            warn!(image = %spec, address, "fenced the writer of a host that did not deactivate (blocklisted)");
            fenced += 1;
        }
    }
    for lock in &holders {
        rbd::writer_lock_break(conn, &uri.pool, &uri.namespace, &object, lock)?;
    }
    Ok(fenced)
}

/// Releases this host's writer lock (cookie `cookie`) on the volume, and its object; gone
/// already is fine.
fn release_writer_lock(uri: &VolumeUri, cookie: &str) -> Result<(), OpError> {
    let conn = &uri.conn;
    let object = rbd::writer_object(&uri.volume.to_string());
    let holders = rbd::writer_lock_holders(conn, &uri.pool, &uri.namespace, &object)?;
    for lock in holders.iter().filter(|l| l.cookie == cookie) {
        rbd::writer_lock_break(conn, &uri.pool, &uri.namespace, &object, lock)?;
    }
    if holders.iter().all(|l| l.cookie == cookie) {
        rbd::remove_object(conn, &uri.pool, &uri.namespace, &object)?;
    }
    Ok(())
}

/// `Datapath.activate` (`read_only` false): the exclusive point. Fences the writer of a
/// host that did not deactivate, then takes the image's writer lock (of two hosts
/// activating at once, one fails) and opens it here read-write (snapshots stay read-only).
/// `Datapath.activate_readonly` (`read_only` true): opens it read-only here; fences
/// nobody, takes no lock. Verifies what it reports: the mapping or daemon is there.
/// Idempotent.
pub fn activate(host: &Host, uri: &VolumeUri, domain: &str, read_only: bool) -> Result<(), OpError> {
    let read_only = read_only || uri.snap.is_some();
    let held = Held::open(host, uri.volume, lock_limit(uri))?;
    let Some(mut state) = held.load().filter(|s| !s.domains.is_empty()) else {
        return Err(not_attached(uri));
    };
    if state.active.as_ref().is_some_and(|a| a.read_only == read_only) && writer_present(host, uri, &state)? {
        return Ok(());
    }
    let daemon = qsd::daemon(&host.datapath_dir(), &uri.volume);
    if state.mode == Mode::Qsd {
        // A daemon of another kind (read-only, or dead) goes first: it would be fenced too.
        daemon.stop();
    } else if !writer_present(host, uri, &state)? {
        return Err(OpError::WriterGone { volume: uri.volume.to_string(), mode: state.mode.name() });
    }
    if let Some(old) = state.active.take().and_then(|a| a.lock) {
        release_writer_lock(uri, &old)?;
    }
    let mut lock = None;
    if !read_only {
        match open_writer(host, uri, domain, &daemon, &held, &mut state) {
            Ok(id) => lock = Some(id),
            Err(e) => {
                // Whatever failed (another host won the lock, Ceph timed out), nothing of
                // ours may stay able to write: the daemon stops and a mapping goes (nobody
                // uses it before an activate succeeds); a later activate here says to
                // attach again, and detach still counts the references down.
                let domains = std::mem::take(&mut state.domains);
                release(host, &uri.conn, uri, &mut state);
                state.domains = domains;
                state.active = None;
                held.save(&state)?;
                return Err(e);
            }
        }
    } else if state.mode == Mode::Qsd {
        state.active = Some(Active { domain: domain.to_owned(), read_only, lock: None });
        held.save(&state)?;
        start_daemon(&daemon, uri, read_only, &held, &mut state)?;
    }
    state.active = Some(Active { domain: domain.to_owned(), read_only, lock });
    held.save(&state)?;
    if !writer_present(host, uri, &state)? {
        let gone = OpError::WriterGone { volume: uri.volume.to_string(), mode: state.mode.name() };
        deactivate_held(host, uri, &held, &mut state)?;
        return Err(gone);
    }
    info!(volume = %uri.volume, domain, read_only, mode = state.mode.name(), "activated");
    Ok(())
}

/// The writer's half of [`activate`]: fences the writers of other hosts, starts the daemon
/// (qsd) and takes the writer lock. Returns the lock's cookie.
fn open_writer(
    host: &Host,
    uri: &VolumeUri,
    domain: &str,
    daemon: &qsd::Daemon,
    held: &Held,
    state: &mut Attachment,
) -> Result<String, OpError> {
    let ours: Vec<u64> = state.client.into_iter().collect();
    fence_other_writers(host, uri, &ours)?;
    if state.mode == Mode::Qsd {
        let before = watchers(uri)?;
        // Recorded before the daemon starts, so a crash in between leaves a state the
        // reaper sees.
        state.active = Some(Active { domain: domain.to_owned(), read_only: false, lock: None });
        held.save(state)?;
        start_daemon(daemon, uri, false, held, state)?;
        state.client = new_client(&before, &watchers(uri)?);
    }
    let id = writer_cookie(host, state.client);
    let object = rbd::writer_object(&uri.volume.to_string());
    match rbd::writer_lock_get(&uri.conn, &uri.pool, &uri.namespace, &object, &id) {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == Kind::Busy => Err(OpError::ActivatedElsewhere { volume: uri.volume.to_string() }),
        Err(e) => Err(e.into()),
    }
}

fn start_daemon(
    daemon: &qsd::Daemon,
    uri: &VolumeUri,
    read_only: bool,
    held: &Held,
    state: &mut Attachment,
) -> Result<(), OpError> {
    if let Err(e) = daemon.start(&uri.conn, &uri.image_spec(), read_only) {
        state.active = None;
        held.save(state)?;
        return Err(e.into());
    }
    Ok(())
}

/// `Datapath.deactivate`: closes the volume for writing here: stops the daemon (qsd) and
/// releases the writer lock, so the next host's activate fences nobody. The device of a
/// block-device mode stays mapped until detach. Deactivating what is not active succeeds.
pub fn deactivate(host: &Host, uri: &VolumeUri, domain: &str) -> Result<(), OpError> {
    let held = Held::open(host, uri.volume, lock_limit(uri))?;
    let Some(mut state) = held.load() else { return Ok(()) };
    deactivate_held(host, uri, &held, &mut state)?;
    info!(volume = %uri.volume, domain, "deactivated");
    Ok(())
}

fn deactivate_held(host: &Host, uri: &VolumeUri, held: &Held, state: &mut Attachment) -> Result<(), OpError> {
    if state.mode == Mode::Qsd {
        qsd::daemon(&host.datapath_dir(), &uri.volume).stop();
    }
    if let Some(lock) = state.active.as_ref().and_then(|a| a.lock.clone()) {
        release_writer_lock(uri, &lock)?;
    }
    state.active = None;
    held.save(state)
}

/// `Datapath.detach`: drops the (uri, domain) reference; the last one stops the daemon,
/// releases the writer lock and unmaps the device. Never fails: what cannot be undone now
/// (an unmap of a device still open) is logged and kept in the state, and the reaper
/// ([`reap`], run by `SR.attach` and the check's repair) retries it. Takes the URI as xapi
/// sent it: even a URI that cannot be parsed is not an error here.
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
        release(host, &uri.conn, uri, &mut state);
    }
    held.save(&state)?;
    info!(volume = %uri.volume, domain, references = state.domains.len(), "detached");
    Ok(())
}

/// Releases everything this host holds of a volume nobody holds any more: the daemon, the
/// writer lock, the device (a normal unmap, then a forced one: the client of a fenced
/// mapping no longer answers). What fails stays in the state for the reaper.
fn release(host: &Host, conn: &Conn, uri: &VolumeUri, state: &mut Attachment) {
    qsd::daemon(&host.datapath_dir(), &uri.volume).stop();
    if let Some(lock) = state.active.take().and_then(|a| a.lock) {
        if let Err(e) = release_writer_lock(uri, &lock) {
            warn!(volume = %uri.volume, "writer lock not released: {}", chain(&e));
        }
    }
    let Some(device) = state.device.take() else { return };
    let unmapped = match state.mode {
        Mode::Krbd => {
            let mapped = krbd::mappings(&host.sysfs).iter().any(|m| m.device().display().to_string() == device);
            !mapped
                || krbd::unmap(conn, Path::new(&device), false)
                    .or_else(|e| {
                        warn!(device, "unmap failed, forcing it: {}", chain(&e));
                        krbd::unmap(conn, Path::new(&device), true)
                    })
                    .map_err(|e| warn!(device, "unmap failed, left for the reaper: {}", chain(&e)))
                    .is_ok()
        }
        Mode::Nbd => match nbd::mappings(conn) {
            Ok(list) if !list.iter().any(|m| m.device == device) => true,
            _ => nbd::unmap(conn, Path::new(&device))
                .map_err(|e| warn!(device, "unmap failed, left for the reaper: {}", chain(&e)))
                .is_ok(),
        },
        Mode::Qsd => true,
    };
    if unmapped {
        state.client = None;
    } else {
        state.device = Some(device);
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

/// Something a crash or a failed call left on this host for one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// The volume is recorded as active in userspace mode, but its daemon is dead.
    DeadDaemon(Uuid),
    /// A daemon runs for a volume this host does not hold active.
    OrphanDaemon(Uuid),
    /// A map was interrupted: `device` was mapped but never recorded (`None`: the map never
    /// happened, only the record of it is left).
    InterruptedMap {
        /// The volume.
        volume: Uuid,
        /// The mapping found, if any.
        device: Option<String>,
        /// True when nobody holds the volume, so the mapping must go; false when it only
        /// has to be recorded.
        unused: bool,
    },
    /// The last detach could not unmap this device: the unmap is retried.
    UnmapPending {
        /// The volume.
        volume: Uuid,
        /// The device.
        device: String,
    },
    /// Recorded active, but its mapping or daemon is gone: the activation (and its writer
    /// lock) is dropped.
    WriterGone(Uuid),
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
            Leftover::UnmapPending { volume, device } => {
                write!(f, "volume {volume}: {device} should have been unmapped at the last detach")
            }
            Leftover::WriterGone(v) => write!(f, "volume {v}: recorded active, its mapping or daemon is gone"),
        }
    }
}

/// What crashes left on this host for volumes of `sr`, without changing anything.
pub fn survey(host: &Host, sr: &SrUri) -> Result<Vec<Leftover>, OpError> {
    let mut found = Vec::new();
    for volume in attachments::volumes(host) {
        let held = Held::open(host, volume, sr.conn.timeout)?;
        found.extend(leftovers(host, sr, volume, &held)?);
    }
    Ok(found)
}

fn leftovers(host: &Host, sr: &SrUri, volume: Uuid, held: &Held) -> Result<Vec<Leftover>, OpError> {
    let daemon = qsd::daemon(&host.datapath_dir(), &volume);
    let Some(state) = held.load() else {
        return Ok(daemon.running().map(|_| Leftover::OrphanDaemon(volume)).into_iter().collect());
    };
    let Ok(uri) = VolumeUri::parse(&state.uri) else { return Ok(Vec::new()) };
    if uri.pool != sr.pool || uri.namespace != sr.namespace {
        return Ok(Vec::new());
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
        let device = match state.mode {
            Mode::Krbd => krbd::find(&host.sysfs, &uri.pool, &uri.namespace, &uri.image, uri.snap.as_deref())
                .map(|m| m.device().display().to_string()),
            Mode::Nbd => nbd::mappings(&uri.conn)?.into_iter().find(|m| m.is_of(&uri.image_spec())).map(|m| m.device),
            Mode::Qsd => None,
        };
        let unused = state.device.is_none() && state.domains.is_empty();
        found.push(Leftover::InterruptedMap { volume, device, unused });
    } else if let (Some(device), true) = (&state.device, state.domains.is_empty()) {
        found.push(Leftover::UnmapPending { volume, device: device.clone() });
    } else if state.mode != Mode::Qsd && state.active.is_some() && !writer_present(host, &uri, &state)? {
        found.push(Leftover::WriterGone(volume));
    }
    Ok(found)
}

/// Cleans what crashes and failed calls left on this host for volumes of `sr`
/// ([`survey`]): activations whose daemon or mapping died, daemons with no activation,
/// mappings made by an interrupted attach, unmaps that failed. Called by `SR.attach` and
/// the consistency check's repair; returns what it cleaned.
pub fn reap(host: &Host, sr: &SrUri) -> Result<Vec<Leftover>, OpError> {
    let mut reaped = Vec::new();
    for volume in attachments::volumes(host) {
        let held = Held::open(host, volume, sr.conn.timeout)?;
        let found = leftovers(host, sr, volume, &held)?;
        if found.is_empty() {
            continue;
        }
        let daemon = qsd::daemon(&host.datapath_dir(), &volume);
        let mut state = held.load();
        for leftover in &found {
            let Some(state) = state.as_mut() else {
                daemon.stop();
                continue;
            };
            let uri = VolumeUri::parse(&state.uri)?;
            match leftover {
                Leftover::DeadDaemon(_) | Leftover::OrphanDaemon(_) | Leftover::WriterGone(_) => {
                    daemon.stop();
                    if !matches!(leftover, Leftover::OrphanDaemon(_)) {
                        if let Some(lock) = state.active.take().and_then(|a| a.lock) {
                            release_writer_lock(&uri, &lock)?;
                        }
                    }
                }
                Leftover::InterruptedMap { device, unused, .. } => {
                    match (device, unused) {
                        (Some(device), true) => {
                            state.device = Some(device.clone());
                            release(host, &uri.conn, &uri, state);
                        }
                        (Some(device), false) => state.device = Some(device.clone()),
                        (None, _) => {}
                    }
                    state.mapping = false;
                }
                Leftover::UnmapPending { .. } => release(host, &uri.conn, &uri, state),
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

/// Who holds a volume's image open, for a destroy that must refuse: each watcher, and
/// whether this host's own state explains it. Before answering, what this host holds of
/// the volume without a domain (a leftover) is released, so a stale mapping of ours never
/// blocks a destroy. Empty when nobody holds it (any more).
pub fn holders(host: &Host, sr: &SrUri, volume: Uuid, image: &str) -> Result<Vec<String>, OpError> {
    let spec = sr.spec(image);
    if !attachments::volumes(host).contains(&volume) {
        return describe(sr, &spec, None);
    }
    let held = Held::open(host, volume, sr.conn.timeout)?;
    let mut state = held.load();
    if let Some(state) = state.as_mut().filter(|s| s.domains.is_empty()) {
        if let Ok(uri) = VolumeUri::parse(&state.uri) {
            release(host, &uri.conn, &uri, state);
            held.save(state)?;
        }
    }
    describe(sr, &spec, held.load().as_ref())
}

fn describe(sr: &SrUri, spec: &str, state: Option<&Attachment>) -> Result<Vec<String>, OpError> {
    Ok(rbd::watchers(&sr.conn, spec)?
        .iter()
        .map(|w| match state {
            Some(s) if s.client == Some(w.client) => format!(
                "client.{} at {} (this host's {} of it, held by domains {})",
                w.client,
                w.address,
                s.mode.name(),
                s.domains.iter().cloned().collect::<Vec<_>>().join(",")
            ),
            _ => format!("client.{} at {}", w.client, w.address),
        })
        .collect())
}
