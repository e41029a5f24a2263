//! Typed wrappers over the `rbd` and `ceph` subcommands cephrbd uses, one function each.
//!
//! Each takes the [`Conn`] and an image spec (`pool/namespace/image[@snap]`) and returns a
//! typed value. Every option value is written `--name=value`, one argument, so no value can
//! be read as an option; positional specs start with a pool name, which device-config and
//! URI parsing refuse to start with `-`. Idempotent primitives say what happened ([`Action`]): deleting what is
//! already gone, or protecting what is already protected, is `Identity`, not an error, so
//! every operation can be retried after a partial failure.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tracing::{debug, warn};

use super::{CephError, Conn, Kind};

/// What an idempotent step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It changed something (created, deleted, protected…).
    Done,
    /// It was already so; nothing changed.
    Identity,
}

fn identity_if(result: Result<(), CephError>, kind: Kind, step: &str) -> Result<Action, CephError> {
    match result {
        Ok(()) => Ok(Action::Done),
        Err(e) if e.kind() == kind => {
            debug!(step, "already done: {e}");
            Ok(Action::Identity)
        }
        Err(e) => Err(e),
    }
}

fn run(conn: &Conn, what: &str, args: &[&str]) -> Result<(), CephError> {
    conn.rbd(what, args).map(drop)
}

/// `rbd create --size=<bytes>B --image-feature=… <spec>`.
pub fn create(conn: &Conn, spec: &str, size: u64, features: &[String]) -> Result<(), CephError> {
    let size = format!("--size={size}B");
    let features = format!("--image-feature={}", features.join(","));
    run(conn, &format!("image {spec}"), &["create", &size, &features, spec])
}

/// `rbd rm <spec>`; `Identity` if it is already gone.
pub fn remove(conn: &Conn, spec: &str) -> Result<Action, CephError> {
    identity_if(run(conn, &format!("image {spec}"), &["rm", "--no-progress", spec]), Kind::NotFound, "rm")
}

/// `rbd resize --size=<bytes>B <spec>` (never shrinks: rbd refuses without --allow-shrink).
pub fn resize(conn: &Conn, spec: &str, size: u64) -> Result<(), CephError> {
    let size = format!("--size={size}B");
    run(conn, &format!("image {spec}"), &["resize", "--no-progress", &size, spec])
}

/// `rbd snap create <spec>@<snap>`. No `--no-progress`: Nautilus (14.2, the dom0 client)
/// does not know it for `snap create`, and newer clients print progress on stderr only.
pub fn snap_create(conn: &Conn, snap_spec: &str) -> Result<(), CephError> {
    run(conn, &format!("snapshot {snap_spec}"), &["snap", "create", snap_spec])
}

/// `rbd snap protect`; `Identity` if already protected.
pub fn snap_protect(conn: &Conn, snap_spec: &str) -> Result<Action, CephError> {
    identity_if(run(conn, &format!("snapshot {snap_spec}"), &["snap", "protect", snap_spec]), Kind::Busy, "protect")
}

/// `rbd snap unprotect`; `Identity` if not protected (EINVAL) or gone.
pub fn snap_unprotect(conn: &Conn, snap_spec: &str) -> Result<Action, CephError> {
    let result = run(conn, &format!("snapshot {snap_spec}"), &["snap", "unprotect", snap_spec]);
    match identity_if(result, Kind::Invalid, "unprotect") {
        Err(e) if e.kind() == Kind::NotFound => Ok(Action::Identity),
        other => other,
    }
}

/// `rbd snap rm`; `Identity` if already gone.
pub fn snap_remove(conn: &Conn, snap_spec: &str) -> Result<Action, CephError> {
    identity_if(
        run(conn, &format!("snapshot {snap_spec}"), &["snap", "rm", "--no-progress", snap_spec]),
        Kind::NotFound,
        "snap rm",
    )
}

/// `rbd clone <parent@snap> <child>` with the child's features.
pub fn clone(conn: &Conn, snap_spec: &str, child: &str, features: &[String]) -> Result<(), CephError> {
    let features = format!("--image-feature={}", features.join(","));
    run(conn, &format!("image {child}"), &["clone", &features, snap_spec, child])
}

