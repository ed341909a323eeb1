//! Prometheus metrics of `kfd run`.
//!
//! Two kinds of series, rendered together on each scrape:
//!
//! - **The daemon's own** (reconciles, their duration, actions by strategy,
//!   config files, last success) are recorded with the `metrics` macros
//!   into a `metrics-exporter-prometheus` recorder as passes happen.
//! - **The kernel's** (verdict counters per function, map fill and
//!   capacity, attachment) are read from bpffs at scrape time, the way
//!   `kfd status` reads them, so a scrape always shows the live values and
//!   functions that are gone leave no stale series. kfd does no periodic
//!   work to keep them fresh.
//!
//! Every family has HELP and TYPE lines and follows the naming rules that
//! `promtool check metrics` enforces (counters end in `_total`, units are
//! base units).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::layout::Layout;
use crate::plan::{Action, LoadReason, Strategy};
use crate::reconcile::{Lock, ReconcileError};
use crate::state::{self, StateError};
use crate::status::{self, ChainStatus};

/// Metric names.
pub mod names {
    /// Counter: packets per function and verdict (from the kernel).
    pub const PACKETS: &str = "kfd_function_packets_total";
    /// Gauge: entries in a function's map (from the kernel).
    pub const MAP_ENTRIES: &str = "kfd_map_entries";
    /// Gauge: capacity of a function's map (from the kernel).
    pub const MAP_MAX_ENTRIES: &str = "kfd_map_max_entries";
    /// Gauge: whether a chain's root is attached (from the kernel).
    pub const CHAIN_ATTACHED: &str = "kfd_chain_attached";
    /// Gauge: functions in a chain's active revision (from the kernel).
    pub const CHAIN_FUNCTIONS: &str = "kfd_chain_functions";
    /// Counter: reconcile passes by result and reason.
    pub const RECONCILES: &str = "kfd_reconciles_total";
    /// Histogram: reconcile duration by result.
    pub const RECONCILE_SECONDS: &str = "kfd_reconcile_duration_seconds";
    /// Counter: plan actions executed, by action and strategy.
    pub const ACTIONS: &str = "kfd_actions_total";
    /// Counter: map entries written (upserts, deletes, fills).
    pub const ENTRIES_WRITTEN: &str = "kfd_map_entries_written_total";
    /// Gauge: config files by state.
    pub const CONFIG_FILES: &str = "kfd_config_files";
    /// Gauge: config errors found by the last pass.
    pub const CONFIG_ERRORS: &str = "kfd_config_errors";
    /// Gauge: chains the last pass could not converge.
    pub const CHAINS_FAILED: &str = "kfd_chains_failed";
    /// Gauge: when the last pass that converged everything ended.
    pub const LAST_SUCCESS: &str = "kfd_last_successful_reconcile_timestamp_seconds";
    /// Counter: scrapes whose kernel read failed.
    pub const SCRAPE_ERRORS: &str = "kfd_scrape_errors_total";
    /// Gauge: build information.
    pub const BUILD_INFO: &str = "kfd_build_info";
}

/// Reconcile duration buckets, in seconds: from a no-op pass to a
/// million-entry apply.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Setting up metrics failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The histogram buckets were refused.
    #[error("configuring histogram buckets: {0}")]
    Buckets(#[source] BuildError),
    /// Another recorder is installed in this process already.
    #[error("a metrics recorder is already installed in this process")]
    AlreadyInstalled,
}

