//! Plan → kernel, make before break.
//!
//! Each chain runs its actions in the planner's three phases. Build steps
//! create only new objects (under `fn/<name>@new/`, or a chain that is not
//! attached yet). Commit steps change what packets see, each with an undo
//! record. A failure in build or commit unwinds the undo log in reverse and
//! removes everything built, so the previous chain keeps serving and nothing
//! leaks. Cleanup runs after the commit stands; a failure there is reported
//! but the new configuration stays in force.

pub mod failpoint;
mod shared;
mod steps;

pub use shared::SharedReport;

use failpoint::hit;

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::desired::{DesiredChain, DesiredState};
use crate::entries::EntrySet;
use crate::kernel::bpffs::{self, BpffsError};
use crate::kernel::loader::{LoadError, Loaded};
use crate::kernel::map::{ByteMap, MapError};
use crate::kernel::sys::{self, SysError};
use crate::kernel::xdp::XdpError;
use crate::layout::Layout;
use crate::model::{ChainKey, Source};
use crate::plan::{Action, Phase, Plan, blocked_message};
use crate::state::model::{ObservedChain, ObservedState};

/// Why a chain could not be converged.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The planner refused to touch the chain.
    #[error("{message}")]
    Blocked {
        /// Why.
        message: String,
    },
    /// The plan does not fit the config or the kernel: a bug in kfd.
    #[error("internal error: {what}")]
    Internal {
        /// What did not fit.
        what: String,
    },
    /// A function failed to build or go live.
    #[error("function {function} ({source_at}, object {object}): {error}")]
    Function {
        /// The function.
        function: String,
        /// Where it is defined.
        source_at: Source,
        /// Its object (a path, or `builtin:NAME`).
        object: String,
        /// What failed.
        #[source]
        error: Box<ApplyError>,
    },
    /// Loading a program failed (verifier, incompatible pin, ...).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: MapError,
    },
    /// A bpffs operation failed.
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    /// A syscall failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: SysError,
    },
    /// Attaching the root failed.
    #[error(transparent)]
    Attach(#[from] XdpError),
    /// Attaching the root to a TC hook failed.
    #[error(transparent)]
    Tc(#[from] crate::kernel::tc::TcError),
    /// The embedded root object could not be had.
    #[error("root program: {0}")]
    Root(#[from] crate::builtin::RootError),
    /// The chain went live but cleaning up afterwards failed; the new
    /// configuration is in force.
    #[error("converged, but cleanup failed: {0}")]
    Cleanup(#[source] Box<ApplyError>),
}

/// What happened to one chain.
#[derive(Debug)]
pub struct ChainReport {
    /// The chain.
    pub key: ChainKey,
    /// Actions executed (all of them on success).
    pub executed: usize,
    /// Entries written to kernel maps (fills, upserts, deletes).
    pub entries_written: usize,
    /// Time spent.
    pub elapsed: Duration,
    /// Time spent in map writes alone.
    pub map_write_time: Duration,
    /// The failure, if any; the chain was rolled back unless it is `Cleanup`.
    pub error: Option<ApplyError>,
}

/// What `execute` did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// One report per chain of the plan, in plan order.
    pub chains: Vec<ChainReport>,
    /// One report per shared map of the plan.
    pub shared: Vec<SharedReport>,
}

impl ApplyReport {
    /// Whether every chain and shared map converged.
    pub fn ok(&self) -> bool {
        self.chains.iter().all(|c| c.error.is_none())
            && self.shared.iter().all(|s| s.error.is_none())
    }

    /// Entries written over all chains and shared maps.
    pub fn entries_written(&self) -> usize {
        self.chains.iter().map(|c| c.entries_written).sum::<usize>()
            + self.shared.iter().map(|s| s.entries_written).sum::<usize>()
    }

    /// Time spent in map writes over all chains.
    pub fn map_write_time(&self) -> Duration {
        self.chains.iter().map(|c| c.map_write_time).sum()
    }
}

/// Executes `plan`, chain by chain. Chains are independent: one failing
/// leaves the others converged.
pub fn execute(
    plan: &Plan,
    desired: &DesiredState,
    observed: &ObservedState,
    layout: &Layout,
) -> ApplyReport {
    let mut report = ApplyReport::default();
    // Shared maps first: the chains' loads use their pins.
    let mut shared: Vec<SharedReport> = plan
        .shared
        .iter()
        .map(|s| shared::run(layout, s, true))
        .collect();
    for cp in &plan.chains {
        if cp.actions.is_empty() && cp.blocked.is_none() {
            continue; // notes only
        }
        let started = Instant::now();
        if let Some(b) = &cp.blocked {
            report.chains.push(ChainReport {
                key: cp.key.clone(),
                executed: 0,
                entries_written: 0,
                elapsed: started.elapsed(),
                map_write_time: Duration::ZERO,
                error: Some(ApplyError::Blocked {
                    message: with_functions(
                        blocked_message(&cp.key, b),
                        desired.chains.get(&cp.key),
                    ),
                }),
            });
            continue;
        }
        let mut run = ChainRun::new(
            layout,
            &cp.key,
            desired.chains.get(&cp.key),
            observed.chains.get(&cp.key),
        );
        let error = run.run(&cp.actions).err();
        report.chains.push(ChainReport {
            key: cp.key.clone(),
            executed: run.executed,
            entries_written: run.entries_written,
            elapsed: started.elapsed(),
            map_write_time: run.map_write_time,
            error,
        });
    }
    for (s, r) in plan.shared.iter().zip(&mut shared) {
        if r.error.is_none() {
            let after = shared::run(layout, s, false);
            r.entries_written += after.entries_written;
            r.error = after.error;
        }
    }
    report.shared = shared;
    report
}

/// Loads every program `plan` would load, against throw-away maps where the
/// apply would build fresh ones and pinning nothing, so the verifier's (and
/// the map creation's) answer is known before anything changes: `kfd plan`
/// reports these as errors, and exit 2 then means that the apply will load.
pub fn verify(
    plan: &Plan,
    desired: &DesiredState,
    observed: &ObservedState,
    layout: &Layout,
) -> Vec<(ChainKey, ApplyError)> {
    let mut errors = Vec::new();
    for cp in plan.chains.iter().filter(|c| c.blocked.is_none()) {
        let run = ChainRun::new(
            layout,
            &cp.key,
            desired.chains.get(&cp.key),
            observed.chains.get(&cp.key),
        );
        for (function, instance) in cp.actions.iter().filter_map(steps::Instance::of) {
            let checked = run
                .function(function)
                .and_then(|f| run.check_function(f, &instance));
            if let Err(e) = checked {
                errors.push((cp.key.clone(), e));
            }
        }
    }
    errors
}

/// A blocked chain's message, naming its functions and where they are defined.
fn with_functions(message: String, chain: Option<&DesiredChain>) -> String {
    let Some(chain) = chain.filter(|c| !c.functions.is_empty()) else {
        return message;
    };
    let list: Vec<String> = chain
        .functions
        .iter()
        .map(|f| format!("{} ({})", f.name, f.source))
        .collect();
    format!("{message} (functions: {})", list.join(", "))
}

/// A program instance built in this run, not yet live.
struct Built {
    loaded: Loaded,
    dir: PathBuf,
}

/// How to take back one commit step.
enum Undo {
    RemoveDir(PathBuf),
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    /// Put entries back: write `restore`, delete `remove` (packed keys).
    Entries {
        map: ByteMap,
        restore: EntrySet,
        remove: Vec<u8>,
    },
    /// Put the previous inner map back into a map-in-map (or empty the slot).
    SwapBack {
        outer: ByteMap,
        previous: Option<ByteMap>,
    },
    FlipBack {
        revision: u32,
    },
    /// Put a load record back as it was.
    Record {
        map: ByteMap,
        bytes: Vec<u8>,
    },
    SlotBack {
        index: u32,
        prog: Option<OwnedFd>,
    },
    Detach {
        link: PathBuf,
    },
    /// Remove kfd's clsact filter (and the qdisc if kfd added it).
    Unfilter {
        priority: u16,
        drop_qdisc: bool,
    },
    /// Switch kfd's clsact filter back to the program it ran.
    Refilter {
        priority: u16,
        prog: OwnedFd,
    },
}

struct ChainRun<'a> {
    layout: &'a Layout,
    key: &'a ChainKey,
    desired: Option<&'a DesiredChain>,
    observed: Option<&'a ObservedChain>,
    built: BTreeMap<String, Built>,
    /// Every `fn/<name>.new` dir created in this run (removed on rollback).
    building: Vec<PathBuf>,
    root: Option<OwnedFd>,
    undo: Vec<Undo>,
    /// `fn/<name>@old` dirs left by promotions, removed at the end.
    retired: Vec<PathBuf>,
    executed: usize,
    entries_written: usize,
    map_write_time: Duration,
}

impl<'a> ChainRun<'a> {
    fn new(
        layout: &'a Layout,
        key: &'a ChainKey,
        desired: Option<&'a DesiredChain>,
        observed: Option<&'a ObservedChain>,
    ) -> Self {
        Self {
            layout,
            key,
            desired,
            observed,
            built: BTreeMap::new(),
            building: Vec::new(),
            root: None,
            undo: Vec::new(),
            retired: Vec::new(),
            executed: 0,
            entries_written: 0,
            map_write_time: Duration::ZERO,
        }
    }

    fn run(&mut self, actions: &[Action]) -> Result<(), ApplyError> {
        let mut cleanup_error = None;
        for action in actions {
            let result = self.step(action);
            match (result, action.phase()) {
                (Ok(()), _) => self.executed += 1,
                (Err(e), Phase::Build | Phase::Commit) => {
                    self.rollback();
                    return Err(e);
                }
                (Err(e), Phase::Cleanup) => {
                    cleanup_error.get_or_insert(e);
                }
            }
        }
        // Committed: nothing to undo any more.
        self.undo.clear();
        for dir in std::mem::take(&mut self.retired) {
            hit("before-unpin");
            if let Err(e) = bpffs::remove_tree(&dir) {
                cleanup_error.get_or_insert(e.into());
            }
            hit("after-unpin");
        }
        match cleanup_error {
            Some(e) => Err(ApplyError::Cleanup(Box::new(e))),
            None => Ok(()),
        }
    }

    /// Takes back every commit step, newest first, then drops what was built.
    /// Best effort: an undo step that fails does not stop the others.
    fn rollback(&mut self) {
        while let Some(u) = self.undo.pop() {
            let _ = self.undo_one(u);
        }
        self.built.clear();
        for dir in std::mem::take(&mut self.building) {
            let _ = bpffs::remove_tree(&dir);
        }
        self.retired.clear();
    }

    fn undo_one(&mut self, u: Undo) -> Result<(), ApplyError> {
        match u {
            Undo::RemoveDir(dir) => {
                // A chain created in this run may already be attached by nothing;
                // removing the dir drops every pin.
                bpffs::remove_tree(&dir)?;
            }
            Undo::Rename { from, to } => bpffs::rename(&from, &to)?,
            Undo::Entries {
                map,
                restore,
                remove,
            } => {
                let what = |source| ApplyError::Map {
                    what: format!("restoring map {}", map.info().name),
                    source,
                };
                map.delete_batch(&remove).map_err(what)?;
                map.update_batch(&restore).map_err(what)?;
            }
            Undo::SwapBack { outer, previous } => {
                let what = |source| ApplyError::Map {
                    what: format!("swapping back map {}", outer.info().name),
                    source,
                };
                match previous {
                    Some(inner) => outer.update_fd(0, inner.fd()).map_err(what)?,
                    None => {
                        outer.delete(&0u32.to_ne_bytes()).map_err(what)?;
                    }
                }
            }
            Undo::FlipBack { revision } => self.write_ctl(revision)?,
            Undo::Record { map, bytes } => {
                map.update(&0u32.to_ne_bytes(), &bytes)
                    .map_err(|source| ApplyError::Map {
                        what: format!("restoring load record {}", map.info().name),
                        source,
                    })?;
            }
            Undo::SlotBack { index, prog } => {
                let progs = self.chain_map("kf_progs")?;
                match prog {
                    Some(fd) => progs
                        .update_fd(index, std::os::fd::AsFd::as_fd(&fd))
                        .map_err(|source| {
                            map_err(&self.layout.chain_map(self.key, "kf_progs"), source)
                        })?,
                    None => {
                        progs.delete(&index.to_ne_bytes()).map_err(|source| {
                            map_err(&self.layout.chain_map(self.key, "kf_progs"), source)
                        })?;
                    }
                }
            }
            Undo::Detach { link } => detach_link(&link)?,
            Undo::Unfilter {
                priority,
                drop_qdisc,
            } => {
                let netns = self
                    .key
                    .netns
                    .as_deref()
                    .map(crate::kernel::netns::netns_path);
                crate::kernel::tc::detach_clsact(
                    netns.as_deref(),
                    &self.key.interface,
                    crate::state::tc_direction(self.key.hook),
                    priority,
                    drop_qdisc,
                )?;
            }
            Undo::Refilter { priority, prog } => {
                let netns = self
                    .key
                    .netns
                    .as_deref()
                    .map(crate::kernel::netns::netns_path);
                crate::kernel::tc::attach_clsact(
                    netns.as_deref(),
                    &self.key.interface,
                    crate::state::tc_direction(self.key.hook),
                    prog.as_fd(),
                    priority,
                    true,
                )?;
            }
        }
        Ok(())
    }

    fn chain_map(&self, name: &str) -> Result<ByteMap, ApplyError> {
        open_map(&self.layout.chain_map(self.key, name))
    }

    fn write_ctl(&self, revision: u32) -> Result<(), ApplyError> {
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&revision.to_ne_bytes());
        value[4..].copy_from_slice(&crate::model::ABI_VERSION.to_ne_bytes());
        let ctl = self.chain_map("kf_ctl")?;
        hit("before-flip");
        ctl.update(&0u32.to_ne_bytes(), &value)
            .map_err(|source| map_err(&self.layout.chain_map(self.key, "kf_ctl"), source))?;
        hit("after-flip");
        Ok(())
    }
}

