//! One reconcile pass of the daemon: `reconcile::Instance` under the
//! exclusive lock, then what it did turned into one summary log line,
//! error events with structured fields, metrics, and what to watch next.
//! Blocking: the event loop runs it on a blocking thread.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::debounce::Batch;
use super::links::Wanted;
use crate::apply::{ApplyError, ApplyReport};
use crate::config::lastgood::SnapshotError;
use crate::kernel::netns::netns_path;
use crate::metrics::{self, PassRecord};
use crate::model::ChainKey;
use crate::plan::{Action, Blocked, Plan};
use crate::reconcile::{Applied, Gathered, Instance, Lock, ReconcileError};
use crate::state::model::InterfaceState;

/// Why a pass runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The daemon started.
    Startup,
    /// Files, links or namespaces changed.
    Events(Batch),
    /// SIGHUP (`systemctl reload kfd`).
    Sighup,
    /// The periodic resync.
    Resync,
    /// A retry after a failed pass (attempt number).
    Retry(u32),
}

impl Trigger {
    /// A short label: the metric's `reason` label and the log's `reason`
    /// field.
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Events(b) if !b.files.is_empty() => "file",
            Trigger::Events(b) if !b.links.is_empty() => "link",
            Trigger::Events(b) if !b.netns.is_empty() => "netns",
            Trigger::Events(_) => "rescan",
            Trigger::Sighup => "sighup",
            Trigger::Resync => "resync",
            Trigger::Retry(_) => "retry",
        }
    }

    /// The attempt number of a retry (the log's `attempt` field).
    pub fn attempt(&self) -> Option<u32> {
        match self {
            Trigger::Retry(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Startup => f.write_str("startup"),
            Trigger::Events(b) => write!(f, "{b}"),
            Trigger::Sighup => f.write_str("SIGHUP"),
            Trigger::Resync => f.write_str("resync"),
            Trigger::Retry(n) => write!(f, "retry #{n}"),
        }
    }
}

/// Problems already reported, so a problem that persists is logged as an
/// error once and then only at debug level on every later pass.
#[derive(Debug, Clone, Default)]
pub struct Reported(BTreeSet<String>);

/// What the event loop needs from a pass.
#[derive(Debug)]
pub struct Outcome {
    /// A failure that may go away by itself (kernel, lock, I/O): retry with
    /// back-off. Chains waiting for their interface are not retried; link
    /// events wake them.
    pub retry: bool,
    /// The pass could not work at all, for a reason outside the config
    /// (bpffs, the state dir, reading live state): the error. At startup
    /// this stops the daemon instead of reporting it ready.
    pub unusable: Option<String>,
    /// One line for systemd's STATUS=.
    pub status: String,
    /// Interfaces to watch, when the pass read them.
    pub links: Option<Wanted>,
    /// Dirs holding the namespaces chains name, when the pass read them.
    pub netns_dirs: Option<BTreeSet<PathBuf>>,
    /// Problems reported so far.
    pub reported: Reported,
}

struct Passed {
    g: Gathered,
    plan: Plan,
    report: ApplyReport,
    store_error: Option<SnapshotError>,
    lock_wait: Duration,
}

