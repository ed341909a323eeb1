//! The command line: the only place errors become `anyhow` and then text.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use reconciler::config::error::{Escaped, EscapedLines};
use reconciler::config::{self, DEFAULT_MAX_FILE_SIZE, ReadRules};
use reconciler::layout::Layout;
use reconciler::model::Hook;
use reconciler::plan::{self, PlanOptions};
use reconciler::reconcile::{Applied, Gathered, Instance, Lock, default_state_dir};
use reconciler::{daemon, kernel, logging, state, status};

/// kfd: declarative eBPF kernel-function chains from a config directory.
#[derive(Debug, Parser)]
#[command(name = "kfd", version, about, long_about = None)]
struct Cli {
    /// Directory of *.yaml/*.yml config files.
    #[arg(
        long,
        global = true,
        env = "KFD_CONFIG_DIR",
        default_value = "/etc/kf.d"
    )]
    config_dir: PathBuf,
    /// bpffs directory under which kfd pins everything it owns.
    #[arg(
        long,
        global = true,
        env = "KFD_BPFFS",
        default_value = "/sys/fs/bpf/kfd"
    )]
    bpffs: PathBuf,
    /// kfd's own state (last good config). Default: /var/lib/kfd/<bpffs path>.
    #[arg(long, global = true, env = "KFD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Accept config files and objects that non-root users can write.
    #[arg(long, global = true, env = "KFD_INSECURE_PERMISSIONS")]
    insecure_permissions: bool,
    /// Largest config file or object accepted, in bytes.
    #[arg(long, global = true, env = "KFD_MAX_FILE_SIZE", default_value_t = DEFAULT_MAX_FILE_SIZE)]
    max_file_size: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check files or dirs (default: the config dir). Exit 0 valid, 1 invalid.
    Validate {
        /// Files or dirs. A file is checked on its own content, whatever its name.
        paths: Vec<PathBuf>,
    },
    /// Dry run: the config diff since the last apply, then the actions. Exit 0 in sync, 2 changes pending, 1 error.
    Plan {
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        threshold: Threshold,
        /// Skip loading the programs the plan would load (against throw-away
        /// maps) to learn what the verifier says.
        #[arg(long)]
        no_verify: bool,
    },
    /// Converge once and print what was done. Exit 0 converged, 1 failed.
    Apply {
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        threshold: Threshold,
    },
    /// The live chains: slots in order, programs, maps, verdict counters.
    Status {
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The daemon: watch the config dir, debounce, reconcile, serve metrics. Runs until SIGTERM/SIGINT, which leave the data plane attached; SIGHUP forces a full pass.
    Run(RunArgs),
    /// Create the bpffs root (mounting bpffs at /sys/fs/bpf if needed) and nothing else. The systemd unit runs it with full privileges before the sandboxed `kfd run`.
    Prepare,
    /// Detach and unpin everything kfd owns (or only the matching chains).
    Down {
        /// Only chains on this interface.
        #[arg(long)]
        interface: Option<String>,
        /// Only chains on this hook.
        #[arg(long, value_parser = ["xdp", "tc-ingress", "tc-egress"])]
        hook: Option<String>,
        /// Only chains in this network namespace.
        #[arg(long)]
        netns: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where to serve Prometheus metrics (`off` to serve none).
    #[arg(long, env = "KFD_METRICS_ADDRESS", default_value = "127.0.0.1:9548")]
    metrics_address: String,
    /// Quiet window: a pass runs once config events stop for this long (e.g. 200ms). Every change waits for it.
    #[arg(long, env = "KFD_DEBOUNCE", default_value = "200ms", value_parser = daemon::parse_duration)]
    debounce: Duration,
    /// A pass runs at the latest this long after the first event of a burst, even if writes go on.
    #[arg(long, env = "KFD_DEBOUNCE_MAX", default_value = "5s", value_parser = daemon::parse_duration)]
    debounce_max: Duration,
    /// A full pass runs after this long without one, repairing drift (0: never).
    #[arg(long, env = "KFD_RESYNC_INTERVAL", default_value = "60s", value_parser = daemon::parse_duration)]
    resync_interval: Duration,
    #[command(flatten)]
    threshold: Threshold,
    /// Where logs go: journald when stderr is the journal (under systemd), else stderr.
    #[arg(long, env = "KFD_LOG_TARGET", value_enum, default_value = "auto")]
    log_target: LogTarget,
    /// Least severe level logged.
    #[arg(long, env = "KFD_LOG_LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
}

/// `--swap-threshold`, shared by `plan`, `apply` and `run`.
#[derive(Debug, clap::Args)]
struct Threshold {
    /// With `update: auto`, swap when more than this fraction of a map's entries change (above 0, at most 1).
    #[arg(long, env = "KFD_SWAP_THRESHOLD", default_value_t = PlanOptions::default().swap_threshold, value_parser = parse_swap_threshold)]
    swap_threshold: f64,
}

/// A `--swap-threshold`: the range the schema gives a map's `swap_threshold:`
/// (above 0, at most 1). NaN, infinities and negatives never compare sensibly
/// with a fraction of changed keys.
fn parse_swap_threshold(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a fraction above 0 and at most 1 (like 0.5)");
    let t: f64 = s.trim().parse().map_err(|_| bad())?;
    if t > 0.0 && t <= 1.0 {
        Ok(t)
    } else {
        Err(bad())
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogTarget {
    Auto,
    Journald,
    Stderr,
}

/// Runs the command line and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kfd: {}", EscapedLines(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn instance(cli: &Cli, swap_threshold: f64) -> Instance {
    Instance {
        config_dir: cli.config_dir.clone(),
        layout: Layout::new(&cli.bpffs),
        state_dir: cli
            .state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(&cli.bpffs)),
        rules: ReadRules {
            max_size: cli.max_file_size,
            strict_permissions: !cli.insecure_permissions,
        },
        plan: PlanOptions { swap_threshold },
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Validate { paths } => validate(&cli, paths),
        Command::Plan {
            output,
            threshold,
            no_verify,
        } => plan_cmd(
            &instance(&cli, threshold.swap_threshold),
            *output,
            !*no_verify,
        ),
        Command::Apply { output, threshold } => {
            apply_cmd(&instance(&cli, threshold.swap_threshold), *output)
        }
        Command::Status { output } => status_cmd(&instance(&cli, 0.5), *output),
        Command::Run(args) => run_cmd(&instance(&cli, args.threshold.swap_threshold), args),
        Command::Prepare => {
            let inst = instance(&cli, 0.5);
            inst.ensure_bpffs().context("preparing bpffs")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Down {
            interface,
            hook,
            netns,
        } => down(&instance(&cli, 0.5), interface, hook, netns),
    }
}

fn validate(cli: &Cli, paths: &[PathBuf]) -> Result<ExitCode> {
    let rules = ReadRules {
        max_size: cli.max_file_size,
        strict_permissions: !cli.insecure_permissions,
    };
    let paths: Vec<&Path> = if paths.is_empty() {
        vec![cli.config_dir.as_path()]
    } else {
        paths.iter().map(PathBuf::as_path).collect()
    };
    match config::validate(&paths, &rules) {
        Ok(n) => {
            println!(
                "valid: {n} function{} on {} path{}",
                plural(n),
                paths.len(),
                plural(paths.len())
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("invalid: {} error{}", errors.len(), plural(errors.len()));
            Ok(ExitCode::from(1))
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn waiting(inst: &Instance) -> impl FnOnce() + '_ {
    || {
        eprintln!(
            "kfd: another kfd holds {}; waiting for it to finish",
            inst.layout.root().display()
        )
    }
}

/// The exclusive lock of a command that changes the kernel: it prepares
/// the bpffs root first (mounting bpffs if needed).
fn write_lock(inst: &Instance) -> Result<Lock> {
    inst.ensure_bpffs().context("preparing bpffs")?;
    Ok(Lock::acquire(inst.layout.root(), true, waiting(inst))?)
}

/// The shared lock of a read-only command, which creates nothing: without
/// a bpffs root there is nothing live, and nothing to lock.
fn read_lock(inst: &Instance) -> Result<Option<Lock>> {
    Ok(Lock::acquire_existing(
        inst.layout.root(),
        false,
        waiting(inst),
    )?)
}

fn gather(inst: &Instance) -> Result<Gathered> {
    inst.gather().context("reading config and live state")
}

/// Unified diffs of the config files against the last applied versions.
fn config_diff(g: &Gathered) -> String {
    use similar::TextDiff;
    let mut out = String::new();
    let mut names: Vec<&str> = g.config.current.keys().map(String::as_str).collect();
    names.extend(g.snapshot.names());
    names.sort_unstable();
    names.dedup();
    for name in names {
        let old = g
            .snapshot
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let new = g
            .config
            .current
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        if old == new {
            continue;
        }
        let diff = TextDiff::configure()
            .deadline(Instant::now() + Duration::from_secs(2))
            .diff_lines(&old, &new);
        let text = diff
            .unified_diff()
            .context_radius(3)
            .header(
                &if g.snapshot.get(name).is_some() {
                    format!("a/{}", Escaped(name))
                } else {
                    "/dev/null".into()
                },
                &if g.config.current.contains_key(name) {
                    format!("b/{}", Escaped(name))
                } else {
                    "/dev/null".into()
                },
            )
            .to_string();
        const MAX_LINES: usize = 200;
        let lines: Vec<&str> = text.lines().collect();
        for l in lines.iter().take(MAX_LINES) {
            out.push_str(l);
            out.push('\n');
        }
        if lines.len() > MAX_LINES {
            out.push_str(&format!(
                "… {} more diff lines for {}\n",
                lines.len() - MAX_LINES,
                Escaped(name)
            ));
        }
    }
    out
}

fn print_config_errors(g: &Gathered) {
    for e in &g.config.errors {
        eprintln!("{e}");
    }
    for (name, st) in &g.config.files {
        if let Some(what) = st.describe() {
            eprintln!("kfd: {}: {what}", Escaped(name));
        }
    }
    for e in &g.store_errors {
        eprintln!("kfd: {e}; the kernel's load records stand in for it");
    }
}

/// One line per held function: which, on which chain, and why.
fn held_lines(g: &Gathered) -> Vec<String> {
    g.config
        .desired
        .chains
        .iter()
        .flat_map(|(k, c)| {
            c.held
                .iter()
                .map(move |(n, h)| format!("{n} on {k} is kept exactly as it is live: {h}"))
        })
        .collect()
}

fn plan_cmd(inst: &Instance, output: Output, verify: bool) -> Result<ExitCode> {
    let _lock = read_lock(inst)?;
    let g = gather(inst)?;
    let p = inst.plan(&g);
    // What the apply would load is loaded now, so its verifier errors are
    // this plan's errors and exit 2 means the apply will load.
    let load_errors: Vec<String> = if verify {
        inst.verify(&g, &p)
            .into_iter()
            .map(|(key, e)| format!("{key}: {e:#}"))
            .collect()
    } else {
        Vec::new()
    };
    let has_errors = !g.config.errors.is_empty()
        || !g.store_errors.is_empty()
        || p.has_errors()
        || !load_errors.is_empty();
    match output {
        Output::Text => {
            let diff = config_diff(&g);
            if !diff.is_empty() {
                print!("{diff}");
                println!();
            }
            print_config_errors(&g);
            for e in &load_errors {
                eprintln!("kfd: {e}");
            }
            print!("{}", plan::render_text(&p, &g.config.desired));
            if p.in_sync() {
                println!("in sync: nothing to do");
            } else {
                println!(
                    "plan: {} action{} on {} chain{}",
                    p.action_count(),
                    plural(p.action_count()),
                    p.chains_with_actions(),
                    plural(p.chains_with_actions())
                );
            }
        }
        Output::Json => {
            let mut v = plan::render_json(&p, &g.config.desired);
            v["config_diff"] = json!(config_diff(&g));
            v["errors"] = json!(
                g.config
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            );
            v["load_errors"] = json!(load_errors);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(ExitCode::from(match (has_errors, p.in_sync()) {
        (true, _) => 1,
        (false, true) => 0,
        (false, false) => 2,
    }))
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn apply_cmd(inst: &Instance, output: Output) -> Result<ExitCode> {
    let started = Instant::now();
    let _lock = write_lock(inst)?;
    let g = gather(inst)?;
    let t = Instant::now();
    let p = inst.plan(&g);
    let plan_time = t.elapsed();
    let t = Instant::now();
    let Applied {
        report,
        store_error,
    } = inst.apply(&g, &p);
    let apply_time = t.elapsed();
    let ok = report.ok()
        && g.config.errors.is_empty()
        && g.store_errors.is_empty()
        && store_error.is_none();
    let timings = &g.config.timings;
    match output {
        Output::Text => {
            print_config_errors(&g);
            for h in held_lines(&g) {
                eprintln!("kfd: {h}");
            }
            if p.in_sync() {
                println!("in sync: nothing to do");
            }
            for c in &report.chains {
                match &c.error {
                    None => println!(
                        "converged {}: {} action{}, {} entr{} written ({})",
                        c.key,
                        c.executed,
                        plural(c.executed),
                        c.entries_written,
                        if c.entries_written == 1 { "y" } else { "ies" },
                        secs(c.elapsed)
                    ),
                    Some(e) => eprintln!("kfd: {}: {}", c.key, EscapedLines(&format!("{e:#}"))),
                }
            }
            for s in &report.shared {
                match &s.error {
                    None => println!(
                        "converged shared map {}: {} entr{} written",
                        s.name,
                        s.entries_written,
                        if s.entries_written == 1 { "y" } else { "ies" }
                    ),
                    Some(e) => eprintln!("kfd: shared map {}: {e:#}", s.name),
                }
            }
            if let Some(e) = &store_error {
                eprintln!(
                    "kfd: the kernel converged as above, but {e}; nothing is lost (the kernel's load records say what runs)"
                );
            }
            println!(
                "timings: read {} parse {} validate {} encode {} observe {} diff {} apply {} (kernel writes {}) total {}",
                secs(timings.read),
                secs(timings.parse),
                secs(timings.validate),
                secs(timings.encode),
                secs(g.observe_time),
                secs(plan_time),
                secs(apply_time),
                secs(report.map_write_time()),
                secs(started.elapsed())
            );
        }
        Output::Json => {
            let chains: Vec<_> = report
                .chains
                .iter()
                .map(|c| {
                    json!({
                        "interface": c.key.interface,
                        "hook": c.key.hook,
                        "netns": c.key.netns,
                        "actions": c.executed,
                        "entries_written": c.entries_written,
                        "seconds": c.elapsed.as_secs_f64(),
                        "error": c.error.as_ref().map(|e| format!("{e:#}")),
                    })
                })
                .collect();
            let v = json!({
                "ok": ok,
                "in_sync_before": p.in_sync(),
                "chains": chains,
                "errors": g.config.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "store_errors": g.store_errors.iter().map(ToString::to_string)
                    .chain(store_error.iter().map(ToString::to_string))
                    .collect::<Vec<_>>(),
                "held": held_lines(&g),
                "entries_written": report.entries_written(),
                "timings": {
                    "read": timings.read.as_secs_f64(),
                    "parse": timings.parse.as_secs_f64(),
                    "validate": timings.validate.as_secs_f64(),
                    "encode": timings.encode.as_secs_f64(),
                    "observe": g.observe_time.as_secs_f64(),
                    "diff": plan_time.as_secs_f64(),
                    "apply": apply_time.as_secs_f64(),
                    "kernel_write": report.map_write_time().as_secs_f64(),
                    "total": started.elapsed().as_secs_f64(),
                },
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    std::io::stdout().flush()?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn status_cmd(inst: &Instance, output: Output) -> Result<ExitCode> {
    let _lock = read_lock(inst)?;
    let observed = state::observe(&inst.layout, []).context("reading live state")?;
    let chains = status::collect(&inst.layout, &observed).context("reading live state")?;
    let shared = status::collect_shared(&inst.layout, &observed).context("reading live state")?;
    match output {
        Output::Text => print!(
            "{}{}",
            status::render_text(&chains),
            status::render_shared_text(&shared)
        ),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "chains": chains, "shared": shared }))?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn down(
    inst: &Instance,
    interface: &Option<String>,
    hook: &Option<String>,
    netns: &Option<String>,
) -> Result<ExitCode> {
    // Any spelling of a namespace names its chains, as in config.
    let normal = |n: &str| kernel::netns::normalise(n).ok();
    let netns = match netns {
        Some(n) => {
            Some(kernel::netns::normalise(n).with_context(|| format!("--netns {}", Escaped(n)))?)
        }
        None => None,
    };
    // Without a root there is nothing to remove, and nothing to create.
    let Some(_lock) = Lock::acquire_existing(inst.layout.root(), true, waiting(inst))? else {
        println!("down: 0 chains removed");
        return Ok(ExitCode::SUCCESS);
    };
    let observed = state::observe(&inst.layout, []).context("reading live state")?;
    let hook = hook.as_deref().and_then(Hook::parse);
    let mut removed = 0;
    let mut failed = false;
    for key in observed.chains.keys() {
        if interface.as_ref().is_some_and(|i| *i != key.interface)
            || hook.is_some_and(|h| h != key.hook)
            || netns
                .as_ref()
                .is_some_and(|n| key.netns.as_deref().and_then(normal).as_ref() != Some(n))
        {
            continue;
        }
        match reconciler::apply::destroy_chain(&inst.layout, key, observed.chains.get(key)) {
            Ok(()) => {
                println!("removed {key}");
                removed += 1;
            }
            Err(e) => {
                eprintln!("kfd: {key}: {}", EscapedLines(&format!("{e:#}")));
                failed = true;
            }
        }
    }
    // The root dir goes too once it is empty, so `down` leaves no trace.
    if interface.is_none() && hook.is_none() && netns.is_none() {
        kernel::bpffs::remove_dir_if_empty(inst.layout.root());
    }
    println!("down: {removed} chain{} removed", plural(removed));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_cmd(inst: &Instance, args: &RunArgs) -> Result<ExitCode> {
    let level: tracing::Level = args
        .log_level
        .parse()
        .with_context(|| format!("log level {:?}", args.log_level))?;
    let target = match args.log_target {
        LogTarget::Auto => logging::Target::Auto,
        LogTarget::Journald => logging::Target::Journald,
        LogTarget::Stderr => logging::Target::Stderr,
    };
    let (_, fallback) = logging::init(target, level)?;
    if let Some(why) = fallback {
        tracing::warn!("{why}; logging to stderr");
    }
    let metrics_address = match args.metrics_address.as_str() {
        "" | "off" | "none" => None,
        a => Some(
            a.parse()
                .with_context(|| format!("--metrics-address {a:?}: expected IP:PORT or off"))?,
        ),
    };
    let opts = daemon::Options {
        debounce: args.debounce,
        debounce_max: args.debounce_max,
        resync: (!args.resync_interval.is_zero()).then_some(args.resync_interval),
        metrics_address,
    };
    daemon::run(inst.clone(), opts).context("kfd run")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(args).map_err(|e| e.to_string())
    }

    fn first_line(r: Result<Cli, String>) -> String {
        let e = r.expect_err("refused");
        e.lines().next().unwrap_or_default().to_owned()
    }

    #[test]
    fn swap_thresholds_are_fractions_above_0_and_at_most_1() {
        for (flag, want) in [("0.25", 0.25), ("1", 1.0), ("1e-3", 0.001)] {
            for cmd in ["plan", "apply", "run"] {
                let cli = parse(&["kfd", cmd, "--swap-threshold", flag]).expect(flag);
                let got = match cli.command {
                    Command::Plan { threshold, .. } | Command::Apply { threshold, .. } => {
                        threshold.swap_threshold
                    }
                    Command::Run(args) => args.threshold.swap_threshold,
                    other => panic!("{other:?}"),
                };
                assert_eq!(got, want, "{cmd} {flag}");
            }
        }
        for bad in [
            "NaN", "nan", "inf", "-inf", "-0.5", "0", "-0", "1.5", "half",
        ] {
            assert_eq!(
                first_line(parse(&["kfd", "apply", &format!("--swap-threshold={bad}")])),
                format!(
                    "error: invalid value '{bad}' for '--swap-threshold <SWAP_THRESHOLD>': \
                     {bad:?} is not a fraction above 0 and at most 1 (like 0.5)"
                ),
            );
        }
    }

    #[test]
    fn durations_past_a_week_are_refused_at_parse_time() {
        let cli = parse(&["kfd", "run", "--resync-interval", "168h"]).expect("a week");
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.resync_interval, Duration::from_secs(7 * 24 * 3600));
        for (flag, value) in [
            ("--debounce", "18446744073709551615ms"),
            ("--debounce-max", "18446744073709551615h"),
            ("--resync-interval", "18446744073709551615"),
            ("--resync-interval", "99999999999999999999999s"),
            ("--debounce", "169h"),
        ] {
            assert_eq!(
                first_line(parse(&["kfd", "run", flag, value])),
                format!(
                    "error: invalid value '{value}' for '{flag} <{}>': \
                     {value:?} is longer than a week (168h), the most kfd takes",
                    flag.trim_start_matches('-')
                        .replace('-', "_")
                        .to_uppercase()
                ),
            );
        }
    }
}
