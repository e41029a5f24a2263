//! Logging: `tracing` events go to stderr and to syslog (facility LOCAL2, like the Python
//! xapi-storage library), never to stdout, which carries only the protocol answer.
//!
//! xapi-storage-script keeps a plugin's stderr only when the call fails, so syslog is the
//! record of successful calls. The level comes from `CEPHRBD_LOG` (`error`, `warn`,
//! `info`, `debug`, `trace`; default `info`). At `debug`, every external command is logged
//! (target `cephrbd::exec`) with its redacted arguments and its duration.
//!
//! Every line is scrubbed of the secrets the process knows ([`secrets::scrub`]) before it
//! is written anywhere, and logging never blocks a call: the syslog socket is non-blocking
//! (a full queue drops the line).

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::OnceLock;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use super::secrets;

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
    /// Writes one formatted event, with every known secret scrubbed ([`secrets::scrub`]).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = secrets::scrub(&String::from_utf8_lossy(buf));
        io::stderr().write_all(line.as_bytes())?;
        send_syslog(self.ident, self.level, line.as_bytes());
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

/// The syslog socket.
const SYSLOG: &str = "/dev/log";

/// A datagram socket connected to the syslog socket at `path`, **non-blocking**: when the
/// syslog daemon is slow or stopped and its queue is full, a line is dropped rather than
/// the call blocked (xapi waits for the plugin forever). `None` when nobody listens there.
fn connect(path: &Path) -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(path).ok()?;
    socket.set_nonblocking(true).ok()?;
    Some(socket)
}

/// One syslog line: `<PRI>ident[pid]: text`.
fn frame(ident: &str, level: Level, line: &[u8]) -> Vec<u8> {
    let mut msg = format!("<{}>{}[{}]: ", FACILITY_LOCAL2 | severity(level), ident, std::process::id()).into_bytes();
    msg.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
    msg
}

/// Sends one line to `/dev/log` if a syslog daemon listens there; silently does nothing
/// otherwise (a missing syslog must never fail a storage call).
fn send_syslog(ident: &str, level: Level, line: &[u8]) {
    static SOCKET: OnceLock<Option<UnixDatagram>> = OnceLock::new();
    if let Some(socket) = SOCKET.get_or_init(|| connect(Path::new(SYSLOG))) {
        // Dropping a log line (a full queue: WouldBlock) is better than failing or blocking
        // the call.
        let _ = socket.send(&frame(ident, level, line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Issue 14 item 4: a syslog daemon that stopped reading (its queue full) never blocks
    /// a call: the lines are dropped.
    #[test]
    fn a_stalled_syslog_never_blocks() {
        let dir = std::env::temp_dir().join(format!("cephrbd-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("log");
        // Bound, never read: the kernel queue fills after a few hundred datagrams.
        let _daemon = UnixDatagram::bind(&path).expect("bind");
        let socket = connect(&path).expect("connects");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let line = frame("test", Level::INFO, &[b'x'; 200]);
            let dropped = (0..5000).filter(|_| socket.send(&line).is_err()).count();
            let _ = tx.send(dropped);
        });
        let started = Instant::now();
        let dropped = rx.recv_timeout(Duration::from_secs(10)).expect("5000 log lines sent without blocking");
        assert!(dropped > 0, "the queue never filled: the test proves nothing");
        assert!(started.elapsed() < Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(dir);
    }
}
