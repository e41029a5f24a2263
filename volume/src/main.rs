//! The SMAPIv3 volume plugin (`Plugin.*`, `SR.*`, `Volume.*`), installed as
//! `/usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.cephrbd-ng/<method>`
//! symlinks to this one binary. It only dispatches: every operation lives in `common`.

use std::process::ExitCode;

use common::exec::{self, typed, Executable, Operation};
use common::plugin;

/// One entry per method; the installed symlinks are `volume --list`.
static OPERATIONS: &[Operation] = &[
    Operation { name: "Plugin.Query", handler: |c, a| typed(c, a, plugin::volume_query) },
    Operation { name: "Plugin.diagnostics", handler: |c, a| typed(c, a, plugin::diagnostics) },
];

static VOLUME: Executable = Executable { name: "volume", operations: OPERATIONS };

fn main() -> ExitCode {
    exec::main(&VOLUME)
}