/// Reading the kernel for a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The bpffs root could not be locked.
    #[error(transparent)]
    Lock(#[from] ReconcileError),
    /// Live state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The bpffs root is not root's alone.
    #[error(transparent)]
    Root(#[from] crate::kernel::bpffs::BpffsError),
}

/// The installed recorder.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the process-wide recorder and registers every family, so
    /// they are all present (at zero) before the first pass.
    pub fn install() -> Result<Self, MetricsError> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(names::RECONCILE_SECONDS.into()),
                DURATION_BUCKETS,
            )
            .map_err(MetricsError::Buckets)?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
        describe();
        gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        counter!(names::ENTRIES_WRITTEN).absolute(0);
        counter!(names::SCRAPE_ERRORS).absolute(0);
        for state in ["valid", "invalid"] {
            gauge!(names::CONFIG_FILES, "state" => state).set(0.0);
        }
        gauge!(names::CONFIG_ERRORS).set(0.0);
        gauge!(names::CHAINS_FAILED).set(0.0);
        gauge!(names::LAST_SUCCESS).set(0.0);
        Ok(Self { handle })
    }

    /// The full exposition: the daemon's series, then the kernel's, read
    /// now. Blocking (reads bpffs and maps, under a shared lock of the root
    /// so a pass in progress is not seen half done).
    pub fn render(&self, layout: &Layout) -> String {
        let kernel = match read_chains(layout) {
            Ok(chains) => render_chains(&chains),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading live state failed; kernel series left out");
                counter!(names::SCRAPE_ERRORS).increment(1);
                String::new()
            }
        };
        // Upkeep drains histogram samples; a scrape is the one moment it is
        // needed, so no periodic task runs for it.
        self.handle.run_upkeep();
        let mut out = self.handle.render();
        out.push_str(&kernel);
        out
    }
}

fn describe() {
    describe_counter!(
        names::RECONCILES,
        "Reconcile passes, by result (success: every chain converged) and by what triggered them."
    );
    describe_histogram!(
        names::RECONCILE_SECONDS,
        "Time per reconcile pass, from reading config to the last kernel write, by result."
    );
    describe_counter!(
        names::ACTIONS,
        "Plan actions executed on chains that converged, by action and strategy (entries, program_swap, revision_flip, attach, chain, cleanup)."
    );
    describe_counter!(
        names::ENTRIES_WRITTEN,
        "Map entries written to the kernel (upserts, deletes and fills)."
    );
    describe_gauge!(
        names::CONFIG_FILES,
        "Config files seen by the last pass, by state: valid, or invalid (its last good version, if any, stays in force)."
    );
    describe_gauge!(
        names::CONFIG_ERRORS,
        "Errors in the config dir found by the last pass."
    );
    describe_gauge!(
        names::CHAINS_FAILED,
        "Chains the last pass could not converge (they keep serving their previous configuration)."
    );
    describe_gauge!(
        names::LAST_SUCCESS,
        "Unix time at which the last pass that converged every chain ended (0: none yet)."
    );
    describe_counter!(
        names::SCRAPE_ERRORS,
        "Scrapes for which reading the live chains from bpffs failed."
    );
    describe_gauge!(names::BUILD_INFO, "kfd's version, as a label; always 1.");
}

/// The label values of an executed action: its kind and how it lands.
pub fn action_labels(a: &Action) -> (&'static str, &'static str) {
    match a {
        Action::ResetChain => ("reset_chain", "chain"),
        Action::CreateChain => ("create_chain", "chain"),
        Action::LoadFunction { reason, .. } => (
            "load_function",
            match reason {
                LoadReason::New | LoadReason::Relink => "revision_flip",
                LoadReason::CodeChanged
                | LoadReason::GlobalsChanged
                | LoadReason::MapsSwap { .. }
                | LoadReason::Resized { .. }
                | LoadReason::Shares { .. }
                | LoadReason::Repair { .. } => "program_swap",
            },
        ),
        Action::ManageMap { .. } => ("manage_map", "entries"),
        Action::RecordOrigin { .. } => ("record_origin", "record"),
        Action::SeedEntries { .. } => ("seed_entries", "entries"),
        Action::UpdateEntries { strategy, .. } => (
            "update_entries",
            match strategy {
                Strategy::Entries => "entries",
                Strategy::MapSwap => "map_swap",
                Strategy::ProgramSwap => "program_swap",
            },
        ),
        Action::SwapMap { .. } => ("swap_map", "map_swap"),
        Action::UnmanageMap { .. } => ("unmanage_map", "entries"),
        Action::SetRevision { .. } => ("set_revision", "revision_flip"),
        Action::ReplaceSlot { .. } => ("replace_slot", "program_swap"),
        Action::Attach { .. } => ("attach", "attach"),
        Action::ClearRevision { .. } => ("clear_revision", "revision_flip"),
        Action::UnloadFunction { .. } => ("unload_function", "cleanup"),
        Action::DestroyChain => ("destroy_chain", "chain"),
        Action::RecoverFunction { .. } => ("recover_function", "recovery"),
        Action::RemoveLeftover { .. } => ("remove_leftover", "recovery"),
    }
}