fn open_map(path: &std::path::Path) -> Result<ByteMap, ApplyError> {
    ByteMap::from_pin(path).map_err(|source| map_err(path, source))
}

fn map_err(path: &std::path::Path, source: MapError) -> ApplyError {
    ApplyError::Map {
        what: path.display().to_string(),
        source,
    }
}

/// Detaches a chain's root and unpins everything of it (`kfd down`). On a
/// TC hook that is kfd's own filter (found by its handle), and the clsact
/// qdisc only if kfd added it and no filter is left on it.
pub fn destroy_chain(
    layout: &Layout,
    key: &ChainKey,
    observed: Option<&ObservedChain>,
) -> Result<(), ApplyError> {
    detach_link(&layout.link(key))?;
    if let Some(f) = observed.and_then(|c| c.tc_filter) {
        let netns = key.netns.as_deref().map(crate::kernel::netns::netns_path);
        crate::kernel::tc::detach_clsact(
            netns.as_deref(),
            &key.interface,
            crate::state::tc_direction(key.hook),
            f.priority,
            observed.is_some_and(|c| c.clsact_created),
        )?;
    }
    hit("before-unpin");
    bpffs::remove_tree(&layout.chain_dir(key))?;
    hit("after-unpin");
    Ok(())
}

/// Detaches a pinned link (if any) and removes the pin.
fn detach_link(path: &std::path::Path) -> Result<(), ApplyError> {
    if !path.exists() {
        return Ok(());
    }
    let fd = sys::obj_get(path).map_err(|source| ApplyError::Sys {
        what: format!("opening link {}", path.display()),
        source,
    })?;
    // A link whose interface vanished is already detached: EINVAL/ENOLINK are fine.
    if let Err(e) = sys::link_detach(std::os::fd::AsFd::as_fd(&fd))
        && !matches!(e.errno(), Some(libc::EINVAL | libc::ENOLINK | libc::ENOENT))
    {
        return Err(ApplyError::Sys {
            what: format!("detaching link {}", path.display()),
            source: e,
        });
    }
    bpffs::unpin(path)?;
    Ok(())
}
