//! `/opt/xensource/sm/CephRBDSR`: the legacy (SMAPIv1 exec) driver behind SR type
//! `cephrbd`. xapi passes one XML-RPC `methodCall` in argv\[1\]; this prints exactly one
//! `methodResponse` and always exits 0, faults included. Everything else is in the
//! library ([`legacy::driver`]).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The background purge a vdi_delete starts (see common::ops::reclaim::purge_later).
    if std::env::args().nth(1).as_deref() == Some("--purge") {
        return common::ops::reclaim::purge_main(std::env::args().skip(2));
    }
    common::process::log::init("CephRBDSR");
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let document = legacy::driver::run(&argv);
    let mut stdout = std::io::stdout().lock();
    // Nothing else can be done about a closed stdout; xapi reads the exit status as 0 anyway.
    let _ = stdout.write_all(document.as_bytes()).and_then(|()| stdout.flush());
    ExitCode::SUCCESS
}
