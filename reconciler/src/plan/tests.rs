//! Planner fixtures: desired + observed → expected actions. Plain data only.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::desired::{DesiredMap, HexFormat, ProgramImage, ProgramOrigin};
use crate::entries::EntrySet;
use crate::model::{Digest, MapShape, Source, TcAttach, TcSettings, map_type};
use crate::state::model::{FnMeta, ObservedFilter, ObservedLink, ObservedMap, ObservedSlot};

const LPM: MapShape = MapShape {
    map_type: map_type::LPM_TRIE,
    key_size: 8,
    value_size: 1,
    max_entries: 1 << 21,
    map_flags: 1,
};
const STATE: MapShape = MapShape {
    map_type: map_type::LRU_HASH,
    key_size: 20,
    value_size: 16,
    max_entries: 65536,
    map_flags: 0,
};
const ARRAY: MapShape = MapShape {
    map_type: map_type::ARRAY,
    key_size: 4,
    value_size: 16,
    max_entries: 1,
    map_flags: 0,
};

const OUTER: MapShape = MapShape {
    map_type: map_type::ARRAY_OF_MAPS,
    key_size: 4,
    value_size: 4,
    max_entries: 1,
    map_flags: 0,
};

fn digest(b: u8) -> Digest {
    [b; 32]
}

fn image(code: u8, uses_abi: bool) -> Arc<ProgramImage> {
    let mut maps = BTreeMap::new();
    maps.insert("deny_v4".to_owned(), LPM);
    maps.insert("buckets".to_owned(), STATE);
    maps.insert("cfg".to_owned(), ARRAY);
    maps.insert("list".to_owned(), OUTER);
    Arc::new(ProgramImage {
        origin: ProgramOrigin::Builtin("test".into()),
        symbol: "test".into(),
        frags: false,
        bytes: Arc::from(&b""[..]),
        digest: digest(code),
        uses_abi,
        maps,
        chain_maps: BTreeMap::new(),
    })
}

/// deny_v4 keys: (prefixlen 32, 10.0.0.i).
fn deny(ips: &[u8]) -> EntrySet {
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for ip in ips {
        keys.extend_from_slice(&32u32.to_ne_bytes());
        keys.extend_from_slice(&[10, 0, 0, *ip]);
        values.push(1);
    }
    EntrySet::from_unsorted(8, 1, keys, values).expect("unique")
}

fn src() -> Source {
    Source {
        file: "10-test.yaml".into(),
        line: 1,
        col: 1,
    }
}

fn func(name: &str, priority: u32, ips: &[u8]) -> DesiredFunction {
    let mut maps = BTreeMap::new();
    maps.insert(
        "deny_v4".to_owned(),
        DesiredMap {
            shape: LPM,
            inner: None,
            swap_threshold: None,
            update: UpdateMode::Auto,
            entries: Arc::new(deny(ips)),
            seed: Default::default(),
            source: src(),
            format: Arc::new(HexFormat),
        },
    );
    DesiredFunction {
        name: name.into(),
        priority,
        source: src(),
        program: image(1, true),
        proceed_on: 1 << 2,
        globals: Vec::new(),
        globals_digest: digest(0),
        maps,
        state: BTreeMap::new(),
        sizes: BTreeMap::new(),
        shares: BTreeMap::new(),
        origin: origin(1),
    }
}

/// The origin of functions read from content `n` of one file.
pub(crate) fn origin(n: u8) -> crate::model::Origin {
    crate::model::Origin {
        file: crate::model::FileId([1; 16]),
        content: crate::model::ContentId([n; 16]),
    }
}

fn key(ifname: &str) -> ChainKey {
    ChainKey {
        netns: None,
        interface: ifname.into(),
        hook: Hook::Xdp,
    }
}

fn desired(functions: Vec<DesiredFunction>) -> DesiredState {
    let mut functions = functions;
    functions.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    let mut d = DesiredState::default();
    d.chains.insert(
        key("eth0"),
        DesiredChain {
            xdp_mode: XdpMode::Auto,
            tc: TcSettings::default(),
            settings: None,
            functions,
            frags: false,
            held: BTreeMap::new(),
        },
    );
    d
}

pub(crate) const IFINDEX: u32 = 7;
const ROOT: u32 = 900;

fn present(xdp: Vec<(XdpMode, u32)>) -> InterfaceState {
    InterfaceState::Present {
        ifindex: IFINDEX,
        xdp,
    }
}

fn no_chains_iface_up() -> ObservedState {
    let mut o = ObservedState {
        tcx: true,
        ..ObservedState::default()
    };
    o.interfaces.insert((None, "eth0".into()), present(vec![]));
    o
}

/// What apply leaves behind for `d`, as observe would read it.
fn applied(d: &DesiredState) -> ObservedState {
    let plan = plan(d, &no_chains_iface_up(), &PlanOptions::default());
    simulate(&plan, d, &no_chains_iface_up())
}

