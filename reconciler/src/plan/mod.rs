//! The planner: `plan(desired, observed, options) -> Plan`. Pure: plain data
//! in, plain data out, no kernel, no files, no clock. Deterministic: chains
//! in key order, functions by name, maps by name.
//!
//! Per chain the actions come in three phases, which `apply` relies on:
//! 1. **build**: create the chain's maps and root, load new program
//!    instances and fill their fresh maps. Nothing packets see changes.
//! 2. **commit**: entry updates on live maps, one revision flip or slot
//!    replacement, attaching the root. Each is one atomic kernel write or a
//!    batch that `apply` can undo.
//! 3. **cleanup**: clear the old revision, unpin what is no longer used.

mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

pub use render::{blocked_message, render_json, render_text};

use crate::desired::{DesiredChain, DesiredFunction, DesiredState, Hold};
use crate::entries::{EntryDiff, EntrySet};
use crate::model::{ChainKey, Hook, MapShape, TcAttach, UpdateMode, XdpMode, limits, map_type};

/// Slots per revision (the ABI's KF_MAX_SLOTS).
const SLOTS: u32 = limits::MAX_SLOTS as u32;
use crate::state::model::{
    InterfaceState, ObservedChain, ObservedFunction, ObservedMap, ObservedState,
};

/// Knobs of the planner.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// `auto` uses a swap when more than this fraction of a map's entries change.
    pub swap_threshold: f64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            swap_threshold: 0.5,
        }
    }
}

/// What to do, per chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Chains with work to do or a reason they cannot be converged, in key order.
    pub chains: Vec<ChainPlan>,
    /// Shared maps with work to do, by name: created and written before
    /// the chains (whose loads use them), removed after.
    pub shared: Vec<SharedPlan>,
}

/// The plan for one shared map.
#[derive(Debug, Clone, Serialize)]
pub struct SharedPlan {
    /// The share's name.
    pub name: String,
    /// Why it cannot be touched, if it cannot; `actions` is then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// What to do, in order.
    pub actions: Vec<SharedAction>,
}

/// One step on a shared map.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SharedAction {
    /// Create and pin it, filled with its entries and seed.
    Create {
        /// Its shape.
        shape: MapShape,
        /// The entries to fill it with.
        #[serde(skip)]
        fill: Arc<EntrySet>,
        /// How many.
        count: usize,
    },
    /// Write the entries kfd owns (upserts, then deletes).
    Entries {
        /// The writes.
        #[serde(skip)]
        diff: Arc<EntryDiff>,
        /// Upserts of new keys.
        added: usize,
        /// Upserts of changed values.
        changed: usize,
        /// Deletes.
        removed: usize,
    },
    /// Write the seed entries it lacks.
    Seed {
        /// The entries.
        #[serde(skip)]
        entries: Arc<EntrySet>,
        /// How many.
        count: usize,
    },
    /// Unpin it: no function of the config uses it any more.
    Remove,
}

impl Plan {
    /// Whether the kernel already matches the config.
    pub fn in_sync(&self) -> bool {
        self.chains
            .iter()
            .all(|c| c.actions.is_empty() && c.blocked.is_none())
            && self
                .shared
                .iter()
                .all(|s| s.actions.is_empty() && s.blocked.is_none())
    }

    /// Whether a chain is blocked by an error (not just waiting for its
    /// interface): `plan` then exits 1, as for a config error.
    pub fn has_errors(&self) -> bool {
        self.blocked().any(|(_, b)| b.is_error()) || self.shared.iter().any(|s| s.blocked.is_some())
    }

    /// Chains that cannot be converged, with the reason.
    pub fn blocked(&self) -> impl Iterator<Item = (&ChainKey, &Blocked)> {
        self.chains
            .iter()
            .filter_map(|c| c.blocked.as_ref().map(|b| (&c.key, b)))
    }

    /// Number of actions over all chains and shared maps.
    pub fn action_count(&self) -> usize {
        self.chains.iter().map(|c| c.actions.len()).sum::<usize>()
            + self.shared.iter().map(|s| s.actions.len()).sum::<usize>()
    }

    /// Number of chains with actions.
    pub fn chains_with_actions(&self) -> usize {
        self.chains.iter().filter(|c| !c.actions.is_empty()).count()
    }
}

/// The plan for one chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainPlan {
    /// The chain.
    pub key: ChainKey,
    /// Set when the chain cannot be touched; `actions` is then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// Actions in execution order.
    pub actions: Vec<Action>,
    /// What is worth knowing but needs no action.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
}

/// Information about a chain that is not a pending change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// Seeded entries whose live value differs from the seed: they are the
    /// program's now, and stay as they are.
    SeedDiffers {
        /// The function.
        function: String,
        /// The map.
        map: String,
        /// How many differ.
        count: usize,
        /// The first of them: key, seed value, live value.
        #[serde(skip)]
        first: (Vec<u8>, Vec<u8>, Vec<u8>),
    },
}

