//! The SR interface: `SR.create`, `attach`, `detach`, `destroy`, `stat`, `ls`, `probe`,
//! `set_name`, `set_description`.
//!
//! An SR is a RADOS namespace of an existing pool plus its header image (see
//! [`crate::names`]). Ceph commands per call, on success:
//! - `SR.create`: 1 `rbd namespace ls` + 1 `rbd namespace create` + 1 `rbd create` + 1
//!   `image-meta set` (+1 `image-meta list` when the namespace already exists);
//! - `SR.attach`: 1 `image-meta get` (+ unmapping what a crash left half-mapped);
//! - `SR.stat`: 1 `image-meta list` + 1 `ceph df detail`, run in parallel;
//! - `SR.ls`: 1 `image-meta list` (+1 `rbd du` when images have fast-diff), whatever the
//!   number of volumes;
//! - `SR.set_name`/`set_description`: 1 `image-meta get` + 1 `image-meta set`;
//! - `SR.destroy`: 1 `image-meta list` + reclaiming leftovers + 1 `rbd ls` + 1 `rbd rm` +
//!   1 `rbd namespace remove`;
//! - `SR.probe`: 1 `ceph osd pool ls detail` + 1 `ceph df detail` + per pool 1
//!   `rbd namespace ls` + per namespace 1 `image-meta list`.

use std::collections::BTreeMap;
use std::thread;

use tracing::info;
use uuid::Uuid;

use super::undo::{self, Step, Undo};
use super::{datapath, reclaim};
use crate::ceph::rbd::{self, Action, PoolDf};
use crate::ceph::{CephError, Conn, Kind};
use crate::config::DeviceConfig;
use crate::error::{chain, OpError, RequestError};
use crate::host::figures::{self, Figures};
use crate::host::Host;
use crate::layout::names::{MetaKey, Object, HEADER_IMAGE, LAYOUT_VERSION};
use crate::layout::records::{self, load, Header, SrRecord};
use crate::layout::uri::SrUri;
use crate::smapi::wire::{int64, Health, ProbeResult, SrStat, Volume};

/// The pool exists (else [`OpError::PoolNotFound`], listing the pools that do) and these
/// credentials can use it; returns its namespaces.
fn pool_namespaces(conn: &Conn, pool: &str) -> Result<Vec<String>, OpError> {
    match rbd::namespace_ls(conn, pool) {
        Ok(namespaces) => Ok(namespaces),
        Err(e) if e.kind() == Kind::NotFound => {
            let existing = rbd::pools(conn)?.into_iter().map(|p| p.pool_name).collect::<Vec<_>>().join(", ");
            Err(OpError::PoolNotFound { pool: pool.to_owned(), existing })
        }
        Err(e) => Err(e.into()),
    }
}

