//! The SMAPIv3 datapath plugin (`Plugin.*`, `Datapath.*`), installed once per URI scheme
//! as `/usr/libexec/xapi-storage-script/datapath/<scheme>/<method>` symlinks to this one
//! binary. It only dispatches: every operation lives in `common`.

use std::process::ExitCode;

use common::exec::{self, typed, Executable, Operation};
use common::{datapath, plugin};

/// One entry per method; the installed symlinks are `datapath --list`.
static OPERATIONS: &[Operation] = &[
    Operation { name: "Plugin.Query", handler: |c, a| typed(c, a, plugin::datapath_query) },
    Operation { name: "Plugin.diagnostics", handler: |c, a| typed(c, a, plugin::diagnostics) },
    Operation { name: "Datapath.open", handler: |c, a| typed(c, a, datapath::open) },
    Operation { name: "Datapath.attach", handler: |c, a| typed(c, a, datapath::attach) },
    Operation { name: "Datapath.activate", handler: |c, a| typed(c, a, datapath::activate) },
    Operation { name: "Datapath.activate_readonly", handler: |c, a| typed(c, a, datapath::activate_readonly) },
    Operation { name: "Datapath.deactivate", handler: |c, a| typed(c, a, datapath::deactivate) },
    Operation { name: "Datapath.detach", handler: |c, a| typed(c, a, datapath::detach) },
    Operation { name: "Datapath.close", handler: |c, a| typed(c, a, datapath::close) },
];

static DATAPATH: Executable = Executable { name: "datapath", operations: OPERATIONS };

fn main() -> ExitCode {
    exec::main(&DATAPATH)
}