/// Why a chain cannot be converged now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Blocked {
    /// The interface does not exist.
    InterfaceMissing,
    /// The interface could not be queried (e.g. its namespace is bad).
    InterfaceUnknown {
        /// Why.
        error: String,
    },
    /// The chain's pins could not be read back.
    Unreadable {
        /// Why.
        error: String,
    },
    /// Another tool's program holds the hook.
    ForeignProgram {
        /// Its id.
        prog_id: u32,
    },
    /// Too many functions for the ABI's slots.
    TooManyFunctions {
        /// How many were asked for.
        count: usize,
    },
    /// Functions of the chain are held (their config is unknown or cannot
    /// be built), and the change would move or rebuild them.
    Held {
        /// The held functions, with why.
        functions: Vec<HeldFunction>,
    },
    /// A function that does not use the kfd ABI is not last.
    NonAbiNotLast {
        /// The function.
        function: String,
        /// The one after it.
        next: String,
    },
}

impl Blocked {
    /// Whether this is an error someone must fix, rather than a wait for an
    /// interface to appear.
    pub fn is_error(&self) -> bool {
        !matches!(self, Blocked::InterfaceMissing)
    }
}

/// A function kept exactly as it is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldFunction {
    /// The function.
    pub function: String,
    /// Why.
    pub hold: Hold,
}

/// How a change lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Batched upserts, then batched deletes, on the live map.
    Entries,
    /// A new inner map, filled, then swapped into its map-in-map in one write.
    MapSwap,
    /// A new program instance with fresh config maps, swapped into its slot.
    ProgramSwap,
}

impl Strategy {
    /// Short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entries => "entries",
            Self::MapSwap => "map swap",
            Self::ProgramSwap => "program swap",
        }
    }
}

/// Why a program instance is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum LoadReason {
    /// The function is new on the chain.
    New,
    /// The object or program changed.
    CodeChanged,
    /// Globals changed.
    GlobalsChanged,
    /// A config map's changes must land atomically (`update: swap`, or
    /// `auto` above the threshold), so all config maps are rebuilt together.
    MapsSwap {
        /// The map that asked for it.
        map: String,
        /// What changed.
        detail: String,
    },
    /// A map of the function is to be shared: an instance that uses the
    /// shared map replaces the one with its own.
    Shares {
        /// The map.
        map: String,
        /// The share.
        share: String,
    },
    /// The config gives a map another size: a new map (which starts empty)
    /// comes with a new instance.
    Resized {
        /// The map.
        map: String,
        /// Its live size.
        from: u32,
        /// Its size now.
        to: u32,
    },
    /// The live instance is damaged (pins or records missing) and is rebuilt.
    Repair {
        /// What is wrong.
        detail: String,
    },
    /// The chain's slots change: a new instance for the new slot, sharing
    /// the live maps.
    Relink,
}

/// One slot of a revision to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedSlot {
    /// The function.
    pub function: String,
    /// Its stats row.
    pub fn_id: u32,
    /// Verdict bits that continue the chain.
    pub proceed_on: u32,
}

/// Why the chain's slots are rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotChange {
    /// The chain is new.
    Created,
    /// Functions were added, removed or reordered, or proceed_on changed.
    Changed,
    /// The live slots differ from what kfd wrote (drift).
    Repair,
}

/// One step.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Build: remove the remains of a chain whose maps or root are missing.
    ResetChain,
    /// Build: move `fn/<name>@old` back to `fn/<name>`. A run was killed
    /// between moving the live instance aside and putting the new one in its
    /// place, so the instance moved aside is the one to keep.
    RecoverFunction {
        /// The function.
        function: String,
    },
    /// Build: pin the chain maps and load the root program (not attached yet).
    CreateChain,
    /// Build: load a program instance for a slot: with fresh config maps
    /// filled from config, or (relink) sharing the live ones.
    LoadFunction {
        /// The function.
        function: String,
        /// Its stats row.
        fn_id: u32,
        /// The `kf_progs` index it is built for.
        slot: u32,
        /// Verdict bits it continues the chain on.
        proceed_on: u32,
        /// Whether its config maps are new (and filled), or the live ones.
        fresh_maps: bool,
        /// Why.
        reason: LoadReason,
        /// Entries per fresh config map, for output.
        fills: Vec<(String, usize)>,
        /// State maps the new code cannot share (another type or size):
        /// they start empty. Only for code changes; otherwise an
        /// incompatible pin is an error.
        reset_state: Vec<String>,
    },
    /// Commit: record in the live instance's load record the file content
    /// it now converges to (its file changed, the instance stays). First
    /// among a function's commits, so a run killed mid-way leaves a record
    /// that is never behind the kernel.
    RecordOrigin {
        /// The function.
        function: String,
    },
    /// Commit: move a map from state/ to maps/: kfd starts writing it.
    ManageMap {
        /// The function.
        function: String,
        /// The map.
        map: String,
    },
    /// Commit: write entries into a live config map.
    UpdateEntries {
        /// The function.
        function: String,
        /// The map.
        map: String,
        /// The writes.
        #[serde(skip)]
        diff: Arc<EntryDiff>,
        /// Upserts of new keys.
        added: usize,
        /// Upserts of changed values.
        changed: usize,
        /// Deletes.
        removed: usize,
        /// Entries once done.
        total: usize,
        /// How.
        strategy: Strategy,
        /// Why this strategy, for output.
        reason: String,
    },
    /// Commit: build a new inner map with all of `entries` and swap it into
    /// the map-in-map in one write.
    SwapMap {
        /// The function.
        function: String,
        /// The (outer) map.
        map: String,
        /// The complete new contents.
        #[serde(skip)]
        entries: Arc<EntrySet>,
        /// Entries in the new inner map.
        total: usize,
        /// Entries that differ from the live inner map.
        changed: usize,
        /// Why a swap, for output.
        reason: String,
    },
    /// Commit: write the seed entries whose key the live map lacks; from
    /// then on they are the program's. A key the program creates meanwhile
    /// is left as it is.
    SeedEntries {
        /// The function.
        function: String,
        /// The map.
        map: String,
        /// The entries to write.
        #[serde(skip)]
        entries: Arc<EntrySet>,
        /// How many.
        count: usize,
    },
    /// Commit: a map left the config: its entries are removed and it becomes
    /// a state map (kfd stops writing it).
    UnmanageMap {
        /// The function.
        function: String,
        /// The map.
        map: String,
        /// Keys to delete, packed.
        #[serde(skip)]
        deletes: Arc<Vec<u8>>,
        /// How many.
        removed: usize,
    },
    /// Commit: fill the inactive revision with these slots and flip to it.
    SetRevision {
        /// The revision written and activated.
        revision: u32,
        /// The slots, in run order.
        slots: Vec<PlannedSlot>,
        /// Why.
        change: SlotChange,
    },
    /// Commit: point one live slot at a new program instance (one prog-array write).
    ReplaceSlot {
        /// The function.
        function: String,
        /// Its index in the active revision.
        index: u32,
    },
    /// Commit: attach the root (a pinned link, or a clsact filter).
    Attach {
        /// How.
        target: AttachTarget,
        /// Whether an attachment existed (defunct, or of the wrong kind) and is replaced.
        replace: bool,
    },
    /// Cleanup: empty a revision.
    ClearRevision {
        /// The revision.
        revision: u32,
    },
    /// Cleanup: unpin a function no longer in the chain.
    UnloadFunction {
        /// The function.
        function: String,
    },
    /// Cleanup: detach the root and unpin everything of the chain.
    DestroyChain,
    /// Cleanup: remove what a killed run left in the chain dir (a build dir,
    /// a retired instance, a spare link), by its path under the chain dir.
    RemoveLeftover {
        /// E.g. `fn/edge-blocklist@new` or `link@new`.
        name: String,
    },
}

