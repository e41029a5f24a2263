//! The records cephrbd returns to xapi, field for field as the IDL (and
//! `xapi-storage-schemas/schemas/types.json`) defines them. Optional fields are omitted,
//! never `null`; int64 fields are integers.

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
    /// `Volume.set` keys, verbatim.
    pub keys: BTreeMap<String, String>,
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

/// Bytes as an IDL int64 (saturating: no Ceph size reaches 2^63).
pub fn int64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
