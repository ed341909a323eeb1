//! Planner properties over random desired and observed states (proptest).
//!
//! The observed state is what the model of apply (`tests::simulate`) leaves
//! after a random history of configs, then damaged by random drift: pins,
//! load records, slots, entries, links and inner maps removed or changed by
//! hand, leftovers of an interrupted change (inactive slots, build dirs,
//! instances moved aside by a killed run). For any such pair:
//! - the plan is deterministic and its phases never go backwards;
//! - it touches only what it should: it unloads only functions the config
//!   dropped, destroys only chains the config dropped, never gives a new
//!   function the stats row of a live one;
//! - applying it yields the desired state, checked field by field against
//!   the config (slots in order, load records, every map's entries, state
//!   maps, the attachment), and planning again finds nothing to do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, any, prop, prop_assert, prop_assert_eq, prop_oneof,
    proptest,
};
use proptest::sample::Index;
use proptest::strategy::Strategy as Gen;

use super::tests::{IFINDEX, names, simulate};
use super::*;
use crate::desired::{DesiredMap, HexFormat, ProgramImage, ProgramOrigin};
use crate::entries::EntrySet;
use crate::model::{MapShape, Source, TcAttach, TcSettings};
use crate::state::model::InterfaceState;

const LPM: MapShape = MapShape {
    map_type: map_type::LPM_TRIE,
    key_size: 8,
    value_size: 1,
    max_entries: 1 << 21,
    map_flags: 1,
};
const BUCKETS: MapShape = MapShape {
    map_type: map_type::LRU_HASH,
    key_size: 20,
    value_size: 16,
    max_entries: 65536,
    map_flags: 0,
};
const CFG: MapShape = MapShape {
    map_type: map_type::ARRAY,
    key_size: 4,
    value_size: 4,
    max_entries: 4,
    map_flags: 0,
};
const OUTER: MapShape = MapShape {
    map_type: map_type::ARRAY_OF_MAPS,
    key_size: 4,
    value_size: 4,
    max_entries: 1,
    map_flags: 0,
};

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// The chains a config may name: two XDP interfaces and a TC hook.
fn chain_key(i: usize) -> ChainKey {
    let (interface, hook) = [
        ("eth0", Hook::Xdp),
        ("eth1", Hook::Xdp),
        ("eth0", Hook::TcIngress),
    ][i];
    ChainKey {
        netns: None,
        interface: interface.into(),
        hook,
    }
}

/// Entries 10.0.x.y/32 from ranges of key numbers, with a value each.
#[derive(Debug, Clone)]
struct Ranges(Vec<(u32, u32, u8)>);

impl Ranges {
    fn lpm(&self) -> EntrySet {
        let mut set = EntrySet::new(8, 1);
        for &(start, len, value) in &self.0 {
            for i in start..start + len {
                let mut k = 32u32.to_ne_bytes().to_vec();
                k.extend_from_slice(&(0x0a00_0000 + i).to_be_bytes());
                set.insert(&k, &[value]);
            }
        }
        set
    }
}

fn ranges() -> impl Gen<Value = Ranges> {
    // Mostly small sets; sometimes one past SWAP_MIN_ENTRIES, so `auto` swaps.
    let len = prop_oneof![4 => 0u32..6, 1 => Just(1100u32), 1 => Just(2000u32)];
    prop::collection::vec((0u32..3000, len, 1u8..3), 0..3).prop_map(Ranges)
}

fn update() -> impl Gen<Value = UpdateMode> {
    prop_oneof![
        3 => Just(UpdateMode::Auto),
        1 => Just(UpdateMode::Entries),
        1 => Just(UpdateMode::Swap),
    ]
}

/// One function of a config.
#[derive(Debug, Clone)]
struct FnSpec {
    name: &'static str,
    priority: u32,
    /// Object version: 2 redefines the `buckets` state map (bigger).
    code: u8,
    globals: u8,
    proceed_on: u32,
    deny: Option<(Ranges, UpdateMode, Option<f64>)>,
    /// Values of `cfg` elements 0..4 (0: absent).
    cfg: Option<[u8; 4]>,
    list: Option<(Ranges, UpdateMode)>,
}