impl Action {
    /// The phase the action belongs to.
    pub fn phase(&self) -> Phase {
        match self {
            Action::ResetChain
            | Action::CreateChain
            | Action::RecoverFunction { .. }
            | Action::LoadFunction { .. } => Phase::Build,
            Action::RecordOrigin { .. }
            | Action::ManageMap { .. }
            | Action::SeedEntries { .. }
            | Action::UpdateEntries { .. }
            | Action::SwapMap { .. }
            | Action::UnmanageMap { .. }
            | Action::SetRevision { .. }
            | Action::ReplaceSlot { .. }
            | Action::Attach { .. } => Phase::Commit,
            Action::ClearRevision { .. }
            | Action::UnloadFunction { .. }
            | Action::DestroyChain
            | Action::RemoveLeftover { .. } => Phase::Cleanup,
        }
    }
}

/// How a chain's root is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "hook", rename_all = "snake_case")]
pub enum AttachTarget {
    /// An XDP link in this mode.
    Xdp {
        /// The requested mode.
        mode: XdpMode,
    },
    /// A TCX link or a clsact filter.
    Tc {
        /// Which.
        attach: TcAttach,
        /// TCX: first among the hook's programs, else last.
        first: bool,
        /// clsact: the filter's priority.
        priority: u16,
    },
}

/// The three phases of a chain's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Nothing live changes.
    Build,
    /// Live changes, each atomic or undoable.
    Commit,
    /// Releasing what is no longer used.
    Cleanup,
}

/// Plans every chain of `desired` and `observed`.
pub fn plan(desired: &DesiredState, observed: &ObservedState, opts: &PlanOptions) -> Plan {
    let keys: BTreeSet<&ChainKey> = desired
        .chains
        .keys()
        .chain(observed.chains.keys())
        .chain(observed.unreadable.keys())
        .collect();
    let chains = keys
        .into_iter()
        .filter_map(|key| {
            if let Some(error) = observed.unreadable.get(key) {
                // What cannot be read is left exactly as it is.
                return Some(ChainPlan {
                    key: key.clone(),
                    blocked: Some(Blocked::Unreadable {
                        error: error.clone(),
                    }),
                    actions: Vec::new(),
                    notes: Vec::new(),
                });
            }
            let plan = plan_chain(
                key,
                desired.chains.get(key),
                observed.chains.get(key),
                observed
                    .interfaces
                    .get(&(key.netns.clone(), key.interface.clone())),
                Facts {
                    incomplete: desired.incomplete,
                    tcx: observed.tcx,
                },
                opts,
            );
            (!plan.actions.is_empty() || plan.blocked.is_some() || !plan.notes.is_empty())
                .then_some(plan)
        })
        .collect();
    Plan {
        chains,
        shared: plan_shared(desired, observed),
    }
}

