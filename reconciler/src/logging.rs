//! Where `kfd run` logs: journald under systemd, stderr otherwise.
//!
//! systemd connects a service's stderr to the journal and says so in
//! `$JOURNAL_STREAM` (`device:inode` of that stream). When stderr is that
//! stream, kfd talks to journald's socket directly instead, so the
//! structured fields of each event (file, interface, hook, function, map,
//! strategy, duration) become journal fields (`KFD_INTERFACE=eth0`, ...)
//! that `journalctl` can filter on. When journald's socket is missing,
//! tracing-journald refuses to start and kfd falls back to stderr.
//!
//! The one-shot commands (`apply`, `plan`, ...) print for people and do not
//! use this.

use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;

use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::error::Escaped;

/// Where to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// journald when stderr is the journal (under systemd), else stderr.
    Auto,
    /// journald, or stderr if it cannot be reached.
    Journald,
    /// stderr.
    Stderr,
}

/// Where logs ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// journald, with structured fields.
    Journald,
    /// stderr, one line per event.
    Stderr,
}

/// Installing the logger failed.
#[derive(Debug, thiserror::Error)]
#[error("installing the logger: {0}")]
pub struct LoggingError(#[source] tracing_subscriber::util::TryInitError);

/// stderr for the fmt layer, which writes each event whole in one call: the
/// control characters inside an event (a newline in a file name, an escape
/// sequence in an interface name, in the message or a field) are escaped,
/// so one event is one line and cannot drive a terminal.
struct EscapingStderr;

impl io::Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        io::stderr().write_all(format!("{}{end}", Escaped(body)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Whether stderr is the journal stream systemd set up.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value
        .to_str()
        .and_then(|v| v.split_once(':'))
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
    else {
        return false;
    };
    // The variable is inherited by children whose stderr may be elsewhere:
    // it only counts if it names our stderr.
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(stderr)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Installs the process-wide logger. Returns where logs go, and why
/// journald was not used when it was asked for.
pub fn init(target: Target, level: Level) -> Result<(Chosen, Option<String>), LoggingError> {
    let filter = LevelFilter::from_level(level);
    let want_journal = match target {
        Target::Auto => stderr_is_journal(),
        Target::Journald => true,
        Target::Stderr => false,
    };
    let mut fallback = None;
    if want_journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_syslog_identifier("kfd".into())
                    .with_field_prefix(Some("KFD".into()))
                    .with_priority_mappings(tracing_journald::PriorityMappings {
                        // Not "notice": a routine pass is not noteworthy.
                        info: tracing_journald::Priority::Informational,
                        debug: tracing_journald::Priority::Debug,
                        ..tracing_journald::PriorityMappings::new()
                    });
                tracing_subscriber::registry()
                    .with(layer)
                    .with(filter)
                    .try_init()
                    .map_err(LoggingError)?;
                return Ok((Chosen::Journald, None));
            }
            Err(e) => fallback = Some(format!("journald is not reachable ({e})")),
        }
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(|| EscapingStderr)
        .with_target(false);
    tracing_subscriber::registry()
        .with(stderr)
        .with(filter)
        .try_init()
        .map_err(LoggingError)?;
    Ok((Chosen::Stderr, fallback))
}
