//! Observed state: bpffs and the kernel → [`ObservedState`]. The only reader
//! of live state; nothing here is remembered between runs.

pub mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::entries::EntrySet;
use crate::kernel::bpffs::{self, BpffsError};
use crate::kernel::loader::shape_of;
use crate::kernel::map::{ByteMap, MapError};
use crate::kernel::netns::netns_path;
use crate::kernel::sys::{self, SysError};
use crate::kernel::tc::{self, Direction, TcError};
use crate::kernel::xdp::{self, XdpError};
use crate::layout::{CHAIN_MAPS, FnPaths, Layout, RETIRED_SUFFIX, parse_chain_dir_name};
use crate::model::{ChainKey, Hook, XdpMode, map_type};
use model::{
    FnMeta, InterfaceState, ObservedChain, ObservedFunction, ObservedLink, ObservedMap,
    ObservedSlot, ObservedState,
};
use model::{ObservedFilter, chain_meta_clsact_created, chain_meta_frags};

/// Slots per revision (the ABI's KF_MAX_SLOTS).
pub const SLOTS_PER_REVISION: u32 = crate::model::limits::MAX_SLOTS as u32;

/// Errors reading live state, naming what was being read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Listing or reading bpffs failed.
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    /// A pinned map could not be read.
    #[error("reading {path}: {source}")]
    Map {
        /// The pin.
        path: PathBuf,
        /// The failure.
        #[source]
        source: MapError,
    },
    /// A pinned program or link could not be read.
    #[error("reading {path}: {source}")]
    Pin {
        /// The pin.
        path: PathBuf,
        /// The failure.
        #[source]
        source: SysError,
    },
    /// An interface could not be queried.
    #[error(transparent)]
    Interface(#[from] XdpError),
    /// An interface's TC filters could not be listed.
    #[error(transparent)]
    Tc(#[from] TcError),
}

/// Reads everything kfd has pinned under `layout`'s root, and the state of the
/// interfaces of those chains and of `also` (the desired chains).
pub fn observe<'a>(
    layout: &Layout,
    also: impl IntoIterator<Item = &'a ChainKey>,
) -> Result<ObservedState, StateError> {
    let mut state = ObservedState {
        tcx: sys::kernel_release().is_some_and(|v| v >= (6, 6)),
        ..ObservedState::default()
    };
    for name in bpffs::list(layout.root())? {
        let Some(key) = parse_chain_dir_name(&name) else {
            continue;
        };
        if !layout.chain_dir(&key).is_dir() {
            continue;
        }
        // One chain that cannot be read (its namespace is gone or bad, a
        // pin is damaged) is that chain's problem only.
        match observe_chain(layout, &key, name) {
            Ok(chain) => {
                state.chains.insert(key, chain);
            }
            Err(e) => {
                state.unreadable.insert(key, e.to_string());
            }
        }
    }
    for name in bpffs::list(&layout.shared_dir())? {
        let path = layout.shared_map(&name);
        match read_map(&path, true) {
            Ok(Some(m)) => {
                state.shared.insert(name, m);
            }
            Ok(None) => {}
            // Its users' chains are where it matters; they load it again.
            Err(e) => {
                state.shared_errors.insert(name, e.to_string());
            }
        }
    }
    let mut ifaces: BTreeSet<(Option<String>, String)> = state
        .chains
        .keys()
        .map(|k| (k.netns.clone(), k.interface.clone()))
        .collect();
    ifaces.extend(
        also.into_iter()
            .map(|k| (k.netns.clone(), k.interface.clone())),
    );
    for (netns, ifname) in ifaces {
        let st = interface_state(netns.as_deref(), &ifname);
        state.interfaces.insert((netns, ifname), st);
    }
    Ok(state)
}

/// The TC side of a TC hook.
pub fn tc_direction(hook: Hook) -> Direction {
    match hook {
        Hook::TcEgress => Direction::Egress,
        Hook::Xdp | Hook::TcIngress => Direction::Ingress,
    }
}

/// An interface's presence and XDP programs; Unknown when it cannot be
/// queried.
pub fn interface_state(netns: Option<&str>, ifname: &str) -> InterfaceState {
    let path = netns.map(netns_path);
    if path.as_ref().is_some_and(|p| !p.exists()) {
        return InterfaceState::Missing;
    }
    match xdp::query(path.as_deref(), ifname) {
        Err(e) => InterfaceState::Unknown {
            error: e.to_string(),
        },
        Ok(None) => InterfaceState::Missing,
        Ok(Some(q)) => {
            let mut progs = Vec::new();
            progs.extend(q.attached.driver.map(|id| (XdpMode::Native, id)));
            progs.extend(q.attached.generic.map(|id| (XdpMode::Generic, id)));
            progs.extend(q.attached.offload.map(|id| (XdpMode::Native, id)));
            InterfaceState::Present {
                ifindex: q.ifindex,
                xdp: progs,
            }
        }
    }
}

