//! The SMAPIv3 datapath plugin (`Plugin.*`, `Datapath.*`), installed once per URI scheme
//! as `/usr/libexec/xapi-storage-script/datapath/<scheme>/<method>` symlinks to this one
//! binary. It only dispatches: every operation lives in `common`.

use std::process::ExitCode;

use common::exec::{self, typed, Executable, Operation};
use common::plugin;

/// One entry per method; the installed symlinks are `datapath --list`.
static OPERATIONS: &[Operation] = &[
    Operation { name: "Plugin.Query", handler: |c, a| typed(c, a, plugin::datapath_query) },
    Operation { name: "Plugin.diagnostics", handler: |c, a| typed(c, a, plugin::diagnostics) },
];

static DATAPATH: Executable = Executable { name: "datapath", operations: OPERATIONS };

fn main() -> ExitCode {
    exec::main(&DATAPATH)
}
