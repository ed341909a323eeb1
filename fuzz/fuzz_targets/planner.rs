//! The planner on arbitrary desired and observed states, including observed
//! states no kfd would leave (tampered load records, stray programs in
//! slots, half-built chains, maps of the wrong shape). It must never panic,
//! and its plans must keep their promises: deterministic, phases in order,
//! a blocked chain untouched, slots and stats rows within the ABI's bounds,
//! nothing unloaded or destroyed that the config keeps.
//!
//! That applying a plan yields the desired state is checked by the
//! property test in `reconciler/src/plan/props.rs`, with a model of apply.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use reconciler::desired::{
    DesiredChain, DesiredFunction, DesiredMap, DesiredState, HexFormat, ProgramImage, ProgramOrigin,
};
use reconciler::entries::EntrySet;
use reconciler::model::{
    ChainKey, ContentId, FileId, Hook, MapShape, Origin, Source, TcAttach, TcSettings, UpdateMode,
    XdpMode, map_type,
};
use reconciler::plan::{Action, Phase, PlanOptions, plan};
use reconciler::state::model::{
    FnMeta, InterfaceState, ObservedChain, ObservedFilter, ObservedFunction, ObservedLink,
    ObservedMap, ObservedSlot, ObservedState,
};

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const SLOTS: u32 = 32;

fn shapes(i: u8) -> MapShape {
    [
        MapShape {
            map_type: map_type::LPM_TRIE,
            key_size: 8,
            value_size: 1,
            max_entries: 1 << 21,
            map_flags: 1,
        },
        MapShape {
            map_type: map_type::HASH,
            key_size: 4,
            value_size: 8,
            max_entries: 4,
            map_flags: 0,
        },
        MapShape {
            map_type: map_type::ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 4,
            map_flags: 0,
        },
        MapShape {
            map_type: map_type::ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
        },
        MapShape {
            map_type: map_type::LRU_HASH,
            key_size: 20,
            value_size: 16,
            max_entries: 1 << 16,
            map_flags: 0,
        },
    ][i as usize % 5]
}

const MAP_NAMES: [&str; 4] = ["m0", "m1", "m2", "m3"];

#[derive(Debug, Arbitrary)]
struct Input {
    desired: Vec<(u8, DChain)>,
    observed: Vec<(u8, OChain)>,
    interfaces: Vec<(u8, Option<(u32, Vec<(u8, u32)>)>)>,
    threshold: u8,
}

#[derive(Debug, Arbitrary)]
struct DChain {
    xdp_mode: u8,
    tc: (u8, bool, u16),
    functions: Vec<DFn>,
}

#[derive(Debug, Arbitrary)]
struct DFn {
    name: u8,
    priority: u16,
    code: u8,
    abi: bool,
    proceed_on: u32,
    globals: u8,
    /// Map name index → (shape index of the program's map, config entries).
    program_maps: Vec<(u8, u8)>,
    config: Vec<(u8, u8, Vec<(u16, u8)>, Option<f32>)>,
}

#[derive(Debug, Arbitrary)]
struct OChain {
    complete: bool,
    root: Option<u32>,
    link: Option<(u32, u32, u32)>,
    filter: Option<(u16, Option<u32>)>,
    active_rev: bool,
    active: Vec<Option<u32>>,
    inactive_used: bool,
    functions: Vec<(u8, OFn)>,
    /// What a killed run left: indexes into LEFTOVERS.
    leftovers: Vec<u8>,
}

const LEFTOVERS: [&str; 4] = ["fn/a@new", "fn/b@old", "link@new", "fn/x@y@old"];

/// A map read back: name, shape, and its content when it could be read
/// (inner shape for map-in-map, entries).
type OMap = (u8, u8, Option<(Option<u8>, Vec<(u16, u8)>)>);

#[derive(Debug, Arbitrary)]
struct OFn {
    prog: Option<u32>,
    meta: Option<(u32, u32, u32, u8, u8)>,
    maps: Vec<OMap>,
    state: Vec<OMap>,
    /// Found only as `fn/<name>@old` (a run killed mid-promotion).
    retired: bool,
}

fn key(i: u8) -> ChainKey {
    let (interface, hook, netns) = [
        ("eth0", Hook::Xdp, None),
        ("eth1", Hook::Xdp, None),
        ("eth0", Hook::TcIngress, None),
        ("eth0", Hook::TcEgress, Some("blue")),
    ][i as usize % 4];
    ChainKey {
        netns: netns.map(str::to_owned),
        interface: interface.into(),
        hook,
    }
}

