//! Plan output: text for people reviewing a change, JSON for tools.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{
    Action, Blocked, ChainPlan, LoadReason, Note, Plan, SharedAction, SharedPlan, SlotChange, group,
};
use crate::config::error::Escaped;
use crate::desired::{DesiredState, EntryFormat, HexFormat};
use crate::model::ChainKey;

/// Entries listed per map before "… and N more".
const SHOWN_ENTRIES: usize = 20;
/// Entries listed per map in JSON before `truncated: true`.
const JSON_ENTRIES: usize = 1000;

fn format_for<'a>(
    desired: &'a DesiredState,
    key: &ChainKey,
    function: &str,
    map: &str,
) -> &'a dyn EntryFormat {
    desired
        .chains
        .get(key)
        .and_then(|c| c.functions.iter().find(|f| f.name == function))
        .and_then(|f| {
            f.maps
                .get(map)
                .map(|m| m.format.as_ref())
                .or_else(|| f.state.get(map).map(|s| s.format.as_ref()))
        })
        .unwrap_or(&HexFormat)
}

/// Why a chain is blocked, as a sentence.
pub fn blocked_message(key: &ChainKey, b: &Blocked) -> String {
    match b {
        Blocked::InterfaceMissing => format!(
            "interface {} does not exist{}: chain not converged",
            Escaped(&key.interface),
            key.netns
                .as_ref()
                .map(|n| format!(" in netns {}", Escaped(n)))
                .unwrap_or_default()
        ),
        Blocked::InterfaceUnknown { error } => format!(
            "interface {} cannot be queried ({error}): the chain is left as it is",
            key.interface
        ),
        Blocked::Unreadable { error } => {
            format!("its pins cannot be read ({error}): the chain is left as it is")
        }
        Blocked::ForeignProgram { prog_id } => format!(
            "{} already runs program id {prog_id}, which kfd does not own: kfd will not replace it \
             (detach it first, e.g. `ip link set dev {} xdp off`)",
            key,
            Escaped(&key.interface)
        ),
        Blocked::TooManyFunctions { count } => format!(
            "{count} functions on {key}: a chain holds at most {}",
            crate::model::limits::MAX_SLOTS
        ),
        Blocked::Held { functions } => format!(
            "{} {} kept exactly as live ({}), so the chain keeps its order and functions until {} again",
            functions
                .iter()
                .map(|h| h.function.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if functions.len() == 1 { "is" } else { "are" },
            functions
                .iter()
                .map(|h| format!("{}: {}", h.function, h.hold))
                .collect::<Vec<_>>()
                .join("; "),
            if functions.len() == 1 {
                "it can be built"
            } else {
                "they can be built"
            }
        ),
        Blocked::NonAbiNotLast { function, next } => format!(
            "function {function} does not use the kfd ABI (it never calls kf_next), so it can only run last \
             in the chain, but {next} runs after it (give {function} a higher priority number)"
        ),
    }
}

fn reason_text(r: &LoadReason) -> String {
    match r {
        LoadReason::New => "new".into(),
        LoadReason::CodeChanged => "program swap: code changed".into(),
        LoadReason::GlobalsChanged => "program swap: globals changed".into(),
        LoadReason::MapsSwap { map, detail } => format!("program swap: {map}: {detail}"),
        LoadReason::Shares { map, share } => {
            format!("program swap: map {map} is shared now (share {share})")
        }
        LoadReason::Resized { map, from, to } => format!(
            "program swap: map {map} resized ({} → {} entries); the new map starts empty",
            group(*from as usize),
            group(*to as usize)
        ),
        LoadReason::Repair { detail } => format!("repair: {detail}"),
        LoadReason::Relink => "relink: new slot".into(),
    }
}

fn slot_line(slots: &[super::PlannedSlot]) -> String {
    if slots.is_empty() {
        return "(empty)".into();
    }
    slots
        .iter()
        .map(|s| s.function.as_str())
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The plan as text: shared maps, one block per chain, then what is held.
pub fn render_text(plan: &Plan, desired: &DesiredState) -> String {
    let mut out = String::new();
    for s in &plan.shared {
        render_shared(&mut out, s, desired);
    }
    for c in &plan.chains {
        render_chain(&mut out, c, desired);
    }
    for (key, function, hold) in held(desired) {
        let _ = writeln!(
            out,
            "chain {key}: = {function} is kept exactly as live: {hold}"
        );
    }
    out
}

/// Every held function: (chain, function, why).
fn held(desired: &DesiredState) -> impl Iterator<Item = (&ChainKey, &str, &crate::desired::Hold)> {
    desired
        .chains
        .iter()
        .flat_map(|(k, c)| c.held.iter().map(move |(n, h)| (k, n.as_str(), h)))
}

fn render_shared(out: &mut String, s: &SharedPlan, desired: &DesiredState) {
    let want = desired.shared.get(&s.name);
    let users = want
        .map(|w| {
            w.users
                .iter()
                .map(|u| format!("{} on {}", u.function, u.chain))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(out, "shared map {} (users: {users}):", s.name);
    if let Some(why) = &s.blocked {
        let _ = writeln!(out, "  ! blocked: {why}");
        return;
    }
    let fmt: &dyn EntryFormat = want.map_or(&HexFormat, |w| w.format.as_ref());
    let entries = |n: usize| {
        if n == 1 {
            "1 entry".to_owned()
        } else {
            format!("{} entries", group(n))
        }
    };
    for a in &s.actions {
        let _ = match a {
            SharedAction::Create { count, .. } => {
                writeln!(out, "  + create and pin it, with {}", entries(*count))
            }
            SharedAction::Entries {
                diff,
                added,
                changed,
                removed,
            } => {
                let _ = writeln!(out, "  ~ entries: +{added} ~{changed} -{removed}");
                for (k, v) in diff.upserts.iter().take(SHOWN_ENTRIES) {
                    let _ = writeln!(out, "      + {}: {}", fmt.key(k), fmt.value(v));
                }
                Ok(())
            }
            SharedAction::Seed { count, .. } => {
                writeln!(out, "  ~ seed {} it lacks", entries(*count))
            }
            SharedAction::Remove => writeln!(out, "  - unpin it: no function uses it any more"),
        };
    }
}

fn render_chain(out: &mut String, c: &ChainPlan, desired: &DesiredState) {
    let _ = writeln!(out, "chain {}:", c.key);
    for n in &c.notes {
        match n {
            Note::SeedDiffers {
                function,
                map,
                count,
                first: (k, seed, live),
            } => {
                let fmt = format_for(desired, &c.key, function, map);
                let _ = writeln!(
                    out,
                    "  i {function} {map}: {} the program changed from the seed (left as {}), e.g. {}: seed {}, live {}",
                    if *count == 1 {
                        "1 seeded entry".to_owned()
                    } else {
                        format!("{} seeded entries", group(*count))
                    },
                    if *count == 1 { "it is" } else { "they are" },
                    fmt.key(k),
                    fmt.value(seed),
                    fmt.value(live)
                );
            }
        }
    }
    if let Some(b) = &c.blocked {
        let _ = writeln!(out, "  ! blocked: {}", blocked_message(&c.key, b));
        return;
    }
    for a in &c.actions {
        match a {
            Action::ResetChain => {
                let _ = writeln!(
                    out,
                    "  ! reset chain: its maps or root are missing; rebuilding"
                );
            }
            Action::CreateChain => {
                let _ = writeln!(out, "  + create chain (root program, chain maps)");
            }
            Action::LoadFunction {
                function,
                fn_id,
                slot,
                reason: crate::plan::LoadReason::Relink,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  + relink {function} into slot {slot} (stats row {fn_id}; shares its live maps)"
                );
            }
            Action::LoadFunction {
                function,
                fn_id,
                reason,
                fills,
                reset_state,
                ..
            } => {
                if !reset_state.is_empty() {
                    let _ = writeln!(
                        out,
                        "  ! {function}: the new code defines state map{} {} differently: {} start{} empty",
                        if reset_state.len() == 1 { "" } else { "s" },
                        reset_state.join(", "),
                        if reset_state.len() == 1 { "it" } else { "they" },
                        if reset_state.len() == 1 { "s" } else { "" }
                    );
                }
                let fills: Vec<String> = fills
                    .iter()
                    .map(|(m, n)| {
                        format!(
                            "{m} ← {} entr{}",
                            group(*n),
                            if *n == 1 { "y" } else { "ies" }
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  + load {function} [{}] (stats row {fn_id}){}",
                    reason_text(reason),
                    if fills.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", fills.join(", "))
                    }
                );
            }
            Action::ManageMap { function, map } => {
                let _ = writeln!(
                    out,
                    "  ~ {function} {map}: now configured (kfd writes it from now on)"
                );
            }
            Action::SeedEntries {
                function,
                map,
                entries,
                count,
            } => {
                let fmt = format_for(desired, &c.key, function, map);
                let shown: Vec<String> = entries
                    .iter()
                    .take(SHOWN_ENTRIES)
                    .map(|(k, v)| format!("{}: {}", fmt.key(k), fmt.value(v)))
                    .collect();
                let _ = writeln!(
                    out,
                    "  ~ {function} {map}: seed {} the map lacks ({}{}); the program's from then on",
                    if *count == 1 {
                        "1 entry".to_owned()
                    } else {
                        format!("{} entries", group(*count))
                    },
                    shown.join(", "),
                    if *count > SHOWN_ENTRIES { ", …" } else { "" }
                );
            }
            Action::RecordOrigin { function } => {
                let file = desired
                    .chains
                    .get(&c.key)
                    .and_then(|d| d.functions.iter().find(|f| &f.name == function))
                    .map(|f| f.source.file.as_str())
                    .unwrap_or("its file");
                let _ = writeln!(
                    out,
                    "  ~ {function}: record that it runs {file} as it is now"
                );
            }
            Action::UpdateEntries {
                function,
                map,
                diff,
                added,
                changed,
                removed,
                strategy,
                reason,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  ~ {function} {map}: {}: {reason} (+{} ~{} -{})",
                    strategy.as_str(),
                    group(*added),
                    group(*changed),
                    group(*removed)
                );
                let fmt = format_for(desired, &c.key, function, map);
                let mut shown = 0;
                for (k, v) in diff.upserts.iter().take(SHOWN_ENTRIES) {
                    let _ = writeln!(out, "      + {} = {}", fmt.key(k), fmt.value(v));
                    shown += 1;
                }
                let ks = diff.upserts.key_size().max(1);
                for k in diff
                    .deletes
                    .chunks(ks)
                    .take(SHOWN_ENTRIES.saturating_sub(shown))
                {
                    let _ = writeln!(out, "      - {}", fmt.key(k));
                    shown += 1;
                }
                let total = diff.write_count();
                if total > shown {
                    let _ = writeln!(out, "      … and {} more", group(total - shown));
                }
            }
            Action::SwapMap {
                function,
                map,
                total,
                reason,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  ~ {function} {map}: map swap: {reason} (a new inner map with {} entr{}, swapped in at once)",
                    group(*total),
                    if *total == 1 { "y" } else { "ies" }
                );
            }
            Action::UnmanageMap {
                function,
                map,
                removed,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  ~ {function} {map}: no longer configured: remove its {} entr{} (kfd stops writing it)",
                    group(*removed),
                    if *removed == 1 { "y" } else { "ies" }
                );
            }
            Action::SetRevision {
                revision,
                slots,
                change,
            } => {
                let why = match change {
                    SlotChange::Created => "",
                    SlotChange::Changed => "",
                    SlotChange::Repair => " [repair: live slots differ]",
                };
                let _ = writeln!(
                    out,
                    "  ~ chain order: {} (fill revision {revision}, then flip){why}",
                    slot_line(slots)
                );
            }
            Action::ReplaceSlot { function, index } => {
                let _ = writeln!(out, "  ~ swap {function} into slot {index}");
            }
            Action::Attach { target, replace } => {
                let how = match target {
                    super::AttachTarget::Xdp { mode } => format!("xdp_mode {}", mode.as_str()),
                    super::AttachTarget::Tc {
                        attach,
                        first,
                        priority,
                    } => format!(
                        "tc_attach {}: {} / clsact priority {priority}",
                        attach.as_str(),
                        if *first {
                            "first TCX program"
                        } else {
                            "last TCX program"
                        }
                    ),
                };
                let _ = writeln!(
                    out,
                    "  + attach root to {} ({how}){}",
                    Escaped(&c.key.interface),
                    if *replace {
                        " [replacing a defunct or mismatched link]"
                    } else {
                        ""
                    }
                );
            }
            Action::ClearRevision { revision } => {
                let _ = writeln!(out, "  - clear revision {revision}");
            }
            Action::UnloadFunction { function } => {
                let _ = writeln!(out, "  - unload {function}");
            }
            Action::DestroyChain => {
                let _ = writeln!(out, "  - remove chain (detach root, unpin everything)");
            }
            Action::RecoverFunction { function } => {
                let _ = writeln!(
                    out,
                    "  ~ recover {function}: move fn/{function}@old back (a run was killed mid-swap)"
                );
            }
            Action::RemoveLeftover { name } => {
                let _ = writeln!(out, "  - remove {name} (left by a killed run)");
            }
        }
    }
}

/// The plan as JSON: the actions as serialized, with entry diffs listed
/// (decoded, up to a cap per map).
pub fn render_json(plan: &Plan, desired: &DesiredState) -> Value {
    let chains: Vec<Value> = plan
        .chains
        .iter()
        .map(|c| {
            let actions: Vec<Value> = c
                .actions
                .iter()
                .map(|a| {
                    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                    if let Action::UpdateEntries {
                        function,
                        map,
                        diff,
                        ..
                    } = a
                    {
                        let fmt = format_for(desired, &c.key, function, map);
                        let upserts: Vec<Value> = diff
                            .upserts
                            .iter()
                            .take(JSON_ENTRIES)
                            .map(|(k, val)| json!({"key": fmt.key(k), "value": fmt.value(val)}))
                            .collect();
                        let ks = diff.upserts.key_size().max(1);
                        let deletes: Vec<Value> = diff
                            .deletes
                            .chunks(ks)
                            .take(JSON_ENTRIES)
                            .map(|k| Value::String(fmt.key(k)))
                            .collect();
                        v["upserts"] = Value::Array(upserts);
                        v["deletes"] = Value::Array(deletes);
                        v["truncated"] = Value::Bool(
                            diff.upserts.len() > JSON_ENTRIES || diff.delete_count() > JSON_ENTRIES,
                        );
                    }
                    v
                })
                .collect();
            let mut chain = json!({
                "interface": c.key.interface,
                "hook": c.key.hook,
                "netns": c.key.netns,
                "actions": actions,
            });
            if let Some(b) = &c.blocked {
                chain["blocked"] = json!({"detail": blocked_message(&c.key, b), "kind": b});
            }
            chain
        })
        .collect();
    let held: Vec<Value> = held(desired)
        .map(|(key, function, hold)| {
            json!({
                "interface": key.interface,
                "hook": key.hook,
                "netns": key.netns,
                "function": function,
                "why": hold.to_string(),
                "kind": hold,
            })
        })
        .collect();
    let shared: Vec<Value> = plan
        .shared
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            v["users"] = desired
                .shared
                .get(&s.name)
                .map_or(Value::Array(Vec::new()), |w| json!(w.users));
            v
        })
        .collect();
    json!({ "in_sync": plan.in_sync(), "chains": chains, "shared": shared, "held": held })
}