/// Shared maps: created where missing, written like config maps, removed
/// once no function of the config uses them (unless some file's content
/// is unknown: a held function may be one of their users).
fn plan_shared(desired: &DesiredState, observed: &ObservedState) -> Vec<SharedPlan> {
    let names: BTreeSet<&String> = desired
        .shared
        .keys()
        .chain(observed.shared.keys())
        .chain(observed.shared_errors.keys())
        .collect();
    let mut out = Vec::new();
    let held = desired.incomplete || desired.chains.values().any(|c| !c.held.is_empty());
    for name in names {
        let mut plan = SharedPlan {
            name: name.clone(),
            blocked: None,
            actions: Vec::new(),
        };
        let want = desired.shared.get(name);
        let have = observed.shared.get(name);
        if let Some(error) = observed.shared_errors.get(name) {
            plan.blocked = Some(format!("its pin cannot be read ({error})"));
        } else if let Some(want) = want {
            if want.inner.is_some() {
                plan.blocked = Some("a shared map of maps is not supported".into());
            } else {
                shared_actions(want, have, &mut plan);
            }
        } else if !held {
            plan.actions.push(SharedAction::Remove);
        }
        if plan.blocked.is_some() || !plan.actions.is_empty() {
            out.push(plan);
        }
    }
    out
}

fn shared_actions(
    want: &crate::desired::DesiredShared,
    have: Option<&ObservedMap>,
    plan: &mut SharedPlan,
) {
    let owned = want.entries.as_ref().map(|m| m.entries.clone());
    let Some(have) = have else {
        let mut fill = owned
            .map(|e| (*e).clone())
            .unwrap_or_else(|| EntrySet::new(want.seed.key_size(), want.seed.value_size()));
        for (k, v) in want.seed.iter() {
            fill.insert(k, v);
        }
        plan.actions.push(SharedAction::Create {
            shape: want.shape,
            count: fill.len(),
            fill: Arc::new(fill),
        });
        return;
    };
    if let Some(m) = have.shape.mismatch(&want.shape) {
        plan.blocked = Some(format!(
            "it is pinned with another shape ({m}); its users must go (or be moved to another share) before it can be made anew"
        ));
        return;
    }
    let Some(entries) = &have.entries else {
        return;
    };
    if let Some(owned) = owned {
        let diff = normalized(
            &owned,
            &entries.without_keys_of(&want.seed),
            want.shape.is_array(),
        );
        if !diff.is_empty() {
            plan.actions.push(SharedAction::Entries {
                added: diff.added,
                changed: diff.upserts.len() - diff.added,
                removed: diff.delete_count(),
                diff: Arc::new(diff),
            });
        }
    }
    if !want.shape.is_array() {
        let missing = want.seed.missing_from(entries);
        if !missing.is_empty() {
            plan.actions.push(SharedAction::Seed {
                count: missing.len(),
                entries: Arc::new(missing),
            });
        }
    }
}

/// What the planner knows beyond the chain itself.
#[derive(Debug, Clone, Copy)]
struct Facts {
    /// Some file's content is unknown (its chain settings too).
    incomplete: bool,
    /// The kernel has TCX.
    tcx: bool,
}