fn fn_spec(name: &'static str) -> impl Gen<Value = FnSpec> {
    (
        1u32..4,
        1u8..3,
        0u8..2,
        prop_oneof![Just(1u32 << 2), Just((1 << 2) | (1 << 1))],
        prop::option::weighted(
            0.7,
            (
                ranges(),
                update(),
                prop::option::weighted(0.2, prop_oneof![Just(0.01), Just(0.9)]),
            ),
        ),
        prop::option::weighted(0.3, prop::array::uniform4(0u8..3)),
        prop::option::weighted(0.3, (ranges(), update())),
    )
        .prop_map(
            move |(p, code, globals, proceed_on, deny, cfg, list)| FnSpec {
                name,
                priority: p * 10,
                code,
                globals,
                proceed_on,
                deny,
                cfg,
                list,
            },
        )
}

/// One chain of a config.
#[derive(Debug, Clone)]
struct ChainSpec {
    functions: Vec<FnSpec>,
    xdp_mode: XdpMode,
    tc_attach: TcAttach,
    /// The last function is a third-party program without the ABI.
    third_party_last: bool,
}

fn chain_spec() -> impl Gen<Value = ChainSpec> {
    (
        prop::sample::subsequence(NAMES.to_vec(), 0..=NAMES.len()),
        prop_oneof![
            Just(XdpMode::Auto),
            Just(XdpMode::Native),
            Just(XdpMode::Generic)
        ],
        prop_oneof![
            Just(TcAttach::Auto),
            Just(TcAttach::Tcx),
            Just(TcAttach::Clsact)
        ],
        prop::bool::weighted(0.2),
    )
        .prop_flat_map(|(names, xdp_mode, tc_attach, third_party_last)| {
            let fns: Vec<_> = names.into_iter().map(fn_spec).collect();
            (fns, Just(xdp_mode), Just(tc_attach), Just(third_party_last))
        })
        .prop_map(
            |(functions, xdp_mode, tc_attach, third_party_last)| ChainSpec {
                functions,
                xdp_mode,
                tc_attach,
                third_party_last,
            },
        )
}

/// A config: some of the three chains.
fn desired_spec() -> impl Gen<Value = Vec<Option<ChainSpec>>> {
    prop::collection::vec(prop::option::weighted(0.6, chain_spec()), 3)
}

fn source() -> Source {
    Source {
        file: "10-prop.yaml".into(),
        line: 1,
        col: 1,
    }
}

fn image(code: u8, uses_abi: bool) -> Arc<ProgramImage> {
    let mut maps = BTreeMap::new();
    maps.insert("deny_v4".to_owned(), LPM);
    maps.insert("cfg".to_owned(), CFG);
    maps.insert("list".to_owned(), OUTER);
    maps.insert(
        "buckets".to_owned(),
        if code == 2 {
            MapShape {
                max_entries: 1 << 17,
                ..BUCKETS
            }
        } else {
            BUCKETS
        },
    );
    Arc::new(ProgramImage {
        origin: ProgramOrigin::Builtin("prop".into()),
        symbol: "prop".into(),
        frags: false,
        bytes: Arc::from(&b""[..]),
        digest: [code + if uses_abi { 0 } else { 100 }; 32],
        uses_abi,
        maps,
        chain_maps: BTreeMap::new(),
    })
}

fn map(
    shape: MapShape,
    inner: Option<MapShape>,
    entries: EntrySet,
    update: UpdateMode,
) -> DesiredMap {
    DesiredMap {
        shape,
        inner,
        swap_threshold: None,
        update,
        entries: Arc::new(entries),
        seed: Default::default(),
        source: source(),
        format: Arc::new(HexFormat),
    }
}

fn function(f: &FnSpec, uses_abi: bool) -> DesiredFunction {
    let mut maps = BTreeMap::new();
    if let Some((ranges, update, threshold)) = &f.deny {
        let mut m = map(LPM, None, ranges.lpm(), *update);
        m.swap_threshold = *threshold;
        maps.insert("deny_v4".to_owned(), m);
    }
    if let Some(values) = f.cfg {
        let mut set = EntrySet::new(4, 4);
        for (i, v) in values.iter().enumerate() {
            set.insert(&(i as u32).to_le_bytes(), &[*v, 0, 0, 0]);
        }
        maps.insert("cfg".to_owned(), map(CFG, None, set, UpdateMode::Auto));
    }
    if let Some((ranges, update)) = &f.list {
        maps.insert(
            "list".to_owned(),
            map(OUTER, Some(LPM), ranges.lpm(), *update),
        );
    }
    DesiredFunction {
        name: f.name.into(),
        priority: f.priority,
        source: source(),
        program: image(f.code, uses_abi),
        proceed_on: f.proceed_on,
        globals: Vec::new(),
        globals_digest: [f.globals; 32],
        maps,
        state: BTreeMap::new(),
        sizes: BTreeMap::new(),
        shares: BTreeMap::new(),
        origin: super::tests::origin(1),
    }
}