fn open_map(path: &Path) -> Result<Option<ByteMap>, StateError> {
    if !path.exists() {
        return Ok(None);
    }
    ByteMap::from_pin(path)
        .map(Some)
        .map_err(|source| StateError::Map {
            path: path.to_owned(),
            source,
        })
}

fn pinned_prog_id(path: &Path) -> Result<Option<u32>, StateError> {
    if !path.exists() {
        return Ok(None);
    }
    let err = |source| StateError::Pin {
        path: path.to_owned(),
        source,
    };
    let fd = sys::obj_get(path).map_err(err)?;
    Ok(Some(
        sys::prog_info(std::os::fd::AsFd::as_fd(&fd))
            .map_err(err)?
            .id,
    ))
}

fn observe_chain(
    layout: &Layout,
    key: &ChainKey,
    dir: String,
) -> Result<ObservedChain, StateError> {
    let mut chain = ObservedChain {
        dir,
        ..Default::default()
    };
    let maps: BTreeMap<&str, Option<ByteMap>> = CHAIN_MAPS
        .iter()
        .map(|m| Ok((*m, open_map(&layout.chain_map(key, m))?)))
        .collect::<Result<_, StateError>>()?;
    chain.root_prog_id = pinned_prog_id(&layout.root_prog(key))?;
    chain.complete = chain.root_prog_id.is_some() && maps.values().all(Option::is_some);

    let link_path = layout.link(key);
    if link_path.exists() {
        let err = |source| StateError::Pin {
            path: link_path.clone(),
            source,
        };
        let fd = sys::obj_get(&link_path).map_err(err)?;
        let info = sys::link_info(std::os::fd::AsFd::as_fd(&fd)).map_err(err)?;
        chain.link = Some(ObservedLink {
            id: info.id,
            prog_id: info.prog_id,
            ifindex: info.ifindex,
        });
    }

    if key.hook != Hook::Xdp {
        let netns = key.netns.as_deref().map(netns_path);
        let dir = tc_direction(key.hook);
        chain.tc_filter =
            tc::our_filter(netns.as_deref(), &key.interface, dir)?.map(|f| ObservedFilter {
                priority: f.priority,
                prog_id: f.prog_id,
            });
    }
    if let Some(meta) = open_map(&layout.chain_meta(key))? {
        let raw = meta
            .lookup_raw(&0u32.to_ne_bytes())
            .map_err(|source| StateError::Map {
                path: layout.chain_meta(key),
                source,
            })?;
        chain.clsact_created = raw.as_deref().is_some_and(chain_meta_clsact_created);
        chain.frags = raw.as_deref().is_some_and(chain_meta_frags);
    }

    if let (Some(Some(ctl)), Some(Some(progs))) = (maps.get("kf_ctl"), maps.get("kf_progs")) {
        let read_err = |source| StateError::Map {
            path: layout.chain_dir(key),
            source,
        };
        let ctl_value = ctl
            .lookup_raw(&0u32.to_ne_bytes())
            .map_err(read_err)?
            .unwrap_or_default();
        chain.active_rev = ctl_value
            .get(..4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) & 1);
        for rev in [chain.active_rev, chain.active_rev ^ 1] {
            let mut found = Vec::new();
            for pos in 0..SLOTS_PER_REVISION {
                let idx = (rev * SLOTS_PER_REVISION + pos).to_ne_bytes();
                // A prog array read from user space yields the program's id.
                let prog_id = progs.lookup_raw(&idx).map_err(read_err)?.and_then(|v| {
                    v.get(..4)
                        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                });
                found.push(ObservedSlot { prog_id });
            }
            // Keep positions up to the last filled slot; gaps stay visible as None.
            let last = found
                .iter()
                .rposition(|s| s.prog_id.is_some())
                .map_or(0, |i| i + 1);
            found.truncate(last);
            if rev == chain.active_rev {
                chain.active = found;
            } else {
                chain.inactive_used = !found.is_empty();
            }
        }
    }

    // Function names are [a-z0-9-]: a name with '@' is a build or
    // retirement dir left by a run that was killed.
    let names = bpffs::list(&layout.functions_dir(key))?;
    for name in &names {
        if name.contains('@') {
            continue;
        }
        let paths = FnPaths::new(layout.fn_dir(key, name));
        chain
            .functions
            .insert(name.clone(), observe_function(&paths)?);
    }
    for name in names.iter().filter(|n| n.contains('@')) {
        let retired_of = name
            .strip_suffix(RETIRED_SUFFIX)
            .filter(|f| !f.contains('@') && !chain.functions.contains_key(*f));
        if let Some(function) = retired_of {
            // Killed mid-promotion: the instance moved aside is the live one.
            let paths = FnPaths::new(layout.functions_dir(key).join(name));
            let mut f = observe_function(&paths)?;
            f.retired = true;
            chain.functions.insert(function.to_owned(), f);
        } else {
            chain.leftovers.push(format!("fn/{name}"));
        }
    }
    for name in bpffs::list(&layout.chain_dir(key))? {
        if name.contains('@') {
            chain.leftovers.push(name);
        }
    }
    Ok(chain)
}