/// What one pass did, for the daemon's series.
#[derive(Debug, Clone, Default)]
pub struct PassRecord {
    /// Whether every chain converged.
    pub success: bool,
    /// What triggered it (`startup`, `file`, `link`, `sighup`, ...).
    pub reason: &'static str,
    /// How long it took.
    pub duration: Duration,
    /// Executed actions, as (action, strategy) labels.
    pub actions: Vec<(&'static str, &'static str)>,
    /// Entries written.
    pub entries_written: usize,
    /// Config files valid / invalid; None when the config was not read.
    pub files: Option<(usize, usize)>,
    /// Config errors.
    pub config_errors: usize,
    /// Chains not converged.
    pub chains_failed: usize,
}

/// Records one pass.
pub fn record_pass(r: &PassRecord) {
    let result = if r.success { "success" } else { "failure" };
    counter!(names::RECONCILES, "result" => result, "reason" => r.reason).increment(1);
    histogram!(names::RECONCILE_SECONDS, "result" => result).record(r.duration.as_secs_f64());
    for (action, strategy) in &r.actions {
        counter!(names::ACTIONS, "action" => *action, "strategy" => *strategy).increment(1);
    }
    counter!(names::ENTRIES_WRITTEN).increment(r.entries_written as u64);
    if let Some((valid, invalid)) = r.files {
        gauge!(names::CONFIG_FILES, "state" => "valid").set(valid as f64);
        gauge!(names::CONFIG_FILES, "state" => "invalid").set(invalid as f64);
        gauge!(names::CONFIG_ERRORS).set(r.config_errors as f64);
    }
    gauge!(names::CHAINS_FAILED).set(r.chains_failed as f64);
    if r.success {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        gauge!(names::LAST_SUCCESS).set(now.as_secs_f64());
    }
}

fn read_chains(layout: &Layout) -> Result<Vec<ChainStatus>, ScrapeError> {
    // A scrape creates nothing: without a root, nothing is pinned yet.
    let Some(_lock) = Lock::acquire_existing(layout.root(), false, || ())? else {
        return Ok(Vec::new());
    };
    let observed = state::observe(layout, [])?;
    Ok(status::collect(layout, &observed)?)
}