/// A model of `apply`: the observed state after executing `plan`.
pub(crate) fn simulate(plan: &Plan, d: &DesiredState, before: &ObservedState) -> ObservedState {
    let mut o = before.clone();
    // New program ids follow every id in use (as the kernel's do).
    let mut next_id = o
        .chains
        .values()
        .flat_map(|c| c.functions.values().filter_map(|f| f.prog_id))
        .max()
        .unwrap_or(0)
        .max(1000);
    for cp in &plan.chains {
        assert!(cp.blocked.is_none(), "simulate only unblocked plans");
        let want = d.chains.get(&cp.key);
        for a in &cp.actions {
            match a {
                Action::ResetChain => {
                    o.chains.remove(&cp.key);
                }
                Action::CreateChain => {
                    o.chains.insert(
                        cp.key.clone(),
                        ObservedChain {
                            dir: "x".into(),
                            complete: true,
                            root_prog_id: Some(ROOT),
                            ..Default::default()
                        },
                    );
                }
                Action::LoadFunction {
                    function,
                    fn_id,
                    slot,
                    proceed_on,
                    fresh_maps,
                    ..
                } => {
                    let f = want
                        .unwrap()
                        .functions
                        .iter()
                        .find(|f| &f.name == function)
                        .unwrap();
                    let c = o.chains.get_mut(&cp.key).unwrap();
                    let old = c.functions.get(function).cloned().unwrap_or_default();
                    let old_state = old.state.clone();
                    next_id += 1;
                    let fresh: BTreeMap<String, ObservedMap> = f
                        .maps
                        .iter()
                        .map(|(n, m)| {
                            (
                                n.clone(),
                                ObservedMap {
                                    shape: m.shape,
                                    inner: m.inner,
                                    entries: Some({
                                        let mut all = (*m.entries).clone();
                                        for (k, v) in m.seed.iter() {
                                            all.insert(k, v);
                                        }
                                        all
                                    }),
                                },
                            )
                        })
                        .collect();
                    // A relink shares the live maps; a fresh load starts them from config.
                    let maps = if *fresh_maps { fresh } else { old.maps.clone() };
                    // Whatever is not a config map stays (or starts as) a state map;
                    // a relink keeps the live roles (ManageMap/UnmanageMap move them).
                    let state = f
                        .shapes()
                        .filter(|(n, _)| !maps.contains_key(*n))
                        .map(|(n, s)| {
                            let kept = old_state.get(n).filter(|m| m.shape == s).cloned();
                            // A fresh state map starts with its seed (read, as
                            // gather reads seeded state maps).
                            let seeded = f.state.get(n).map(|st| (*st.seed).clone());
                            (
                                n.to_owned(),
                                kept.unwrap_or(ObservedMap {
                                    shape: s,
                                    inner: None,
                                    entries: seeded,
                                }),
                            )
                        })
                        .collect();
                    c.functions.insert(
                        function.clone(),
                        ObservedFunction {
                            prog_id: Some(next_id),
                            meta: Some(FnMeta {
                                fn_id: *fn_id,
                                slot_idx: *slot,
                                proceed_on: *proceed_on,
                                code_digest: f.program.digest,
                                globals_digest: f.globals_digest,
                                origin: Some(f.origin),
                            }),
                            maps,
                            state,
                            retired: false,
                        },
                    );
                }
                Action::RecoverFunction { function } => {
                    let c = o.chains.get_mut(&cp.key).unwrap();
                    c.functions.get_mut(function).unwrap().retired = false;
                }
                Action::SeedEntries {
                    function,
                    map,
                    entries,
                    ..
                } => {
                    let f = o
                        .chains
                        .get_mut(&cp.key)
                        .unwrap()
                        .functions
                        .get_mut(function)
                        .unwrap();
                    let m = f.maps.get_mut(map).or(f.state.get_mut(map)).unwrap();
                    let live = m.entries.as_mut().unwrap();
                    for (k, v) in entries.iter() {
                        if live.get(k).is_none() {
                            live.insert(k, v);
                        }
                    }
                }
                Action::RecordOrigin { function } => {
                    let f = want
                        .unwrap()
                        .functions
                        .iter()
                        .find(|f| &f.name == function)
                        .unwrap();
                    let c = o.chains.get_mut(&cp.key).unwrap();
                    let meta = c
                        .functions
                        .get_mut(function)
                        .unwrap()
                        .meta
                        .as_mut()
                        .unwrap();
                    meta.origin = Some(f.origin);
                }
                Action::RemoveLeftover { name } => {
                    let c = o.chains.get_mut(&cp.key).unwrap();
                    c.leftovers.retain(|l| l != name);
                }
                Action::ManageMap { function, map } => {
                    let f = o
                        .chains
                        .get_mut(&cp.key)
                        .unwrap()
                        .functions
                        .get_mut(function)
                        .unwrap();
                    let m = f.state.remove(map).unwrap();
                    f.maps.insert(map.clone(), m);
                }
                Action::UpdateEntries {
                    function,
                    map,
                    diff,
                    ..
                } => {
                    let f = o
                        .chains
                        .get_mut(&cp.key)
                        .unwrap()
                        .functions
                        .get_mut(function)
                        .unwrap();
                    let entries = f.maps.get_mut(map).unwrap().entries.as_mut().unwrap();
                    for (k, v) in diff.upserts.iter() {
                        entries.insert(k, v);
                    }
                    let mut rest = EntrySet::new(entries.key_size(), entries.value_size());
                    for (k, v) in entries.iter() {
                        if !diff.deletes.chunks(entries.key_size()).any(|d| d == k) {
                            rest.insert(k, v);
                        }
                    }
                    *entries = rest;
                }
                Action::SwapMap {
                    function,
                    map,
                    entries,
                    ..
                } => {
                    let want_inner = want
                        .unwrap()
                        .functions
                        .iter()
                        .find(|f| &f.name == function)
                        .unwrap()
                        .maps[map]
                        .inner;
                    let f = o
                        .chains
                        .get_mut(&cp.key)
                        .unwrap()
                        .functions
                        .get_mut(function)
                        .unwrap();
                    let m = f.maps.get_mut(map).unwrap();
                    m.entries = Some((**entries).clone());
                    m.inner = want_inner;
                }
                Action::UnmanageMap { function, map, .. } => {
                    let f = o
                        .chains
                        .get_mut(&cp.key)
                        .unwrap()
                        .functions
                        .get_mut(function)
                        .unwrap();
                    let mut m = f.maps.remove(map).unwrap();
                    m.entries = m
                        .entries
                        .map(|e| EntrySet::new(e.key_size(), e.value_size()));
                    f.state.insert(map.clone(), m);
                }
                Action::SetRevision {
                    revision, slots, ..
                } => {
                    let c = o.chains.get_mut(&cp.key).unwrap();
                    // The revision left behind holds whatever was active.
                    let old_used = !c.active.is_empty();
                    c.active = slots
                        .iter()
                        .map(|s| ObservedSlot {
                            prog_id: c.functions[&s.function].prog_id,
                        })
                        .collect();
                    c.active_rev = *revision;
                    c.inactive_used = old_used;
                }
                Action::ReplaceSlot { function, index } => {
                    let c = o.chains.get_mut(&cp.key).unwrap();
                    c.active[*index as usize].prog_id = c.functions[function].prog_id;
                }
                Action::Attach { target, .. } => {
                    let c = o.chains.get_mut(&cp.key).unwrap();
                    let link = Some(ObservedLink {
                        id: 1,
                        prog_id: ROOT,
                        ifindex: IFINDEX,
                    });
                    match target {
                        AttachTarget::Xdp { mode } => {
                            c.link = link;
                            let actual = if *mode == XdpMode::Generic {
                                XdpMode::Generic
                            } else {
                                XdpMode::Native
                            };
                            o.interfaces.insert(
                                (cp.key.netns.clone(), cp.key.interface.clone()),
                                present(vec![(actual, ROOT)]),
                            );
                        }
                        AttachTarget::Tc {
                            attach, priority, ..
                        } if *attach == TcAttach::Clsact
                            || (*attach == TcAttach::Auto && !before.tcx) =>
                        {
                            c.link = None;
                            c.tc_filter = Some(ObservedFilter {
                                priority: *priority,
                                prog_id: Some(ROOT),
                            });
                        }
                        AttachTarget::Tc { .. } => {
                            c.link = link;
                            c.tc_filter = None;
                        }
                    }
                }
                Action::ClearRevision { .. } => {
                    o.chains.get_mut(&cp.key).unwrap().inactive_used = false;
                }
                Action::UnloadFunction { function } => {
                    o.chains
                        .get_mut(&cp.key)
                        .unwrap()
                        .functions
                        .remove(function);
                }
                Action::DestroyChain => {
                    o.chains.remove(&cp.key);
                    // Only an XDP root sits on the interface's XDP hook.
                    if cp.key.hook == Hook::Xdp {
                        o.interfaces.insert(
                            (cp.key.netns.clone(), cp.key.interface.clone()),
                            present(vec![]),
                        );
                    }
                }
            }
        }
    }
    o
}