fn desired(spec: &[Option<ChainSpec>]) -> DesiredState {
    let mut d = DesiredState::default();
    for (i, c) in spec.iter().enumerate() {
        let Some(c) = c else { continue };
        let mut functions: Vec<DesiredFunction> =
            c.functions.iter().map(|f| function(f, true)).collect();
        functions.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        if c.third_party_last
            && let Some(last) = functions.last_mut()
        {
            last.program = image(5, false);
        }
        d.chains.insert(
            chain_key(i),
            DesiredChain {
                xdp_mode: c.xdp_mode,
                tc: TcSettings {
                    attach: c.tc_attach,
                    ..TcSettings::default()
                },
                settings: None,
                functions,
                frags: false,
                held: BTreeMap::new(),
            },
        );
    }
    d
}

/// Both interfaces up, nothing attached.
fn nothing_live() -> ObservedState {
    let mut o = ObservedState::default();
    for ifname in ["eth0", "eth1"] {
        o.interfaces.insert(
            (None, ifname.into()),
            InterfaceState::Present {
                ifindex: IFINDEX,
                xdp: Vec::new(),
            },
        );
    }
    o
}

/// Damage done by hand (or by a crash) between two passes.
#[derive(Debug, Clone)]
enum Drift {
    ProgPinGone(Index, Index),
    MetaGone(Index, Index),
    MetaWrongSlot(Index, Index),
    StatePinGone(Index, Index),
    ConfigPinGone(Index, Index),
    EntriesEdited(Index, Index, u32),
    InnerSlotEmptied(Index, Index),
    SlotCleared(Index, Index),
    SlotForeign(Index, Index),
    InactiveLeftovers(Index),
    LinkDefunct(Index),
    LinkGone(Index),
    Incomplete(Index),
    StrayFunction(Index),
    XdpDetached(Index),
    /// A run was killed mid-promotion: the live instance is found only
    /// under `fn/<name>@old`.
    Retired(Index, Index),
    /// A run was killed and left a build dir, a retired instance or a
    /// spare link in the chain dir.
    CrashLeftover(Index, Index),
}

fn drift() -> impl Gen<Value = Drift> {
    let i = any::<Index>;
    prop_oneof![
        (i(), i()).prop_map(|(c, f)| Drift::ProgPinGone(c, f)),
        (i(), i()).prop_map(|(c, f)| Drift::MetaGone(c, f)),
        (i(), i()).prop_map(|(c, f)| Drift::MetaWrongSlot(c, f)),
        (i(), i()).prop_map(|(c, f)| Drift::StatePinGone(c, f)),
        (i(), i()).prop_map(|(c, f)| Drift::ConfigPinGone(c, f)),
        (i(), i(), 0u32..3000).prop_map(|(c, f, k)| Drift::EntriesEdited(c, f, k)),
        (i(), i()).prop_map(|(c, f)| Drift::InnerSlotEmptied(c, f)),
        (i(), i()).prop_map(|(c, s)| Drift::SlotCleared(c, s)),
        (i(), i()).prop_map(|(c, s)| Drift::SlotForeign(c, s)),
        i().prop_map(Drift::InactiveLeftovers),
        i().prop_map(Drift::LinkDefunct),
        i().prop_map(Drift::LinkGone),
        i().prop_map(Drift::Incomplete),
        i().prop_map(Drift::StrayFunction),
        i().prop_map(Drift::XdpDetached),
        (i(), i()).prop_map(|(c, f)| Drift::Retired(c, f)),
        (i(), i()).prop_map(|(c, k)| Drift::CrashLeftover(c, k)),
    ]
}