/// One snapshot of an image (`rbd snap ls --format json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Snap {
    /// Its name.
    pub name: String,
    /// "true"/"false" as a string (sic).
    #[serde(default)]
    pub protected: String,
    /// When it was taken, as `rbd` prints it (`Mon Nov 30 10:13:26 2026`, UTC: the runner
    /// sets `TZ=UTC`); see [`parse_time`].
    #[serde(default)]
    pub timestamp: String,
}

/// What `rbd info --format json` says of an image (the fields cephrbd reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    /// The image id (its name in the trash, and in `rbd_header.<id>`).
    pub id: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its features.
    #[serde(default)]
    pub features: Vec<String>,
    /// When it was created, as `rbd` prints it; see [`parse_time`].
    #[serde(default)]
    pub create_timestamp: String,
}

/// `rbd info <spec>`.
pub fn info(conn: &Conn, spec: &str) -> Result<Info, CephError> {
    conn.rbd_json(&format!("image {spec}"), &["info", spec], "null")
}

/// Parses a time as Ceph's tools print it in the C locale and UTC
/// (`Mon Nov 30 10:13:26 2026`, ctime's format); `None` if it is not one.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = common::ceph::rbd::parse_time("Thu Jan  1 00:01:40 1970").expect("parses");
/// assert_eq!(t, UNIX_EPOCH + Duration::from_secs(100));
/// ```
pub fn parse_time(text: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let words: Vec<&str> = text.split_whitespace().collect();
    let [_, month, day, clock, year] = words.as_slice() else { return None };
    let month = i64::try_from(MONTHS.iter().position(|m| m == month)?).ok()? + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// `rbd snap ls`: every user snapshot of an image.
pub fn snap_ls(conn: &Conn, spec: &str) -> Result<Vec<Snap>, CephError> {
    conn.rbd_json(&format!("image {spec}"), &["snap", "ls", spec], "[]")
}

/// A child image of a snapshot (`rbd children --format json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Child {
    /// The child's image name.
    pub image: String,
}

/// `rbd children --all <spec@snap>`: the clones of a snapshot, those in the trash included
/// (a clone in the trash still keeps its parent snapshot protected).
pub fn children(conn: &Conn, snap_spec: &str) -> Result<Vec<Child>, CephError> {
    conn.rbd_json(&format!("snapshot {snap_spec}"), &["children", "--all", snap_spec], "[]")
}

/// `rbd ls <pool>/<namespace>`: every image name in a namespace.
pub fn ls(conn: &Conn, pool: &str, namespace: &str) -> Result<Vec<String>, CephError> {
    conn.rbd_json(
        &format!("namespace {pool}/{namespace}"),
        &["ls", &format!("--pool={pool}"), &format!("--namespace={namespace}")],
        "[]",
    )
}

/// One entry of `rbd du --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Usage {
    /// The image.
    pub name: String,
    /// The snapshot, for a snapshot's own usage.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Bytes used.
    pub used_size: u64,
}

#[derive(Debug, Deserialize)]
struct DuOutput {
    #[serde(default)]
    images: Vec<Usage>,
}

/// `rbd du` of one namespace, or of one image (`image` = its spec): used bytes of every
/// image and snapshot (cheap with fast-diff).
pub fn du(conn: &Conn, pool: &str, namespace: &str, image: Option<&str>) -> Result<Vec<Usage>, CephError> {
    let out: DuOutput = match image {
        Some(spec) => conn.rbd_json(&format!("image {spec}"), &["du", spec], "{}")?,
        None => conn.rbd_json(
            &format!("namespace {pool}/{namespace}"),
            &["du", &format!("--pool={pool}"), &format!("--namespace={namespace}")],
            "{}",
        )?,
    };
    Ok(out.images)
}

/// One extent of `rbd diff --format json`: a byte range whose data may differ between the
/// two points in time compared. `exists` is `"false"` where the range was discarded or
/// zeroed (still a change); both kinds count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct DiffExtent {
    /// The first byte.
    pub offset: u64,
    /// How many bytes.
    pub length: u64,
}

