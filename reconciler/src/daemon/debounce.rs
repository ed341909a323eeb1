//! Turning bursts of events into reconcile passes.
//!
//! Config tools write a file in several steps (see KERNEL-NOTES.md, "How
//! real tools write a file"): vim truncates, then writes; `install` deletes,
//! creates, then writes; Salt creates an empty file, then renames the real
//! one over it. Reconciling after every step would apply the intermediate
//! states, so events are collected here and a pass runs once they stop:
//!
//! - **quiet window** (`--debounce`): a pass runs once no event arrived for
//!   this long. A whole write, whatever its steps, lands in one pass.
//! - **cap** (`--debounce-max`): a writer that never pauses cannot starve
//!   the daemon; a pass runs at the latest this long after the first event
//!   of a burst.
//! - **deletions are confirmed**: when the cap forces a pass while a file is
//!   gone that was deleted less than a quiet window ago (the middle of a
//!   delete-then-create), the pass waits until the window confirms that the
//!   file stays gone. A file removes its functions only then.
//!
//! The debouncer is plain state driven by the caller's event loop with
//! tokio's clock, so tests drive it with a paused clock.
//!
//! The price of a long quiet window is latency: every change waits for it
//! before it reaches the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// One event, as far as reconciling cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A config file was created, written, or renamed into place.
    File(String),
    /// A config file was deleted or renamed away.
    FileRemoved(String),
    /// An interface a chain names appeared, disappeared or was recreated.
    Link {
        /// Its namespace (None: kfd's own).
        netns: Option<String>,
        /// The interface.
        interface: String,
    },
    /// A network namespace file kfd cares about was created or deleted.
    Netns(String),
    /// Events were lost, or the config dir itself changed: read everything.
    Rescan(&'static str),
}

/// What a pass is for: the events of one burst.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Config files that changed (written, created, renamed, deleted).
    pub files: BTreeSet<String>,
    /// Interfaces that changed, as `name` or `name (netns NS)`.
    pub links: BTreeSet<String>,
    /// Namespaces that appeared or went away.
    pub netns: BTreeSet<String>,
    /// Why everything must be re-read, if it must.
    pub rescan: Option<&'static str>,
    /// Events coalesced into this batch.
    pub events: usize,
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let list = |s: &BTreeSet<String>| {
            const SHOWN: usize = 5;
            let mut out: Vec<&str> = s.iter().take(SHOWN).map(String::as_str).collect();
            let more = s.len().saturating_sub(SHOWN);
            let more = format!("{more} more");
            if s.len() > SHOWN {
                out.push(&more);
            }
            out.join(", ")
        };
        if !self.files.is_empty() {
            parts.push(format!("file change: {}", list(&self.files)));
        }
        if !self.links.is_empty() {
            parts.push(format!("link event: {}", list(&self.links)));
        }
        if !self.netns.is_empty() {
            parts.push(format!("netns change: {}", list(&self.netns)));
        }
        if let Some(why) = self.rescan {
            parts.push(format!("rescan: {why}"));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Collects events; says when a pass is due.
#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    max_delay: Duration,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    first: Instant,
    last: Instant,
    batch: Batch,
    /// Files whose last event was a removal, with its time.
    removed: BTreeMap<String, Instant>,
    /// A forced pass postponed until a recent deletion is confirmed.
    hold_until: Option<Instant>,
}