fn plan_chain(
    key: &ChainKey,
    desired: Option<&DesiredChain>,
    observed: Option<&ObservedChain>,
    iface: Option<&InterfaceState>,
    facts: Facts,
    opts: &PlanOptions,
) -> ChainPlan {
    let mut out = ChainPlan {
        key: key.clone(),
        blocked: None,
        actions: Vec::new(),
        notes: Vec::new(),
    };
    let desired = desired.filter(|d| !d.functions.is_empty() || !d.held.is_empty());
    let Some(desired) = desired else {
        if observed.is_some() {
            out.actions.push(Action::DestroyChain);
        }
        return out;
    };
    if desired.functions.is_empty() {
        // Only held functions: the chain stays exactly as it is.
        return out;
    }
    if let Some(blocked) = check_blocked(key, desired, observed, iface) {
        out.blocked = Some(blocked);
        return out;
    }
    let empty = ObservedChain::default();
    // The root must handle multi-buffer packets as the chain's programs do
    // (XDP): when that changes, the chain is built anew.
    let (obs, creating) = match observed {
        Some(o) if o.complete && (key.hook != Hook::Xdp || o.frags == desired.frags) => (o, false),
        // Rebuilding would drop what is held.
        Some(_) if !desired.held.is_empty() => {
            out.blocked = Some(held_blocked(desired));
            return out;
        }
        // A chain dir missing maps or its root cannot be trusted: rebuild it.
        Some(_) => {
            out.actions.push(Action::ResetChain);
            (&empty, true)
        }
        None => (&empty, true),
    };
    if creating {
        out.actions.push(Action::CreateChain);
    }
    for (name, f) in &obs.functions {
        if f.retired {
            out.actions.push(Action::RecoverFunction {
                function: name.clone(),
            });
        }
    }

    // fn_ids: keep each surviving function's row; new ones take rows no
    // observed function uses, so a row being drained is never reused at once.
    let used: BTreeSet<u32> = obs
        .functions
        .values()
        .filter_map(|f| f.meta.map(|m| m.fn_id))
        .collect();
    let mut free = (0..limits::MAX_SLOTS as u32).filter(|id| !used.contains(id));
    let mut fn_ids = BTreeMap::new();
    let mut by_name: Vec<&DesiredFunction> = desired.functions.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    for f in &by_name {
        // A row out of range or already taken (a tampered load record) is not kept.
        let kept = obs
            .functions
            .get(&f.name)
            .and_then(|o| o.meta)
            .map(|m| m.fn_id)
            .filter(|id| *id < limits::MAX_SLOTS as u32 && !fn_ids.values().any(|v| v == id));
        let id = kept.or_else(|| free.next()).unwrap_or_else(|| {
            // More than MAX_SLOTS functions ever coexisting: reuse a row of a
            // function being removed (check_blocked capped the count).
            (0..limits::MAX_SLOTS as u32)
                .find(|id| !fn_ids.values().any(|v| v == id))
                .unwrap_or(0)
        });
        fn_ids.insert(f.name.as_str(), id);
    }

    // Why each function needs a new instance (whatever the slots do).
    let mut reasons: BTreeMap<&str, LoadReason> = BTreeMap::new();
    let mut commits = Vec::new();
    for f in &by_name {
        match obs.functions.get(&f.name) {
            None => {
                reasons.insert(&f.name, LoadReason::New);
            }
            Some(o) => match needs_load(f, o, opts) {
                Some(reason) => {
                    reasons.insert(&f.name, reason);
                }
                None => {
                    if o.meta.and_then(|m| m.origin) != Some(f.origin) {
                        commits.push(Action::RecordOrigin {
                            function: f.name.clone(),
                        });
                    }
                    commits.extend(map_actions(f, o, opts, &mut out.notes));
                }
            },
        }
    }

    // Slots: the live ones match when each holds the function's pinned
    // instance, built for exactly this slot, stats row and proceed_on.
    let slots: Vec<PlannedSlot> = desired
        .functions
        .iter()
        .map(|f| PlannedSlot {
            function: f.name.clone(),
            fn_id: fn_ids[f.name.as_str()],
            proceed_on: f.proceed_on,
        })
        .collect();
    let active_base = obs.active_rev * SLOTS;
    // Where each function sits: its place in the config, or, while some
    // functions are held (their place in the config is unknown), its live
    // slot, which must then not change.
    let positions: BTreeMap<&str, u32> = if desired.held.is_empty() {
        desired
            .functions
            .iter()
            .enumerate()
            .map(|(pos, f)| (f.name.as_str(), pos as u32))
            .collect()
    } else {
        match live_positions(desired, obs, &slots, active_base) {
            Some(p) => p,
            None => {
                out.actions.clear();
                out.blocked = Some(held_blocked(desired));
                return out;
            }
        }
    };
    let live_matches = if desired.held.is_empty() {
        obs.active.len() == slots.len()
            && slots
                .iter()
                .zip(&obs.active)
                .enumerate()
                .all(|(pos, (want, live))| {
                    let Some(name) = live.prog_id.and_then(|id| obs.function_by_prog(id)) else {
                        return false;
                    };
                    let meta = obs.functions.get(name).and_then(|f| f.meta);
                    let abi = desired.functions[pos].program.uses_abi;
                    name == want.function
                        && meta.is_some_and(|m| {
                            m.fn_id == want.fn_id
                                && (!abi
                                    || (m.slot_idx == active_base + pos as u32
                                        && m.proceed_on == want.proceed_on))
                        })
                })
    } else {
        true // live_positions checked it
    };
    let flip = creating || !live_matches;
    let revision = if flip {
        obs.active_rev ^ 1
    } else {
        obs.active_rev
    };

    // Instances: replacements where needed; on a flip, every function that
    // speaks the ABI is rebuilt for its new slot (slot, row and proceed_on
    // are baked in, so its tail call is a direct jump).
    let mut loads: BTreeSet<&str> = BTreeSet::new();
    for f in &by_name {
        let pos = positions.get(f.name.as_str()).copied().unwrap_or(0);
        let reason = match reasons.remove(f.name.as_str()) {
            Some(r) => r,
            None if flip && f.program.uses_abi => LoadReason::Relink,
            None => continue,
        };
        let fresh = reason != LoadReason::Relink;
        out.actions.push(Action::LoadFunction {
            function: f.name.clone(),
            fn_id: fn_ids[f.name.as_str()],
            slot: revision * SLOTS + pos,
            proceed_on: f.proceed_on,
            fresh_maps: fresh,
            fills: if fresh {
                f.maps
                    .iter()
                    .map(|(n, m)| (n.clone(), m.entries.len()))
                    .collect()
            } else {
                Vec::new()
            },
            reset_state: match (&reason, obs.functions.get(&f.name)) {
                (LoadReason::CodeChanged | LoadReason::Resized { .. }, Some(o)) => {
                    incompatible_state(f, o)
                }
                _ => Vec::new(),
            },
            reason,
        });
        loads.insert(&f.name);
    }
    out.actions.extend(commits);

    if flip {
        // kfd's load records say which slot each instance was built for:
        // when that layout already is the config, the live slots drifted.
        let intended_is_desired = obs.functions.len() == slots.len()
            && slots.iter().enumerate().all(|(pos, want)| {
                obs.functions
                    .get(&want.function)
                    .and_then(|f| f.meta)
                    .is_some_and(|m| {
                        m.fn_id == want.fn_id
                            && m.slot_idx == active_base + pos as u32
                            && m.proceed_on == want.proceed_on
                    })
            });
        let change = if creating {
            SlotChange::Created
        } else if intended_is_desired {
            SlotChange::Repair
        } else {
            SlotChange::Changed
        };
        out.actions.push(Action::SetRevision {
            revision,
            slots,
            change,
        });
    } else {
        for s in &slots {
            if loads.contains(s.function.as_str()) {
                out.actions.push(Action::ReplaceSlot {
                    function: s.function.clone(),
                    index: positions.get(s.function.as_str()).copied().unwrap_or(0),
                });
            }
        }
    }
    let flipped = flip;

    // The root's attachment.
    let link_ok = obs.link.is_some_and(|l| {
        l.ifindex != 0
            && Some(l.prog_id) == obs.root_prog_id
            && matches!(iface, Some(InterfaceState::Present { ifindex, .. }) if *ifindex == l.ifindex)
    });
    let (attached_ok, target) = match key.hook {
        Hook::Xdp => {
            let mode_ok = match iface {
                Some(InterfaceState::Present { xdp, .. }) => xdp.iter().any(|(mode, id)| {
                    Some(*id) == obs.root_prog_id && desired.xdp_mode.accepts(*mode)
                }),
                _ => false,
            };
            (
                link_ok && mode_ok,
                AttachTarget::Xdp {
                    mode: desired.xdp_mode,
                },
            )
        }
        Hook::TcIngress | Hook::TcEgress => {
            let tc = desired.tc;
            let filter_ok = obs.tc_filter.is_some_and(|f| {
                f.prog_id.is_some() && f.prog_id == obs.root_prog_id && f.priority == tc.priority
            });
            let ok = match tc.attach {
                TcAttach::Tcx => link_ok && obs.tc_filter.is_none(),
                TcAttach::Clsact => filter_ok && obs.link.is_none(),
                // Auto means TCX where the kernel has it: a chain left on
                // clsact (its config said so before) moves.
                TcAttach::Auto if facts.tcx => link_ok && obs.tc_filter.is_none(),
                TcAttach::Auto => filter_ok && obs.link.is_none(),
            };
            (
                ok,
                AttachTarget::Tc {
                    attach: tc.attach,
                    first: tc.first,
                    priority: tc.priority,
                },
            )
        }
    };
    // While some file's content is unknown, so are the chain settings it
    // may have made: a chain that is attached at all stays as attached.
    let keep_attachment = facts.incomplete
        && (link_ok || obs.tc_filter.is_some_and(|f| f.prog_id == obs.root_prog_id));
    if creating || (!attached_ok && !keep_attachment) {
        out.actions.push(Action::Attach {
            target,
            replace: obs.link.is_some() || obs.tc_filter.is_some(),
        });
    }

    // Cleanup.
    // A new chain's other revision is empty already.
    if (flipped && !creating) || obs.inactive_used {
        out.actions.push(Action::ClearRevision {
            revision: obs.active_rev ^ u32::from(!flipped),
        });
    }
    for name in obs.functions.keys() {
        if !desired.functions.iter().any(|f| &f.name == name) && !desired.held.contains_key(name) {
            out.actions.push(Action::UnloadFunction {
                function: name.clone(),
            });
        }
    }
    for name in &obs.leftovers {
        out.actions
            .push(Action::RemoveLeftover { name: name.clone() });
    }
    out
}

