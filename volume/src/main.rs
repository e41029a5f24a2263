//! The SMAPIv3 volume plugin (`Plugin.*`, `SR.*`, `Volume.*`), installed as
//! `/usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.cephrbd-ng/<method>`
//! symlinks to this one binary.
//!
//! This file is the front end only: one argument struct per method, as the v5 IDL names
//! the arguments (`dbg` is ignored: the exec layer logs it), the SR string parsed into a
//! [`SrUri`], and one call into `common::ops`. Everything else lives in `common`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use common::admin::{check, doctor, plugin};
use common::error::RequestError;
use common::host::Host;
use common::layout::names::parse_uuid;
use common::layout::uri::SrUri;
use common::ops::{cbt, reclaim, sr, volume};
use common::smapi::exec::{self, reply, typed, Executable, Operation};
use common::smapi::wire::{ChangedBlocks, ProbeResult, SrStat, Volume};
use common::OpError;
use serde::Deserialize;

/// One entry per method; the installed symlinks are `volume --list`.
static OPERATIONS: &[Operation] = &[
    Operation { name: "Plugin.Query", handler: |c, _| reply(c, Ok(plugin::volume_query(c.operations))) },
    Operation {
        name: "Plugin.diagnostics",
        handler: |c, _| reply(c, Ok(plugin::diagnostics(&Host::from_env(), VOLUME.name, c.operations))),
    },
    Operation { name: "SR.probe", handler: |c, a| typed(c, a, sr_probe) },
    Operation { name: "SR.create", handler: |c, a| typed(c, a, sr_create) },
    Operation { name: "SR.attach", handler: |c, a| typed(c, a, sr_attach) },
    Operation { name: "SR.detach", handler: |c, a| typed(c, a, sr_detach) },
    Operation { name: "SR.destroy", handler: |c, a| typed(c, a, sr_destroy) },
    Operation { name: "SR.stat", handler: |c, a| typed(c, a, sr_stat) },
    Operation { name: "SR.set_name", handler: |c, a| typed(c, a, sr_set_name) },
    Operation { name: "SR.set_description", handler: |c, a| typed(c, a, sr_set_description) },
    Operation { name: "SR.ls", handler: |c, a| typed(c, a, sr_ls) },
    Operation { name: "Volume.create", handler: |c, a| typed(c, a, volume_create) },
    Operation { name: "Volume.snapshot", handler: |c, a| typed(c, a, volume_snapshot) },
    Operation { name: "Volume.clone", handler: |c, a| typed(c, a, volume_clone) },
    Operation { name: "Volume.destroy", handler: |c, a| typed(c, a, volume_destroy) },
    Operation { name: "Volume.set_name", handler: |c, a| typed(c, a, volume_set_name) },
    Operation { name: "Volume.set_description", handler: |c, a| typed(c, a, volume_set_description) },
    Operation { name: "Volume.set", handler: |c, a| typed(c, a, volume_set) },
    Operation { name: "Volume.unset", handler: |c, a| typed(c, a, volume_unset) },
    Operation { name: "Volume.resize", handler: |c, a| typed(c, a, volume_resize) },
    Operation { name: "Volume.stat", handler: |c, a| typed(c, a, volume_stat) },
    Operation { name: "Volume.enable_cbt", handler: |c, a| typed(c, a, volume_enable_cbt) },
    Operation { name: "Volume.disable_cbt", handler: |c, a| typed(c, a, volume_disable_cbt) },
    Operation { name: "Volume.data_destroy", handler: |c, a| typed(c, a, volume_data_destroy) },
    Operation { name: "Volume.list_changed_blocks", handler: |c, a| typed(c, a, volume_list_changed_blocks) },
];

static VOLUME: Executable = Executable { name: "volume", operations: OPERATIONS };

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        // The operator's host check: `volume --doctor [KEY=VALUE…]` (device-config keys).
        Some("--doctor") => doctor::main(std::env::args().skip(2)),
        // The consistency check of one SR: `volume --check <sr string> [--repair]`.
        Some("--check") => check::main(std::env::args().skip(2)),
        // The background purge a destroy starts (see common::ops::reclaim::purge_later).
        Some("--purge") => reclaim::purge_main(std::env::args().skip(2)),
        _ => exec::main(&VOLUME),
    }
}

/// `SR.probe` and `SR.attach`.
#[derive(Deserialize)]
struct ConfigArgs {
    configuration: BTreeMap<String, String>,
}

/// `SR.create`.
#[derive(Deserialize)]
struct CreateSrArgs {
    uuid: String,
    configuration: BTreeMap<String, String>,
    name: String,
    description: String,
}

/// The SR calls that take only the SR string.
#[derive(Deserialize)]
struct SrArgs {
    sr: String,
}

/// `SR.set_name`.
#[derive(Deserialize)]
struct SrNameArgs {
    sr: String,
    new_name: String,
}

/// `SR.set_description`.
#[derive(Deserialize)]
struct SrDescriptionArgs {
    sr: String,
    new_description: String,
}

/// The Volume calls that name one volume.
#[derive(Deserialize)]
struct KeyArgs {
    sr: String,
    key: String,
}

/// `Volume.create`.
#[derive(Deserialize)]
struct CreateArgs {
    sr: String,
    name: String,
    description: String,
    size: i64,
    sharable: bool,
}

