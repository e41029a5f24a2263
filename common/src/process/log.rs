//! Logging: `tracing` events go to stderr and to syslog (facility LOCAL2, like the Python
//! xapi-storage library), never to stdout, which carries only the protocol answer.
//!
//! xapi-storage-script keeps a plugin's stderr only when the call fails, so syslog is the
//! record of successful calls. The level comes from `CEPHRBD_LOG` (`error`, `warn`,
//! `info`, `debug`, `trace`; default `info`). At `debug`, every external command is logged
//! (target `cephrbd::exec`) with its redacted arguments and its duration.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The environment variable that sets the log level.
pub const LEVEL_VAR: &str = "CEPHRBD_LOG";

/// syslog facility LOCAL2 (18 << 3).
const FACILITY_LOCAL2: u8 = 18 << 3;

/// Installs the global subscriber; `ident` names the program in syslog. Safe to call twice.
pub fn init(ident: &'static str) {
    let level = std::env::var(LEVEL_VAR).ok().and_then(|l| l.parse::<Level>().ok()).unwrap_or(Level::INFO);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .with_writer(Sinks { ident })
        .finish();
    // A second call (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Hands each event's writer the event's level.
struct Sinks {
    ident: &'static str,
}

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { ident: self.ident, level: Level::INFO }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventWriter { ident: self.ident, level: *meta.level() }
    }
}

/// Writes one formatted event to stderr and to syslog.
struct EventWriter {
    ident: &'static str,
    level: Level,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write_all(buf)?;
        send_syslog(self.ident, self.level, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Sends one line to `/dev/log` if a syslog daemon listens there; silently does nothing
/// otherwise (a missing syslog must never fail a storage call).
fn send_syslog(ident: &str, level: Level, line: &[u8]) {
    static SOCKET: OnceLock<Option<UnixDatagram>> = OnceLock::new();
    let socket = SOCKET.get_or_init(|| {
        let s = UnixDatagram::unbound().ok()?;
        s.connect("/dev/log").ok()?;
        Some(s)
    });
    if let Some(socket) = socket {
        let mut msg =
            format!("<{}>{}[{}]: ", FACILITY_LOCAL2 | severity(level), ident, std::process::id()).into_bytes();
        msg.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        // Dropping a log line is better than failing or blocking the call.
        let _ = socket.send(&msg);
    }
}