pub(crate) fn names(plan: &Plan) -> Vec<String> {
    plan.chains
        .iter()
        .flat_map(|c| c.actions.iter())
        .map(|a| match a {
            Action::ResetChain => "reset".into(),
            Action::CreateChain => "create".into(),
            Action::LoadFunction {
                function, reason, ..
            } => format!("load {function} {reason:?}"),
            Action::ManageMap { function, map } => format!("manage {function}.{map}"),
            Action::RecordOrigin { function } => format!("record {function}"),
            Action::SeedEntries {
                function,
                map,
                count,
                ..
            } => format!("seed {function}.{map} {count}"),
            Action::UpdateEntries {
                function,
                map,
                added,
                changed,
                removed,
                ..
            } => format!("entries {function}.{map} +{added} ~{changed} -{removed}"),
            Action::UnmanageMap {
                function,
                map,
                removed,
                ..
            } => format!("unmanage {function}.{map} -{removed}"),
            Action::SwapMap {
                function,
                map,
                total,
                reason,
                ..
            } => format!("swap {function}.{map} {total} ({reason})"),
            Action::SetRevision {
                revision,
                slots,
                change,
            } => format!(
                "revision {revision} [{}] {change:?}",
                slots
                    .iter()
                    .map(|s| format!("{}#{}", s.function, s.fn_id))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Action::ReplaceSlot { function, index } => format!("replace {function}@{index}"),
            Action::Attach { target, replace } => match target {
                AttachTarget::Xdp { mode } => format!("attach {} replace={replace}", mode.as_str()),
                AttachTarget::Tc {
                    attach, priority, ..
                } => {
                    format!(
                        "attach tc {} prio {priority} replace={replace}",
                        attach.as_str()
                    )
                }
            },
            Action::ClearRevision { revision } => format!("clear {revision}"),
            Action::UnloadFunction { function } => format!("unload {function}"),
            Action::DestroyChain => "destroy".into(),
            Action::RecoverFunction { function } => format!("recover {function}"),
            Action::RemoveLeftover { name } => format!("remove {name}"),
        })
        .collect()
}

fn run(d: &DesiredState, o: &ObservedState) -> Plan {
    plan(d, o, &PlanOptions::default())
}

/// Converging twice must be a no-op.
fn assert_converges(d: &DesiredState, o: &ObservedState) {
    let p = run(d, o);
    let after = simulate(&p, d, o);
    let again = run(d, &after);
    assert!(
        again.in_sync(),
        "not in sync after applying the plan: {:?}",
        names(&again)
    );
}

#[test]
fn nothing_desired_nothing_live_is_in_sync() {
    let p = run(&DesiredState::default(), &ObservedState::default());
    assert!(p.in_sync());
    assert!(p.chains.is_empty());
}

#[test]
fn new_chain_builds_then_commits_then_attaches() {
    let d = desired(vec![
        func("counter", 30, &[]),
        func("blocklist", 10, &[1, 2]),
        func("ratelimit", 20, &[]),
    ]);
    let p = run(&d, &no_chains_iface_up());
    assert_eq!(
        names(&p),
        [
            "create",
            "load blocklist New",
            "load counter New",
            "load ratelimit New",
            "revision 1 [blocklist#0 ratelimit#2 counter#1] Created",
            "attach auto replace=false",
        ]
    );
    let Action::LoadFunction { fills, .. } = &p.chains[0].actions[1] else {
        panic!()
    };
    assert_eq!(fills, &[("deny_v4".to_owned(), 2)]);
    // Phases never go backwards.
    let phases: Vec<Phase> = p.chains[0].actions.iter().map(Action::phase).collect();
    assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{phases:?}");
}

#[test]
fn converged_state_plans_nothing() {
    let d = desired(vec![func("a", 10, &[1]), func("b", 20, &[2, 3])]);
    let o = applied(&d);
    let p = run(&d, &o);
    assert!(p.in_sync(), "{:?}", names(&p));
}

#[test]
fn priority_ties_are_broken_by_name() {
    let d = desired(vec![
        func("zeta", 10, &[]),
        func("alpha", 10, &[]),
        func("mid", 5, &[]),
    ]);
    let p = run(&d, &no_chains_iface_up());
    assert!(
        names(&p).contains(&"revision 1 [mid#1 alpha#0 zeta#2] Created".to_owned()),
        "{:?}",
        names(&p)
    );
}

#[test]
fn small_entry_change_is_entries_only() {
    let o = applied(&desired(vec![func("bl", 10, &[1, 2, 3])]));
    let d = desired(vec![func("bl", 10, &[2, 3, 4, 5])]);
    let p = run(&d, &o);
    assert_eq!(names(&p), ["entries bl.deny_v4 +2 ~0 -1"]);
    let Action::UpdateEntries {
        strategy, reason, ..
    } = &p.chains[0].actions[0]
    else {
        panic!()
    };
    assert_eq!(*strategy, Strategy::Entries);
    assert_eq!(reason, "3 of 5 changed");
    assert_converges(&d, &o);
}

#[test]
fn reorder_flips_the_inactive_revision_and_clears_the_old_one() {
    let o = applied(&desired(vec![func("a", 10, &[]), func("b", 20, &[])]));
    let d = desired(vec![func("a", 30, &[]), func("b", 20, &[])]);
    let p = run(&d, &o);
    assert_eq!(
        names(&p),
        [
            "load a Relink",
            "load b Relink",
            "revision 0 [b#1 a#0] Changed",
            "clear 1"
        ]
    );
    assert_converges(&d, &o);
}

#[test]
fn removing_a_function_flips_then_unloads_it() {
    let o = applied(&desired(vec![func("a", 10, &[]), func("b", 20, &[])]));
    let d = desired(vec![func("b", 20, &[])]);
    assert_eq!(
        names(&run(&d, &o)),
        [
            "load b Relink",
            "revision 0 [b#1] Changed",
            "clear 1",
            "unload a"
        ]
    );
    assert_converges(&d, &o);
}

#[test]
fn new_function_never_reuses_the_stats_row_of_one_being_removed() {
    let o = applied(&desired(vec![func("a", 10, &[]), func("b", 20, &[])]));
    let d = desired(vec![func("b", 20, &[]), func("c", 30, &[])]);
    let p = run(&d, &o);
    assert_eq!(
        names(&p),
        [
            "load b Relink",
            "load c New",
            "revision 0 [b#1 c#2] Changed",
            "clear 1",
            "unload a"
        ]
    );
}

#[test]
fn code_change_is_a_program_swap_in_place() {
    let o = applied(&desired(vec![func("a", 10, &[1]), func("b", 20, &[])]));
    let mut changed = func("b", 20, &[]);
    changed.program = image(2, true);
    let d = desired(vec![func("a", 10, &[1]), changed]);
    assert_eq!(names(&run(&d, &o)), ["load b CodeChanged", "replace b@1"]);
    assert_converges(&d, &o);
}

#[test]
fn globals_change_is_a_program_swap() {
    let o = applied(&desired(vec![func("a", 10, &[])]));
    let mut g = func("a", 10, &[]);
    g.globals_digest = digest(9);
    assert_eq!(
        names(&run(&desired(vec![g]), &o)),
        ["load a GlobalsChanged", "replace a@0"]
    );
}

#[test]
fn bulk_change_above_threshold_swaps_the_program() {
    let many: Vec<u8> = (0..=255).collect();
    let big = |ips: &[u8]| {
        let mut f = func("bl", 10, &[]);
        let mut keys = Vec::new();
        for hi in 0..8u8 {
            for ip in ips {
                keys.extend_from_slice(&32u32.to_ne_bytes());
                keys.extend_from_slice(&[10, 0, hi, *ip]);
            }
        }
        let n = keys.len() / 8;
        let set = EntrySet::from_unsorted(8, 1, keys, vec![1; n]).unwrap();
        if let Some(e) = Arc::get_mut(&mut f.maps.get_mut("deny_v4").unwrap().entries) {
            *e = set;
        }
        f
    };
    let o = applied(&desired(vec![big(&many[..128])]));
    let d = desired(vec![big(&many[128..])]);
    let p = run(&d, &o);
    let n = names(&p);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n[0].starts_with("load bl MapsSwap"), "{n:?}");
    let Action::LoadFunction {
        reason: LoadReason::MapsSwap { detail, .. },
        ..
    } = &p.chains[0].actions[0]
    else {
        panic!()
    };
    assert_eq!(detail, "2,048 of 2,048 changed");
    assert_eq!(n[1], "replace bl@0");
    assert_converges(&d, &o);
    // update: entries forces entry-by-entry however large.
    let mut forced = big(&many[128..]);
    forced.maps.get_mut("deny_v4").unwrap().update = UpdateMode::Entries;
    assert_eq!(
        names(&run(&desired(vec![forced]), &o)),
        ["entries bl.deny_v4 +1024 ~0 -1024"]
    );
}