/// How many RADOS requests `rbd diff` keeps in flight (librbd's
/// `rbd_concurrent_management_ops`, default 10). Without fast-diff librbd asks about every
/// object of the image, one request each, so the diff is bound by round trips: measured on
/// the test cluster at 100 GiB (25 600 objects), 10 took 1.6–1.8 s, 128 took 0.9–1.0 s,
/// 256 and 512 no better; Nautilus 14.2's `rbd` takes the option and gains the same. On a
/// real cluster, where each request costs a network round trip, the gain is larger. The
/// requests are small metadata reads (an object's snapshot list).
pub const DIFF_CONCURRENCY: &str = "128";

/// `rbd diff --from-snap <from> [--whole-object] <spec>`: the extents of `spec` (an image
/// head or `image@snap`) whose data may differ from the same image's snapshot `from`,
/// computed from RADOS metadata (object snapshot overlaps, or with `whole_object` and
/// fast-diff the object maps), never by reading data. Both forms give a superset of the
/// bytes that differ, never less: the exact form at the granularity of written extents
/// (measured: the start of a newly created object to the end of what was written in it),
/// `whole_object` at the granularity of RADOS objects (4 MiB by default). Without a valid
/// object map librbd visits every object of the image, with or without `whole_object`
/// ([`DIFF_CONCURRENCY`] requests at a time).
///
/// `from` must be older than `spec`'s snapshot: otherwise librbd refuses with EINVAL
/// ([`Kind::Invalid`]). Nautilus 14.2 (dom0's client) accepts the same arguments and prints
/// the same JSON.
pub fn diff(conn: &Conn, from: &str, spec: &str, whole_object: bool) -> Result<Vec<DiffExtent>, CephError> {
    let mut args = vec!["--rbd-concurrent-management-ops", DIFF_CONCURRENCY, "diff", "--from-snap", from];
    if whole_object {
        args.push("--whole-object");
    }
    args.push(spec);
    conn.rbd_json(&format!("changes of {spec} since {from}"), &args, "[]")
}

/// `rbd namespace create`; `Identity` if it exists.
pub fn namespace_create(conn: &Conn, pool: &str, namespace: &str) -> Result<Action, CephError> {
    let what = format!("namespace {pool}/{namespace}");
    identity_if(
        run(conn, &what, &["namespace", "create", &format!("--pool={pool}"), &format!("--namespace={namespace}")]),
        Kind::AlreadyExists,
        "ns",
    )
}

/// `rbd namespace remove`; `Identity` if it is gone.
pub fn namespace_remove(conn: &Conn, pool: &str, namespace: &str) -> Result<Action, CephError> {
    let what = format!("namespace {pool}/{namespace}");
    identity_if(
        run(conn, &what, &["namespace", "remove", &format!("--pool={pool}"), &format!("--namespace={namespace}")]),
        Kind::NotFound,
        "ns rm",
    )
}

#[derive(Debug, Deserialize)]
struct NamespaceEntry {
    name: String,
}

/// `rbd namespace ls <pool>`.
pub fn namespace_ls(conn: &Conn, pool: &str) -> Result<Vec<String>, CephError> {
    let entries: Vec<NamespaceEntry> =
        conn.rbd_json(&format!("pool {pool}"), &["namespace", "ls", &format!("--pool={pool}")], "[]")?;
    Ok(entries.into_iter().map(|e| e.name).collect())
}