/// Applies one drift to `o` (a no-op where there is nothing to damage).
fn damage(o: &mut ObservedState, d: &Drift) {
    let keys: Vec<ChainKey> = o.chains.keys().cloned().collect();
    if keys.is_empty() {
        return;
    }
    let chain_of = |c: &Index| keys[c.index(keys.len())].clone();
    let fn_of = |o: &ObservedState, key: &ChainKey, f: &Index| {
        let names: Vec<String> = o.chains[key].functions.keys().cloned().collect();
        (!names.is_empty()).then(|| names[f.index(names.len())].clone())
    };
    match d {
        Drift::ProgPinGone(c, f)
        | Drift::MetaGone(c, f)
        | Drift::MetaWrongSlot(c, f)
        | Drift::StatePinGone(c, f)
        | Drift::ConfigPinGone(c, f)
        | Drift::EntriesEdited(c, f, _)
        | Drift::InnerSlotEmptied(c, f)
        | Drift::Retired(c, f) => {
            let key = chain_of(c);
            let Some(name) = fn_of(o, &key, f) else {
                return;
            };
            let func = o
                .chains
                .get_mut(&key)
                .and_then(|c| c.functions.get_mut(&name))
                .expect("picked");
            match d {
                Drift::ProgPinGone(..) => func.prog_id = None,
                Drift::MetaGone(..) => func.meta = None,
                Drift::MetaWrongSlot(..) => {
                    if let Some(m) = func.meta.as_mut() {
                        m.slot_idx ^= 1;
                    }
                }
                Drift::StatePinGone(..) => {
                    func.state.pop_first();
                }
                Drift::ConfigPinGone(..) => {
                    func.maps.pop_first();
                }
                Drift::EntriesEdited(_, _, k) => {
                    for m in func.maps.values_mut() {
                        let Some(entries) = m.entries.as_mut() else {
                            continue;
                        };
                        if entries.key_size() != 8 {
                            continue;
                        }
                        // One entry added by hand, the first one deleted.
                        let mut edited = EntrySet::new(8, 1);
                        for (key, value) in entries.iter().skip(1) {
                            edited.insert(key, value);
                        }
                        let mut key = 32u32.to_ne_bytes().to_vec();
                        key.extend_from_slice(&(0x0a00_0000 + k).to_be_bytes());
                        edited.insert(&key, &[7]);
                        *entries = edited;
                    }
                }
                Drift::InnerSlotEmptied(..) => {
                    if let Some(m) = func.maps.get_mut("list") {
                        m.inner = None;
                        m.entries = None;
                    }
                }
                Drift::Retired(..) => func.retired = true,
                _ => unreachable!(),
            }
        }
        Drift::CrashLeftover(c, k) => {
            let chain = o.chains.get_mut(&chain_of(c)).expect("picked");
            let left = ["fn/a@new", "fn/b@old", "link@new", "fn/stray@new"];
            let name = left[k.index(left.len())].to_owned();
            if !chain.leftovers.contains(&name) {
                chain.leftovers.push(name);
            }
        }
        Drift::SlotCleared(c, s) | Drift::SlotForeign(c, s) => {
            let chain = o.chains.get_mut(&chain_of(c)).expect("picked");
            if chain.active.is_empty() {
                return;
            }
            let n = chain.active.len();
            chain.active[s.index(n)].prog_id = match d {
                Drift::SlotForeign(..) => Some(4242),
                _ => None,
            };
        }
        Drift::InactiveLeftovers(c) => {
            o.chains
                .get_mut(&chain_of(c))
                .expect("picked")
                .inactive_used = true;
        }
        Drift::LinkDefunct(c) => {
            let key = chain_of(c);
            if let Some(l) = o.chains.get_mut(&key).and_then(|c| c.link.as_mut()) {
                l.ifindex = 0;
            }
            if key.hook == Hook::Xdp {
                o.interfaces.insert(
                    (None, key.interface.clone()),
                    InterfaceState::Present {
                        ifindex: IFINDEX,
                        xdp: Vec::new(),
                    },
                );
            }
        }
        Drift::LinkGone(c) => {
            let chain = o.chains.get_mut(&chain_of(c)).expect("picked");
            chain.link = None;
            chain.tc_filter = None;
        }
        Drift::Incomplete(c) => {
            o.chains.get_mut(&chain_of(c)).expect("picked").complete = false;
        }
        Drift::StrayFunction(c) => {
            let chain = o.chains.get_mut(&chain_of(c)).expect("picked");
            chain.functions.insert(
                "stray".into(),
                ObservedFunction {
                    prog_id: Some(5555),
                    ..Default::default()
                },
            );
        }
        Drift::XdpDetached(c) => {
            let key = chain_of(c);
            if key.hook == Hook::Xdp {
                o.interfaces.insert(
                    (None, key.interface.clone()),
                    InterfaceState::Present {
                        ifindex: IFINDEX,
                        xdp: Vec::new(),
                    },
                );
            }
        }
    }
}

