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
//! Host state lives in `<run dir>/dp/<volume>.json` (see [`crate::lock::run_dir`]),
//! changed under a per-volume lock; the run dir is cleared at reboot, like the mappings and
//! daemons it describes.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use tracing::{info, warn};
use uuid::Uuid;

use crate::ceph::Conn;
use crate::error::{chain, OpError, RequestError};
use crate::exec::Ctx;
use crate::krbd;
use crate::qsd;
use crate::uri::{SrUri, VolumeUri};

/// How long a blocklist entry lasts (seconds): long enough for any stale writer to be
/// killed by its own host.
pub const FENCE_SECONDS: u32 = 3600;

/// Arguments of the calls that take a URI and a domain.
#[derive(Debug, Deserialize)]
pub struct UriDomain {
    /// The volume URI from `Volume.stat`.
    pub uri: String,
    /// The domain (a domid, or `u0_…` for dom0 on newer xapi).
    pub domain: String,
}

/// `Datapath.open` arguments.
#[derive(Debug, Deserialize)]
pub struct OpenArgs {
    /// The volume URI.
    pub uri: String,
    /// False asks for writes to be discarded at close.
    pub persistent: bool,
}

/// `Datapath.close` arguments.
#[derive(Debug, Deserialize)]
pub struct CloseArgs {
    /// The volume URI.
    pub uri: String,
}

/// One `implementation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Implementation {
    /// `XenDisk`: the backend xenopsd configures.
    XenDisk {
        /// xenstore `params`.
        params: String,
        /// Backend kind (`vbd`, `vbd3`, `qdisk`).
        backend_type: String,
    },
    /// `BlockDevice`: a dom0 block device.
    BlockDevice {
        /// Its path.
        path: String,
    },
    /// `Nbd`: an NBD export.
    Nbd {
        /// `nbd:unix:<socket>:exportname=<name>`.
        uri: String,
    },
}

impl Serialize for Implementation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(2))?;
        match self {
            Implementation::XenDisk { params, backend_type } => {
                seq.serialize_element("XenDisk")?;
                seq.serialize_element(
                    &serde_json::json!({"params": params, "extra": {}, "backend_type": backend_type}),
                )?;
            }
            Implementation::BlockDevice { path } => {
                seq.serialize_element("BlockDevice")?;
                seq.serialize_element(&serde_json::json!({ "path": path }))?;
            }
            Implementation::Nbd { uri } => {
                seq.serialize_element("Nbd")?;
                seq.serialize_element(&serde_json::json!({ "uri": uri }))?;
            }
        }
        seq.end()
    }
}

/// The `backend` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// At least one XenDisk, then the device or export.
    pub implementations: Vec<Implementation>,
}

/// How a volume reaches this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Kernel RBD.
    Krbd,
    /// qemu-storage-daemon.
    Qsd,
}

impl Mode {
    fn of(uri: &VolumeUri) -> Mode {
        if uri.scheme == "cephrbd+krbd" {
            Mode::Krbd
        } else {
            Mode::Qsd
        }
    }
}

/// The activation of a volume on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// The domain that activated it.
    pub domain: String,
    /// Read-only (snapshot or `activate_readonly`).
    pub read_only: bool,
}

/// What this host holds of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The URI of the first attach.
    pub uri: String,
    /// The mode.
    pub mode: Mode,
    /// The domains holding an attach (the reference count).
    #[serde(default)]
    pub domains: BTreeSet<String>,
    /// Kernel mode: the device, once mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Kernel mode: set while a map is under way (a crash in between leaves it for
    /// [`reap`] to find).
    #[serde(default)]
    pub mapping: bool,
    /// The activation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Active>,
}

/// Where per-volume datapath state lives.
pub fn state_dir() -> PathBuf {
    crate::lock::run_dir().join("dp")
}

/// The sysfs root (`CEPHRBD_SYSFS` overrides it for tests).
pub fn sysfs() -> PathBuf {
    std::env::var_os("CEPHRBD_SYSFS").map_or_else(|| PathBuf::from("/sys"), PathBuf::from)
}