/// While functions are held, the live slots must stay as they are: each
/// function the config asks for already runs in its slot (built for it,
/// with its stats row and proceed_on), in the config's order, and nothing
/// else runs there but held functions, which keep their places (where the
/// config still gives a held function's priority, its place is checked
/// too). Then the functions' live positions; None when the chain would
/// have to change.
fn live_positions<'d>(
    desired: &'d DesiredChain,
    obs: &ObservedChain,
    slots: &[PlannedSlot],
    active_base: u32,
) -> Option<BTreeMap<&'d str, u32>> {
    // The order the config asks for, among what it knows the place of.
    let mut order: Vec<(u32, &str)> = desired
        .functions
        .iter()
        .map(|f| (f.priority, f.name.as_str()))
        .chain(
            desired
                .held
                .iter()
                .filter_map(|(n, h)| h.priority().map(|p| (p, n.as_str()))),
        )
        .collect();
    order.sort();
    let mut wanted = order.iter().map(|(_, n)| *n);
    let mut positions = BTreeMap::new();
    for (pos, live) in obs.active.iter().enumerate() {
        let name = live.prog_id.and_then(|id| obs.function_by_prog(id))?;
        if let Some(hold) = desired.held.get(name) {
            if hold.priority().is_some() && wanted.next() != Some(name) {
                return None;
            }
            continue;
        }
        if wanted.next() != Some(name) {
            return None;
        }
        let want = slots.iter().find(|s| s.function == name)?;
        let f = desired.functions.iter().find(|f| f.name == name)?;
        let meta = obs.functions.get(name).and_then(|o| o.meta)?;
        let built_here = !f.program.uses_abi
            || (meta.slot_idx == active_base + pos as u32 && meta.proceed_on == want.proceed_on);
        if meta.fn_id != want.fn_id || !built_here {
            return None;
        }
        positions.insert(f.name.as_str(), pos as u32);
    }
    wanted.next().is_none().then_some(positions)
}

/// A chain that cannot change shape while functions are held.
fn held_blocked(desired: &DesiredChain) -> Blocked {
    Blocked::Held {
        functions: desired
            .held
            .iter()
            .map(|(name, hold)| HeldFunction {
                function: name.clone(),
                hold: hold.clone(),
            })
            .collect(),
    }
}