#[test]
fn update_swap_forces_a_program_swap_for_any_change() {
    let o = applied(&desired(vec![func("bl", 10, &[1])]));
    let mut f = func("bl", 10, &[1, 2]);
    f.maps.get_mut("deny_v4").unwrap().update = UpdateMode::Swap;
    assert_eq!(
        names(&run(&desired(vec![f.clone()]), &o)),
        [
            "load bl MapsSwap { map: \"deny_v4\", detail: \"1 of 2 changed (update: swap)\" }",
            "replace bl@0"
        ]
    );
    // ...but not when nothing changed.
    let mut same = func("bl", 10, &[1]);
    same.maps.get_mut("deny_v4").unwrap().update = UpdateMode::Swap;
    assert!(run(&desired(vec![same]), &o).in_sync());
}

#[test]
fn hand_deleted_entries_are_drift_repaired() {
    let d = desired(vec![func("bl", 10, &[1, 2, 3])]);
    let mut o = applied(&d);
    let entries = o
        .chains
        .get_mut(&key("eth0"))
        .unwrap()
        .functions
        .get_mut("bl")
        .unwrap()
        .maps
        .get_mut("deny_v4")
        .unwrap();
    entries.entries = Some(deny(&[1, 9]));
    assert_eq!(names(&run(&d, &o)), ["entries bl.deny_v4 +2 ~0 -1"]);
    assert_converges(&d, &o);
}

#[test]
fn a_slot_cleared_by_hand_is_repaired_by_a_flip() {
    let d = desired(vec![func("a", 10, &[]), func("b", 20, &[])]);
    let mut o = applied(&d);
    o.chains.get_mut(&key("eth0")).unwrap().active[1].prog_id = None;
    assert_eq!(
        names(&run(&d, &o)),
        [
            "load a Relink",
            "load b Relink",
            "revision 0 [a#0 b#1] Repair",
            "clear 1"
        ]
    );
    assert_converges(&d, &o);
}

#[test]
fn a_program_replaced_by_hand_is_repaired() {
    let d = desired(vec![func("a", 10, &[])]);
    let mut o = applied(&d);
    o.chains.get_mut(&key("eth0")).unwrap().active[0].prog_id = Some(4242);
    assert_eq!(
        names(&run(&d, &o)),
        ["load a Relink", "revision 0 [a#0] Repair", "clear 1"]
    );
}