/// `rbd image-meta list`: every key of an image (empty output means no keys), exactly.
///
/// `rbd` prints key names without JSON escaping, so a key holding a `"`, a `\\` or a
/// control character (written verbatim by some other tool, or by cephrbd before layout 2)
/// makes the listing invalid JSON, and a crafted key can even spell out fake entries. When
/// the listing does not parse, every key it could contain is therefore confirmed one by
/// one with `image-meta get`, whose answer is exact ([`meta_list_exact`]): slower, but
/// the SR stays readable and nothing injected is believed.
pub fn meta_list(conn: &Conn, spec: &str) -> Result<BTreeMap<String, String>, CephError> {
    let what = format!("image {spec}");
    let out = conn.rbd(&what, &["image-meta", "list", spec, "--format", "json"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let trimmed = if text.trim().is_empty() { "{}" } else { text.trim() };
    match serde_json::from_str(trimmed) {
        Ok(map) => Ok(map),
        Err(e) => {
            warn!(image = spec, "image-meta list is not valid JSON ({e}): confirming each key one by one");
            meta_list_exact(conn, spec, trimmed)
        }
    }
}

/// The keys a listing `{"k":"v","k2":"v2"}` whose keys are not escaped could contain, each
/// confirmed (with its exact value) by `image-meta get`. A candidate is any text between a
/// `{"` or `,"` and a later `":"`; only keys that really exist survive.
pub fn meta_list_exact(conn: &Conn, spec: &str, listing: &str) -> Result<BTreeMap<String, String>, CephError> {
    let starts: Vec<usize> = listing
        .match_indices(['{', ','])
        .map(|(i, _)| i + 1)
        .filter(|&i| listing[i..].starts_with('"'))
        .map(|i| i + 1)
        .collect();
    let ends: Vec<usize> = listing.match_indices("\":\"").map(|(i, _)| i).collect();
    let mut candidates: Vec<String> = Vec::new();
    for &start in &starts {
        for &end in ends.iter().filter(|&&end| end >= start) {
            candidates.push(listing[start..end].to_owned());
        }
    }
    candidates.sort();
    candidates.dedup();
    let mut found = BTreeMap::new();
    // A few at a time: each is one `rbd` process.
    for chunk in candidates.chunks(8) {
        let answers: Vec<(String, Result<Option<String>, CephError>)> = std::thread::scope(|s| {
            let handles: Vec<_> =
                chunk.iter().map(|key| (key.clone(), s.spawn(move || meta_get(conn, spec, key)))).collect();
            handles
                .into_iter()
                .map(|(key, h)| (key, h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))))
                .collect()
        });
        for (key, answer) in answers {
            if let Some(value) = answer? {
                found.insert(key, value);
            }
        }
    }
    Ok(found)
}

/// `rbd image-meta get`: one key, `None` if absent.
pub fn meta_get(conn: &Conn, spec: &str, key: &str) -> Result<Option<String>, CephError> {
    match conn.rbd(&format!("key {key} of {spec}"), &["image-meta", "get", spec, "--", key]) {
        // `get` prints the value followed by a newline it adds.
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Ok(Some(text.strip_suffix('\n').unwrap_or(&text).to_owned()))
        }
        Err(e) if e.kind() == Kind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `rbd image-meta set` (the value must not be empty: callers encode).
pub fn meta_set(conn: &Conn, spec: &str, key: &str, value: &str) -> Result<(), CephError> {
    run(conn, &format!("image {spec}"), &["image-meta", "set", spec, "--", key, value])
}

/// `rbd image-meta remove`; `Identity` if absent.
pub fn meta_remove(conn: &Conn, spec: &str, key: &str) -> Result<Action, CephError> {
    identity_if(
        run(conn, &format!("key {key} of {spec}"), &["image-meta", "remove", spec, "--", key]),
        Kind::NotFound,
        "meta rm",
    )
}

/// One pool of `ceph df detail`.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolDf {
    /// The pool's name.
    pub name: String,
    /// Its statistics.
    pub stats: PoolStats,
}

/// The statistics of one pool.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolStats {
    /// Bytes stored (before replication).
    pub stored: u64,
    /// Bytes that can still be written (after replication).
    pub max_avail: u64,
    /// The pool's byte quota; 0 = none.
    #[serde(default)]
    pub quota_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct Df {
    pools: Vec<PoolDf>,
}

/// `ceph df detail`: every pool's usage and quota.
pub fn df(conn: &Conn) -> Result<Vec<PoolDf>, CephError> {
    let df: Df = conn.ceph_json("cluster usage", &["df", "detail"])?;
    Ok(df.pools)
}

/// One pool of `ceph osd pool ls detail`.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolInfo {
    /// The pool's name.
    pub pool_name: String,
    /// Applications enabled on it (`rbd`, `cephfs`, `rgw`).
    #[serde(default)]
    pub application_metadata: BTreeMap<String, serde_json::Value>,
    /// Pool flags (`full`, `full_quota`, …).
    #[serde(default)]
    pub flags_names: String,
}

