//! Named failpoints in the apply path, for the crash tests.
//!
//! - `KFD_FAILPOINT=NAME[#N]`: kfd kills itself with SIGKILL the Nth time
//!   (default: the first) it reaches NAME, as an OOM kill or a power cut
//!   would stop it: no destructors, no rollback, no unlock.
//! - `KFD_FAILPOINT=NAME[#N]:stop`: it stops itself (SIGSTOP) there
//!   instead, still holding what it holds (the root's lock), until a test
//!   resumes it with SIGCONT: a pause at a known point, not a race.
//! - `KFD_FAILPOINT_LOG=FILE`: appends the name of every failpoint reached,
//!   one per line, so a test can pick a point from a real run.
//!
//! Unset, as in production, a failpoint costs one initialised `OnceLock` read.

use std::fs::File;
use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every failpoint, in the order an apply can reach them.
pub const NAMES: &[&str] = &[
    "before-load",
    "after-load",
    "before-pin",
    "after-pin",
    "before-map-write",
    "after-map-write",
    "before-slot",
    "after-slot",
    "before-flip",
    "after-flip",
    "before-promote",
    "mid-promote",
    "after-promote",
    "before-attach",
    "after-attach",
    "before-unpin",
    "after-unpin",
    "before-store",
    "after-store",
];

/// The variable that arms a failpoint.
pub const ENV: &str = "KFD_FAILPOINT";
/// The variable that logs failpoints reached.
pub const LOG_ENV: &str = "KFD_FAILPOINT_LOG";

struct Armed {
    target: Option<(String, u64)>,
    signal: libc::c_int,
    log: Option<File>,
    seen: AtomicU64,
}

fn armed() -> &'static Armed {
    static ARMED: OnceLock<Armed> = OnceLock::new();
    ARMED.get_or_init(|| {
        let value = std::env::var(ENV).ok();
        let (point, signal) = match value.as_deref().map(|v| v.split_once(':')) {
            Some(Some((point, "stop"))) => (Some(point.to_owned()), libc::SIGSTOP),
            _ => (value, libc::SIGKILL),
        };
        let target = point.map(|v| match v.split_once('#') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (v, 1),
        });
        let log = std::env::var_os(LOG_ENV).and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        Armed {
            target,
            signal,
            log,
            seen: AtomicU64::new(0),
        }
    })
}

/// Marks reaching failpoint `name` (one of [`NAMES`]).
pub fn hit(name: &'static str) {
    debug_assert!(NAMES.contains(&name), "unlisted failpoint {name}");
    let a = armed();
    if let Some(mut log) = a.log.as_ref() {
        // One write(2) per line: it reaches the file before a kill.
        let _ = log.write_all(format!("{name}\n").as_bytes());
    }
    if let Some((target, n)) = &a.target
        && target == name
        && a.seen.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        // SAFETY: kill(2) on our own pid; SIGKILL and SIGSTOP cannot be caught.
        unsafe { libc::kill(libc::getpid(), a.signal) };
    }
}