#[test]
fn a_tampered_stats_row_is_not_kept() {
    // Found by fuzzing: a load record naming a row past the stats map, or
    // one another function holds, was kept as it was.
    let d = desired(vec![func("a", 10, &[]), func("b", 20, &[])]);
    let mut o = applied(&d);
    let c = o.chains.get_mut(&key("eth0")).unwrap();
    c.functions
        .get_mut("a")
        .unwrap()
        .meta
        .as_mut()
        .unwrap()
        .fn_id = 320_017_171;
    c.functions
        .get_mut("b")
        .unwrap()
        .meta
        .as_mut()
        .unwrap()
        .fn_id = 0;
    let p = run(&d, &o);
    let rows: Vec<u32> = p.chains[0]
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SetRevision { slots, .. } => Some(slots.iter().map(|s| s.fn_id)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(rows, [1, 0], "{:?}", names(&p));
    assert_converges(&d, &o);
}

#[test]
fn a_run_killed_mid_swap_is_recovered_first_and_its_leftovers_removed_last() {
    // Killed between `fn/a` → `fn/a@old` and `fn/a@new` → `fn/a`, after the
    // new program went into the slot: observe finds `a` only as `@old`.
    let d = desired(vec![func("a", 10, &[1]), func("b", 20, &[])]);
    let mut o = applied(&d);
    let c = o.chains.get_mut(&key("eth0")).unwrap();
    c.functions.get_mut("a").unwrap().retired = true;
    c.active[0].prog_id = Some(4242);
    c.leftovers = vec!["fn/a@new".into(), "link@new".into()];
    assert_eq!(
        names(&run(&d, &o)),
        [
            "recover a",
            "load a Relink",
            "load b Relink",
            "revision 0 [a#0 b#1] Repair",
            "clear 1",
            "remove fn/a@new",
            "remove link@new"
        ]
    );
    assert_converges(&d, &o);
}

#[test]
fn leftovers_alone_are_a_pending_change() {
    let d = desired(vec![func("a", 10, &[1])]);
    let mut o = applied(&d);
    o.chains.get_mut(&key("eth0")).unwrap().leftovers = vec!["fn/b@new".into()];
    assert_eq!(names(&run(&d, &o)), ["remove fn/b@new"]);
    assert_converges(&d, &o);
}

#[test]
fn a_removed_map_pin_rebuilds_the_function() {
    let d = desired(vec![func("a", 10, &[1])]);
    let mut o = applied(&d);
    o.chains
        .get_mut(&key("eth0"))
        .unwrap()
        .functions
        .get_mut("a")
        .unwrap()
        .state
        .remove("buckets");
    let p = run(&d, &o);
    assert_eq!(
        names(&p),
        [
            "load a Repair { detail: \"map buckets is no longer pinned\" }",
            "replace a@0"
        ]
    );
    assert_converges(&d, &o);
}

#[test]
fn leftovers_in_the_inactive_revision_are_cleared() {
    let d = desired(vec![func("a", 10, &[])]);
    let mut o = applied(&d);
    o.chains.get_mut(&key("eth0")).unwrap().inactive_used = true;
    assert_eq!(names(&run(&d, &o)), ["clear 0"]);
}

#[test]
fn a_defunct_link_is_reattached() {
    let d = desired(vec![func("a", 10, &[])]);
    let mut o = applied(&d);
    o.chains
        .get_mut(&key("eth0"))
        .unwrap()
        .link
        .as_mut()
        .unwrap()
        .ifindex = 0;
    o.interfaces.insert((None, "eth0".into()), present(vec![]));
    assert_eq!(names(&run(&d, &o)), ["attach auto replace=true"]);
    assert_converges(&d, &o);
}

#[test]
fn xdp_mode_change_reattaches() {
    let d = desired(vec![func("a", 10, &[])]);
    let o = applied(&d);
    let mut generic = d.clone();
    generic.chains.get_mut(&key("eth0")).unwrap().xdp_mode = XdpMode::Generic;
    assert_eq!(names(&run(&generic, &o)), ["attach generic replace=true"]);
    assert_converges(&generic, &o);
}

#[test]
fn a_foreign_program_blocks_the_chain_untouched() {
    let d = desired(vec![func("a", 10, &[])]);
    let mut o = no_chains_iface_up();
    o.interfaces
        .insert((None, "eth0".into()), present(vec![(XdpMode::Native, 77)]));
    let p = run(&d, &o);
    assert_eq!(
        p.chains[0].blocked,
        Some(Blocked::ForeignProgram { prog_id: 77 })
    );
    assert!(p.chains[0].actions.is_empty());
    assert!(!p.in_sync());
}

#[test]
fn a_missing_interface_blocks_the_chain() {
    let d = desired(vec![func("a", 10, &[])]);
    let p = run(&d, &ObservedState::default());
    assert_eq!(p.chains[0].blocked, Some(Blocked::InterfaceMissing));
}

#[test]
fn a_chain_dropped_from_config_is_destroyed() {
    let o = applied(&desired(vec![func("a", 10, &[])]));
    assert_eq!(names(&run(&DesiredState::default(), &o)), ["destroy"]);
}

#[test]
fn an_incomplete_chain_is_rebuilt() {
    let d = desired(vec![func("a", 10, &[])]);
    let mut o = applied(&d);
    o.chains.get_mut(&key("eth0")).unwrap().complete = false;
    let n = names(&run(&d, &o));
    assert_eq!(n[..2], ["reset".to_owned(), "create".to_owned()]);
}

#[test]
fn a_non_abi_program_must_run_last() {
    let mut third = func("third-party", 10, &[]);
    third.program = image(5, false);
    let d = desired(vec![third.clone(), func("after", 20, &[])]);
    let p = run(&d, &no_chains_iface_up());
    assert_eq!(
        p.chains[0].blocked,
        Some(Blocked::NonAbiNotLast {
            function: "third-party".into(),
            next: "after".into()
        })
    );
    third.priority = 30;
    assert!(
        run(
            &desired(vec![third, func("after", 20, &[])]),
            &no_chains_iface_up()
        )
        .chains[0]
            .blocked
            .is_none()
    );
}

#[test]
fn more_functions_than_slots_is_blocked() {
    let fs = (0..33).map(|i| func(&format!("f{i}"), 10, &[])).collect();
    let p = run(&desired(fs), &no_chains_iface_up());
    assert_eq!(
        p.chains[0].blocked,
        Some(Blocked::TooManyFunctions { count: 33 })
    );
}

#[test]
fn maps_entering_and_leaving_config_move_between_state_and_config() {
    let d = desired(vec![func("a", 10, &[1, 2])]);
    let o = applied(&d);
    let mut without = func("a", 10, &[]);
    without.maps.clear();
    let p = run(&desired(vec![without.clone()]), &o);
    assert_eq!(names(&p), ["unmanage a.deny_v4 -2"]);
    let o2 = simulate(&p, &desired(vec![without]), &o);
    let back = run(&d, &o2);
    assert_eq!(
        names(&back),
        ["manage a.deny_v4", "entries a.deny_v4 +2 ~0 -0"]
    );
    assert_converges(&d, &o2);
}

#[test]
fn arrays_treat_zero_as_absent() {
    let mut f = func("rl", 10, &[]);
    let mut zero = EntrySet::new(4, 16);
    zero.insert(&0u32.to_ne_bytes(), &[0; 16]);
    f.maps.insert(
        "cfg".into(),
        DesiredMap {
            shape: ARRAY,
            inner: None,
            swap_threshold: None,
            update: UpdateMode::Auto,
            entries: Arc::new(zero),
            seed: Default::default(),
            source: src(),
            format: Arc::new(HexFormat),
        },
    );
    let d = desired(vec![f]);
    let mut o = applied(&d);
    // The kernel reports arrays without their zero elements.
    o.chains
        .get_mut(&key("eth0"))
        .unwrap()
        .functions
        .get_mut("rl")
        .unwrap()
        .maps
        .get_mut("cfg")
        .unwrap()
        .entries = Some(EntrySet::new(4, 16));
    assert!(run(&d, &o).in_sync());
}

#[test]
fn plans_are_deterministic() {
    let d = desired(vec![
        func("c", 10, &[3]),
        func("a", 10, &[1]),
        func("b", 5, &[2]),
    ]);
    let o = no_chains_iface_up();
    assert_eq!(format!("{:?}", run(&d, &o)), format!("{:?}", run(&d, &o)));
}

/// `n` keys 10.0.x.y/32 starting at `from`.
fn keys(from: u32, n: u32) -> EntrySet {
    let mut k = Vec::new();
    for i in from..from + n {
        k.extend_from_slice(&32u32.to_ne_bytes());
        k.extend_from_slice(&(0x0a00_0000 + i).to_be_bytes());
    }
    EntrySet::from_unsorted(8, 1, k, vec![1; n as usize]).unwrap()
}

fn with_list(set: EntrySet, update: UpdateMode, threshold: Option<f64>) -> DesiredFunction {
    let mut f = func("bl", 10, &[]);
    f.maps.clear();
    f.maps.insert(
        "list".into(),
        DesiredMap {
            shape: OUTER,
            inner: Some(LPM),
            swap_threshold: threshold,
            update,
            entries: Arc::new(set),
            seed: Default::default(),
            source: src(),
            format: Arc::new(HexFormat),
        },
    );
    f
}

#[test]
fn a_map_in_map_takes_small_changes_entry_by_entry_and_swaps_large_ones() {
    let o = applied(&desired(vec![with_list(
        keys(0, 2000),
        UpdateMode::Auto,
        None,
    )]));
    // 10 of 2,000 changed: entries, into the live inner map.
    let small = desired(vec![with_list(keys(5, 2000), UpdateMode::Auto, None)]);
    assert_eq!(names(&run(&small, &o)), ["entries bl.list +5 ~0 -5"]);
    assert_converges(&small, &o);
    // 2,000 of 2,000 changed: one map swap, never a program swap.
    let large = desired(vec![with_list(keys(5000, 2000), UpdateMode::Auto, None)]);
    let p = run(&large, &o);
    assert_eq!(names(&p), ["swap bl.list 2000 (4,000 of 4,000 changed)"]);
    assert_converges(&large, &o);
    // A per-map threshold below the change: swap; update: entries: never.
    assert_eq!(
        names(&run(
            &desired(vec![with_list(
                keys(5, 2000),
                UpdateMode::Auto,
                Some(0.001)
            )]),
            &o
        )),
        ["swap bl.list 2000 (10 of 2,005 changed)"]
    );
    assert_eq!(
        names(&run(
            &desired(vec![with_list(keys(5000, 2000), UpdateMode::Entries, None)]),
            &o
        )),
        ["entries bl.list +2000 ~0 -2000"]
    );
    // update: swap swaps any change, and nothing when nothing changed.
    assert_eq!(
        names(&run(
            &desired(vec![with_list(keys(5, 2000), UpdateMode::Swap, None)]),
            &o
        )),
        ["swap bl.list 2000 (10 of 2,005 changed (update: swap))"]
    );
    assert!(
        run(
            &desired(vec![with_list(keys(0, 2000), UpdateMode::Swap, None)]),
            &o
        )
        .in_sync()
    );
}

#[test]
fn an_empty_outer_slot_is_filled_by_a_swap() {
    let d = desired(vec![with_list(keys(0, 3), UpdateMode::Auto, None)]);
    let mut o = applied(&d);
    let m = o
        .chains
        .get_mut(&key("eth0"))
        .unwrap()
        .functions
        .get_mut("bl")
        .unwrap()
        .maps
        .get_mut("list")
        .unwrap();
    m.inner = None;
    m.entries = None;
    assert_eq!(
        names(&run(&d, &o)),
        ["swap bl.list 3 (the outer map's slot is empty)"]
    );
    assert_converges(&d, &o);
}

#[test]
fn the_global_threshold_applies_to_program_swaps_too() {
    let many = |from| {
        let mut f = func("bl", 10, &[]);
        f.maps.get_mut("deny_v4").unwrap().entries = Arc::new(keys(from, 2000));
        f
    };
    let o = applied(&desired(vec![many(0)]));
    let d = desired(vec![many(100)]);
    let strict = plan(
        &d,
        &o,
        &PlanOptions {
            swap_threshold: 0.05,
        },
    );
    assert!(
        names(&strict)[0].starts_with("load bl MapsSwap"),
        "{:?}",
        names(&strict)
    );
    let lax = plan(
        &d,
        &o,
        &PlanOptions {
            swap_threshold: 0.5,
        },
    );
    assert_eq!(names(&lax), ["entries bl.deny_v4 +100 ~0 -100"]);
}

#[test]
fn new_code_that_redefines_a_state_map_starts_it_empty_but_a_tampered_pin_is_an_error() {
    let o = applied(&desired(vec![func("bl", 10, &[])]));
    let bigger = MapShape {
        max_entries: 1 << 17,
        ..STATE
    };
    let mut new_code = func("bl", 10, &[]);
    let mut image = ProgramImage::clone_for_test(&new_code.program);
    image.digest = digest(7);
    image.maps.insert("buckets".into(), bigger);
    new_code.program = Arc::new(image);
    let p = run(&desired(vec![new_code.clone()]), &o);
    let Action::LoadFunction {
        reason,
        reset_state,
        ..
    } = &p.chains[0].actions[0]
    else {
        panic!()
    };
    assert_eq!(*reason, LoadReason::CodeChanged);
    assert_eq!(reset_state, &["buckets".to_owned()]);
    assert_converges(&desired(vec![new_code]), &o);
    // Same code, pinned map of another shape: repair, which apply refuses
    // (the pin was tampered with; kfd does not throw state away on its own).
    let mut tampered = o.clone();
    tampered
        .chains
        .get_mut(&key("eth0"))
        .unwrap()
        .functions
        .get_mut("bl")
        .unwrap()
        .state
        .get_mut("buckets")
        .unwrap()
        .shape = bigger;
    let p = run(&desired(vec![func("bl", 10, &[])]), &tampered);
    let Action::LoadFunction {
        reason,
        reset_state,
        ..
    } = &p.chains[0].actions[0]
    else {
        panic!()
    };
    assert!(matches!(reason, LoadReason::Repair { .. }), "{reason:?}");
    assert!(reset_state.is_empty());
}

fn tc_desired(attach: TcAttach) -> DesiredState {
    let mut d = DesiredState::default();
    d.chains.insert(
        ChainKey {
            netns: None,
            interface: "eth0".into(),
            hook: Hook::TcIngress,
        },
        DesiredChain {
            xdp_mode: XdpMode::Auto,
            tc: TcSettings {
                attach,
                ..TcSettings::default()
            },
            settings: None,
            functions: vec![func("bl", 10, &[1])],
            frags: false,
            held: BTreeMap::new(),
        },
    );
    d
}

#[test]
fn tc_chains_attach_once_and_coexist_with_other_programs() {
    // Another tool's programs on the interface never block a TC chain.
    let mut o = no_chains_iface_up();
    o.interfaces
        .insert((None, "eth0".into()), present(vec![(XdpMode::Native, 77)]));
    let d = tc_desired(TcAttach::Auto);
    let p = run(&d, &o);
    assert!(p.chains[0].blocked.is_none());
    assert_eq!(
        names(&p),
        [
            "create",
            "load bl New",
            "revision 1 [bl#0] Created",
            "attach tc auto prio 1 replace=false"
        ]
    );
    assert_converges(&d, &o);
    // A chain on clsact moves to TCX when asked, and back.
    let on_clsact = simulate(
        &run(&tc_desired(TcAttach::Clsact), &o),
        &tc_desired(TcAttach::Clsact),
        &o,
    );
    // Auto is TCX on a kernel that has it (a chain left on clsact moves),
    // clsact on one that has not.
    assert_eq!(
        names(&run(&tc_desired(TcAttach::Auto), &on_clsact)),
        ["attach tc auto prio 1 replace=true"]
    );
    assert_converges(&tc_desired(TcAttach::Auto), &on_clsact);
    let old_kernel = ObservedState {
        tcx: false,
        ..on_clsact.clone()
    };
    assert!(run(&tc_desired(TcAttach::Auto), &old_kernel).in_sync());
    assert_eq!(
        names(&run(&tc_desired(TcAttach::Tcx), &on_clsact)),
        ["attach tc tcx prio 1 replace=true"]
    );
    assert_converges(&tc_desired(TcAttach::Tcx), &on_clsact);
    // A clsact filter at another priority is re-added.
    let mut moved = tc_desired(TcAttach::Clsact);
    moved.chains.values_mut().next().unwrap().tc.priority = 7;
    assert_eq!(
        names(&run(&moved, &on_clsact)),
        ["attach tc clsact prio 7 replace=true"]
    );
    assert_converges(&moved, &on_clsact);
}

/// `d` applied, checked to be in sync.
fn converged(d: &DesiredState) -> ObservedState {
    let after = applied(d);
    assert!(run(d, &after).in_sync());
    after
}

fn held(d: &mut DesiredState, name: &str) {
    let c = d.chains.get_mut(&key("eth0")).unwrap();
    c.functions.retain(|f| f.name != name);
    c.held.insert(
        name.to_owned(),
        crate::desired::Hold::FileInvalid {
            file: "20-bad.yaml".into(),
        },
    );
}

#[test]
fn a_held_function_is_never_unloaded_and_a_chain_of_held_functions_is_left_alone() {
    let d = desired(vec![func("a", 10, &[1]), func("b", 20, &[2])]);
    let live = converged(&d);
    // b's file went bad with no usable copy: b is held, a is unchanged.
    let mut now = d.clone();
    held(&mut now, "b");
    assert!(run(&now, &live).in_sync(), "{:?}", names(&run(&now, &live)));
    // Both held: the chain stays, nothing is destroyed.
    held(&mut now, "a");
    assert!(run(&now, &live).in_sync(), "{:?}", names(&run(&now, &live)));
    // Without the holds, a valid config that drops b unloads it.
    let dropped = desired(vec![func("a", 10, &[1])]);
    assert!(names(&run(&dropped, &live)).contains(&"unload b".to_owned()));
}

#[test]
fn beside_a_held_function_changes_land_in_place_but_the_order_stays() {
    let d = desired(vec![func("a", 10, &[1]), func("b", 20, &[2])]);
    let live = converged(&d);
    // a's entries change: entries, in place.
    let mut now = desired(vec![func("a", 10, &[1, 3]), func("b", 20, &[2])]);
    held(&mut now, "b");
    assert_eq!(names(&run(&now, &live)), ["entries a.deny_v4 +1 ~0 -0"]);
    // a's code changes: a program swap into a's live slot.
    let mut code = desired(vec![func("a", 10, &[1]), func("b", 20, &[2])]);
    code.chains.get_mut(&key("eth0")).unwrap().functions[0].program = image(2, true);
    held(&mut code, "b");
    assert_eq!(
        names(&run(&code, &live)),
        ["load a CodeChanged", "replace a@0"]
    );
    assert_converges(&code, &live);
    // A new function (or a reorder) would move b: the chain is blocked,
    // naming b and why, and nothing else is done.
    let mut grown = desired(vec![
        func("a", 10, &[1]),
        func("b", 20, &[2]),
        func("c", 5, &[]),
    ]);
    held(&mut grown, "b");
    let p = run(&grown, &live);
    assert!(p.chains[0].actions.is_empty(), "{:?}", names(&p));
    let Some(Blocked::Held { functions }) = &p.chains[0].blocked else {
        panic!("{:?}", p.chains[0].blocked)
    };
    assert_eq!(functions.len(), 1);
    assert_eq!(functions[0].function, "b");
    assert_eq!(
        blocked_message(&key("eth0"), p.chains[0].blocked.as_ref().unwrap()),
        "b is kept exactly as live (b: 20-bad.yaml is invalid and no last good copy of it matches \
         the kernel), so the chain keeps its order and functions until it can be built again"
    );
    // b's place is unknown while its file is bad: a keeps its slot before
    // b, whatever a's priority now says...
    let mut reordered = desired(vec![func("a", 30, &[1]), func("b", 20, &[2])]);
    held(&mut reordered, "b");
    assert!(run(&reordered, &live).in_sync());
    // ...but when the config still gives b's priority (its object is what
    // is unusable), a reorder is known, and b cannot be relinked: blocked.
    reordered.chains.get_mut(&key("eth0")).unwrap().held.insert(
        "b".into(),
        crate::desired::Hold::Object {
            source: src(),
            priority: 20,
            error: "object /x.o: No such file or directory (os error 2)".into(),
        },
    );
    assert!(matches!(
        run(&reordered, &live).chains[0].blocked,
        Some(Blocked::Held { .. })
    ));
}

#[test]
fn a_changed_file_is_recorded_in_the_load_records_of_what_it_keeps() {
    let d = desired(vec![func("a", 10, &[1])]);
    let live = converged(&d);
    let mut edited = d.clone();
    edited.chains.get_mut(&key("eth0")).unwrap().functions[0].origin = origin(2);
    assert_eq!(names(&run(&edited, &live)), ["record a"]);
    assert_converges(&edited, &live);
    // The record comes before the function's entries.
    edited.chains.get_mut(&key("eth0")).unwrap().functions[0]
        .maps
        .get_mut("deny_v4")
        .unwrap()
        .entries = Arc::new(deny(&[1, 2]));
    assert_eq!(
        names(&run(&edited, &live)),
        ["record a", "entries a.deny_v4 +1 ~0 -0"]
    );
}

#[test]
fn while_some_file_is_unknown_a_chain_that_is_attached_stays_attached() {
    let d = desired(vec![func("a", 10, &[1])]);
    let live = converged(&d);
    // Live in native mode; a config now asks for generic.
    let mut native = d.clone();
    native.chains.get_mut(&key("eth0")).unwrap().xdp_mode = XdpMode::Generic;
    // Known config: the mode differs from the live one, so re-attach...
    assert!(
        names(&run(&native, &live))
            .iter()
            .any(|n| n.starts_with("attach"))
    );
    // ...but the file that set it may be the unknown one: keep the link.
    native.incomplete = true;
    assert!(
        run(&native, &live).in_sync(),
        "{:?}",
        names(&run(&native, &live))
    );
    // Not attached at all: attach anyway.
    let mut detached = live.clone();
    detached.chains.get_mut(&key("eth0")).unwrap().link = None;
    assert!(
        names(&run(&native, &detached))
            .iter()
            .any(|n| n.starts_with("attach"))
    );
}

#[test]
fn a_chain_that_cannot_be_read_is_left_alone_and_others_converge() {
    let d = desired(vec![func("a", 10, &[1])]);
    let mut live = converged(&d);
    let chain = live.chains.remove(&key("eth0")).unwrap();
    live.unreadable
        .insert(key("eth0"), "reading kf_ctl: Permission denied".into());
    // Wanted or not, it is neither rebuilt nor destroyed.
    for want in [d.clone(), DesiredState::default()] {
        let p = run(&want, &live);
        assert_eq!(p.chains.len(), 1);
        assert!(p.chains[0].actions.is_empty());
        assert_eq!(
            p.chains[0].blocked,
            Some(Blocked::Unreadable {
                error: "reading kf_ctl: Permission denied".into()
            })
        );
    }
    drop(chain);
}

/// deny_v4 entries (10.0.0.i/32 → v).
fn deny_with(pairs: &[(u8, u8)]) -> EntrySet {
    let mut set = EntrySet::new(8, 1);
    for (ip, v) in pairs {
        let mut k = 32u32.to_ne_bytes().to_vec();
        k.extend_from_slice(&[10, 0, 0, *ip]);
        set.insert(&k, &[*v]);
    }
    set
}

fn live_deny<'a>(o: &'a mut ObservedState, function: &str) -> &'a mut EntrySet {
    o.chains
        .get_mut(&key("eth0"))
        .unwrap()
        .functions
        .get_mut(function)
        .unwrap()
        .maps
        .get_mut("deny_v4")
        .unwrap()
        .entries
        .as_mut()
        .unwrap()
}