impl Debouncer {
    /// A debouncer with this quiet window and cap (a cap below the window is
    /// raised to it). Both are capped at [`super::MAX_DURATION`], so adding
    /// them to the clock never overflows.
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        let quiet = quiet.min(super::MAX_DURATION);
        Self {
            quiet,
            max_delay: max_delay.min(super::MAX_DURATION).max(quiet),
            pending: None,
        }
    }

    /// Records an event (now).
    pub fn push(&mut self, change: Change) {
        let now = Instant::now();
        let p = self.pending.get_or_insert_with(|| Pending {
            first: now,
            last: now,
            batch: Batch::default(),
            removed: BTreeMap::new(),
            hold_until: None,
        });
        p.last = now;
        p.batch.events += 1;
        match change {
            Change::File(name) => {
                p.removed.remove(&name);
                p.batch.files.insert(name);
            }
            Change::FileRemoved(name) => {
                p.removed.insert(name.clone(), now);
                p.batch.files.insert(name);
            }
            Change::Link { netns, interface } => {
                p.batch.links.insert(match netns {
                    Some(ns) => format!("{interface} (netns {ns})"),
                    None => interface,
                });
            }
            Change::Netns(ns) => {
                p.batch.netns.insert(ns);
            }
            Change::Rescan(why) => p.batch.rescan = Some(why),
        }
    }

    /// Whether no event is waiting for a pass.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }

    /// When the pending events are due for a pass (None: nothing pending).
    pub fn deadline(&self) -> Option<Instant> {
        let p = self.pending.as_ref()?;
        let due = (p.last + self.quiet).min(p.first + self.max_delay);
        Some(p.hold_until.map_or(due, |h| h.max(due)))
    }

    /// Takes the batch if it is due now. `gone(name)` says whether a config
    /// file is absent right now; a forced pass is postponed while a file
    /// removed less than a quiet window ago is still absent.
    pub fn fire(&mut self, gone: impl Fn(&str) -> bool) -> Option<Batch> {
        let now = Instant::now();
        if self.deadline().is_none_or(|d| now < d) {
            return None;
        }
        let p = self.pending.as_mut()?;
        if now < p.last + self.quiet {
            // Forced by the cap, in the middle of a burst.
            let hold = p
                .removed
                .iter()
                .filter(|(_, at)| **at + self.quiet > now)
                .filter(|(name, _)| gone(name))
                .map(|(_, at)| *at + self.quiet)
                .max();
            if let Some(h) = hold {
                p.hold_until = Some(h);
                return None;
            }
        }
        self.pending.take().map(|p| p.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    const QUIET: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn file(n: &str) -> Change {
        Change::File(n.into())
    }

    /// Drives a debouncer the way the daemon does: events from a channel,
    /// a sleep until the deadline. Returns each batch with its time since
    /// the start.
    async fn drive(
        script: Vec<(Duration, Change)>,
        gone: impl Fn(&str) -> bool,
    ) -> Vec<(Duration, Batch)> {
        let start = Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for (at, change) in script {
                tokio::time::sleep_until(start + at).await;
                if tx.send(change).is_err() {
                    return;
                }
            }
        });
        let mut d = Debouncer::new(QUIET, MAX);
        let mut out = Vec::new();
        let mut open = true;
        while open || !d.is_idle() {
            let deadline = d.deadline();
            tokio::select! {
                c = rx.recv(), if open => match c {
                    Some(c) => d.push(c),
                    None => open = false,
                },
                _ = sleep_until(deadline) => {
                    if let Some(b) = d.fire(&gone) {
                        out.push((start.elapsed(), b));
                    }
                }
            }
        }
        out
    }

    async fn sleep_until(deadline: Option<Instant>) {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_event_fires_after_the_quiet_window() {
        let out = drive(vec![(ms(0), file("a.yaml"))], |_| false).await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, QUIET);
        assert_eq!(out[0].1.files, BTreeSet::from(["a.yaml".to_owned()]));
        assert_eq!(out[0].1.to_string(), "file change: a.yaml");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_pass_after_its_last_event() {
        // vim: truncate (modify), write (modify), close; plus a .swp elsewhere.
        let script = (0..10)
            .map(|i| {
                (
                    ms(i * 50),
                    file(if i % 2 == 0 { "a.yaml" } else { "b.yaml" }),
                )
            })
            .collect();
        let out = drive(script, |_| false).await;
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, ms(450) + QUIET);
        assert_eq!(out[0].1.events, 10);
        assert_eq!(out[0].1.files.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn events_after_a_pass_make_a_new_batch() {
        let out = drive(
            vec![(ms(0), file("a.yaml")), (ms(500), file("b.yaml"))],
            |_| false,
        )
        .await;
        let times: Vec<Duration> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [QUIET, ms(500) + QUIET]);
        assert_eq!(out[1].1.files, BTreeSet::from(["b.yaml".to_owned()]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_never_pauses_is_capped() {
        // An event every 150 ms for 5 s: the quiet window never passes.
        // (No event falls on a deadline, so the order of simultaneous
        // wake-ups cannot matter.)
        let script = (0..34).map(|i| (ms(i * 150), file("a.yaml"))).collect();
        let out = drive(script, |_| false).await;
        let times: Vec<Duration> = out.iter().map(|(t, _)| *t).collect();
        // Capped at 2 s after the first event of each burst, then the tail.
        assert_eq!(times, [ms(2000), ms(2100 + 2000), ms(4950) + QUIET]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_forced_pass_waits_for_a_recent_deletion_to_be_confirmed() {
        // Writes every 70 ms; at 1950 ms b.yaml is deleted and stays gone.
        let mut script: Vec<(Duration, Change)> =
            (0..40).map(|i| (ms(i * 70), file("a.yaml"))).collect();
        script.push((ms(1950), Change::FileRemoved("b.yaml".into())));
        script.sort_by_key(|(t, _)| *t);
        let out = drive(script, |n| n == "b.yaml").await;
        // The cap (2000 ms) falls 50 ms after the deletion: the pass waits
        // until 1950 + 200 ms, when the window confirms b.yaml is gone.
        assert_eq!(out[0].0, ms(2150));
        assert!(out[0].1.files.contains("b.yaml"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_recreated_file_does_not_hold_the_pass() {
        // install(1): delete, create, write. The file exists again at the cap.
        let mut script: Vec<(Duration, Change)> =
            (0..40).map(|i| (ms(i * 70), file("a.yaml"))).collect();
        script.push((ms(1950), Change::FileRemoved("b.yaml".into())));
        script.push((ms(1951), file("b.yaml")));
        script.sort_by_key(|(t, _)| *t);
        let out = drive(script, |_| false).await;
        assert_eq!(out[0].0, ms(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deletion_in_a_quiet_burst_fires_after_the_window() {
        let out = drive(vec![(ms(0), Change::FileRemoved("a.yaml".into()))], |_| {
            true
        })
        .await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn links_netns_and_rescans_are_described() {
        let out = drive(
            vec![
                (
                    ms(0),
                    Change::Link {
                        netns: Some("blue".into()),
                        interface: "eth0".into(),
                    },
                ),
                (ms(1), Change::Netns("/run/netns/blue".into())),
                (ms(2), Change::Rescan("inotify queue overflow")),
            ],
            |_| false,
        )
        .await;
        assert_eq!(
            out[0].1.to_string(),
            "link event: eth0 (netns blue); netns change: /run/netns/blue; rescan: inotify queue overflow"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn huge_windows_are_capped_instead_of_overflowing_the_clock() {
        let mut d = Debouncer::new(Duration::MAX, Duration::MAX);
        d.push(file("a.yaml"));
        assert_eq!(
            d.deadline(),
            Some(Instant::now() + super::super::MAX_DURATION)
        );
        assert_eq!(d.fire(|_| true), None);
    }

    #[test]
    fn nothing_pending_means_no_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut d = Debouncer::new(QUIET, ms(50));
            assert!(d.deadline().is_none() && d.is_idle());
            assert_eq!(d.fire(|_| false), None);
            d.push(file("a.yaml"));
            // The cap is raised to the quiet window.
            assert_eq!(d.deadline(), Some(Instant::now() + QUIET));
            assert_eq!(d.fire(|_| false), None, "not due yet");
            tokio::time::advance(QUIET).await;
            assert!(d.fire(|_| false).is_some());
            assert!(d.is_idle());
        });
    }
}