/// What the desired state looks like once live, checked field by field.
fn realised(d: &DesiredState, o: &ObservedState) -> Result<(), String> {
    let wanted: BTreeSet<&ChainKey> = d
        .chains
        .iter()
        .filter(|(_, c)| !c.functions.is_empty())
        .map(|(k, _)| k)
        .collect();
    let live: BTreeSet<&ChainKey> = o.chains.keys().collect();
    if wanted != live {
        return Err(format!("chains {live:?}, want {wanted:?}"));
    }
    for key in wanted {
        let want = &d.chains[key];
        let c = &o.chains[key];
        let err = |what: String| Err(format!("{key}: {what}"));
        if !c.complete || c.root_prog_id.is_none() {
            return err("incomplete".into());
        }
        if c.inactive_used {
            return err("the inactive revision holds leftovers".into());
        }
        if !c.leftovers.is_empty() {
            return err(format!("leftovers {:?}", c.leftovers));
        }
        if let Some((name, _)) = c.functions.iter().find(|(_, f)| f.retired) {
            return err(format!("{name} is still retired"));
        }
        let fns: BTreeSet<&str> = c.functions.keys().map(String::as_str).collect();
        let want_fns: BTreeSet<&str> = want.functions.iter().map(|f| f.name.as_str()).collect();
        if fns != want_fns {
            return err(format!("functions {fns:?}, want {want_fns:?}"));
        }
        if c.active.len() != want.functions.len() {
            return err(format!("{} slots", c.active.len()));
        }
        let mut rows = BTreeSet::new();
        for (pos, (slot, f)) in c.active.iter().zip(&want.functions).enumerate() {
            let live = &c.functions[&f.name];
            if slot.prog_id.is_none() || slot.prog_id != live.prog_id {
                return err(format!("slot {pos} does not run {}", f.name));
            }
            let Some(meta) = live.meta else {
                return err(format!("{}: no load record", f.name));
            };
            // Slot and proceed_on are baked into ABI programs only: a
            // program without the ABI runs last and never tail-calls.
            let abi_ok = !f.program.uses_abi
                || (meta.slot_idx == c.active_rev * SLOTS + pos as u32
                    && meta.proceed_on == f.proceed_on);
            if meta.code_digest != f.program.digest
                || meta.globals_digest != f.globals_digest
                || !abi_ok
            {
                return err(format!("{}: load record {meta:?}", f.name));
            }
            if !rows.insert(meta.fn_id) {
                return err(format!("stats row {} used twice", meta.fn_id));
            }
            let managed: BTreeSet<&String> = live.maps.keys().collect();
            let want_managed: BTreeSet<&String> = f.maps.keys().collect();
            if managed != want_managed {
                return err(format!("{}: config maps {managed:?}", f.name));
            }
            for (name, m) in &f.maps {
                let have = &live.maps[name];
                let array = m.shape.is_array() || m.inner.is_some_and(|i| i.is_array());
                let norm = |e: &EntrySet| {
                    if array {
                        e.without_zero_values()
                    } else {
                        e.clone()
                    }
                };
                match &have.entries {
                    Some(e) if norm(e) == norm(&m.entries) && have.inner == m.inner => {}
                    other => {
                        return err(format!(
                            "{}.{name}: {:?} entries",
                            f.name,
                            other.as_ref().map(EntrySet::len)
                        ));
                    }
                }
            }
            for (name, shape) in &f.program.maps {
                if f.maps.contains_key(name) {
                    continue;
                }
                if live.state.get(name).map(|m| m.shape) != Some(*shape) {
                    return err(format!("{}: state map {name} missing or misshapen", f.name));
                }
            }
        }
        let attached = match key.hook {
            Hook::Xdp => {
                let link = c.link.is_some_and(|l| l.ifindex == IFINDEX);
                let on_hook = matches!(
                    o.interfaces.get(&(None, key.interface.clone())),
                    Some(InterfaceState::Present { xdp, .. })
                        if xdp.iter().any(|(mode, id)| Some(*id) == c.root_prog_id && want.xdp_mode.accepts(*mode))
                );
                link && on_hook
            }
            _ => {
                let filter = c
                    .tc_filter
                    .is_some_and(|f| f.prog_id == c.root_prog_id && f.priority == want.tc.priority)
                    && c.link.is_none();
                let link = c.link.is_some_and(|l| l.ifindex == IFINDEX) && c.tc_filter.is_none();
                match want.tc.attach {
                    TcAttach::Clsact => filter,
                    TcAttach::Tcx => link,
                    TcAttach::Auto => filter || link,
                }
            }
        };
        if !attached {
            return err("not attached as asked".into());
        }
    }
    Ok(())
}