fn converge(inst: &Instance) -> Result<Passed, ReconcileError> {
    inst.ensure_bpffs()?;
    let t = Instant::now();
    let lock = Lock::acquire(inst.layout.root(), true, || {
        info!(
            bpffs = %inst.layout.root().display(),
            "another kfd holds the bpffs root; waiting for it to finish"
        );
    })?;
    let lock_wait = t.elapsed();
    let g = inst.gather()?;
    let plan = inst.plan(&g);
    let Applied {
        report,
        store_error,
    } = inst.apply(&g, &plan);
    drop(lock);
    Ok(Passed {
        g,
        plan,
        report,
        store_error,
        lock_wait,
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Runs one pass and reports it.
pub fn run(inst: &Instance, trigger: &Trigger, seq: u64, previous: Reported) -> Outcome {
    let started = Instant::now();
    let reason = trigger.to_string();
    match converge(inst) {
        Ok(p) => report(inst, trigger, seq, previous, p, started),
        Err(e) => {
            let duration = started.elapsed();
            let mut reported = Reported::default();
            let text = e.to_string();
            if previous.0.contains(&text) {
                debug!(error = %e, "reconcile failed again");
            } else {
                error!(
                    reason = trigger.label(),
                    attempt = trigger.attempt(),
                    error = %e,
                    "reconcile failed before changing anything"
                );
            }
            // A config dir that cannot be read is the config's problem, like
            // a bad file; anything else is the machine's.
            let unusable = (!matches!(e, ReconcileError::Config(_))).then(|| text.clone());
            reported.0.insert(text);
            info!(
                seq,
                reason = trigger.label(),
                attempt = trigger.attempt(),
                result = "failure",
                duration_ms = ms(duration),
                "reconcile #{seq} ({reason}): failed before changing anything: {e}"
            );
            metrics::record_pass(&PassRecord {
                success: false,
                reason: trigger.label(),
                duration,
                ..Default::default()
            });
            Outcome {
                retry: true,
                unusable,
                status: format!("failed: reconcile #{seq} ({reason}): {e}"),
                links: None,
                netns_dirs: None,
                reported,
            }
        }
    }
}

/// What became of one chain.
enum ChainResult<'a> {
    Converged,
    WaitingForInterface,
    Failed(&'a ApplyError),
}

fn report(
    inst: &Instance,
    trigger: &Trigger,
    seq: u64,
    previous: Reported,
    p: Passed,
    started: Instant,
) -> Outcome {
    let Passed {
        g,
        plan,
        report,
        store_error,
        lock_wait,
    } = p;
    let reason = trigger.to_string();
    let mut reported = Reported::default();
    // Logs a problem as `new` the first time, at debug level after that.
    let mut problem = |key: String, new: &dyn Fn()| {
        if previous.0.contains(&key) {
            debug!("still: {key}");
        } else {
            new();
        }
        reported.0.insert(key);
    };

    // Config: every error with its place, and what became of each file.
    for e in &g.config.errors {
        problem(e.to_string(), &|| {
            warn!(
                file = %e.file,
                line = e.mark.map(|m| m.line),
                col = e.mark.map(|m| m.col),
                error = %e.kind,
                "{e}"
            );
        });
    }
    let (mut valid, mut invalid) = (0, 0);
    for (name, st) in &g.config.files {
        let file = crate::config::error::Escaped(&inst.config_dir.join(name).display().to_string())
            .to_string();
        match st.describe() {
            None => valid += 1,
            Some(what) => {
                invalid += 1;
                problem(format!("{file}: {what}"), &|| {
                    warn!(file = %file, "{file}: {what}");
                });
            }
        }
    }

    // Chains: what was done, or why not.
    let blocked: BTreeMap<&ChainKey, &Blocked> = plan.blocked().collect();
    let mut actions = Vec::new();
    let mut failing = Vec::new();
    let mut waiting = Vec::new();
    let mut converged_chains = 0;
    for c in &report.chains {
        // Fields that do not apply are left out (no empty KFD_NETNS=).
        let netns = c.key.netns.as_deref();
        let result = match (&c.error, blocked.get(&c.key)) {
            (None, _) => ChainResult::Converged,
            (Some(_), Some(Blocked::InterfaceMissing)) => ChainResult::WaitingForInterface,
            (Some(e), _) => ChainResult::Failed(e),
        };
        match result {
            ChainResult::Converged => {
                converged_chains += 1;
                debug!(
                    interface = %c.key.interface,
                    hook = %c.key.hook,
                    netns,
                    actions = c.executed,
                    entries_written = c.entries_written,
                    duration_ms = ms(c.elapsed),
                    "converged {}",
                    c.key
                );
                let chain_actions = plan
                    .chains
                    .iter()
                    .find(|cp| cp.key == c.key)
                    .map(|cp| cp.actions.as_slice())
                    .unwrap_or_default();
                for a in chain_actions {
                    let (action, strategy) = metrics::action_labels(a);
                    let (function, map) = action_subject(a);
                    debug!(
                        interface = %c.key.interface,
                        hook = %c.key.hook,
                        netns,
                        function,
                        map,
                        action,
                        strategy,
                        "{action} ({strategy})"
                    );
                    actions.push((action, strategy));
                }
            }
            ChainResult::WaitingForInterface => {
                waiting.push(c.key.to_string());
                problem(format!("{}: waiting for its interface", c.key), &|| {
                    warn!(
                        interface = %c.key.interface,
                        hook = %c.key.hook,
                        netns,
                        "{}: the interface does not exist; the chain is set up when it appears",
                        c.key
                    );
                });
            }
            ChainResult::Failed(e) => {
                failing.push(c.key.to_string());
                let function = match e {
                    ApplyError::Function { function, .. } => Some(function.as_str()),
                    _ => None,
                };
                problem(format!("{}: {e}", c.key), &|| {
                    error!(
                        interface = %c.key.interface,
                        hook = %c.key.hook,
                        netns,
                        function,
                        duration_ms = ms(c.elapsed),
                        error = %e,
                        "{}: {e}; it keeps serving its previous configuration",
                        c.key
                    );
                });
            }
        }
    }

    // The store: what could not be read, and whether this pass's copies landed.
    for e in &g.store_errors {
        problem(e.to_string(), &|| {
            warn!(error = %e, "{e}; the kernel's load records stand in for it");
        });
    }
    if let Some(e) = &store_error {
        problem(format!("saving: {e}"), &|| {
            error!(
                error = %e,
                "the kernel converged, but {e}; nothing is lost (the kernel's load records say what runs), and the next pass retries"
            );
        });
    }
    // Held functions: live, kept as they are, because of an error.
    let held: Vec<String> = g
        .config
        .desired
        .chains
        .iter()
        .flat_map(|(k, c)| c.held.iter().map(move |(n, h)| format!("{n} on {k}: {h}")))
        .collect();
    for h in &held {
        problem(format!("held {h}"), &|| {
            warn!("{h}; it is kept exactly as it is live");
        });
    }

    for sr in &report.shared {
        if let Some(e) = &sr.error {
            failing.push(format!("shared map {}", sr.name));
            problem(format!("shared map {}: {e}", sr.name), &|| {
                error!(map = %sr.name, error = %e, "shared map {}: {e}", sr.name);
            });
        }
    }
    let duration = started.elapsed();
    let success =
        failing.is_empty() && waiting.is_empty() && held.is_empty() && store_error.is_none();
    let entries_written = report.entries_written();
    let what = if report.chains.is_empty() {
        "in sync".to_owned()
    } else {
        let mut parts = Vec::new();
        if converged_chains > 0 {
            parts.push(format!(
                "converged {} ({}, {} written)",
                plural(converged_chains, "chain", "chains"),
                plural(actions.len(), "action", "actions"),
                plural(entries_written, "entry", "entries"),
            ));
        }
        if !waiting.is_empty() {
            parts.push(format!(
                "{} waiting for {}",
                plural(waiting.len(), "chain", "chains"),
                if waiting.len() == 1 {
                    "its interface"
                } else {
                    "their interfaces"
                }
            ));
        }
        if !failing.is_empty() {
            parts.push(format!(
                "{} failed",
                plural(failing.len(), "chain", "chains")
            ));
        }
        parts.join(", ")
    };
    let files_note = if invalid > 0 {
        format!("; {} invalid", plural(invalid, "file", "files"))
    } else {
        String::new()
    };
    info!(
        seq,
        reason = trigger.label(),
        attempt = trigger.attempt(),
        result = if success { "success" } else { "failure" },
        duration_ms = ms(duration),
        lock_wait_ms = ms(lock_wait),
        chains = report.chains.len(),
        actions = actions.len(),
        entries_written,
        files_valid = valid,
        files_invalid = invalid,
        "reconcile #{seq} ({reason}): {what}{files_note}, {:.1} ms",
        ms(duration)
    );
    metrics::record_pass(&PassRecord {
        success,
        reason: trigger.label(),
        duration,
        actions,
        entries_written,
        files: Some((valid, invalid)),
        config_errors: g.config.errors.len(),
        chains_failed: failing.len() + waiting.len(),
    });

    let status = if success {
        format!(
            "converged: {}; reconcile #{seq} ({reason}){files_note}",
            plural(g.config.desired.chains.len(), "chain", "chains")
        )
    } else {
        let mut s = Vec::new();
        if !failing.is_empty() {
            s.push(format!("failing: {}", failing.join(", ")));
        }
        if !waiting.is_empty() {
            s.push(format!("waiting for interface: {}", waiting.join(", ")));
        }
        format!("{}; reconcile #{seq}{files_note}", s.join("; "))
    };

    // What to watch: the interfaces of every chain, wanted or live.
    let mut links: Wanted = BTreeMap::new();
    for key in g
        .config
        .desired
        .chains
        .keys()
        .chain(g.observed.chains.keys())
    {
        let ifindex = match g
            .observed
            .interfaces
            .get(&(key.netns.clone(), key.interface.clone()))
        {
            Some(InterfaceState::Present { ifindex, .. }) => Some(*ifindex),
            _ => None,
        };
        links
            .entry(key.netns.clone())
            .or_default()
            .insert(key.interface.clone(), ifindex);
    }
    let netns_dirs = links
        .keys()
        .flatten()
        .filter_map(|ns| netns_path(ns).parent().map(PathBuf::from))
        .collect();

    Outcome {
        // Objects and the store can come right without a config event (an
        // upgrade finishing, space freed): retry those too.
        retry: !failing.is_empty() || store_error.is_some() || g.config.object_errors > 0,
        unusable: None,
        status,
        links: Some(links),
        netns_dirs: Some(netns_dirs),
        reported,
    }
}

/// The function and map an action is about, for log fields: chain-level
/// actions have neither.
fn action_subject(a: &Action) -> (Option<&str>, Option<&str>) {
    match a {
        Action::LoadFunction { function, .. }
        | Action::ReplaceSlot { function, .. }
        | Action::UnloadFunction { function }
        | Action::RecoverFunction { function }
        | Action::RecordOrigin { function } => (Some(function), None),
        Action::ManageMap { function, map }
        | Action::SeedEntries { function, map, .. }
        | Action::UpdateEntries { function, map, .. }
        | Action::SwapMap { function, map, .. }
        | Action::UnmanageMap { function, map, .. } => (Some(function), Some(map)),
        // Listed one by one: a new action must say what it is about.
        Action::ResetChain
        | Action::CreateChain
        | Action::SetRevision { .. }
        | Action::Attach { .. }
        | Action::ClearRevision { .. }
        | Action::DestroyChain
        | Action::RemoveLeftover { .. } => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_have_labels_and_descriptions() {
        let mut b = Batch::default();
        b.files.insert("10-a.yaml".into());
        let t = Trigger::Events(b);
        assert_eq!(t.label(), "file");
        assert_eq!(t.to_string(), "file change: 10-a.yaml");
        assert_eq!(t.attempt(), None);
        // One vocabulary: the label is the metric's, the number its own field.
        assert_eq!(Trigger::Retry(3).to_string(), "retry #3");
        assert_eq!(Trigger::Retry(3).label(), "retry");
        assert_eq!(Trigger::Retry(3).attempt(), Some(3));
        assert_eq!(Trigger::Sighup.label(), "sighup");
    }
}
