//! The userspace datapath: one `qemu-storage-daemon` per active volume, opening the image
//! with librbd and exporting it as NBD on a unix socket. Works without kernel modules.
//!
//! The daemon is started with `--daemonize` (it detaches once the export is ready) and a
//! pidfile; [`stop`] checks the pid still belongs to our daemon (its command line names our
//! socket) before signalling it, so a recycled pid is never killed.
//!
//! QEMU's rbd driver has options for the conf file, the user and the image, but none for a
//! keyring, a monitor list in Ceph's own syntax or a client time limit: those reach librbd
//! through the environment, and never through a value Ceph could split. `CEPH_ARGS` is
//! split on spaces by Ceph, so a keyring path with a space broke activation, and a
//! `mon_host` of `1.2.3.4 --log-file /any/path --debug-auth 30` added options. Now:
//! - the keyring path goes alone in `CEPH_KEYRING`, read whole by librados (spaces work);
//! - `CEPH_ARGS` holds only `--name=value` words whose values cannot contain a space: our
//!   own time limit, and `mon_host`, which device-config and URI parsing refuse with any
//!   whitespace ([`crate::ceph::conn::mon_host_problem`]) and [`Daemon::start`] checks
//!   again ([`Conn::problem`]).
//!
//! No key is ever on the command line or in the environment: librados reads it from the
//! keyring file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Conn, ImageSpec};
use crate::process::runner::{self, Cmd, CommandError, Program};

/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The files of one volume's daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// The NBD unix socket.
    pub socket: PathBuf,
    /// The pidfile.
    pub pidfile: PathBuf,
    /// The NBD export name.
    pub export: String,
}

impl Daemon {
    /// The `Nbd` implementation URI xapi expects (`nbd:unix:<socket>:exportname=<name>`).
    pub fn nbd_uri(&self) -> String {
        format!("nbd:unix:{}:exportname={}", self.socket.display(), self.export)
    }

    /// The same export as a URI for qemu-img / qemu-io / fio.
    pub fn nbd_url(&self) -> String {
        format!("nbd+unix:///{}?socket={}", self.export, self.socket.display())
    }

    /// The daemon's pid, if its pidfile names a live daemon of ours.
    pub fn running(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()?;
        runner::alive_with(pid, &self.socket.display().to_string()).then_some(pid)
    }

    /// Starts the daemon unless it already runs. `read_only` opens the image read-only and
    /// exports it read-only (snapshots, `activate_readonly`).
    pub fn start(&self, conn: &Conn, image: &ImageSpec, read_only: bool) -> Result<(), CommandError> {
        if self.running().is_some() {
            return Ok(());
        }
        self.remove_files();
        conn.learn_secrets();
        let program = program()?;
        let mut blockdev = format!(
            "driver=rbd,node-name=disk,pool={},image={},conf={},user={},cache.direct=on,read-only={}",
            escape(&image.pool),
            escape(&image.image),
            escape(&conn.conf.display().to_string()),
            escape(&conn.id),
            on_off(read_only),
        );
        if !image.namespace.is_empty() {
            blockdev.push_str(&format!(",namespace={}", escape(&image.namespace)));
        }
        if let Some(snap) = &image.snap {
            blockdev.push_str(&format!(",snapshot={}", escape(snap)));
        }
        if let Some((name, value, reason)) = conn.problem() {
            return Err(CommandError::Spawn {
                program: program.path().display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, format!("{name} {value:?} {reason}")),
            });
        }
        let mut ceph_args = vec![format!("--client-mount-timeout={}", conn.timeout.as_secs().max(1))];
        if let Some(mon) = &conn.mon_host {
            ceph_args.push(format!("--mon-host={mon}"));
        }
        let mut cmd = Cmd::new(&program, conn.timeout).env("CEPH_ARGS", ceph_args.join(" "));
        if let Some(keyring) = &conn.keyring {
            cmd = cmd.env("CEPH_KEYRING", keyring.display().to_string());
        }
        cmd.args(["--blockdev", &blockdev])
            .args(["--nbd-server", &format!("addr.type=unix,addr.path={}", escape(&self.socket.display().to_string()))])
            .args([
                "--export",
                &format!(
                    "type=nbd,id=export,node-name=disk,name={},writable={}",
                    escape(&self.export),
                    on_off(!read_only)
                ),
            ])
            .args(["--pidfile", &self.pidfile.display().to_string(), "--daemonize"])
            .run()?;
        info!(socket = %self.socket.display(), read_only, "qemu-storage-daemon started");
        Ok(())
    }

    /// Stops the daemon if it runs (SIGTERM, then SIGKILL after a grace period) and removes
    /// its files. Stopping a stopped daemon succeeds.
    pub fn stop(&self) {
        if let Some(pid) = self.running() {
            runner::signal(pid, libc::SIGTERM);
            let started = Instant::now();
            while self.running().is_some() && started.elapsed() < STOP_GRACE {
                thread::sleep(Duration::from_millis(2));
            }
            if self.running().is_some() {
                warn!(pid, "qemu-storage-daemon ignored SIGTERM: killing it");
                runner::signal(pid, libc::SIGKILL);
                while self.running().is_some() && started.elapsed() < STOP_GRACE * 2 {
                    thread::sleep(Duration::from_millis(2));
                }
            }
            info!(pid, "qemu-storage-daemon stopped");
        }
        self.remove_files();
    }

    fn remove_files(&self) {
        for file in [&self.socket, &self.pidfile] {
            if let Err(e) = std::fs::remove_file(file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(file = %file.display(), "cannot remove: {e}");
                }
            }
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// QEMU option values double their commas.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// The program, resolved once per process.
pub fn program() -> Result<Program, CommandError> {
    static CELL: OnceLock<Result<Program, String>> = OnceLock::new();
    CELL.get_or_init(|| Program::resolve("qemu-storage-daemon").map_err(|e| e.to_string()))
        .clone()
        .map_err(|_| CommandError::NotFound { program: "qemu-storage-daemon" })
}

/// The files of volume `uuid`'s daemon below `dir`.
pub fn daemon(dir: &Path, uuid: &uuid::Uuid) -> Daemon {
    Daemon {
        socket: dir.join(format!("{uuid}.sock")),
        pidfile: dir.join(format!("{uuid}.pid")),
        export: uuid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_are_escaped_and_uris_well_formed() {
        assert_eq!(escape("a,b"), "a,,b");
        let d = daemon(Path::new("/run/cephrbd/dp"), &uuid::Uuid::nil());
        assert_eq!(
            d.nbd_uri(),
            "nbd:unix:/run/cephrbd/dp/00000000-0000-0000-0000-000000000000.sock:exportname=00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(d.running(), None);
    }
}