fn check_blocked(
    key: &ChainKey,
    desired: &DesiredChain,
    observed: Option<&ObservedChain>,
    iface: Option<&InterfaceState>,
) -> Option<Blocked> {
    let count = desired.functions.len() + desired.held.len();
    if count > limits::MAX_SLOTS {
        return Some(Blocked::TooManyFunctions { count });
    }
    if let Some(pos) = desired.functions.iter().position(|f| !f.program.uses_abi)
        && let Some(next) = desired.functions.get(pos + 1)
    {
        return Some(Blocked::NonAbiNotLast {
            function: desired.functions[pos].name.clone(),
            next: next.name.clone(),
        });
    }
    match iface {
        None | Some(InterfaceState::Missing) => Some(Blocked::InterfaceMissing),
        Some(InterfaceState::Unknown { error }) => Some(Blocked::InterfaceUnknown {
            error: error.clone(),
        }),
        // TC programs coexist: another tool's never blocks kfd's.
        Some(InterfaceState::Present { .. }) if key.hook != Hook::Xdp => None,
        Some(InterfaceState::Present { xdp, .. }) => {
            let ours = observed.and_then(|o| o.root_prog_id);
            xdp.iter()
                .find(|(_, id)| Some(*id) != ours)
                .map(|(_, id)| Blocked::ForeignProgram { prog_id: *id })
        }
    }
}

/// Whether the live instance must be replaced, and why.
fn needs_load(f: &DesiredFunction, o: &ObservedFunction, opts: &PlanOptions) -> Option<LoadReason> {
    let repair = |detail: String| Some(LoadReason::Repair { detail });
    let Some(meta) = o.meta else {
        return repair("its load record (meta) is missing".into());
    };
    if o.prog_id.is_none() {
        return repair("its program pin is missing".into());
    }
    if meta.code_digest != f.program.digest {
        return Some(LoadReason::CodeChanged);
    }
    if meta.globals_digest != f.globals_digest {
        return Some(LoadReason::GlobalsChanged);
    }
    // Every map of the object must be pinned (as config or state) and fit.
    for (name, shape) in f.shapes() {
        let pinned = o.maps.get(name).or_else(|| o.state.get(name));
        // A shared map is pinned under the root, not with the function: one
        // pinned with it is still its own, and must become the shared one.
        if let Some(sc) = f.shares.get(name) {
            if pinned.is_some() {
                return Some(LoadReason::Shares {
                    map: name.to_owned(),
                    share: sc.share.clone(),
                });
            }
            continue;
        }
        match pinned {
            None => return repair(format!("map {name} is no longer pinned")),
            Some(p) if p.shape != shape => {
                // The config resized it: a new map, built with the program.
                let resized = MapShape {
                    max_entries: shape.max_entries,
                    ..p.shape
                };
                if resized == shape && f.sizes.contains_key(name) {
                    return Some(LoadReason::Resized {
                        map: name.to_owned(),
                        from: p.shape.max_entries,
                        to: shape.max_entries,
                    });
                }
                return repair(format!(
                    "pinned map {name} no longer fits the object: {}",
                    p.shape.mismatch(&shape).unwrap_or_default()
                ));
            }
            Some(_) => {}
        }
    }
    for (name, m) in &f.maps {
        // A map-in-map swaps on its own (a map swap), never the program.
        if map_type::is_map_in_map(m.shape.map_type) {
            continue;
        }
        let Some(diff) = diff_for(name, f, o) else {
            continue;
        };
        if let Some(detail) = swap_reason(m, &diff, opts) {
            return Some(LoadReason::MapsSwap {
                map: name.clone(),
                detail,
            });
        }
    }
    None
}