/// `SR.create`: makes the SR's namespace and header in an existing pool and returns the
/// configuration SR.attach needs (`sr_uuid` and `namespace` added).
///
/// Never creates or deletes a pool. Idempotent: creating the same SR again returns the same
/// configuration. On failure, what was created is removed.
pub fn create(
    host: &Host,
    configuration: &BTreeMap<String, String>,
    uuid: Uuid,
    name: &str,
    description: &str,
) -> Result<BTreeMap<String, String>, OpError> {
    let mut config = DeviceConfig::parse(configuration)?;
    config.check_keyring()?;
    if let Some(given) = config.sr_uuid.filter(|u| *u != uuid) {
        return Err(RequestError::BadConfigValue {
            key: "sr_uuid",
            value: given.to_string(),
            reason: format!("differs from the uuid of the SR being created ({uuid})"),
        }
        .into());
    }
    config.sr_uuid = Some(uuid);
    let sr = SrUri::from_config(&config, uuid);
    let conn = &sr.conn;
    let header = Header::of(&sr);
    let namespaces = pool_namespaces(conn, &sr.pool)?;
    let namespace_exists = namespaces.contains(&sr.namespace);
    if namespace_exists {
        match header.load() {
            Ok(records) => match records.sr() {
                Some(existing) if existing.uuid == uuid => {
                    info!(pool = %sr.pool, namespace = %sr.namespace, "SR already exists: nothing to do");
                    return Ok(returned_config(configuration, &sr));
                }
                Some(existing) => {
                    return Err(in_use(&sr, format!("it holds SR {}", existing.uuid)));
                }
                None => return Err(in_use(&sr, "it holds a cephrbd header without an SR record".to_owned())),
            },
            Err(e) if e.kind() == Kind::NotFound => {
                let images = rbd::ls(conn, &sr.pool, &sr.namespace)?;
                if !images.is_empty() {
                    return Err(in_use(&sr, format!("it holds images: {}", images.join(", "))));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Undo::run(host, &sr, |undo| {
        if !namespace_exists && rbd::namespace_create(conn, &sr.pool, &sr.namespace)? == Action::Done {
            undo.push(Step::RemoveNamespace { pool: sr.pool.clone(), namespace: sr.namespace.clone() });
        }
        rbd::create(conn, header.spec(), 0, &["layering".to_owned()])?;
        undo.push(Step::RemoveImage { spec: header.spec().to_owned() });
        let record =
            SrRecord { layout: LAYOUT_VERSION, uuid, name: name.to_owned(), description: description.to_owned() };
        header.set_json(&MetaKey::Sr, &record)?;
        Ok(())
    })?;
    info!(pool = %sr.pool, namespace = %sr.namespace, sr = %uuid, "SR created");
    Ok(returned_config(configuration, &sr))
}

fn in_use(sr: &SrUri, reason: String) -> OpError {
    OpError::NamespaceInUse { pool: sr.pool.clone(), namespace: sr.namespace.clone(), reason }
}

/// The device-config as given, plus what SR.attach needs and was derived.
fn returned_config(given: &BTreeMap<String, String>, sr: &SrUri) -> BTreeMap<String, String> {
    let mut config = given.clone();
    config.insert("sr_uuid".to_owned(), sr.uuid.to_string());
    config.insert("namespace".to_owned(), sr.namespace.clone());
    config
}

/// The SR a configuration names, checked to exist (one `image-meta get`).
fn open_config(configuration: &BTreeMap<String, String>) -> Result<SrUri, OpError> {
    let config = DeviceConfig::parse(configuration)?;
    config.check_keyring()?;
    let uuid = config.sr_uuid.ok_or(RequestError::MissingConfigKey { key: "sr_uuid" })?;
    let sr = SrUri::from_config(&config, uuid);
    let found: Option<SrRecord> = Header::of(&sr)
        .get(&MetaKey::Sr)
        .or_else(|e| if e.kind() == Kind::NotFound { Ok(None) } else { Err(e) })?
        .and_then(|text| serde_json::from_str(&text).ok());
    match found {
        Some(record) if record.uuid == uuid => Ok(sr),
        Some(_) | None => Err(records::sr_missing(&sr)),
    }
}

/// `SR.attach`: checks that the SR exists, reaps what crashes left of its volumes on this
/// host (dead daemons, interrupted mappings: [`datapath::reap`]) and returns the SR (its
/// string form is the SR string xapi passes to every later call). Idempotent. `SR.detach`
/// has nothing to release on the volume side.
pub fn attach(host: &Host, configuration: &BTreeMap<String, String>) -> Result<SrUri, OpError> {
    let sr = open_config(configuration)?;
    undo::replay(host, &sr)?;
    datapath::reap(host, &sr)?;
    reclaim::purge_later(host, &sr);
    info!(sr = %sr.uuid, "SR attached");
    Ok(sr)
}

/// `SR.destroy`: removes every trace of an empty SR (its header, storage still kept for
/// dependants that are now gone, its namespace). Refused while volumes remain. Idempotent:
/// destroying a destroyed SR succeeds.
pub fn destroy(host: &Host, sr: &SrUri) -> Result<(), OpError> {
    let conn = &sr.conn;
    undo::replay(host, sr)?;
    let records = match load(sr) {
        Ok(records) => records,
        Err(OpError::SrDoesNotExist { .. }) if !pool_namespaces(conn, &sr.pool)?.contains(&sr.namespace) => {
            info!(sr = %sr.uuid, "SR already destroyed");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let count = records.volumes().len();
    if count > 0 {
        return Err(OpError::SrNotEmpty { count });
    }
    if !records.unreadable().is_empty() {
        return Err(records::unreadable_error(&records.unreadable().iter().collect::<Vec<_>>()));
    }
    let until = std::time::Instant::now() + sr.conn.timeout;
    reclaim::reclaim_all(sr, &records)?;
    reclaim::purge_and_reclaim(host, sr, until)?;
    let mut foreign = Vec::new();
    for image in rbd::ls(conn, &sr.pool, &sr.namespace)? {
        match Object::parse(&image) {
            // Left by a crash between creating an image and recording it.
            Some(_) => {
                reclaim::reclaim_image(sr, &image)?;
            }
            None if image == HEADER_IMAGE => {}
            None => foreign.push(image),
        }
    }
    if !foreign.is_empty() {
        return Err(in_use(sr, format!("images cephrbd did not create: {}", foreign.join(", "))));
    }
    // A namespace is removed only empty, trash included.
    reclaim::purge_and_reclaim(host, sr, until)?;
    let trash = rbd::trash_ls(conn, &sr.pool, &sr.namespace)?;
    if !trash.is_empty() {
        return Err(in_use(
            sr,
            format!("{} destroyed images are still being purged: retry SR.destroy later", trash.len()),
        ));
    }
    rbd::remove(conn, &sr.spec(HEADER_IMAGE))?;
    rbd::namespace_remove(conn, &sr.pool, &sr.namespace)?;
    info!(sr = %sr.uuid, "SR destroyed");
    Ok(())
}

/// Total and free bytes of `pool`: with a quota, total = quota and free = min(quota −
/// stored, max_avail); without, total = stored + max_avail.
pub fn pool_space(pools: &[PoolDf], pool: &str) -> (u64, u64) {
    let Some(p) = pools.iter().find(|p| p.name == pool) else { return (0, 0) };
    let s = &p.stats;
    if s.quota_bytes > 0 {
        (s.quota_bytes, s.quota_bytes.saturating_sub(s.stored).min(s.max_avail))
    } else {
        (s.stored.saturating_add(s.max_avail), s.max_avail)
    }
}

fn sr_stat(sr: &SrUri, record: &SrRecord, pools: &[PoolDf]) -> SrStat {
    let (total, free) = pool_space(pools, &sr.pool);
    SrStat {
        sr: sr.render(),
        name: record.name.clone(),
        uuid: Some(sr.uuid.to_string()),
        description: record.description.clone(),
        free_space: int64(free),
        total_space: int64(total),
        datasources: Vec::new(),
        clustered: false,
        health: Health::Healthy(String::new()),
    }
}

/// `SR.stat`: name, description, quota-aware space, health. When the cluster does not
/// answer within the SR's time limit, the answer is `Unreachable` (never a hang) with the
/// last figures this host got ([`figures`]); with none, `Ceph_unreachable` rather than a
/// 0-byte SR, which xapi would record.
pub fn stat(host: &Host, sr: &SrUri) -> Result<SrStat, OpError> {
    let (records, pools) = thread::scope(|s| {
        let df = s.spawn(|| rbd::df(&sr.conn));
        let records = load(sr);
        (
            records,
            df.join()
                .unwrap_or_else(|_| Err(CephError::BadOutput { command: "ceph df".into(), detail: "panic".into() })),
        )
    });
    let unreachable = |e: CephError| match figures::load(host, sr.uuid) {
        Some(last) => Ok(SrStat {
            sr: sr.render(),
            name: last.name,
            uuid: Some(sr.uuid.to_string()),
            description: last.description,
            free_space: last.free_space,
            total_space: last.total_space,
            datasources: Vec::new(),
            clustered: false,
            health: Health::Unreachable(chain(&e)),
        }),
        None => Err(OpError::Ceph(e)),
    };
    match (records, pools) {
        (Ok(records), Ok(pools)) => {
            let record = records.sr().expect("load checked the SR record");
            let stat = sr_stat(sr, record, &pools);
            let (name, description) = (stat.name.clone(), stat.description.clone());
            let known = Figures { name, description, total_space: stat.total_space, free_space: stat.free_space };
            figures::save(host, sr.uuid, &known);
            Ok(stat)
        }
        (Err(OpError::Ceph(e)), _) | (_, Err(e)) if matches!(e.kind(), Kind::Unreachable | Kind::TimedOut) => {
            unreachable(e)
        }
        (Err(e), _) => {
            if matches!(e, OpError::SrDoesNotExist { .. }) {
                figures::forget(host, sr.uuid);
            }
            Err(e)
        }
        (_, Err(e)) => Err(e.into()),
    }
}

/// `SR.ls`: every volume, from one read of the SR's records (plus one `rbd du` when the
/// SR's images have fast-diff).
pub fn ls(sr: &SrUri) -> Result<Vec<Volume>, OpError> {
    let records = load(sr)?;
    // A volume whose record cannot be read must not vanish from the list: xapi would
    // forget its VDI. The listing is refused until the record is repaired.
    let broken: Vec<&records::Unreadable> = records.unreadable().iter().filter(|u| u.volume.is_some()).collect();
    if !broken.is_empty() {
        return Err(records::unreadable_error(&broken));
    }
    let usage = super::volume::usage(sr, None)?;
    Ok(records.volumes().map(|v| super::volume::to_volume(sr, v, usage.as_ref())).collect())
}

/// `SR.set_name`: stores the new name (one key, no read-modify-write).
pub fn set_name(sr: &SrUri, name: &str) -> Result<(), OpError> {
    set_field(sr, MetaKey::SrName, name)
}

/// `SR.set_description`: stores the new description.
pub fn set_description(sr: &SrUri, description: &str) -> Result<(), OpError> {
    set_field(sr, MetaKey::SrDescription, description)
}

fn set_field(sr: &SrUri, key: MetaKey, value: &str) -> Result<(), OpError> {
    records::check_text("name", value, records::MAX_TEXT)?;
    records::verify_sr(sr)?;
    Ok(Header::of(sr).set(&key, value)?)
}

/// `SR.probe`: given connection keys (and optionally `pool`), lists every pool usable as an
/// SR (a configuration for SR.create) and every cephrbd SR already in them (a configuration
/// for SR.attach, with `sr_uuid`, and its `sr_stat`).
pub fn probe(configuration: &BTreeMap<String, String>) -> Result<Vec<ProbeResult>, OpError> {
    let config = DeviceConfig::parse_for_probe(configuration)?;
    config.check_keyring()?;
    let conn = config.conn();
    let (pools, df) = thread::scope(|s| {
        let df = s.spawn(|| rbd::df(&conn));
        (rbd::pools(&conn), df.join().unwrap_or_else(|_| Ok(Vec::new())))
    });
    let (pools, df) = (pools?, df?);
    let wanted: Vec<String> = pools
        .iter()
        .filter(|p| p.application_metadata.contains_key("rbd"))
        .map(|p| p.pool_name.clone())
        .filter(|p| config.pool.is_empty() || *p == config.pool)
        .collect();
    if !config.pool.is_empty() && wanted.is_empty() {
        let existing = pools.iter().map(|p| p.pool_name.as_str()).collect::<Vec<_>>().join(", ");
        return Err(OpError::PoolNotFound { pool: config.pool.clone(), existing });
    }
    let mut results = Vec::new();
    for pool in wanted {
        let (total, free) = pool_space(&df, &pool);
        let mut configuration = configuration.clone();
        configuration.insert("pool".to_owned(), pool.clone());
        configuration.remove("sr_uuid");
        let info = |extra: &[(&str, String)]| -> BTreeMap<String, String> {
            let mut m: BTreeMap<String, String> = [
                ("pool".to_owned(), pool.clone()),
                ("total_space".to_owned(), total.to_string()),
                ("free_space".to_owned(), free.to_string()),
            ]
            .into_iter()
            .collect();
            m.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            m
        };
        results.push(ProbeResult {
            configuration: configuration.clone(),
            complete: true,
            sr: None,
            extra_info: info(&[]),
        });
        for namespace in rbd::namespace_ls(&conn, &pool)? {
            let mut found = config.clone();
            found.pool.clone_from(&pool);
            found.namespace = Some(namespace.clone());
            let mut sr = SrUri::from_config(&found, Uuid::nil());
            let records = match Header::of(&sr).load() {
                Ok(records) => records,
                Err(e) if e.kind() == Kind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(record) = records.sr() else { continue };
            sr.uuid = record.uuid;
            let mut configuration = configuration.clone();
            configuration.insert("sr_uuid".to_owned(), record.uuid.to_string());
            configuration.insert("namespace".to_owned(), namespace.clone());
            results.push(ProbeResult {
                configuration,
                complete: true,
                sr: Some(sr_stat(&sr, record, &df)),
                extra_info: info(&[("namespace", namespace), ("volumes", records.volumes().len().to_string())]),
            });
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ceph::rbd::PoolStats;

    fn pool(stored: u64, max_avail: u64, quota_bytes: u64) -> Vec<PoolDf> {
        vec![PoolDf { name: "p".to_owned(), stats: PoolStats { stored, max_avail, quota_bytes } }]
    }

    #[test]
    fn space_is_quota_aware() {
        assert_eq!(pool_space(&pool(10, 100, 0), "p"), (110, 100));
        assert_eq!(pool_space(&pool(10, 100, 50), "p"), (50, 40));
        assert_eq!(pool_space(&pool(10, 20, 50), "p"), (50, 20), "max_avail caps free space");
        assert_eq!(pool_space(&pool(60, 20, 50), "p"), (50, 0), "over quota");
        assert_eq!(pool_space(&pool(1, 1, 0), "other"), (0, 0));
    }
}
