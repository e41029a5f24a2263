//! The records the operations return, field for field as the v5 IDL (and
//! `xapi-storage-schemas/schemas/types.json`) defines them (docs/smapiv3.md). Optional
//! fields are omitted, never `null`; int64 fields are integers. The SMAPIv1 front end reads
//! the same records and writes them in its own wire format.

use std::collections::BTreeMap;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

/// `volume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// The key, unique in the SR (the volume's uuid).
    pub key: String,
    /// The uuid (same as the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// False for snapshots.
    pub read_write: bool,
    /// Whether several hosts may attach it at once.
    pub sharable: bool,
    /// Size seen by the VM, in bytes.
    pub virtual_size: i64,
    /// Bytes used in Ceph.
    pub physical_utilisation: i64,
    /// Datapath URIs, most preferred first.
    pub uri: Vec<String>,
    /// `Volume.set` keys, verbatim (and `vdi-type` `cbt_metadata` once the volume's data
    /// was destroyed, as xapi expects of such a volume).
    pub keys: BTreeMap<String, String>,
    /// Changed block tracking (an optional field of the IDL from v24.14.0, written always:
    /// xapi's scan copies it into its database and reads an absent one as false; 8.2's
    /// daemon ignores it).
    pub cbt_enabled: bool,
}

/// `changed_blocks` (`Volume.list_changed_blocks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedBlocks {
    /// Bytes per bitmap bit.
    pub granularity: i64,
    /// The bitmap, base64.
    pub bitmap: String,
}

/// `health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Fully available.
    Healthy(String),
    /// Cannot be reached (admin intervention may recover it). Known to xapi ≥ 24.18.
    Unreachable(String),
}

impl Serialize for Health {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (tag, text) = match self {
            Health::Healthy(t) => ("Healthy", t),
            Health::Unreachable(t) => ("Unreachable", t),
        };
        let mut seq = serializer.serialize_seq(Some(2))?;
        seq.serialize_element(tag)?;
        seq.serialize_element(text)?;
        seq.end()
    }
}

/// `sr_stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SrStat {
    /// The SR string.
    pub sr: String,
    /// Name.
    pub name: String,
    /// The SR uuid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Description.
    pub description: String,
    /// Bytes free.
    pub free_space: i64,
    /// Bytes in all.
    pub total_space: i64,
    /// Datasources (none).
    pub datasources: Vec<String>,
    /// Never clustered.
    pub clustered: bool,
    /// Health.
    pub health: Health,
}

/// `probe_result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    /// A configuration for SR.create (no `sr_uuid`) or SR.attach (with `sr_uuid`).
    pub configuration: BTreeMap<String, String>,
    /// Usable as is.
    pub complete: bool,
    /// The SR found, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sr: Option<SrStat>,
    /// Extra facts for the administrator.
    pub extra_info: BTreeMap<String, String>,
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

/// The `query_result` record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueryResult {
    /// The SR type.
    pub plugin: String,
    /// Short name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Vendor.
    pub vendor: String,
    /// Copyright.
    pub copyright: String,
    /// Our version.
    pub version: String,
    /// The API version we need.
    pub required_api_version: String,
    /// What we implement.
    pub features: Vec<String>,
    /// device-config key → description.
    pub configuration: BTreeMap<String, String>,
    /// Cluster stacks we need (none).
    pub required_cluster_stack: Vec<String>,
}

/// Bytes as an IDL int64 (saturating: no Ceph size reaches 2^63).
pub fn int64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