fn observe_function(paths: &FnPaths) -> Result<ObservedFunction, StateError> {
    let mut f = ObservedFunction {
        prog_id: pinned_prog_id(&paths.prog())?,
        ..Default::default()
    };
    if let Some(meta) = open_map(&paths.meta())? {
        let raw = meta
            .lookup_raw(&0u32.to_ne_bytes())
            .map_err(|source| StateError::Map {
                path: paths.meta(),
                source,
            })?;
        f.meta = raw.as_deref().and_then(FnMeta::from_bytes);
    }
    for (dir, into, read) in [
        (paths.maps_dir(), &mut f.maps, true),
        (paths.state_dir(), &mut f.state, false),
    ] {
        for name in bpffs::list(&dir)? {
            if let Some(m) = read_map(&dir.join(&name), read)? {
                into.insert(name, m);
            }
        }
    }
    Ok(f)
}

/// The map pinned at `path` (None if nothing is), with its entries when
/// `read` (a map-in-map's: those of the map in its one slot).
fn read_map(path: &Path, read: bool) -> Result<Option<ObservedMap>, StateError> {
    let Some(map) = open_map(path)? else {
        return Ok(None);
    };
    let err = |source| StateError::Map {
        path: path.to_owned(),
        source,
    };
    let shape = shape_of(map.info());
    let mim = map_type::is_map_in_map(shape.map_type);
    let inner = if mim {
        map.inner(0).map_err(err)?
    } else {
        None
    };
    let entries = match (read, &inner) {
        (false, _) => None,
        (true, Some(inner)) => Some(inner.read_all().map_err(err)?),
        (true, None) if mim => None,
        (true, None) => Some(map.read_all().map_err(err)?),
    };
    Ok(Some(ObservedMap {
        shape,
        inner: inner.as_ref().map(|m| shape_of(m.info())),
        entries,
    }))
}

/// Reads the entries of state maps that the desired config now lists as
/// config maps, so the planner can diff them (they become config maps).
pub fn read_adopted_maps(
    layout: &Layout,
    observed: &mut ObservedState,
    wanted: impl IntoIterator<Item = (ChainKey, String, String)>,
) {
    for (key, function, map) in wanted {
        let Some(m) = observed
            .chains
            .get_mut(&key)
            .and_then(|c| c.functions.get_mut(&function))
            .and_then(|f| f.state.get_mut(&map))
        else {
            continue;
        };
        if m.entries.is_some() {
            continue;
        }
        let path = FnPaths::new(layout.fn_dir(&key, &function)).state_map(&map);
        match read_entries(&path, map_type::is_map_in_map(m.shape.map_type)) {
            Ok(entries) => m.entries = entries,
            Err(e) => {
                // That chain alone is left as it is.
                observed.chains.remove(&key);
                observed.unreadable.insert(key, e.to_string());
            }
        }
    }
}

/// The entries of the map pinned at `path` (of its inner map in slot 0,
/// for a map-in-map); None when nothing is there.
fn read_entries(path: &Path, map_in_map: bool) -> Result<Option<EntrySet>, StateError> {
    let Some(bm) = open_map(path)? else {
        return Ok(None);
    };
    let err = |source| StateError::Map {
        path: path.to_owned(),
        source,
    };
    let target = if map_in_map {
        bm.inner(0).map_err(err)?
    } else {
        Some(bm)
    };
    target.map(|t| t.read_all().map_err(err)).transpose()
}
