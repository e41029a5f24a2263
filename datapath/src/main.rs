//! The SMAPIv3 datapath plugin (`Plugin.*`, `Datapath.*`), installed once per URI scheme
//! as `/usr/libexec/xapi-storage-script/datapath/<scheme>/<method>` symlinks to this one
//! binary.
//!
//! This file is the front end only: one argument struct per method, as the v5 IDL names
//! the arguments, the URI parsed into a [`VolumeUri`], and one call into
//! `common::ops::datapath`.

use std::process::ExitCode;

use common::admin::plugin;
use common::host::Host;
use common::layout::uri::VolumeUri;
use common::ops::{cbt, datapath};
use common::smapi::exec::{self, reply, typed, Executable, Operation};
use common::smapi::wire::Backend;
use common::OpError;
use serde::Deserialize;

/// One entry per method; the installed symlinks are `datapath --list`.
static OPERATIONS: &[Operation] = &[
    Operation { name: "Plugin.Query", handler: |c, _| reply(c, Ok(plugin::datapath_query(c.operations))) },
    Operation {
        name: "Plugin.diagnostics",
        handler: |c, _| reply(c, Ok(plugin::diagnostics(&Host::from_env(), DATAPATH.name, c.operations))),
    },
    Operation { name: "Datapath.open", handler: |c, a| typed(c, a, open) },
    Operation { name: "Datapath.attach", handler: |c, a| typed(c, a, attach) },
    Operation { name: "Datapath.activate", handler: |c, a| typed(c, a, activate) },
    Operation { name: "Datapath.activate_readonly", handler: |c, a| typed(c, a, activate_readonly) },
    Operation { name: "Datapath.deactivate", handler: |c, a| typed(c, a, deactivate) },
    Operation { name: "Datapath.detach", handler: |c, a| typed(c, a, detach) },
    Operation { name: "Datapath.close", handler: |c, a| typed(c, a, close) },
];

static DATAPATH: Executable = Executable { name: "datapath", operations: OPERATIONS };

fn main() -> ExitCode {
    exec::main(&DATAPATH)
}

/// The calls that take a URI and a domain.
#[derive(Deserialize)]
struct UriDomain {
    uri: String,
    domain: String,
}

/// `Datapath.open`.
#[derive(Deserialize)]
struct OpenArgs {
    uri: String,
    persistent: bool,
}

/// `Datapath.close`.
#[derive(Deserialize)]
struct CloseArgs {
    uri: String,
}

/// The URI of a volume that can be attached: a snapshot whose data was destroyed
/// (`Volume.data_destroy`) is refused with a clear error.
fn attachable(text: &str) -> Result<VolumeUri, OpError> {
    let uri = VolumeUri::parse(text)?;
    cbt::attachable(&uri)?;
    Ok(uri)
}

fn attach(a: UriDomain) -> Result<Backend, OpError> {
    datapath::attach(&Host::from_env(), &attachable(&a.uri)?, &a.domain)
}

fn activate(a: UriDomain) -> Result<(), OpError> {
    datapath::activate(&Host::from_env(), &attachable(&a.uri)?, &a.domain, false)
}

fn activate_readonly(a: UriDomain) -> Result<(), OpError> {
    datapath::activate(&Host::from_env(), &attachable(&a.uri)?, &a.domain, true)
}

fn deactivate(a: UriDomain) -> Result<(), OpError> {
    datapath::deactivate(&Host::from_env(), &VolumeUri::parse(&a.uri)?, &a.domain)
}

fn detach(a: UriDomain) -> Result<(), OpError> {
    datapath::detach(&Host::from_env(), &a.uri, &a.domain);
    Ok(())
}

fn open(a: OpenArgs) -> Result<(), OpError> {
    attachable(&a.uri)?;
    datapath::open(a.persistent)
}

fn close(a: CloseArgs) -> Result<(), OpError> {
    VolumeUri::parse(&a.uri)?;
    Ok(())
}
