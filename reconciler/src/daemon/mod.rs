//! `kfd run`: the daemon. It keeps the kernel converged on the config dir
//! as config tools write it.
//!
//! One single-threaded event loop waits for:
//! - **config dir events** (inotify on the dir, [`watch`]), and link and
//!   namespace events ([`links`]), which go through the [`debounce`]r;
//! - **SIGHUP**: a pass right away (`systemctl reload`);
//! - **the resync timer**: a pass after `--resync-interval` without one,
//!   which repairs drift (entries removed by hand, a detached link);
//! - **the retry timer** after a failed pass, backing off from 100 ms to 1 min;
//! - **SIGTERM/SIGINT**: finish the pass in progress, then exit. The data
//!   plane stays attached (kfd never detaches on exit).
//!
//! A pass ([`pass`]) runs on a blocking thread and holds the bpffs root's
//! exclusive lock only while it runs, so a `kfd apply` started by hand
//! waits for it and never interleaves. Only one pass runs at a time; events
//! that arrive meanwhile make the next one. Nothing wakes the daemon while
//! nothing happens except the resync timer.
//!
//! systemd learns READY=1 after the first pass, STATUS= after each, and
//! RELOADING=1/READY=1 around a SIGHUP pass. A first pass that cannot work
//! at all (bpffs, the state dir or live state unusable) is no start: kfd
//! exits 1 instead of reporting ready, so `systemctl start` fails and says
//! why. Later failures are retried, since kfd has shown it can work.

pub mod debounce;
mod http;
pub mod links;
pub mod pass;
pub mod sdnotify;
pub mod watch;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::kernel::netns::netns_path;
use crate::metrics::{Metrics, MetricsError};
use crate::reconcile::Instance;
use debounce::{Change, Debouncer};
use links::LinkWatch;
use pass::{Outcome, Reported, Trigger};
use sdnotify::{Notifier, NotifyError};
use watch::{DirWatch, WatchError};

/// The daemon's knobs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Quiet window: a pass runs once events stop for this long.
    pub debounce: Duration,
    /// A pass runs at the latest this long after the first event of a burst.
    pub debounce_max: Duration,
    /// A pass runs after this long without one (None: never).
    pub resync: Option<Duration>,
    /// Where to serve metrics (None: nowhere).
    pub metrics_address: Option<SocketAddr>,
}