/// What a pass reads besides `observe` (`state::read_adopted_maps`): the
/// entries of state maps the config now lists. Here they are empty (only
/// the programs write state maps); a map-in-map's slot is empty.
fn adopt(d: &DesiredState, o: &mut ObservedState) {
    for (key, c) in &d.chains {
        for f in &c.functions {
            let Some(live) = o
                .chains
                .get_mut(key)
                .and_then(|c| c.functions.get_mut(&f.name))
            else {
                continue;
            };
            for name in f.maps.keys() {
                if let Some(m) = live.state.get_mut(name)
                    && m.entries.is_none()
                    && !map_type::is_map_in_map(m.shape.map_type)
                {
                    m.entries = Some(EntrySet::new(
                        m.shape.key_size as usize,
                        m.shape.value_size as usize,
                    ));
                }
            }
        }
    }
}

/// The checks on one plan; returns the state after applying it.
fn check_plan(d: &DesiredState, o: &ObservedState) -> Result<ObservedState, TestCaseError> {
    let opts = PlanOptions::default();
    let mut o = o.clone();
    adopt(d, &mut o);
    let o = &o;
    let p = plan(d, o, &opts);
    // Deterministic: the same inputs (or copies of them) give the same plan.
    let again = plan(&d.clone(), &o.clone(), &opts);
    prop_assert_eq!(format!("{p:?}"), format!("{again:?}"));
    for cp in &p.chains {
        prop_assert!(cp.blocked.is_none(), "{}: blocked {:?}", cp.key, cp.blocked);
        let phases: Vec<Phase> = cp.actions.iter().map(Action::phase).collect();
        prop_assert!(
            phases.windows(2).all(|w| w[0] <= w[1]),
            "{}: phases go backwards: {:?}",
            cp.key,
            names(&p)
        );
        let want = d.chains.get(&cp.key).filter(|c| !c.functions.is_empty());
        let live = o.chains.get(&cp.key);
        // A chain that is reset starts over (new maps, new stats): no row is live.
        let reset = cp.actions.iter().any(|a| matches!(a, Action::ResetChain));
        let live_rows: BTreeSet<u32> = live
            .filter(|_| !reset)
            .map(|c| {
                c.functions
                    .values()
                    .filter_map(|f| f.meta.map(|m| m.fn_id))
                    .collect()
            })
            .unwrap_or_default();
        for a in &cp.actions {
            match a {
                Action::DestroyChain => prop_assert!(want.is_none(), "{} destroyed", cp.key),
                Action::UnloadFunction { function } => prop_assert!(
                    want.is_none_or(|c| c.functions.iter().all(|f| &f.name != function)),
                    "{}: unloads {function}, which the config keeps",
                    cp.key
                ),
                Action::LoadFunction {
                    function,
                    fn_id,
                    reason: LoadReason::New,
                    ..
                } => prop_assert!(
                    !live_rows.contains(fn_id),
                    "{}: new {function} takes the live stats row {fn_id}",
                    cp.key
                ),
                _ => {}
            }
        }
    }
    let after = simulate(&p, d, o);
    realised(d, &after).map_err(|e| TestCaseError::fail(format!("after {:?}: {e}", names(&p))))?;
    let mut gathered = after.clone();
    adopt(d, &mut gathered);
    let next = plan(d, &gathered, &opts);
    prop_assert!(
        next.in_sync(),
        "not in sync after {:?}: {:?}",
        names(&p),
        names(&next)
    );
    Ok(after)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("KFD_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// From nothing, through a random history of configs with random drift
    /// between them, every plan converges to its config.
    #[test]
    fn every_plan_converges_to_its_config(
        history in prop::collection::vec(
            (desired_spec(), prop::collection::vec(drift(), 0..4)),
            1..4,
        ),
    ) {
        let mut o = nothing_live();
        for (spec, drifts) in &history {
            let d = desired(spec);
            o = check_plan(&d, &o)?;
            for dr in drifts {
                damage(&mut o, dr);
            }
        }
        // And back to nothing: every chain is destroyed.
        let empty = DesiredState::default();
        let after = check_plan(&empty, &o)?;
        prop_assert!(after.chains.is_empty());
    }
}
