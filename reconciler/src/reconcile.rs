//! One reconcile pass, arrow by arrow: `config::load` → `state::observe` →
//! `plan::plan` → `apply::execute` → last-good snapshot. The CLI and the
//! daemon both drive kfd through this module.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::apply::{self, ApplyReport, failpoint::hit};
use crate::config::{self, DirError, Live, Loaded, ReadRules, Snapshot, lastgood::SnapshotError};
use crate::kernel::bpffs::{self, BpffsError};
use crate::layout::Layout;
use crate::plan::{self, Plan, PlanOptions};
use crate::state::{self, StateError, model::ObservedState};

/// Where one kfd instance keeps its things.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The config dir.
    pub config_dir: PathBuf,
    /// The bpffs layout (its root is `--bpffs`).
    pub layout: Layout,
    /// kfd's own state (the last-good store).
    pub state_dir: PathBuf,
    /// How config files are read.
    pub rules: ReadRules,
    /// Planner knobs.
    pub plan: PlanOptions,
}

/// Reconcile errors that stop a pass before anything changes.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// bpffs is unusable.
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    /// The config dir cannot be read.
    #[error(transparent)]
    Config(#[from] DirError),
    /// Live state cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// Taking the lock failed.
    #[error("locking {path}: {source}")]
    Lock {
        /// The locked dir.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// The default state dir for a bpffs root: one per root, so instances with
/// different `--bpffs` never share a last-good store.
pub fn default_state_dir(bpffs_root: &Path) -> PathBuf {
    let escaped: String = bpffs_root
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '-' } else { c })
        .collect();
    Path::new("/var/lib/kfd").join(if escaped.is_empty() {
        "root".into()
    } else {
        escaped
    })
}

/// An flock on the bpffs root: one kfd converges a root at a time.
#[derive(Debug)]
pub struct Lock {
    _dir: File,
}