/// State maps pinned for `o` that `f` creates differently (its object
/// defines them otherwise, or the config resized them).
fn incompatible_state(f: &DesiredFunction, o: &ObservedFunction) -> Vec<String> {
    f.shapes()
        .filter(|(name, _)| !f.maps.contains_key(*name))
        .filter(|(name, shape)| o.state.get(*name).is_some_and(|m| m.shape != *shape))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Below this many entries a swap never pays for itself.
pub const SWAP_MIN_ENTRIES: usize = 1024;

/// Whether a change to `m` should land as a swap, and why: `update: swap`
/// always; `update: auto` when more than the threshold of the entries
/// change (and the map is big enough for a swap to pay).
fn swap_reason(
    m: &crate::desired::DesiredMap,
    diff: &EntryDiff,
    opts: &PlanOptions,
) -> Option<String> {
    if diff.is_empty() {
        return None;
    }
    // Keys on either side: what changed is a fraction of this.
    let base = (m.entries.len() + diff.delete_count()).max(1);
    let changed = diff.write_count();
    match m.update {
        UpdateMode::Swap => Some(format!(
            "{} of {} changed (update: swap)",
            group(changed),
            group(base)
        )),
        UpdateMode::Entries => None,
        UpdateMode::Auto => {
            let threshold = m.swap_threshold.unwrap_or(opts.swap_threshold);
            (base >= SWAP_MIN_ENTRIES && changed as f64 > threshold * base as f64)
                .then(|| format!("{} of {} changed", group(changed), group(base)))
        }
    }
}

fn diff_for(name: &str, f: &DesiredFunction, o: &ObservedFunction) -> Option<EntryDiff> {
    let m = f.maps.get(name)?;
    let have = o
        .maps
        .get(name)
        .or_else(|| o.state.get(name))?
        .entries
        .as_ref()?;
    // Seeded entries are the program's: never compared, never deleted.
    Some(normalized(
        &m.entries,
        &have.without_keys_of(&m.seed),
        m.shape.is_array(),
    ))
}

fn normalized(want: &EntrySet, have: &EntrySet, is_array: bool) -> EntryDiff {
    if is_array {
        // Arrays cannot delete: a zero value is "absent" on both sides.
        want.without_zero_values()
            .diff_from(&have.without_zero_values())
    } else {
        want.diff_from(have)
    }
}

/// Entry updates, map swaps and seeds for a function whose program stays.
fn map_actions(
    f: &DesiredFunction,
    o: &ObservedFunction,
    opts: &PlanOptions,
    notes: &mut Vec<Note>,
) -> Vec<Action> {
    let mut out = seed_actions(f, o, notes);
    for (name, m) in &f.maps {
        let (have, managed) = match (o.maps.get(name), o.state.get(name)) {
            (Some(have), _) => (have, true),
            (None, Some(have)) => (have, false),
            (None, None) => continue, // needs_load caught it
        };
        if !managed {
            out.push(Action::ManageMap {
                function: f.name.clone(),
                map: name.clone(),
            });
        }
        if map_type::is_map_in_map(m.shape.map_type) {
            // An empty slot, or an inner map of another shape, can only be
            // replaced; otherwise the size of the change decides.
            let swap = match (&have.entries, have.inner == m.inner) {
                (Some(entries), true) => {
                    let diff =
                        normalized(&m.entries, entries, m.inner.is_some_and(|i| i.is_array()));
                    if diff.is_empty() {
                        continue;
                    }
                    swap_reason(m, &diff, opts).map(|r| (diff.write_count(), r))
                }
                (None, _) => Some((m.entries.len(), "the outer map's slot is empty".to_owned())),
                (Some(_), false) => Some((
                    m.entries.len(),
                    "the live inner map has another shape".to_owned(),
                )),
            };
            if let Some((changed, reason)) = swap {
                out.push(Action::SwapMap {
                    function: f.name.clone(),
                    map: name.clone(),
                    total: m.entries.len(),
                    changed,
                    reason,
                    entries: m.entries.clone(),
                });
                continue;
            }
        }
        let Some(entries) = &have.entries else {
            continue;
        };
        let is_array = m.shape.is_array() || m.inner.is_some_and(|i| i.is_array());
        // Seeded entries are the program's: never compared, never deleted.
        let diff = normalized(&m.entries, &entries.without_keys_of(&m.seed), is_array);
        if diff.is_empty() {
            continue;
        }
        let total = m.entries.len();
        let changed = diff.write_count();
        out.push(Action::UpdateEntries {
            function: f.name.clone(),
            map: name.clone(),
            added: diff.added,
            changed: diff.upserts.len() - diff.added,
            removed: diff.delete_count(),
            total,
            strategy: Strategy::Entries,
            reason: format!(
                "{} of {} changed{}",
                group(changed),
                // Keys on either side: what changed is a fraction of this.
                group(total + diff.delete_count()),
                match m.update {
                    UpdateMode::Entries => " (update: entries)",
                    _ => "",
                }
            ),
            diff: Arc::new(diff),
        });
    }
    for (name, have) in &o.maps {
        if f.maps.contains_key(name) {
            continue;
        }
        // What kfd wrote goes; what a seed now gives the program stays.
        let keys = have
            .entries
            .as_ref()
            .map(|e| {
                if have.shape.is_array() {
                    e.without_zero_values()
                } else {
                    e.clone()
                }
            })
            .map(|e| match f.state.get(name) {
                Some(s) => e.without_keys_of(&s.seed),
                None => e,
            })
            .map(|e| e.packed_keys().to_vec())
            .unwrap_or_default();
        let removed = keys.len() / (have.shape.key_size.max(1) as usize);
        out.push(Action::UnmanageMap {
            function: f.name.clone(),
            map: name.clone(),
            deletes: Arc::new(keys),
            removed,
        });
    }
    out
}

/// The seed entries live maps lack, and a note on seeded entries whose
/// values the program changed. Arrays get their seed only when fresh: an
/// element is always there, so "missing" cannot be told from zero.
fn seed_actions(f: &DesiredFunction, o: &ObservedFunction, notes: &mut Vec<Note>) -> Vec<Action> {
    let mut out = Vec::new();
    let names = f.maps.keys().chain(f.state.keys());
    for name in names {
        let Some(seed) = f.seed(name) else {
            continue;
        };
        let live = o.maps.get(name).or_else(|| o.state.get(name));
        let Some(live) = live.filter(|m| !m.shape.is_array() && m.inner.is_none()) else {
            continue;
        };
        let Some(have) = &live.entries else {
            continue;
        };
        let missing = seed.missing_from(have);
        if !missing.is_empty() {
            out.push(Action::SeedEntries {
                function: f.name.clone(),
                map: name.clone(),
                count: missing.len(),
                entries: Arc::new(missing),
            });
        }
        let differ: Vec<(&[u8], &[u8], &[u8])> = seed
            .iter()
            .filter_map(|(k, v)| have.get(k).filter(|l| *l != v).map(|l| (k, v, l)))
            .collect();
        if let Some((k, v, l)) = differ.first() {
            notes.push(Note::SeedDiffers {
                function: f.name.clone(),
                map: name.clone(),
                count: differ.len(),
                first: (k.to_vec(), v.to_vec(), l.to_vec()),
            });
        }
    }
    out
}

/// 1234567 → "1,234,567".
pub fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod props;
#[cfg(test)]
pub(crate) mod tests;