/// First retry delay after a failed pass; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Errors that stop the daemon from starting. Once running, it reports
/// problems and keeps going.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The event loop could not be built.
    #[error("starting the event loop: {0}")]
    Runtime(#[source] std::io::Error),
    /// A signal handler could not be installed.
    #[error("handling {signal}: {source}")]
    Signal {
        /// The signal.
        signal: &'static str,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The config dir's path could not be made absolute.
    #[error("config dir {path}: {source}")]
    ConfigDir {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// inotify could not be set up.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The metrics address could not be bound.
    #[error("metrics address {address}: {source}")]
    MetricsBind {
        /// The address.
        address: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// `$NOTIFY_SOCKET` is unusable.
    #[error(transparent)]
    Notify(#[from] NotifyError),
    /// The startup pass could not work at all.
    #[error("the startup reconcile failed before changing anything: {0}")]
    Startup(String),
}

/// The retry delay after `attempt` consecutive failures (1-based).
pub fn backoff(attempt: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// The longest duration flag kfd takes: a week is far past any sensible
/// quiet window or resync interval, so anything longer is a typo, and
/// durations near `u64::MAX` would overflow the clock's arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses a duration such as `200ms`, `5s`, `1m`, `1h` (or plain seconds),
/// at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let too_long = || format!("{s:?} is longer than a week (168h), the most kfd takes");
    let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
        if *e.kind() == std::num::IntErrorKind::PosOverflow {
            too_long()
        } else {
            format!("{s:?} is not a duration (like 200ms, 5s, 1m)")
        }
    })?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    let d = n
        .checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(too_long)?;
    Ok(d)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(inst: Instance, opts: Options) -> Result<(), DaemonError> {
    // One thread runs the loop; passes and scrapes get blocking threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(4)
        .build()
        .map_err(DaemonError::Runtime)?;
    let result = rt.block_on(Daemon::start(inst, opts)?.run());
    // A scrape still reading the kernel gets a moment; a pass has finished.
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

struct Daemon {
    inst: Arc<Instance>,
    opts: Options,
    config_dir: PathBuf,
    notifier: Notifier,
    rx: mpsc::UnboundedReceiver<Change>,
    dirs: DirWatch,
    links: LinkWatch,
    /// Namespace files that chains name (events on others are ignored).
    netns_files: BTreeSet<String>,
    debouncer: Debouncer,
    seq: u64,
    in_flight: Option<JoinHandle<Outcome>>,
    /// A pass to start as soon as none runs (startup, SIGHUP).
    forced: Option<Trigger>,
    retry: Option<(Instant, u32)>,
    failures: u32,
    resync_at: Option<Instant>,
    ready: bool,
    /// The pass that answers a SIGHUP, for READY=1 after RELOADING=1.
    reload_seq: Option<u64>,
    reported: Reported,
}

impl Daemon {
    /// Everything that can fail at startup fails here, before any pass.
    fn start(inst: Instance, opts: Options) -> Result<Self, DaemonError> {
        let notifier = Notifier::from_env()?;
        let config_dir =
            std::path::absolute(&inst.config_dir).map_err(|source| DaemonError::ConfigDir {
                path: inst.config_dir.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut dirs = DirWatch::new(&config_dir, tx.clone())?;
        let (_, errors) = dirs.ensure(&BTreeSet::new());
        for e in errors {
            warn!(error = %e, "the config dir is not watched; kfd watches it once it can");
        }
        if !dirs.watching_config() {
            warn!(config_dir = %config_dir.display(), "the config dir does not exist (yet)");
        }
        Ok(Self {
            inst: Arc::new(inst),
            debouncer: Debouncer::new(opts.debounce, opts.debounce_max),
            opts,
            config_dir,
            notifier,
            rx,
            dirs,
            links: LinkWatch::new(tx),
            netns_files: BTreeSet::new(),
            seq: 0,
            in_flight: None,
            forced: Some(Trigger::Startup),
            retry: None,
            failures: 0,
            resync_at: None,
            ready: false,
            reload_seq: None,
            reported: Reported::default(),
        })
    }

    async fn run(mut self) -> Result<(), DaemonError> {
        let sig = |kind, name| {
            signal(kind).map_err(|source| DaemonError::Signal {
                signal: name,
                source,
            })
        };
        let mut term = sig(SignalKind::terminate(), "SIGTERM")?;
        let mut int = sig(SignalKind::interrupt(), "SIGINT")?;
        let mut hup = sig(SignalKind::hangup(), "SIGHUP")?;
        let metrics = Arc::new(Metrics::install()?);
        if let Some(address) = self.opts.metrics_address {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| DaemonError::MetricsBind { address, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| DaemonError::MetricsBind { address, source })?;
            info!(address = %local, "serving metrics on http://{local}/metrics");
            tokio::spawn(http::serve(listener, metrics, self.inst.layout.clone()));
        }
        info!(
            config_dir = %self.config_dir.display(),
            bpffs = %self.inst.layout.root().display(),
            debounce_ms = self.opts.debounce.as_millis() as u64,
            debounce_max_ms = self.opts.debounce_max.as_millis() as u64,
            resync_s = self.opts.resync.map_or(0, |d| d.as_secs()),
            "kfd run: watching {}",
            self.config_dir.display()
        );

        let stopped_by = loop {
            if self.in_flight.is_none()
                && let Some(t) = self.forced.take()
            {
                self.start_pass(t);
            }
            let idle = self.in_flight.is_none();
            let quiet = idle && self.debouncer.is_idle();
            let deadline = self.debouncer.deadline();
            let retry_at = self.retry.map(|(at, _)| at);
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => {
                    info!("SIGHUP: re-reading every file and the live state");
                    self.notify(&[
                        ("RELOADING", "1"),
                        ("MONOTONIC_USEC", &sdnotify::monotonic_usec().to_string()),
                    ]);
                    self.forced = Some(Trigger::Sighup);
                    self.reload_seq = None;
                }
                Some(change) = self.rx.recv() => self.on_change(change),
                _ = sleep_until(deadline), if idle => {
                    let dir = self.config_dir.clone();
                    if let Some(batch) = self.debouncer.fire(|name| !dir.join(name).exists()) {
                        self.start_pass(Trigger::Events(batch));
                    }
                }
                _ = sleep_until(retry_at), if quiet => {
                    let attempt = self.retry.map_or(1, |(_, n)| n);
                    self.start_pass(Trigger::Retry(attempt));
                }
                _ = sleep_until(self.resync_at), if quiet => self.start_pass(Trigger::Resync),
                done = join(&mut self.in_flight) => {
                    self.in_flight = None;
                    self.finish_pass(done)?;
                }
            }
        };
        if let Some(pass) = self.in_flight.take() {
            info!("{stopped_by}: finishing the reconcile in progress before exiting");
            let _ = pass.await;
        }
        self.notify(&[("STOPPING", "1")]);
        info!("{stopped_by}: exiting; the data plane stays attached");
        Ok(())
    }

    fn notify(&self, fields: &[(&str, &str)]) {
        if let Err(e) = self.notifier.notify(fields) {
            warn!(error = %e, "telling systemd failed");
        }
    }

    fn on_change(&mut self, change: Change) {
        if let Change::Netns(path) = &change {
            if !self.netns_files.contains(path) {
                return; // a namespace no chain names
            }
            // A deleted namespace must not be kept alive by our socket.
            self.links.prune();
        }
        self.debouncer.push(change);
    }

    fn start_pass(&mut self, trigger: Trigger) {
        self.seq += 1;
        let seq = self.seq;
        if trigger == Trigger::Sighup {
            self.reload_seq = Some(seq);
        }
        self.retry = None;
        let inst = self.inst.clone();
        let reported = std::mem::take(&mut self.reported);
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            pass::run(&inst, &trigger, seq, reported)
        }));
    }

    fn finish_pass(&mut self, done: Result<Outcome, JoinError>) -> Result<(), DaemonError> {
        let outcome = match done {
            Ok(o) => o,
            Err(e) => {
                error!(error = %e, "the reconcile pass panicked");
                let status = format!("failed: reconcile #{} panicked", self.seq);
                Outcome {
                    retry: true,
                    unusable: Some(status.clone()),
                    status,
                    links: None,
                    netns_dirs: None,
                    reported: Reported::default(),
                }
            }
        };
        if !self.ready
            && let Some(error) = outcome.unusable
        {
            self.notify(&[("STATUS", &outcome.status)]);
            return Err(DaemonError::Startup(error));
        }
        self.reported = outcome.reported;
        // Namespace dirs first, then links: a namespace created after the
        // dir is watched is an event, one created before is found by
        // `update` (which checks the interfaces once it listens).
        let netns_dirs = outcome.netns_dirs.clone().unwrap_or_default();
        let (rewatched, errors) = self.dirs.ensure(&netns_dirs);
        for e in errors {
            warn!(error = %e, "watching failed; kfd tries again after the next pass");
        }
        if rewatched {
            // Writes between losing the old watch and this one went unseen.
            self.debouncer
                .push(Change::Rescan("the config dir is watched again"));
        }
        let mut links_failed = false;
        if let Some(wanted) = &outcome.links {
            for e in self.links.update(wanted) {
                // `ip netns add` creates the file before it mounts the
                // namespace on it, and the mount is no inotify event: try
                // again soon rather than wait for the resync.
                links_failed = true;
                warn!(error = %e, "link notifications unavailable; retrying");
            }
            self.netns_files = wanted
                .keys()
                .flatten()
                .map(|ns| netns_path(ns).display().to_string())
                .collect();
        }
        let now = Instant::now();
        if outcome.retry || links_failed {
            self.failures += 1;
            let delay = backoff(self.failures);
            info!(
                attempt = self.failures,
                delay_ms = delay.as_millis() as u64,
                "retrying in {delay:?}"
            );
            self.retry = Some((now + delay, self.failures));
        } else {
            self.failures = 0;
            self.retry = None;
        }
        // Options may come from elsewhere than the flags' parser: never
        // past MAX_DURATION, so the addition cannot overflow.
        self.resync_at = self.opts.resync.map(|d| now + d.min(MAX_DURATION));
        let status = outcome.status.as_str();
        if !self.ready {
            self.ready = true;
            self.notify(&[("READY", "1"), ("STATUS", status)]);
        } else if self.reload_seq == Some(self.seq) {
            self.reload_seq = None;
            self.notify(&[("READY", "1"), ("STATUS", status)]);
        } else {
            self.notify(&[("STATUS", status)]);
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn join<T>(handle: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match handle {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_to_a_minute() {
        let ms: Vec<u128> = (1..=12).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            ms,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000
            ]
        );
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
        assert_eq!(parse_duration("168h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("10080m"), Ok(MAX_DURATION));
        for long in [
            "604800001ms",
            "169h",
            "18446744073709551615ms",
            "18446744073709551615h",
            "184467440737095516150",
        ] {
            assert_eq!(
                parse_duration(long),
                Err(format!(
                    "{long:?} is longer than a week (168h), the most kfd takes"
                )),
            );
        }
    }
}