fn local(path: &Path) -> impl Fn(std::io::Error) -> OpError + '_ {
    move |source| OpError::LocalState { path: path.display().to_string(), source }
}

/// One volume's state file, locked for the duration of a call.
struct Locked {
    path: PathBuf,
    _lock: File,
}

impl Locked {
    fn open(dir: &Path, volume: Uuid, limit: Duration) -> Result<Locked, OpError> {
        let lock = crate::lock::lock_file(&dir.join(format!("{volume}.lock")), limit, &format!("volume {volume}"))?;
        Ok(Locked { path: dir.join(format!("{volume}.json")), _lock: lock })
    }

    fn load(&self) -> Option<Attachment> {
        let text = fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the state (atomically), or removes it when nothing is held any more.
    fn save(&self, state: &Attachment) -> Result<(), OpError> {
        if state.domains.is_empty() && state.device.is_none() && !state.mapping && state.active.is_none() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(local(&self.path)(e)),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(state).expect("state serializes")).map_err(local(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(local(&self.path))
    }
}

fn parse(uri: &str) -> Result<VolumeUri, OpError> {
    Ok(VolumeUri::parse(uri)?)
}

fn spec(uri: &VolumeUri) -> String {
    // `pool//image` is not a valid spec: the default namespace is left out.
    let mut spec = if uri.namespace.is_empty() {
        format!("{}/{}", uri.pool, uri.image)
    } else {
        format!("{}/{}/{}", uri.pool, uri.namespace, uri.image)
    };
    if let Some(snap) = &uri.snap {
        spec.push('@');
        spec.push_str(snap);
    }
    spec
}

fn lock_limit(uri: &VolumeUri) -> Duration {
    uri.conn.timeout.saturating_mul(4)
}

fn backend(uri: &VolumeUri, state: &Attachment) -> Backend {
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
            Implementation::Nbd { uri: qsd::daemon(&state_dir(), &uri.volume).nbd_uri() },
        ],
    };
    Backend { implementations }
}

/// `Datapath.attach`: makes the volume reachable on this host (kernel mode: maps it) and
/// counts the (uri, domain) reference. Not exclusive; idempotent.
pub fn attach(_ctx: &Ctx, req: UriDomain) -> Result<Backend, OpError> {
    let uri = parse(&req.uri)?;
    let mode = Mode::of(&uri);
    let locked = Locked::open(&state_dir(), uri.volume, lock_limit(&uri))?;
    let mut state = locked.load().unwrap_or_else(|| Attachment {
        uri: req.uri.clone(),
        mode,
        domains: BTreeSet::new(),
        device: None,
        mapping: false,
        active: None,
    });
    if state.mode != mode {
        return Err(RequestError::BadUri {
            what: "volume",
            uri: req.uri,
            reason: format!("already attached on this host through {:?} mode", state.mode),
        }
        .into());
    }
    if mode == Mode::Krbd {
        let sysfs = sysfs();
        let found = krbd::find(&sysfs, &uri.pool, &uri.namespace, &uri.image, uri.snap.as_deref());
        state.device = match found {
            Some(mapping) => Some(mapping.device().display().to_string()),
            None => {
                state.mapping = true;
                locked.save(&state)?;
                let device = krbd::map(&uri.conn, &spec(&uri), uri.snap.is_some())?;
                info!(device = %device.display(), "mapped");
                Some(device.display().to_string())
            }
        };
        state.mapping = false;
    }
    state.domains.insert(req.domain.clone());
    locked.save(&state)?;
    info!(volume = %uri.volume, domain = %req.domain, references = state.domains.len(), "attached");
    Ok(backend(&uri, &state))
}

/// `Datapath.activate`: the exclusive point. Fences every other writer of the image, then
/// opens it here read-write (snapshots stay read-only). Idempotent.
pub fn activate(_ctx: &Ctx, req: UriDomain) -> Result<(), OpError> {
    activate_as(&req, false)
}

