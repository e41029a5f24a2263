//! The SMAPIv3 volume plugin (`Plugin.*`, `SR.*`, `Volume.*`), installed as
//! `/usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.cephrbd-ng/<method>`
//! symlinks to this one binary. It only dispatches: every operation lives in `common`.

use std::process::ExitCode;

use common::exec::{self, typed, Executable, Operation};
use common::{plugin, sr, volume};

/// One entry per method; the installed symlinks are `volume --list`.
static OPERATIONS: &[Operation] = &[
    Operation { name: "Plugin.Query", handler: |c, a| typed(c, a, plugin::volume_query) },
    Operation { name: "Plugin.diagnostics", handler: |c, a| typed(c, a, plugin::diagnostics) },
    Operation { name: "SR.probe", handler: |c, a| typed(c, a, sr::probe) },
    Operation { name: "SR.create", handler: |c, a| typed(c, a, sr::create) },
    Operation { name: "SR.attach", handler: |c, a| typed(c, a, sr::attach) },
    Operation { name: "SR.detach", handler: |c, a| typed(c, a, sr::detach) },
    Operation { name: "SR.destroy", handler: |c, a| typed(c, a, sr::destroy) },
    Operation { name: "SR.stat", handler: |c, a| typed(c, a, sr::stat) },
    Operation { name: "SR.set_name", handler: |c, a| typed(c, a, sr::set_name) },
    Operation { name: "SR.set_description", handler: |c, a| typed(c, a, sr::set_description) },
    Operation { name: "SR.ls", handler: |c, a| typed(c, a, sr::ls) },
    Operation { name: "Volume.create", handler: |c, a| typed(c, a, volume::create) },
    Operation { name: "Volume.snapshot", handler: |c, a| typed(c, a, volume::snapshot) },
    Operation { name: "Volume.clone", handler: |c, a| typed(c, a, volume::clone) },
    Operation { name: "Volume.destroy", handler: |c, a| typed(c, a, volume::destroy) },
    Operation { name: "Volume.set_name", handler: |c, a| typed(c, a, volume::set_name) },
    Operation { name: "Volume.set_description", handler: |c, a| typed(c, a, volume::set_description) },
    Operation { name: "Volume.set", handler: |c, a| typed(c, a, volume::set) },
    Operation { name: "Volume.unset", handler: |c, a| typed(c, a, volume::unset) },
    Operation { name: "Volume.resize", handler: |c, a| typed(c, a, volume::resize) },
    Operation { name: "Volume.stat", handler: |c, a| typed(c, a, volume::stat) },
];

static VOLUME: Executable = Executable { name: "volume", operations: OPERATIONS };

fn main() -> ExitCode {
    // The operator's host check: `volume --doctor [KEY=VALUE…]` (device-config keys).
    match std::env::args().nth(1).as_deref() {
        Some("--doctor") => return common::doctor::main(std::env::args().skip(2)),
        // The consistency check of one SR: `volume --check <sr string> [--repair]`.
        Some("--check") => return common::check::main(std::env::args().skip(2)),
        _ => {}
    }
    exec::main(&VOLUME)
}