/// `ceph osd pool ls detail`: every pool.
pub fn pools(conn: &Conn) -> Result<Vec<PoolInfo>, CephError> {
    conn.ceph_json("pools", &["osd", "pool", "ls", "detail"])
}

/// One client watching an image (`rbd status --format json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Watcher {
    /// Its address (`ip:port/nonce`), what the blocklist takes.
    pub address: String,
    /// Its client id (`client.<id>`).
    pub client: u64,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    watchers: Vec<Watcher>,
}

/// `rbd status`: the clients watching an image (those that have it open).
pub fn watchers(conn: &Conn, spec: &str) -> Result<Vec<Watcher>, CephError> {
    let status: Status = conn.rbd_json(&format!("image {spec}"), &["status", spec], "{}")?;
    Ok(status.watchers)
}

/// `ceph osd blocklist add <address> <seconds>`: the OSDs refuse that client from now on.
/// Clusters before 16.2 (Nautilus, Octopus) name the command `osd blacklist`: the `ceph`
/// tool takes its command table from the monitors, and answers an unknown command with
/// [`UNKNOWN_COMMAND`]; then the old name is used (docs/ceph-versions.md §3).
pub fn blocklist_add(conn: &Conn, address: &str, seconds: u32) -> Result<(), CephError> {
    let what = format!("client {address}");
    let seconds = seconds.to_string();
    match conn.ceph(&what, &["osd", "blocklist", "add", address, &seconds]) {
        Err(e) if is_unknown_command(&e) => conn.ceph(&what, &["osd", "blacklist", "add", address, &seconds]).map(drop),
        other => other.map(drop),
    }
}

/// What the `ceph` tool prints for a command the monitors do not know.
pub const UNKNOWN_COMMAND: &str = "no valid command found";

fn is_unknown_command(err: &CephError) -> bool {
    err.command().is_some_and(|c| c.stderr().contains(UNKNOWN_COMMAND))
}

/// `rbd trash mv <spec>`: the image leaves the namespace at once (O(1) whatever its size);
/// its data is deleted later by [`trash_purge`]. `Identity` if it is already gone.
pub fn trash_move(conn: &Conn, spec: &str) -> Result<Action, CephError> {
    identity_if(run(conn, &format!("image {spec}"), &["trash", "mv", spec]), Kind::NotFound, "trash mv")
}

/// One image in a namespace's trash.
#[derive(Debug, Clone, Deserialize)]
pub struct TrashEntry {
    /// Its id.
    pub id: String,
    /// The name it had.
    pub name: String,
}

/// `rbd trash ls`: the images of a namespace waiting to be purged.
pub fn trash_ls(conn: &Conn, pool: &str, namespace: &str) -> Result<Vec<TrashEntry>, CephError> {
    conn.rbd_json(
        &format!("trash of {pool}/{namespace}"),
        &["trash", "ls", "--pool", pool, "--namespace", namespace],
        "[]",
    )
}

/// `rbd trash purge`: deletes the data of every image in a namespace's trash. Slow for large
/// images without object-map (every object is visited), so it gets a limit of its own
/// (`limit`) while each of its requests keeps the connection's; killed at its limit it can
/// simply be run again: what is left stays in the trash.
pub fn trash_purge(conn: &Conn, pool: &str, namespace: &str, limit: Duration) -> Result<(), CephError> {
    let what = format!("trash of {pool}/{namespace}");
    let args = ["trash", "purge", "--no-progress", "--pool", pool, "--namespace", namespace];
    conn.rbd_long(&what, &args, limit).map(drop)
}

/// One lock of an image, as `rbd lock ls` shows them: the managed exclusive lock of the
/// image's current writer (its id starts with `auto `), or an advisory lock someone took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The lock id.
    pub id: String,
    /// The client holding it (`client.<id>`).
    pub locker: String,
    /// That client's address (what the blocklist takes).
    pub address: String,
}