/// `Datapath.activate_readonly`: opens the volume read-only here; fences nobody.
pub fn activate_readonly(_ctx: &Ctx, req: UriDomain) -> Result<(), OpError> {
    activate_as(&req, true)
}

fn activate_as(req: &UriDomain, read_only: bool) -> Result<(), OpError> {
    let uri = parse(&req.uri)?;
    let read_only = read_only || uri.snap.is_some();
    let locked = Locked::open(&state_dir(), uri.volume, lock_limit(&uri))?;
    let Some(mut state) = locked.load().filter(|s| !s.domains.is_empty()) else {
        return Err(RequestError::BadUri {
            what: "volume",
            uri: req.uri.clone(),
            reason: "not attached on this host: Datapath.attach comes first".to_owned(),
        }
        .into());
    };
    if state.active.as_ref().is_some_and(|a| a.read_only == read_only) {
        return Ok(());
    }
    let daemon = qsd::daemon(&state_dir(), &uri.volume);
    if !read_only {
        let own = match state.mode {
            Mode::Krbd => krbd::find(&sysfs(), &uri.pool, &uri.namespace, &uri.image, None).and_then(|m| m.client),
            Mode::Qsd => None,
        };
        // A read-only daemon of ours must go before we fence: it would be fenced too.
        daemon.stop();
        fence(&uri.conn, &spec(&uri), own)?;
    }
    // Recorded before the daemon starts, so a crash in between leaves a state reap() sees.
    state.active = Some(Active { domain: req.domain.clone(), read_only });
    locked.save(&state)?;
    if state.mode == Mode::Qsd {
        if let Err(e) = daemon.start(&uri, read_only) {
            state.active = None;
            locked.save(&state)?;
            return Err(e.into());
        }
    }
    info!(volume = %uri.volume, domain = %req.domain, read_only, "activated");
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Watcher {
    address: String,
    client: u64,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    watchers: Vec<Watcher>,
}

/// Blocklists every client watching `spec` except `own`: after this, a stale writer
/// elsewhere cannot write to the image, whatever it does.
pub fn fence(conn: &Conn, spec: &str, own: Option<u64>) -> Result<usize, OpError> {
    let status: Status = conn.rbd_json(&format!("image {spec}"), &["status", spec], "{}")?;
    let mut fenced = 0;
    for w in status.watchers.iter().filter(|w| Some(w.client) != own) {
        conn.ceph(
            &format!("client {}", w.address),
            &["osd", "blocklist", "add", &w.address, &FENCE_SECONDS.to_string()],
        )?;
        warn!(image = spec, client = w.client, address = %w.address, "fenced a previous user of the image (blocklisted)");
        fenced += 1;
    }
    Ok(fenced)
}

/// `Datapath.deactivate`: closes the volume here (stops the daemon). Deactivating what is
/// not active succeeds.
pub fn deactivate(_ctx: &Ctx, req: UriDomain) -> Result<(), OpError> {
    let uri = parse(&req.uri)?;
    let locked = Locked::open(&state_dir(), uri.volume, lock_limit(&uri))?;
    let Some(mut state) = locked.load() else { return Ok(()) };
    qsd::daemon(&state_dir(), &uri.volume).stop();
    state.active = None;
    locked.save(&state)?;
    info!(volume = %uri.volume, domain = %req.domain, "deactivated");
    Ok(())
}

/// `Datapath.detach`: drops the (uri, domain) reference; the last one stops the daemon and
/// unmaps the device. Never fails: what cannot be undone now is logged and left for
/// [`reap`].
pub fn detach(_ctx: &Ctx, req: UriDomain) -> Result<(), OpError> {
    if let Err(e) = detach_inner(&req) {
        warn!(uri = %req.uri, domain = %req.domain, "detach left something behind: {}", chain(&e));
    }
    Ok(())
}

fn detach_inner(req: &UriDomain) -> Result<(), OpError> {
    let uri = parse(&req.uri)?;
    let locked = Locked::open(&state_dir(), uri.volume, lock_limit(&uri))?;
    let Some(mut state) = locked.load() else { return Ok(()) };
    state.domains.remove(&req.domain);
    if state.domains.is_empty() {
        release(&uri.conn, &uri.volume, &mut state);
    }
    locked.save(&state)?;
    info!(volume = %uri.volume, domain = %req.domain, references = state.domains.len(), "detached");
    Ok(())
}

/// Stops the daemon and unmaps the device of a volume nobody holds any more.
fn release(conn: &Conn, volume: &Uuid, state: &mut Attachment) {
    qsd::daemon(&state_dir(), volume).stop();
    state.active = None;
    if let Some(device) = state.device.take() {
        let still_there = krbd::mappings(&sysfs()).iter().any(|m| m.device().display().to_string() == device);
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
pub fn open(_ctx: &Ctx, req: OpenArgs) -> Result<(), OpError> {
    parse(&req.uri)?;
    if req.persistent {
        Ok(())
    } else {
        Err(RequestError::UnknownMethod {
            name: "Datapath.open with persistent=false".to_owned(),
            known: "persistent=true (reset-on-boot uses Volume.clone)".to_owned(),
        }
        .into())
    }
}

/// `Datapath.close`: nothing to do.
pub fn close(_ctx: &Ctx, req: CloseArgs) -> Result<(), OpError> {
    parse(&req.uri)?;
    Ok(())
}

/// What [`reap`] cleaned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Activations whose daemon had died.
    pub dead_daemons: usize,
    /// Daemons running without an activation.
    pub orphan_daemons: usize,
    /// Mappings left by an interrupted map.
    pub mappings: usize,
}

/// Cleans what crashes left on this host for volumes of `sr`: activations whose daemon
/// died, daemons with no activation, mappings made by an interrupted attach. Called by
/// `SR.attach`.
pub fn reap(sr: &SrUri) -> Result<Reaped, OpError> {
    let dir = state_dir();
    let mut reaped = Reaped::default();
    let Ok(entries) = fs::read_dir(&dir) else { return Ok(reaped) };
    let mut volumes: BTreeSet<Uuid> = BTreeSet::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".json").or_else(|| name.strip_suffix(".pid")) {
            if let Ok(u) = Uuid::try_parse(id) {
                volumes.insert(u);
            }
        }
    }
    for volume in volumes {
        let locked = Locked::open(&dir, volume, sr.conn.timeout)?;
        let daemon = qsd::daemon(&dir, &volume);
        let Some(mut state) = locked.load() else {
            if daemon.running().is_some() {
                daemon.stop();
                reaped.orphan_daemons += 1;
            }
            continue;
        };
        let Ok(uri) = VolumeUri::parse(&state.uri) else { continue };
        if uri.pool != sr.pool || uri.namespace != sr.namespace {
            continue;
        }
        if state.mode == Mode::Qsd {
            match (&state.active, daemon.running()) {
                (Some(_), None) => {
                    daemon.stop();
                    state.active = None;
                    reaped.dead_daemons += 1;
                }
                (None, Some(_)) => {
                    daemon.stop();
                    reaped.orphan_daemons += 1;
                }
                _ => {}
            }
        }
        if state.mapping {
            if let Some(m) = krbd::find(&sysfs(), &uri.pool, &uri.namespace, &uri.image, uri.snap.as_deref()) {
                if state.device.is_none() && state.domains.is_empty() {
                    krbd::unmap(&uri.conn, &m.device())?;
                    reaped.mappings += 1;
                } else {
                    state.device = Some(m.device().display().to_string());
                }
            }
            state.mapping = false;
        }
        locked.save(&state)?;
    }
    if reaped != Reaped::default() {
        info!(?reaped, sr = %sr.uuid, "reaped what crashes left on this host");
    }
    Ok(reaped)
}