/// A label value in the exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The kernel's series for `chains`, in the text exposition format.
pub fn render_chains(chains: &[ChainStatus]) -> String {
    let mut packets = String::new();
    let mut entries = String::new();
    let mut capacity = String::new();
    let mut attached = String::new();
    let mut functions = String::new();
    for c in chains {
        let chain = format!(
            "netns=\"{}\",interface=\"{}\",hook=\"{}\"",
            escape(c.netns.as_deref().unwrap_or("")),
            escape(&c.interface),
            escape(&c.hook)
        );
        let _ = writeln!(
            attached,
            "{}{{{chain}}} {}",
            names::CHAIN_ATTACHED,
            u8::from(c.attached)
        );
        let _ = writeln!(
            functions,
            "{}{{{chain}}} {}",
            names::CHAIN_FUNCTIONS,
            c.functions.len()
        );
        // A slot kfd did not fill ("?") has no name to label it with.
        for f in c.functions.iter().filter(|f| f.name != "?") {
            let func = format!("{chain},function=\"{}\"", escape(&f.name));
            for (verdict, n) in &f.verdicts {
                let _ = writeln!(
                    packets,
                    "{}{{{func},verdict=\"{}\"}} {n}",
                    names::PACKETS,
                    escape(verdict)
                );
            }
            for m in &f.maps {
                let map = format!("{func},map=\"{}\",role=\"{}\"", escape(&m.name), m.role);
                let _ = writeln!(entries, "{}{{{map}}} {}", names::MAP_ENTRIES, m.entries);
                let _ = writeln!(
                    capacity,
                    "{}{{{map}}} {}",
                    names::MAP_MAX_ENTRIES,
                    m.max_entries
                );
            }
        }
    }
    let mut out = String::new();
    for (name, kind, help, body) in [
        (
            names::PACKETS,
            "counter",
            "Packets per function and verdict, counted by kf_next in the chain's per-CPU stats map (summed over CPUs).",
            packets,
        ),
        (
            names::MAP_ENTRIES,
            "gauge",
            "Entries in a function's map (arrays: non-zero elements), by role (config: kfd writes it; state: the program does).",
            entries,
        ),
        (
            names::MAP_MAX_ENTRIES,
            "gauge",
            "Capacity of a function's map (max_entries).",
            capacity,
        ),
        (
            names::CHAIN_ATTACHED,
            "gauge",
            "Whether the chain's root program is attached to its interface (1) or not (0).",
            attached,
        ),
        (
            names::CHAIN_FUNCTIONS,
            "gauge",
            "Functions in the chain's active revision.",
            functions,
        ),
    ] {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{body}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{FunctionStatus, MapStatus};

    #[test]
    fn kernel_series_are_labelled_and_escaped() {
        let chains = vec![ChainStatus {
            interface: "eth0".into(),
            hook: "xdp".into(),
            netns: Some("we\"ird".into()),
            attached: true,
            ifindex: Some(2),
            renamed_to: None,
            mode: Some("generic".into()),
            priority: None,
            revision: 1,
            error: None,
            functions: vec![
                FunctionStatus {
                    slot: 0,
                    name: "edge-blocklist".into(),
                    program: Some((7, "blocklist".into())),
                    proceed_on: vec!["pass".into()],
                    verdicts: [("drop".to_owned(), 40), ("pass".to_owned(), 3)].into(),
                    maps: vec![MapStatus {
                        name: "deny_v4".into(),
                        role: "config",
                        entries: 2,
                        max_entries: 65536,
                    }],
                },
                FunctionStatus {
                    slot: 1,
                    name: "?".into(),
                    program: None,
                    proceed_on: vec![],
                    verdicts: Default::default(),
                    maps: vec![],
                },
            ],
        }];
        let text = render_chains(&chains);
        let l = r#"netns="we\"ird",interface="eth0",hook="xdp""#;
        for want in [
            "# TYPE kfd_function_packets_total counter\n".to_owned(),
            format!(
                "kfd_function_packets_total{{{l},function=\"edge-blocklist\",verdict=\"drop\"}} 40\n"
            ),
            format!(
                "kfd_map_entries{{{l},function=\"edge-blocklist\",map=\"deny_v4\",role=\"config\"}} 2\n"
            ),
            format!(
                "kfd_map_max_entries{{{l},function=\"edge-blocklist\",map=\"deny_v4\",role=\"config\"}} 65536\n"
            ),
            format!("kfd_chain_attached{{{l}}} 1\n"),
            format!("kfd_chain_functions{{{l}}} 2\n"),
        ] {
            assert!(text.contains(&want), "{want:?} not in:\n{text}");
        }
        assert!(!text.contains("function=\"?\""), "{text}");
        // Every family has HELP and TYPE even when empty.
        let empty = render_chains(&[]);
        assert_eq!(empty.lines().filter(|l| l.starts_with("# HELP")).count(), 5);
        assert_eq!(empty.lines().count(), 10);
    }

    #[test]
    fn every_action_has_labels() {
        let (a, s) = action_labels(&Action::ReplaceSlot {
            function: "f".into(),
            index: 0,
        });
        assert_eq!((a, s), ("replace_slot", "program_swap"));
        let (a, s) = action_labels(&Action::SetRevision {
            revision: 1,
            slots: vec![],
            change: crate::plan::SlotChange::Changed,
        });
        assert_eq!((a, s), ("set_revision", "revision_flip"));
    }
}