/// `Volume.set`.
#[derive(Deserialize)]
struct SetArgs {
    sr: String,
    key: String,
    k: String,
    v: String,
}

/// `Volume.unset`.
#[derive(Deserialize)]
struct UnsetArgs {
    sr: String,
    key: String,
    k: String,
}

/// `Volume.set_name`.
#[derive(Deserialize)]
struct NameArgs {
    sr: String,
    key: String,
    new_name: String,
}

/// `Volume.set_description`.
#[derive(Deserialize)]
struct DescriptionArgs {
    sr: String,
    key: String,
    new_description: String,
}

/// `Volume.resize`.
#[derive(Deserialize)]
struct ResizeArgs {
    sr: String,
    key: String,
    new_size: i64,
}

/// `Volume.list_changed_blocks`.
#[derive(Deserialize)]
struct ChangedBlocksArgs {
    sr: String,
    key: String,
    key2: String,
    offset: i64,
    length: i64,
}

fn parse_sr(text: &str) -> Result<SrUri, RequestError> {
    SrUri::parse(text)
}

fn sr_probe(a: ConfigArgs) -> Result<Vec<ProbeResult>, OpError> {
    sr::probe(&a.configuration)
}

fn sr_create(a: CreateSrArgs) -> Result<BTreeMap<String, String>, OpError> {
    sr::create(&Host::from_env(), &a.configuration, parse_uuid("uuid", &a.uuid)?, &a.name, &a.description)
}

fn sr_attach(a: ConfigArgs) -> Result<String, OpError> {
    Ok(sr::attach(&Host::from_env(), &a.configuration)?.render())
}

fn sr_detach(a: SrArgs) -> Result<(), OpError> {
    parse_sr(&a.sr)?;
    Ok(())
}

fn sr_destroy(a: SrArgs) -> Result<(), OpError> {
    sr::destroy(&Host::from_env(), &parse_sr(&a.sr)?)
}

fn sr_stat(a: SrArgs) -> Result<SrStat, OpError> {
    sr::stat(&Host::from_env(), &parse_sr(&a.sr)?)
}

fn sr_set_name(a: SrNameArgs) -> Result<(), OpError> {
    sr::set_name(&parse_sr(&a.sr)?, &a.new_name)
}

fn sr_set_description(a: SrDescriptionArgs) -> Result<(), OpError> {
    sr::set_description(&parse_sr(&a.sr)?, &a.new_description)
}

fn sr_ls(a: SrArgs) -> Result<Vec<Volume>, OpError> {
    sr::ls(&parse_sr(&a.sr)?)
}

fn volume_create(a: CreateArgs) -> Result<Volume, OpError> {
    volume::create(&Host::from_env(), &parse_sr(&a.sr)?, &a.name, &a.description, a.size, a.sharable)
}

fn volume_snapshot(a: KeyArgs) -> Result<Volume, OpError> {
    volume::snapshot(&Host::from_env(), &parse_sr(&a.sr)?, &a.key)
}

fn volume_clone(a: KeyArgs) -> Result<Volume, OpError> {
    volume::clone(&Host::from_env(), &parse_sr(&a.sr)?, &a.key)
}

fn volume_destroy(a: KeyArgs) -> Result<(), OpError> {
    volume::destroy(&Host::from_env(), &parse_sr(&a.sr)?, &a.key)
}

fn volume_set_name(a: NameArgs) -> Result<(), OpError> {
    volume::set_name(&Host::from_env(), &parse_sr(&a.sr)?, &a.key, &a.new_name)
}

fn volume_set_description(a: DescriptionArgs) -> Result<(), OpError> {
    volume::set_description(&Host::from_env(), &parse_sr(&a.sr)?, &a.key, &a.new_description)
}

fn volume_set(a: SetArgs) -> Result<(), OpError> {
    volume::set(&Host::from_env(), &parse_sr(&a.sr)?, &a.key, &a.k, &a.v)
}

fn volume_unset(a: UnsetArgs) -> Result<(), OpError> {
    volume::unset(&Host::from_env(), &parse_sr(&a.sr)?, &a.key, &a.k)
}

fn volume_resize(a: ResizeArgs) -> Result<(), OpError> {
    volume::resize(&Host::from_env(), &parse_sr(&a.sr)?, &a.key, a.new_size)
}

fn volume_stat(a: KeyArgs) -> Result<Volume, OpError> {
    volume::stat(&parse_sr(&a.sr)?, &a.key)
}

fn volume_enable_cbt(a: KeyArgs) -> Result<(), OpError> {
    cbt::enable(&Host::from_env(), &parse_sr(&a.sr)?, &a.key)
}

fn volume_disable_cbt(a: KeyArgs) -> Result<(), OpError> {
    cbt::disable(&Host::from_env(), &parse_sr(&a.sr)?, &a.key)
}

fn volume_data_destroy(a: KeyArgs) -> Result<(), OpError> {
    cbt::data_destroy(&Host::from_env(), &parse_sr(&a.sr)?, &a.key)
}

fn volume_list_changed_blocks(a: ChangedBlocksArgs) -> Result<ChangedBlocks, OpError> {
    cbt::list_changed_blocks(&parse_sr(&a.sr)?, &a.key, &a.key2, a.offset, a.length)
}