#[test]
fn seeded_entries_are_written_once_and_are_then_the_programs() {
    let mut f = func("a", 10, &[1]);
    f.maps.get_mut("deny_v4").unwrap().seed = Arc::new(deny_with(&[(2, 7)]));
    let d = desired(vec![f]);
    let mut live = converged(&d);
    assert_eq!(
        live_deny(&mut live, "a").len(),
        2,
        "a fresh map gets entries and seed"
    );
    // The program counts in the seeded value: not drift, never rewritten.
    live_deny(&mut live, "a").insert(deny_with(&[(2, 9)]).key(0), &[9]);
    let p = run(&d, &live);
    assert!(p.in_sync(), "{:?}", names(&p));
    let [c] = &p.chains[..] else { panic!() };
    assert_eq!(
        c.notes,
        [Note::SeedDiffers {
            function: "a".into(),
            map: "deny_v4".into(),
            count: 1,
            first: (deny_with(&[(2, 0)]).key(0).to_vec(), vec![7], vec![9]),
        }]
    );
    // It deleted its key: the seed is written again, only if still missing.
    let mut gone = live.clone();
    let kept = live_deny(&mut gone, "a").without_keys_of(&deny_with(&[(2, 0)]));
    *live_deny(&mut gone, "a") = kept;
    assert_eq!(names(&run(&d, &gone)), ["seed a.deny_v4 1"]);
    assert_converges(&d, &gone);
    // An entry kfd owns is still kfd's: a changed value is repaired.
    let mut drift = live.clone();
    live_deny(&mut drift, "a").insert(deny_with(&[(1, 0)]).key(0), &[5]);
    assert_eq!(names(&run(&d, &drift)), ["entries a.deny_v4 +0 ~1 -0"]);
}

#[test]
fn a_size_from_config_is_a_program_swap_and_the_state_map_starts_empty() {
    let d = desired(vec![func("a", 10, &[1])]);
    let live = converged(&d);
    let mut resized = d.clone();
    resized.chains.get_mut(&key("eth0")).unwrap().functions[0]
        .sizes
        .insert("buckets".into(), 100);
    let p = run(&resized, &live);
    let load = p.chains[0]
        .actions
        .iter()
        .find(|a| matches!(a, Action::LoadFunction { .. }))
        .expect("a load");
    let Action::LoadFunction {
        reason,
        reset_state,
        ..
    } = load
    else {
        unreachable!()
    };
    assert_eq!(
        reason,
        &LoadReason::Resized {
            map: "buckets".into(),
            from: 65536,
            to: 100
        }
    );
    assert_eq!(reset_state, &["buckets".to_owned()]);
    assert_converges(&resized, &live);
}