fn entries(shape: MapShape, list: &[(u16, u8)]) -> EntrySet {
    let (ks, vs) = (shape.key_size as usize, shape.value_size as usize);
    let mut set = EntrySet::new(ks, vs);
    for (k, v) in list.iter().take(64) {
        let mut key = vec![0u8; ks];
        let kb = k.to_le_bytes();
        for (i, b) in key.iter_mut().enumerate() {
            *b = kb[i % 2];
        }
        let mut value = vec![*v; vs];
        if let Some(first) = value.first_mut() {
            *first = *v;
        }
        set.insert(&key, &value);
    }
    set
}

fn desired_state(input: &Input) -> DesiredState {
    let mut d = DesiredState::default();
    for (k, c) in input.desired.iter().take(4) {
        let mut seen = BTreeSet::new();
        let mut functions = Vec::new();
        for f in c.functions.iter().take(40) {
            let name = NAMES[f.name as usize % NAMES.len()];
            if !seen.insert(name) {
                continue;
            }
            let maps: BTreeMap<String, MapShape> = f
                .program_maps
                .iter()
                .take(4)
                .map(|(n, s)| (MAP_NAMES[*n as usize % 4].to_owned(), shapes(*s)))
                .collect();
            let mut config = BTreeMap::new();
            for (n, update, list, threshold) in f.config.iter().take(4) {
                let name = MAP_NAMES[*n as usize % 4];
                let Some(shape) = maps.get(name) else {
                    continue;
                };
                let inner = map_type::is_map_in_map(shape.map_type).then(|| shapes(0));
                config.insert(
                    name.to_owned(),
                    DesiredMap {
                        shape: *shape,
                        inner,
                        swap_threshold: threshold.map(f64::from),
                        update: [UpdateMode::Auto, UpdateMode::Entries, UpdateMode::Swap]
                            [*update as usize % 3],
                        entries: Arc::new(entries(inner.unwrap_or(*shape), list)),
                        seed: Default::default(),
                        source: Source {
                            file: "f.yaml".into(),
                            line: 1,
                            col: 1,
                        },
                        format: Arc::new(HexFormat),
                    },
                );
            }
            functions.push(DesiredFunction {
                name: name.into(),
                priority: u32::from(f.priority % 1000) + 1,
                source: Source {
                    file: "f.yaml".into(),
                    line: 1,
                    col: 1,
                },
                program: Arc::new(ProgramImage {
                    origin: ProgramOrigin::Builtin("fuzz".into()),
                    symbol: "fuzz".into(),
                    frags: false,
                    bytes: Arc::from(&b""[..]),
                    digest: [f.code % 4; 32],
                    uses_abi: f.abi,
                    maps,
                    chain_maps: BTreeMap::new(),
                }),
                proceed_on: f.proceed_on & 0xffff,
                globals: Vec::new(),
                globals_digest: [f.globals % 3; 32],
                maps: config,
                state: BTreeMap::new(),
                sizes: BTreeMap::new(),
                shares: BTreeMap::new(),
                origin: Origin {
                    file: FileId([1; 16]),
                    content: ContentId([f.code % 2; 16]),
                },
            });
        }
        // As config::merge leaves them: by priority, then name.
        functions.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        d.chains.insert(
            key(*k),
            DesiredChain {
                xdp_mode: [XdpMode::Auto, XdpMode::Native, XdpMode::Generic]
                    [c.xdp_mode as usize % 3],
                tc: TcSettings {
                    attach: [TcAttach::Auto, TcAttach::Tcx, TcAttach::Clsact][c.tc.0 as usize % 3],
                    first: c.tc.1,
                    priority: c.tc.2.max(1),
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

/// At most 4 maps, by name.
fn observed_maps(maps: &[OMap]) -> BTreeMap<String, ObservedMap> {
    maps.iter()
        .take(4)
        .map(|(n, s, c)| (MAP_NAMES[*n as usize % 4].to_owned(), observed_map(*s, c)))
        .collect()
}

fn observed_map(shape: u8, content: &Option<(Option<u8>, Vec<(u16, u8)>)>) -> ObservedMap {
    let shape = shapes(shape);
    let inner = content.as_ref().and_then(|(i, _)| i.map(shapes));
    ObservedMap {
        shape,
        inner,
        entries: content
            .as_ref()
            .map(|(_, list)| entries(inner.unwrap_or(shape), list)),
    }
}

/// What `state::observe` could read back, tampered or not.
fn observed_state(input: &Input) -> ObservedState {
    let mut o = ObservedState::default();
    for (k, c) in input.observed.iter().take(4) {
        let functions = c
            .functions
            .iter()
            .take(8)
            .map(|(n, f)| {
                (
                    NAMES[*n as usize % NAMES.len()].to_owned(),
                    ObservedFunction {
                        prog_id: f.prog,
                        meta: f
                            .meta
                            .map(|(fn_id, slot_idx, proceed_on, code, globals)| FnMeta {
                                fn_id,
                                slot_idx,
                                proceed_on,
                                code_digest: [code % 4; 32],
                                globals_digest: [globals % 3; 32],
                                origin: None,
                            }),
                        maps: observed_maps(&f.maps),
                        state: observed_maps(&f.state),
                        retired: f.retired,
                    },
                )
            })
            .collect();
        o.chains.insert(
            key(*k),
            ObservedChain {
                dir: "x".into(),
                complete: c.complete,
                root_prog_id: c.root,
                link: c.link.map(|(id, prog_id, ifindex)| ObservedLink {
                    id,
                    prog_id,
                    ifindex,
                }),
                tc_filter: c
                    .filter
                    .map(|(priority, prog_id)| ObservedFilter { priority, prog_id }),
                clsact_created: false,
                active_rev: u32::from(c.active_rev),
                active: c
                    .active
                    .iter()
                    .take(SLOTS as usize)
                    .map(|p| ObservedSlot { prog_id: *p })
                    .collect(),
                inactive_used: c.inactive_used,
                functions,
                leftovers: c
                    .leftovers
                    .iter()
                    .take(4)
                    .map(|i| LEFTOVERS[*i as usize % LEFTOVERS.len()].to_owned())
                    .collect(),
                ..Default::default()
            },
        );
    }
    for (k, iface) in input.interfaces.iter().take(4) {
        let k = key(*k);
        o.interfaces.insert(
            (k.netns.clone(), k.interface.clone()),
            match iface {
                None => InterfaceState::Missing,
                Some((ifindex, xdp)) => InterfaceState::Present {
                    ifindex: *ifindex,
                    xdp: xdp
                        .iter()
                        .take(3)
                        .map(|(m, id)| ([XdpMode::Native, XdpMode::Generic][*m as usize % 2], *id))
                        .collect(),
                },
            },
        );
    }
    o
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let d = desired_state(&input);
    let o = observed_state(&input);
    let opts = PlanOptions {
        swap_threshold: f64::from(input.threshold) / 255.0,
    };
    let p = plan(&d, &o, &opts);
    assert_eq!(
        format!("{p:?}"),
        format!("{:?}", plan(&d.clone(), &o.clone(), &opts))
    );
    let mut seen = BTreeSet::new();
    for cp in &p.chains {
        assert!(seen.insert(&cp.key), "{} planned twice", cp.key);
        if cp.blocked.is_some() {
            assert!(
                cp.actions.is_empty(),
                "{}: a blocked chain has actions",
                cp.key
            );
            continue;
        }
        let phases: Vec<Phase> = cp.actions.iter().map(Action::phase).collect();
        assert!(
            phases.windows(2).all(|w| w[0] <= w[1]),
            "{}: {phases:?}",
            cp.key
        );
        let want = d.chains.get(&cp.key).filter(|c| !c.functions.is_empty());
        let kept = |name: &str| want.is_some_and(|c| c.functions.iter().any(|f| f.name == name));
        for a in &cp.actions {
            match a {
                Action::DestroyChain => assert!(want.is_none(), "{}: destroyed", cp.key),
                Action::UnloadFunction { function } => {
                    assert!(!kept(function), "{}: unloads {function}", cp.key)
                }
                Action::LoadFunction {
                    function,
                    slot,
                    fn_id,
                    ..
                } => {
                    assert!(kept(function), "{}: loads {function}", cp.key);
                    assert!(
                        *slot < 2 * SLOTS,
                        "{}: {function} built for slot {slot}",
                        cp.key
                    );
                    assert!(
                        *fn_id < SLOTS,
                        "{}: {function} gets stats row {fn_id}",
                        cp.key
                    );
                }
                Action::SetRevision {
                    revision, slots, ..
                } => {
                    assert!(*revision < 2, "{}: revision {revision}", cp.key);
                    let rows: BTreeSet<u32> = slots.iter().map(|s| s.fn_id).collect();
                    assert_eq!(
                        rows.len(),
                        slots.len(),
                        "{}: a stats row twice: {slots:?}",
                        cp.key
                    );
                    assert!(rows.iter().all(|r| *r < SLOTS), "{}: {slots:?}", cp.key);
                }
                Action::RecoverFunction { function } => assert!(
                    o.chains[&cp.key]
                        .functions
                        .get(function)
                        .is_some_and(|f| f.retired),
                    "{}: recovers {function}, which was not retired",
                    cp.key
                ),
                Action::RemoveLeftover { name } => assert!(
                    o.chains[&cp.key].leftovers.contains(name),
                    "{}: removes {name}, which nobody left",
                    cp.key
                ),
                Action::ReplaceSlot { function, index } => {
                    assert!(
                        kept(function) && *index < SLOTS,
                        "{}: replace {function}@{index}",
                        cp.key
                    )
                }
                _ => {}
            }
        }
    }
});
