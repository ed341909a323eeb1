//! `kfd status`: the live chains as the kernel has them, with verdict counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::error::Escaped;
use crate::kernel::map::ByteMap;
use crate::kernel::netns::netns_path;
use crate::kernel::tc;
use crate::kernel::xdp::{self, prog_name};
use crate::layout::{FnPaths, Layout};
use crate::model::{ChainKey, Hook, map_type};
use crate::state::model::{InterfaceState, ObservedChain, ObservedState};
use crate::state::{StateError, tc_direction};

/// One chain's status.
#[derive(Debug, Serialize)]
pub struct ChainStatus {
    /// Interface.
    pub interface: String,
    /// Hook.
    pub hook: String,
    /// Namespace, if any.
    pub netns: Option<String>,
    /// Whether the root is attached to the interface.
    pub attached: bool,
    /// The index of the interface the root is attached to, if it is.
    pub ifindex: Option<u32>,
    /// The interface's name now, when the root is attached to an interface
    /// that no longer has the configured name (renamed under the chain:
    /// it still filters, and kfd changes nothing until the name is back).
    pub renamed_to: Option<String>,
    /// How it is attached, if it is: `native`/`generic` (XDP), `tcx` or `clsact` (TC).
    pub mode: Option<String>,
    /// clsact: the priority of kfd's filter.
    pub priority: Option<u16>,
    /// The active revision.
    pub revision: u32,
    /// Functions in run order.
    pub functions: Vec<FunctionStatus>,
    /// Why the chain's pins could not be read (it is then left as it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One function's status.
#[derive(Debug, Serialize)]
pub struct FunctionStatus {
    /// Slot position.
    pub slot: usize,
    /// Name (or `?` for a program kfd did not pin there).
    pub name: String,
    /// Program id and name.
    pub program: Option<(u32, String)>,
    /// Verdicts that continue the chain.
    pub proceed_on: Vec<String>,
    /// Verdict counters, by verdict name.
    pub verdicts: BTreeMap<String, u64>,
    /// Maps: name, role, entries, max entries.
    pub maps: Vec<MapStatus>,
}

/// One map's fill.
#[derive(Debug, Serialize)]
pub struct MapStatus {
    /// Name.
    pub name: String,
    /// `config` (kfd writes it) or `state`.
    pub role: &'static str,
    /// Entries (arrays: non-zero elements).
    pub entries: usize,
    /// Capacity.
    pub max_entries: u32,
}

/// Reads the status of every observed chain.
pub fn collect(layout: &Layout, observed: &ObservedState) -> Result<Vec<ChainStatus>, StateError> {
    let mut out = Vec::new();
    for (key, chain) in &observed.chains {
        let iface = observed
            .interfaces
            .get(&(key.netns.clone(), key.interface.clone()));
        let mut renamed_to = None;
        let mut elsewhere_priority = None;
        let (mode, ifindex) = match (key.hook, iface) {
            (Hook::Xdp, Some(InterfaceState::Present { xdp, ifindex })) => {
                let mode = xdp
                    .iter()
                    .find(|(_, id)| Some(*id) == chain.root_prog_id)
                    .map(|(m, _)| m.as_str().to_owned());
                (mode.clone(), mode.map(|_| *ifindex))
            }
            (_, Some(InterfaceState::Present { ifindex, .. })) => {
                let link = chain
                    .link
                    .filter(|l| l.ifindex == *ifindex && Some(l.prog_id) == chain.root_prog_id)
                    .map(|_| "tcx".to_owned());
                let filter = chain
                    .tc_filter
                    .filter(|f| f.prog_id.is_some() && f.prog_id == chain.root_prog_id)
                    .map(|_| "clsact".to_owned());
                let mode = link.or(filter);
                (mode.clone(), mode.map(|_| *ifindex))
            }
            // The configured name is gone, but the root may still run on the
            // interface that had it (renamed): status must not say otherwise.
            _ => match attached_elsewhere(key, chain)? {
                Some(e) => {
                    renamed_to = Some(e.name);
                    elsewhere_priority = e.priority;
                    (Some(e.mode), Some(e.ifindex))
                }
                None => (None, None),
            },
        };
        let stats = read_stats(layout, key)?;
        let mut functions = Vec::new();
        for (slot, s) in chain.active.iter().enumerate() {
            let name = s
                .prog_id
                .and_then(|id| chain.function_by_prog(id))
                .unwrap_or("?")
                .to_owned();
            let meta = chain.functions.get(&name).and_then(|f| f.meta);
            let verdicts = meta
                .and_then(|m| stats.get(&m.fn_id))
                .map(|counts| {
                    counts
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(bit, n)| {
                            let verdict = key
                                .hook
                                .verdict_name(bit as u32)
                                .map_or_else(|| format!("#{bit}"), str::to_owned);
                            (verdict, *n)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let maps = if name == "?" {
                Vec::new()
            } else {
                map_status(layout, key, &name)?
            };
            functions.push(FunctionStatus {
                slot,
                program: s.prog_id.map(|id| (id, prog_name(id))),
                proceed_on: (0..16)
                    .filter(|b| meta.is_some_and(|m| m.proceed_on & (1 << b) != 0))
                    .filter_map(|b| key.hook.verdict_name(b).map(str::to_owned))
                    .collect(),
                name,
                verdicts,
                maps,
            });
        }
        out.push(ChainStatus {
            interface: key.interface.clone(),
            hook: key.hook.to_string(),
            netns: key.netns.clone(),
            attached: mode.is_some(),
            ifindex,
            renamed_to,
            priority: chain
                .tc_filter
                .filter(|_| mode.as_deref() == Some("clsact"))
                .map(|f| f.priority)
                .or(elsewhere_priority),
            mode,
            revision: chain.active_rev,
            functions,
            error: None,
        });
    }
    // Chains that cannot be read come last, with why.
    for (key, error) in &observed.unreadable {
        out.push(ChainStatus {
            interface: key.interface.clone(),
            hook: key.hook.to_string(),
            netns: key.netns.clone(),
            attached: false,
            ifindex: None,
            renamed_to: None,
            mode: None,
            priority: None,
            revision: 0,
            functions: Vec::new(),
            error: Some(error.clone()),
        });
    }
    Ok(out)
}

/// Where a chain's root runs when no interface has its configured name.
struct Elsewhere {
    ifindex: u32,
    /// The interface's name now.
    name: String,
    mode: String,
    /// clsact: the filter's priority.
    priority: Option<u16>,
}

/// Finds the interface a chain's root still runs on after its interface
/// was renamed: the one its link names (XDP, TCX: a link follows its
/// interface, and reads ifindex 0 once that is gone), else for clsact the
/// interface in the namespace holding kfd's filter with the root program.
fn attached_elsewhere(
    key: &ChainKey,
    chain: &ObservedChain,
) -> Result<Option<Elsewhere>, StateError> {
    let Some(root) = chain.root_prog_id else {
        return Ok(None);
    };
    let netns = key.netns.as_deref().map(netns_path);
    if netns.as_ref().is_some_and(|p| !p.exists()) {
        return Ok(None);
    }
    if let Some(link) = chain.link.filter(|l| l.ifindex != 0 && l.prog_id == root) {
        let Some((name, xdp)) = xdp::query_index(netns.as_deref(), link.ifindex)? else {
            return Ok(None);
        };
        let mode = match key.hook {
            Hook::Xdp if xdp.driver == Some(root) || xdp.offload == Some(root) => "native",
            Hook::Xdp if xdp.generic == Some(root) => "generic",
            Hook::Xdp => return Ok(None),
            Hook::TcIngress | Hook::TcEgress => "tcx",
        };
        return Ok(Some(Elsewhere {
            ifindex: link.ifindex,
            name,
            mode: mode.to_owned(),
            priority: None,
        }));
    }
    if key.hook == Hook::Xdp {
        return Ok(None);
    }
    let found = tc::find_our_filter(netns.as_deref(), tc_direction(key.hook), root)?;
    Ok(found.map(|(ifindex, name, f)| Elsewhere {
        ifindex,
        name,
        mode: "clsact".to_owned(),
        priority: Some(f.priority),
    }))
}

/// Summed verdict counters by stats row.
fn read_stats(layout: &Layout, key: &ChainKey) -> Result<BTreeMap<u32, Vec<u64>>, StateError> {
    let path = layout.chain_map(key, "kf_stats");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let err = |source| StateError::Map {
        path: path.clone(),
        source,
    };
    let map = ByteMap::from_pin(&path).map_err(err)?;
    Ok(map
        .read_summed_u64()
        .map_err(err)?
        .into_iter()
        .filter_map(|e| Some((u32::from_ne_bytes(e.key.get(..4)?.try_into().ok()?), e.sums)))
        .collect())
}

fn map_status(
    layout: &Layout,
    key: &ChainKey,
    function: &str,
) -> Result<Vec<MapStatus>, StateError> {
    let paths = FnPaths::new(layout.fn_dir(key, function));
    let mut out = Vec::new();
    for (dir, role) in [(paths.maps_dir(), "config"), (paths.state_dir(), "state")] {
        for name in crate::kernel::bpffs::list(&dir)? {
            let path = dir.join(&name);
            let err = |source| StateError::Map {
                path: path.clone(),
                source,
            };
            let map = ByteMap::from_pin(&path).map_err(err)?;
            // A map-in-map reports the list in its slot.
            let list = if map_type::is_map_in_map(map.info().map_type) {
                map.inner(0).map_err(err)?
            } else {
                Some(map)
            };
            let (entries, max_entries) = match &list {
                Some(l) => (l.count().map_err(err)?, l.info().max_entries),
                None => (0, 0),
            };
            out.push(MapStatus {
                name,
                role,
                entries,
                max_entries,
            });
        }
    }
    Ok(out)
}

/// Status as text.
pub fn render_text(chains: &[ChainStatus]) -> String {
    let mut out = String::new();
    if chains.is_empty() {
        out.push_str("no chains\n");
    }
    for c in chains {
        if let Some(e) = &c.error {
            let _ = writeln!(
                out,
                "{} {}{}: cannot be read ({}); left as it is",
                Escaped(&c.interface),
                c.hook,
                c.netns
                    .as_ref()
                    .map(|n| format!(" (netns {})", Escaped(n)))
                    .unwrap_or_default(),
                Escaped(e)
            );
            continue;
        }
        let _ = writeln!(
            out,
            "{} {}{}: {} (revision {})",
            Escaped(&c.interface),
            c.hook,
            c.netns
                .as_ref()
                .map(|n| format!(" (netns {})", Escaped(n)))
                .unwrap_or_default(),
            match &c.mode {
                Some(m) => {
                    let how = match c.priority {
                        Some(p) => format!("attached ({m}, priority {p})"),
                        None => format!("attached ({m})"),
                    };
                    match (&c.renamed_to, c.ifindex) {
                        (Some(now), Some(ifindex)) => format!(
                            "{how} to ifindex {ifindex}, now named {} (the config names {}; \
                             nothing changes until that name is back)",
                            Escaped(now),
                            Escaped(&c.interface)
                        ),
                        _ => how,
                    }
                }
                None => "NOT ATTACHED".into(),
            },
            c.revision
        );
        if c.functions.is_empty() {
            let _ = writeln!(out, "  (no functions)");
        }
        for f in &c.functions {
            let verdicts = if f.verdicts.is_empty() {
                "no packets".to_owned()
            } else {
                f.verdicts
                    .iter()
                    .map(|(v, n)| format!("{v}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(
                out,
                "  {}. {:<20} {:<28} proceed_on [{}]  {}",
                f.slot,
                f.name,
                f.program
                    .as_ref()
                    .map(|(id, n)| format!("prog {id} ({n})"))
                    .unwrap_or_else(|| "(empty slot)".into()),
                f.proceed_on.join(","),
                verdicts
            );
            for m in &f.maps {
                let _ = writeln!(
                    out,
                    "       {:<6} {:<14} {}/{}",
                    m.role, m.name, m.entries, m.max_entries
                );
            }
        }
    }
    out
}

/// One shared map's status (`share:`).
#[derive(Debug, Serialize)]
pub struct SharedStatus {
    /// The share name.
    pub name: String,
    /// Entries (arrays: non-zero elements).
    pub entries: usize,
    /// Capacity.
    pub max_entries: u32,
    /// The functions whose live programs use it, as `FUNCTION on CHAIN`.
    pub users: Vec<String>,
}

/// Reads the status of every shared map under the root. Users are found
/// from the kernel (each live function program's map ids), not from
/// config, so status shows who really uses the map.
pub fn collect_shared(
    layout: &Layout,
    observed: &ObservedState,
) -> Result<Vec<SharedStatus>, StateError> {
    let mut users_of: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (key, chain) in &observed.chains {
        for (name, f) in &chain.functions {
            let Some(id) = f.prog_id else { continue };
            // A program freed since the look is no user.
            let Ok(fd) = crate::kernel::sys::prog_fd_by_id(id) else {
                continue;
            };
            let info =
                crate::kernel::sys::prog_info(std::os::fd::AsFd::as_fd(&fd)).map_err(|source| {
                    StateError::Pin {
                        path: layout.fn_dir(key, name),
                        source,
                    }
                })?;
            for m in info.map_ids {
                users_of
                    .entry(m)
                    .or_default()
                    .push(format!("{name} on {key}"));
            }
        }
    }
    let mut out = Vec::new();
    for name in observed.shared.keys() {
        let path = layout.shared_map(name);
        let err = |source| StateError::Map {
            path: path.clone(),
            source,
        };
        let map = ByteMap::from_pin(&path).map_err(err)?;
        out.push(SharedStatus {
            name: name.clone(),
            entries: map.count().map_err(err)?,
            max_entries: map.info().max_entries,
            users: users_of.remove(&map.info().id).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Shared maps as text, after the chains.
pub fn render_shared_text(shared: &[SharedStatus]) -> String {
    let mut out = String::new();
    for s in shared {
        let users = if s.users.is_empty() {
            "no live user".to_owned()
        } else {
            s.users.join(", ")
        };
        let _ = writeln!(
            out,
            "shared map {}: {}/{} (users: {})",
            s.name,
            s.entries,
            s.max_entries,
            Escaped(&users)
        );
    }
    out
}