impl Lock {
    /// Takes the lock, calling `waiting` once if another holder makes us wait.
    pub fn acquire(
        root: &Path,
        exclusive: bool,
        waiting: impl FnOnce(),
    ) -> Result<Self, ReconcileError> {
        let err = |source| ReconcileError::Lock {
            path: root.to_owned(),
            source,
        };
        let dir = File::open(root).map_err(err)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a valid fd.
        if unsafe { libc::flock(dir.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err(e));
            }
            waiting();
            // SAFETY: as above.
            if unsafe { libc::flock(dir.as_raw_fd(), op) } != 0 {
                return Err(err(std::io::Error::last_os_error()));
            }
        }
        Ok(Self { _dir: dir })
    }

    /// [`Lock::acquire`] for readers, which must create nothing: None when
    /// the root does not exist, which means nothing is live under it. A root
    /// that exists is checked first: one another user owns could be flocked
    /// by them forever.
    pub fn acquire_existing(
        root: &Path,
        exclusive: bool,
        waiting: impl FnOnce(),
    ) -> Result<Option<Self>, ReconcileError> {
        if !root.is_dir() {
            return Ok(None);
        }
        bpffs::check_root(root)?;
        match Self::acquire(root, exclusive, waiting) {
            Ok(lock) => Ok(Some(lock)),
            Err(ReconcileError::Lock { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Config and live state, read side by side.
#[derive(Debug)]
pub struct Gathered {
    /// The config (with last-good substitutes) and its errors.
    pub config: Loaded,
    /// The live state.
    pub observed: ObservedState,
    /// The last-good store as it was.
    pub snapshot: Snapshot,
    /// What of the store could not be read or trusted (left out).
    pub store_errors: Vec<SnapshotError>,
    /// Time spent reading live state.
    pub observe_time: Duration,
}

/// What an apply did: the kernel's side, then the store's.
#[derive(Debug)]
pub struct Applied {
    /// Per chain.
    pub report: ApplyReport,
    /// The kernel changed as reported, but recording the files in the
    /// last-good store failed. Nothing is lost: the kernel's load records
    /// say what runs, so a stale store is never used; the next pass retries.
    pub store_error: Option<SnapshotError>,
}

impl Instance {
    /// The last-good store's directory.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.state_dir.join("applied")
    }

    /// Makes sure the bpffs root exists (mounting bpffs if needed).
    pub fn ensure_bpffs(&self) -> Result<(), ReconcileError> {
        bpffs::ensure_root(self.layout.root())?;
        Ok(())
    }

    /// Reads config and live state. Files are read and parsed while the
    /// live state is read back (a large config parses while large maps are
    /// read); then the files are merged against what is live.
    pub fn gather(&self) -> Result<Gathered, ReconcileError> {
        let (snapshot, store_errors) = Snapshot::load(&self.snapshot_dir(), &self.rules);
        let (read, observed) = std::thread::scope(|s| {
            let observer = s.spawn(|| {
                let t = Instant::now();
                state::observe(&self.layout, []).map(|o| (o, t.elapsed()))
            });
            let read = config::read_dir(&self.config_dir, &self.rules);
            let observed = observer
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (read, observed)
        });
        let read = read?;
        let (mut observed, observe_time) = observed?;
        let config = config::assemble(read, &snapshot, &live(&observed), &self.rules);
        // Interfaces of desired chains, and state maps the config now adopts
        // or seeds (so the planner sees what they hold).
        let t = Instant::now();
        for key in config.desired.chains.keys() {
            let id = (key.netns.clone(), key.interface.clone());
            if let std::collections::btree_map::Entry::Vacant(slot) = observed.interfaces.entry(id)
            {
                slot.insert(state::interface_state(key.netns.as_deref(), &key.interface));
            }
        }
        let adopted: Vec<_> = config
            .desired
            .chains
            .iter()
            .flat_map(|(k, c)| c.functions.iter().map(move |f| (k, f)))
            .flat_map(|(k, f)| {
                let seeded = f
                    .state
                    .iter()
                    .filter(|(_, s)| !s.seed.is_empty())
                    .map(|(m, _)| m);
                f.maps
                    .keys()
                    .chain(seeded)
                    .map(move |m| (k.clone(), f.name.clone(), m.clone()))
            })
            .collect();
        state::read_adopted_maps(&self.layout, &mut observed, adopted);
        Ok(Gathered {
            config,
            observed,
            snapshot,
            store_errors,
            observe_time: observe_time + t.elapsed(),
        })
    }

    /// Plans from gathered state.
    pub fn plan(&self, g: &Gathered) -> Plan {
        plan::plan(&g.config.desired, &g.observed, &self.plan)
    }

    /// Loads what `plan` would load, pinning nothing (see [`apply::verify`]).
    pub fn verify(
        &self,
        g: &Gathered,
        plan: &Plan,
    ) -> Vec<(crate::model::ChainKey, apply::ApplyError)> {
        apply::verify(plan, &g.config.desired, &g.observed, &self.layout)
    }

    /// Executes a plan, then records in the last-good store every file whose
    /// chains all converged (the others keep their old copy).
    pub fn apply(&self, g: &Gathered, plan: &Plan) -> Applied {
        let report = apply::execute(plan, &g.config.desired, &g.observed, &self.layout);
        let store = next_store(g, &report);
        hit("before-store");
        let store_error = store.save(&self.snapshot_dir(), &g.snapshot).err();
        hit("after-store");
        Applied {
            report,
            store_error,
        }
    }
}

/// The store after `report` (see [`Snapshot::after`]): files whose
/// functions run, or ran, on a chain that failed keep their old copy.
fn next_store(g: &Gathered, report: &ApplyReport) -> Snapshot {
    let failed = report
        .chains
        .iter()
        .filter(|c| c.error.is_some())
        .map(|c| &c.key);
    let failed = Snapshot::files_on(&g.config.desired, &live(&g.observed), failed);
    g.snapshot.after(&g.config, &failed)
}

/// Every live function instance with the origin its load record names.
pub fn live(observed: &ObservedState) -> Live {
    observed
        .chains
        .iter()
        .flat_map(|(k, c)| {
            c.functions
                .iter()
                .map(move |(n, f)| ((k.clone(), n.clone()), f.meta.and_then(|m| m.origin)))
        })
        .collect()
}