impl Lock {
    /// True for the exclusive lock librbd or kernel RBD takes when writing.
    pub fn is_managed(&self) -> bool {
        self.id.starts_with("auto ")
    }
}

#[derive(Debug, Deserialize)]
struct LockEntry {
    #[serde(default)]
    id: String,
    locker: String,
    address: String,
}

/// `rbd lock ls`: Pacific and later print an array of `{id, locker, address}`, Nautilus an
/// object keyed by id.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LockListing {
    List(Vec<LockEntry>),
    ById(BTreeMap<String, LockEntry>),
}

/// `rbd lock ls <spec>`: every lock on the image.
pub fn locks(conn: &Conn, spec: &str) -> Result<Vec<Lock>, CephError> {
    let listing: LockListing = conn.rbd_json(&format!("image {spec}"), &["lock", "ls", spec], "[]")?;
    let entries: Vec<LockEntry> = match listing {
        LockListing::List(entries) => entries,
        LockListing::ById(by_id) => by_id.into_iter().map(|(id, e)| LockEntry { id, ..e }).collect(),
    };
    Ok(entries.into_iter().map(|e| Lock { id: e.id, locker: e.locker, address: e.address }).collect())
}

/// The RADOS object that carries a volume's writer lock (see [`writer_lock_get`]). Not the
/// image's own header: an advisory lock there is the lock librbd and kernel RBD take to
/// write (the exclusive-lock feature), so holding one would stop every writer.
pub fn writer_object(volume: &str) -> String {
    format!("cephrbd-writer.{volume}")
}

const WRITER_LOCK_NAME: &str = "writer";

/// One holder of a RADOS lock (`rados lock info --format json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Locker {
    /// The client that took it (`client.<id>`).
    pub name: String,
    /// The cookie it was taken with (cephrbd writes `<host> <client ids>` there).
    pub cookie: String,
}

#[derive(Debug, Deserialize)]
struct LockInfo {
    #[serde(default)]
    lockers: Vec<Locker>,
}

fn rados_args<'a>(pool: &'a str, namespace: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--pool", pool, "--namespace", namespace];
    args.extend_from_slice(rest);
    args
}

/// Who holds the writer lock of object `object` (empty when nobody does, or the object does
/// not exist).
pub fn writer_lock_holders(conn: &Conn, pool: &str, namespace: &str, object: &str) -> Result<Vec<Locker>, CephError> {
    let args = rados_args(pool, namespace, &["lock", "info", object, WRITER_LOCK_NAME]);
    match conn.rados_json::<LockInfo>(&format!("object {object}"), &args) {
        Ok(info) => Ok(info.lockers),
        Err(e) if e.kind() == Kind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// `rados lock get --lock-type exclusive`: takes the writer lock of `object` (creating the
/// object), atomically; `Busy` when another holds it.
pub fn writer_lock_get(conn: &Conn, pool: &str, namespace: &str, object: &str, cookie: &str) -> Result<(), CephError> {
    let args = rados_args(
        pool,
        namespace,
        &["lock", "get", object, WRITER_LOCK_NAME, "--lock-type", "exclusive", "--lock-cookie", cookie],
    );
    conn.rados(&format!("object {object}"), &args).map(drop)
}

/// `rados lock break`: releases `locker`'s writer lock; `Identity` if it is gone.
pub fn writer_lock_break(
    conn: &Conn,
    pool: &str,
    namespace: &str,
    object: &str,
    locker: &Locker,
) -> Result<Action, CephError> {
    let args = rados_args(
        pool,
        namespace,
        &["lock", "break", object, WRITER_LOCK_NAME, &locker.name, "--lock-cookie", &locker.cookie],
    );
    identity_if(conn.rados(&format!("object {object}"), &args).map(drop), Kind::NotFound, "lock break")
}

/// `rados rm`: removes an object of ours; `Identity` if it is gone.
pub fn remove_object(conn: &Conn, pool: &str, namespace: &str, object: &str) -> Result<Action, CephError> {
    let args = rados_args(pool, namespace, &["rm", object]);
    identity_if(conn.rados(&format!("object {object}"), &args).map(drop), Kind::NotFound, "rados rm")
}
