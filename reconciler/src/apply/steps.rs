//! One function per action kind.

use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::failpoint::hit;
use super::{ApplyError, Built, ChainRun, Undo, detach_link, map_err, open_map};
use crate::desired::DesiredFunction;
use crate::entries::EntrySet;
use crate::kernel::bpffs;
use crate::kernel::loader::{self, LoadRequest, PinnedMap, ProgKind};
use crate::kernel::map::{ByteMap, wait_for_readers};
use crate::kernel::netns::netns_path;
use crate::kernel::sys::{self, MapCreate};
use crate::kernel::{tc, xdp};
use crate::layout::{CHAIN_MAPS, FnPaths, abi_globals};
use crate::model::{Hook, MapShape, TcAttach, map_type};
use crate::plan::{Action, AttachTarget, PlannedSlot};
use crate::state::SLOTS_PER_REVISION;
use crate::state::model::{CHAIN_META_SIZE, FnMeta, META_SIZE, chain_meta_bytes};

impl<'a> ChainRun<'a> {
    pub(super) fn step(&mut self, action: &Action) -> Result<(), ApplyError> {
        match action {
            Action::ResetChain | Action::DestroyChain => self.destroy_chain(),
            Action::CreateChain => self.create_chain(),
            Action::LoadFunction { .. } => {
                let Some((function, instance)) = Instance::of(action) else {
                    unreachable!("a LoadFunction action");
                };
                let f = self.function(function)?;
                self.load_function(f, &instance)
                    .map_err(|e| function_error(f, e))
            }
            Action::RecordOrigin { function } => {
                let f = self.function(function)?;
                self.record_origin(f)
            }
            Action::SeedEntries {
                function,
                map,
                entries,
                ..
            } => self.seed_entries(function, map, entries),
            Action::ManageMap { function, map } => {
                let paths = self.live(function);
                bpffs::create_dir_all(&paths.maps_dir())?;
                self.rename(&paths.state_map(map), &paths.config_map(map))
            }
            Action::UnmanageMap {
                function,
                map,
                deletes,
                ..
            } => {
                let paths = self.live(function);
                self.write_entries(function, map, &EntrySet::new(1, 0), deletes)?;
                bpffs::create_dir_all(&paths.state_dir())?;
                self.rename(&paths.config_map(map), &paths.state_map(map))
            }
            Action::UpdateEntries {
                function,
                map,
                diff,
                ..
            } => {
                let f = self.function(function)?;
                self.write_entries(function, map, &diff.upserts, &diff.deletes)
                    .map_err(|e| ApplyError::Function {
                        function: f.name.clone(),
                        object: f.program.origin.to_string(),
                        source_at: f
                            .maps
                            .get(map)
                            .map_or_else(|| f.source.clone(), |m| m.source.clone()),
                        error: Box::new(e),
                    })
            }
            Action::SwapMap {
                function,
                map,
                entries,
                ..
            } => {
                let f = self.function(function)?;
                self.swap_map(function, map, entries)
                    .map_err(|e| ApplyError::Function {
                        function: f.name.clone(),
                        object: f.program.origin.to_string(),
                        source_at: f
                            .maps
                            .get(map)
                            .map_or_else(|| f.source.clone(), |m| m.source.clone()),
                        error: Box::new(e),
                    })
            }
            Action::SetRevision {
                revision, slots, ..
            } => self.set_revision(*revision, slots),
            Action::ReplaceSlot { function, index } => self.replace_slot(function, *index),
            Action::Attach { target, replace } => self.attach(*target, *replace),
            Action::ClearRevision { revision } => self.clear_revision(*revision),
            Action::RecoverFunction { function } => {
                let retired = self.layout.fn_retired_dir(self.key, function);
                bpffs::rename(&retired, &self.layout.fn_dir(self.key, function))?;
                Ok(())
            }
            Action::RemoveLeftover { name } => {
                let path = self.layout.chain_dir(self.key).join(name);
                hit("before-unpin");
                if name.starts_with("link") {
                    detach_link(&path)?;
                } else {
                    bpffs::remove_tree(&path)?;
                }
                hit("after-unpin");
                Ok(())
            }
            Action::UnloadFunction { function } => {
                hit("before-unpin");
                bpffs::remove_tree(&self.layout.fn_dir(self.key, function))?;
                hit("after-unpin");
                Ok(())
            }
        }
    }

    pub(super) fn function(&self, name: &str) -> Result<&'a DesiredFunction, ApplyError> {
        self.desired
            .and_then(|d| d.functions.iter().find(|f| f.name == name))
            .ok_or_else(|| ApplyError::Internal {
                what: format!("the plan names function {name}, which the config does not define"),
            })
    }

    fn live(&self, function: &str) -> FnPaths {
        FnPaths::new(self.layout.fn_dir(self.key, function))
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), ApplyError> {
        bpffs::rename(from, to)?;
        self.undo.push(Undo::Rename {
            from: to.to_owned(),
            to: from.to_owned(),
        });
        Ok(())
    }

    fn destroy_chain(&mut self) -> Result<(), ApplyError> {
        super::destroy_chain(self.layout, self.key, self.observed)
    }

    fn create_chain(&mut self) -> Result<(), ApplyError> {
        let dir = self.layout.chain_dir(self.key);
        bpffs::create_dir_all(&dir)?;
        self.undo.push(Undo::RemoveDir(dir));
        bpffs::create_dir_all(&self.layout.functions_dir(self.key))?;
        let root = crate::builtin::root(self.key.hook)?;
        let pinned = self.chain_pins(&root.chain_maps);
        hit("before-load");
        let loaded = loader::load(&LoadRequest {
            object: root.bytes,
            program: root.symbol,
            kind: prog_kind(self.key.hook),
            pinned,
            globals: Vec::new(),
            frags: self.frags(),
            sizes: Vec::new(),
            mode: loader::Mode::Pin,
        })?;
        hit("after-load");
        hit("before-pin");
        sys::obj_pin(loaded.prog.as_fd(), &self.layout.root_prog(self.key)).map_err(|source| {
            ApplyError::Sys {
                what: "pinning the root program".into(),
                source,
            }
        })?;
        hit("after-pin");
        self.root = Some(loaded.prog);
        if self.frags() {
            self.write_chain_meta(false, true)?;
        }
        self.write_ctl(0)
    }

    fn chain_pins<'s>(
        &self,
        shapes: &'s std::collections::BTreeMap<String, crate::model::MapShape>,
    ) -> Vec<PinnedMap<'s>> {
        shapes
            .iter()
            .filter(|(name, _)| CHAIN_MAPS.contains(&name.as_str()))
            .map(|(name, shape)| PinnedMap {
                name: name.as_str(),
                path: self.layout.chain_map(self.key, name),
                shape: *shape,
            })
            .collect()
    }

    /// What a load of `f` as `inst` shares with what is live: state maps
    /// always; config maps only when relinking (a new slot for the same
    /// program and data). `building` is where the new instance goes.
    fn load_inputs<'f>(
        &self,
        f: &'f DesiredFunction,
        inst: &Instance,
        building: &FnPaths,
    ) -> LoadInputs<'f> {
        let live = self.live(&f.name);
        let mut pinned = self.chain_pins(&f.program.chain_maps);
        let mut reused = Vec::new();
        for (name, shape) in f.shapes() {
            // Shared maps are the root's: pinned once, created by the plan
            // of the shared map before any chain loads.
            if let Some(sc) = f.shares.get(name) {
                pinned.push(PinnedMap {
                    name,
                    path: self.layout.shared_map(&sc.share),
                    shape,
                });
                continue;
            }
            let config = f.maps.contains_key(name);
            let from = if config && !inst.fresh_maps {
                [live.config_map(name), live.state_map(name)]
                    .into_iter()
                    .find(|p| p.exists())
            } else if config || inst.reset_state.iter().any(|r| r == name) {
                // Fresh config maps are filled after the load; reset state starts over.
                None
            } else {
                Some(live.state_map(name)).filter(|p| p.exists())
            };
            let target = if config {
                building.config_map(name)
            } else {
                building.state_map(name)
            };
            match from {
                Some(path) => {
                    reused.push((name, target));
                    pinned.push(PinnedMap { name, path, shape });
                }
                // A fresh state map is created and pinned in place by the loader.
                None if !config => pinned.push(PinnedMap {
                    name,
                    path: target,
                    shape,
                }),
                None => {}
            }
        }
        LoadInputs {
            pinned,
            reused,
            abi: [
                inst.slot.to_le_bytes(),
                inst.fn_id.to_le_bytes(),
                inst.proceed_on.to_le_bytes(),
            ],
        }
    }

    /// Loads `f` as `inst` against throw-away maps where it would get fresh
    /// ones, pinning nothing: what the verifier says, before anything changes.
    pub(super) fn check_function(
        &self,
        f: &DesiredFunction,
        inst: &Instance,
    ) -> Result<(), ApplyError> {
        let building = FnPaths::new(self.layout.fn_building_dir(self.key, &f.name));
        let inputs = self.load_inputs(f, inst, &building);
        loader::load(&load_request(
            f,
            self.key.hook,
            &inputs,
            loader::Mode::Check,
        ))
        .map(drop)
        .map_err(|e| function_error(f, e.into()))
    }

    fn load_function(&mut self, f: &DesiredFunction, inst: &Instance) -> Result<(), ApplyError> {
        let building = FnPaths::new(self.layout.fn_building_dir(self.key, &f.name));
        bpffs::remove_tree(building.dir())?; // leftovers of an interrupted run
        bpffs::create_dir_all(&building.maps_dir())?;
        bpffs::create_dir_all(&building.state_dir())?;
        // Registered now so a failure below removes the half-built dir.
        self.building.push(building.dir().to_owned());
        let inputs = self.load_inputs(f, inst, &building);
        hit("before-load");
        let loaded = loader::load(&load_request(f, self.key.hook, &inputs, loader::Mode::Pin))?;
        hit("after-load");

        if inst.fresh_maps {
            for (name, m) in &f.maps {
                let Some(map) = loaded.maps.get(name) else {
                    continue;
                };
                let t = Instant::now();
                let filling = |source| ApplyError::Map {
                    what: format!("filling map {name}"),
                    source,
                };
                hit("before-map-write");
                match m.inner {
                    // A map-in-map starts with an empty slot: build its first list.
                    Some(inner) => {
                        let list = new_inner(name, &inner, &m.entries).map_err(filling)?;
                        map.update_fd(0, list.fd()).map_err(filling)?;
                    }
                    None => {
                        map.update_batch(&m.entries).map_err(filling)?;
                        map.update_batch(&m.seed).map_err(filling)?;
                    }
                }
                hit("after-map-write");
                self.map_write_time += t.elapsed();
                self.entries_written += m.entries.len() + m.seed.len();
                hit("before-pin");
                map.pin(&building.config_map(name))
                    .map_err(|source| map_err(&building.config_map(name), source))?;
            }
        }
        // A state map made fresh (not shared with the live instance) starts
        // with its seed.
        for (name, s) in &f.state {
            let fresh = !inputs.reused.iter().any(|(n, _)| n == name);
            let Some(map) = loaded
                .maps
                .get(name)
                .filter(|_| fresh && !s.seed.is_empty())
            else {
                continue;
            };
            let t = Instant::now();
            hit("before-map-write");
            map.update_batch(&s.seed)
                .map_err(|source| ApplyError::Map {
                    what: format!("seeding map {name}"),
                    source,
                })?;
            hit("after-map-write");
            self.map_write_time += t.elapsed();
            self.entries_written += s.seed.len();
        }
        // Shared maps get a second pin in the new dir, which then stands alone.
        hit("before-pin");
        for (name, target) in inputs.reused {
            if let Some(map) = loaded.maps.get(name) {
                map.pin(&target)
                    .map_err(|source| map_err(&target, source))?;
            }
        }
        sys::obj_pin(loaded.prog.as_fd(), &building.prog()).map_err(|source| ApplyError::Sys {
            what: format!("pinning program {}", building.prog().display()),
            source,
        })?;
        hit("after-pin");
        write_meta(
            &building.meta(),
            &FnMeta {
                fn_id: inst.fn_id,
                slot_idx: inst.slot,
                proceed_on: inst.proceed_on,
                code_digest: f.program.digest,
                globals_digest: f.globals_digest,
                origin: Some(f.origin),
            },
        )?;
        if inst.new_function && f.program.uses_abi {
            // The row may hold counts of a function removed long ago.
            let stats = self.chain_map("kf_stats")?;
            stats
                .update(
                    &inst.fn_id.to_ne_bytes(),
                    &vec![0u8; stats.info().value_size as usize],
                )
                .map_err(|source| map_err(&self.layout.chain_map(self.key, "kf_stats"), source))?;
        }
        self.built.insert(
            f.name.clone(),
            Built {
                loaded,
                dir: building.dir().to_owned(),
            },
        );
        Ok(())
    }

    fn write_entries(
        &mut self,
        function: &str,
        map: &str,
        upserts: &EntrySet,
        deletes: &[u8],
    ) -> Result<(), ApplyError> {
        let path = self.live(function).config_map(map);
        let m = entries_target(&path)?;
        // Undo puts back exactly what observe saw for every key touched.
        let before = self
            .observed
            .and_then(|c| c.functions.get(function))
            .and_then(|f| f.maps.get(map))
            .and_then(|m| m.entries.as_ref());
        let ks = m.info().key_size as usize;
        let vs = m.info().value_size as usize;
        let mut restore_k = Vec::new();
        let mut restore_v = Vec::new();
        let mut remove = Vec::new();
        for k in upserts
            .packed_keys()
            .chunks_exact(ks.max(1))
            .chain(deletes.chunks_exact(ks.max(1)))
        {
            match before.and_then(|b| b.get(k)) {
                Some(v) => {
                    restore_k.extend_from_slice(k);
                    restore_v.extend_from_slice(v);
                }
                None => remove.extend_from_slice(k),
            }
        }
        self.undo.push(Undo::Entries {
            map: m.try_clone().map_err(|source| map_err(&path, source))?,
            restore: EntrySet::from_unique(ks, vs, restore_k, restore_v),
            remove,
        });
        let t = Instant::now();
        hit("before-map-write");
        m.update_batch(upserts)
            .map_err(|source| map_err(&path, source))?;
        m.delete_batch(deletes)
            .map_err(|source| map_err(&path, source))?;
        hit("after-map-write");
        self.map_write_time += t.elapsed();
        self.entries_written += upserts.len() + deletes.len() / ks.max(1);
        Ok(())
    }

    /// Builds a new inner map holding `entries` and swaps it into the live
    /// map-in-map in one write; packets see the old list or the new one.
    fn swap_map(
        &mut self,
        function: &str,
        map: &str,
        entries: &EntrySet,
    ) -> Result<(), ApplyError> {
        let path = self.live(function).config_map(map);
        let outer = open_map(&path)?;
        let Some(inner) = self
            .desired
            .and_then(|d| d.functions.iter().find(|f| f.name == function))
            .and_then(|f| f.maps.get(map))
            .and_then(|m| m.inner)
        else {
            return Err(ApplyError::Internal {
                what: format!("map {map} of {function} is not a map-in-map"),
            });
        };
        let t = Instant::now();
        let list = new_inner(map, &inner, entries).map_err(|source| map_err(&path, source))?;
        // Keep the old list alive until the change stands, for the undo.
        let previous = outer.inner(0).map_err(|source| map_err(&path, source))?;
        hit("before-map-write");
        outer
            .update_fd(0, list.fd())
            .map_err(|source| map_err(&path, source))?;
        hit("after-map-write");
        self.map_write_time += t.elapsed();
        self.entries_written += entries.len();
        self.undo.push(Undo::SwapBack { outer, previous });
        Ok(())
    }

    /// The program fd for a slot: the instance built in this run, or the live pin.
    fn slot_prog(&self, function: &str) -> Result<OwnedFd, ApplyError> {
        if let Some(b) = self.built.get(function) {
            return b.loaded.prog.try_clone().map_err(|e| ApplyError::Sys {
                what: "duplicating a program fd".into(),
                source: sys::SysError {
                    call: "dup",
                    source: e,
                },
            });
        }
        let path = self.live(function).prog();
        sys::obj_get(&path).map_err(|source| ApplyError::Sys {
            what: format!("opening program {}", path.display()),
            source,
        })
    }

    fn set_revision(&mut self, revision: u32, slots: &[PlannedSlot]) -> Result<(), ApplyError> {
        let progs = self.chain_map("kf_progs")?;
        let progs_path = self.layout.chain_map(self.key, "kf_progs");
        let base = revision * SLOTS_PER_REVISION;
        hit("before-slot");
        for (i, s) in slots.iter().enumerate() {
            let idx = base + i as u32;
            let fd = self.slot_prog(&s.function)?;
            progs
                .update_fd(idx, fd.as_fd())
                .map_err(|source| map_err(&progs_path, source))?;
        }
        // The slot after the last must be empty, or the chain would run on.
        for idx in base + slots.len() as u32..base + SLOTS_PER_REVISION {
            progs
                .delete(&idx.to_ne_bytes())
                .map_err(|source| map_err(&progs_path, source))?;
        }
        hit("after-slot");
        let previous = self.current_revision()?;
        self.write_ctl(revision)?;
        self.undo.push(Undo::FlipBack { revision: previous });
        let names: Vec<String> = self.built.keys().cloned().collect();
        for name in names {
            self.promote(&name)?;
        }
        Ok(())
    }

    fn current_revision(&self) -> Result<u32, ApplyError> {
        let ctl = self.chain_map("kf_ctl")?;
        let raw = ctl
            .lookup_raw(&0u32.to_ne_bytes())
            .map_err(|source| map_err(&self.layout.chain_map(self.key, "kf_ctl"), source))?
            .unwrap_or_default();
        Ok(raw
            .get(..4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) & 1))
    }

    fn replace_slot(&mut self, function: &str, index: u32) -> Result<(), ApplyError> {
        let progs = self.chain_map("kf_progs")?;
        let progs_path = self.layout.chain_map(self.key, "kf_progs");
        let idx = self.current_revision()? * SLOTS_PER_REVISION + index;
        let old = sys::obj_get(&self.live(function).prog()).ok();
        let fd = self.slot_prog(function)?;
        hit("before-slot");
        progs
            .update_fd(idx, fd.as_fd())
            .map_err(|source| map_err(&progs_path, source))?;
        hit("after-slot");
        self.undo.push(Undo::SlotBack {
            index: idx,
            prog: old,
        });
        self.promote(function)
    }

    /// Makes a built instance the live one: `fn/<name>` → `fn/<name>.old`,
    /// `fn/<name>.new` → `fn/<name>`. The old dir goes after the commit.
    fn promote(&mut self, function: &str) -> Result<(), ApplyError> {
        let Some(b) = self.built.remove(function) else {
            return Ok(());
        };
        let live = self.layout.fn_dir(self.key, function);
        hit("before-promote");
        if live.exists() {
            let retired = self.layout.fn_retired_dir(self.key, function);
            bpffs::remove_tree(&retired)?;
            self.rename(&live, &retired)?;
            self.retired.push(retired);
        }
        hit("mid-promote");
        self.rename(&b.dir, &live)?;
        hit("after-promote");
        // The instance lives on through its pins; the fds can go.
        drop(b.loaded);
        Ok(())
    }

    fn root_fd(&self) -> Result<OwnedFd, ApplyError> {
        match &self.root {
            Some(fd) => fd.try_clone().map_err(|e| ApplyError::Sys {
                what: "duplicating the root fd".into(),
                source: sys::SysError {
                    call: "dup",
                    source: e,
                },
            }),
            None => {
                sys::obj_get(&self.layout.root_prog(self.key)).map_err(|source| ApplyError::Sys {
                    what: "opening the root program".into(),
                    source,
                })
            }
        }
    }

    fn attach(&mut self, target: AttachTarget, replace: bool) -> Result<(), ApplyError> {
        hit("before-attach");
        match target {
            AttachTarget::Xdp { mode } => self.attach_xdp(mode, replace),
            AttachTarget::Tc {
                attach,
                first,
                priority,
            } => self.attach_tc(attach, first, priority),
        }?;
        hit("after-attach");
        Ok(())
    }

    fn attach_xdp(&mut self, mode: crate::model::XdpMode, replace: bool) -> Result<(), ApplyError> {
        let link_path = self.layout.link(self.key);
        if replace {
            // A defunct link, or one in the wrong mode: packets bypass the
            // chain until the new link is in (one XDP program per hook, so
            // unavoidable for a mode change).
            detach_link(&link_path)?;
        }
        let root = self.root_fd()?;
        let netns = self.key.netns.as_deref().map(netns_path);
        let (link, _mode) = xdp::attach(
            netns.as_deref(),
            self.key.netns.as_deref(),
            &self.key.interface,
            root.as_fd(),
            mode,
        )?;
        self.pin_link(link, link_path)
    }

    fn pin_link(&mut self, link: OwnedFd, path: std::path::PathBuf) -> Result<(), ApplyError> {
        sys::obj_pin(link.as_fd(), &path).map_err(|source| {
            let _ = sys::link_detach(link.as_fd());
            ApplyError::Sys {
                what: format!("pinning link {}", path.display()),
                source,
            }
        })?;
        self.undo.push(Undo::Detach { link: path });
        Ok(())
    }

    /// TC: the new attachment goes in before the old one goes, so the chain
    /// may briefly run twice for a packet but is never bypassed.
    fn attach_tc(
        &mut self,
        attach: TcAttach,
        first: bool,
        priority: u16,
    ) -> Result<(), ApplyError> {
        let root = self.root_fd()?;
        let netns = self.key.netns.as_deref().map(netns_path);
        let dir = crate::state::tc_direction(self.key.hook);
        let iface = &self.key.interface;
        let link_path = self.layout.link(self.key);
        let old_link = link_path.exists();
        let old_filter = self.observed.and_then(|c| c.tc_filter);
        let tcx = match attach {
            TcAttach::Clsact => None,
            TcAttach::Tcx => Some(tc::attach_tcx(
                netns.as_deref(),
                iface,
                dir,
                root.as_fd(),
                first,
            )?),
            TcAttach::Auto => {
                match tc::attach_tcx(netns.as_deref(), iface, dir, root.as_fd(), first) {
                    Ok(link) => Some(link),
                    Err(e) if tc::tcx_unsupported(&e) => None,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        match tcx {
            Some(link) => {
                // Move a defunct or old link's pin aside rather than detach
                // first: the new link already serves.
                let fresh = link_path.with_file_name("link@new");
                let _ = bpffs::unpin(&fresh);
                sys::obj_pin(link.as_fd(), &fresh).map_err(|source| {
                    let _ = sys::link_detach(link.as_fd());
                    ApplyError::Sys {
                        what: format!("pinning link {}", fresh.display()),
                        source,
                    }
                })?;
                if old_link {
                    detach_link(&link_path)?;
                }
                bpffs::rename(&fresh, &link_path)?;
                self.undo.push(Undo::Detach { link: link_path });
                if let Some(f) = old_filter {
                    let created = self.observed.is_some_and(|c| c.clsact_created);
                    tc::detach_clsact(netns.as_deref(), iface, dir, f.priority, created)?;
                }
            }
            None => {
                // Same priority: the filter switches programs in place, and
                // undo switches it back. Another priority: the new filter is
                // added next to the old one, which goes once it serves.
                let same = old_filter.filter(|f| f.priority == priority);
                let previous = match same.and_then(|f| f.prog_id) {
                    Some(id) => Some(sys::prog_fd_by_id(id).map_err(|source| ApplyError::Sys {
                        what: format!("opening the program of kfd's filter on {iface}"),
                        source,
                    })?),
                    None => None,
                };
                let created = tc::attach_clsact(
                    netns.as_deref(),
                    iface,
                    dir,
                    root.as_fd(),
                    priority,
                    same.is_some(),
                )?;
                let was_created = self.observed.is_some_and(|c| c.clsact_created);
                if created || was_created {
                    self.write_chain_meta(true, self.frags())?;
                }
                self.undo.push(match previous {
                    Some(prog) => Undo::Refilter { priority, prog },
                    None => Undo::Unfilter {
                        priority,
                        drop_qdisc: created,
                    },
                });
                if let Some(f) = old_filter.filter(|f| f.priority != priority) {
                    tc::detach_clsact(netns.as_deref(), iface, dir, f.priority, false)?;
                }
                if old_link {
                    detach_link(&link_path)?;
                }
            }
        }
        Ok(())
    }

    /// XDP: whether this chain's root handles multi-buffer packets.
    fn frags(&self) -> bool {
        self.desired.is_some_and(|d| d.frags)
    }

    fn write_chain_meta(&self, clsact_created: bool, frags: bool) -> Result<(), ApplyError> {
        let path = self.layout.chain_meta(self.key);
        let map = match ByteMap::from_pin(&path) {
            Ok(m) => m,
            Err(_) => {
                let m = ByteMap::create(
                    &MapCreate {
                        name: "kfd_chain",
                        map_type: map_type::ARRAY,
                        key_size: 4,
                        value_size: CHAIN_META_SIZE as u32,
                        max_entries: 1,
                        map_flags: 0,
                    },
                    None,
                )
                .map_err(|source| map_err(&path, source))?;
                m.pin(&path).map_err(|source| map_err(&path, source))?;
                m
            }
        };
        map.update(
            &0u32.to_ne_bytes(),
            &chain_meta_bytes(clsact_created, frags),
        )
        .map_err(|source| map_err(&path, source))
    }

    fn clear_revision(&mut self, revision: u32) -> Result<(), ApplyError> {
        // No packet may still be walking the revision we are about to empty.
        wait_for_readers().map_err(|source| ApplyError::Map {
            what: "waiting for in-flight packets".into(),
            source,
        })?;
        let progs = self.chain_map("kf_progs")?;
        let base = revision * SLOTS_PER_REVISION;
        hit("before-slot");
        for idx in base..base + SLOTS_PER_REVISION {
            progs
                .delete(&idx.to_ne_bytes())
                .map_err(|source| map_err(&self.layout.chain_map(self.key, "kf_progs"), source))?;
        }
        hit("after-slot");
        Ok(())
    }
}

/// What a new instance is built for.
/// What one load shares with what is live (see `load_inputs`).
struct LoadInputs<'f> {
    pinned: Vec<PinnedMap<'f>>,
    /// Live maps the new instance shares, and where it pins them.
    reused: Vec<(&'f str, PathBuf)>,
    /// The ABI globals' bytes: slot, stats row, proceed_on.
    abi: [[u8; 4]; 3],
}

/// The loader's request for `f` on `hook`.
fn load_request<'f>(
    f: &'f DesiredFunction,
    hook: Hook,
    inputs: &'f LoadInputs<'f>,
    mode: loader::Mode,
) -> LoadRequest<'f> {
    let mut globals: Vec<(&str, &[u8])> = f
        .globals
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    if f.program.uses_abi {
        globals.extend([
            (abi_globals::SLOT_IDX, &inputs.abi[0][..]),
            (abi_globals::FN_ID, &inputs.abi[1][..]),
            (abi_globals::PROCEED_ON, &inputs.abi[2][..]),
        ]);
    }
    LoadRequest {
        object: &f.program.bytes,
        program: &f.program.symbol,
        kind: prog_kind(hook),
        pinned: inputs.pinned.clone(),
        globals,
        frags: f.program.frags,
        sizes: f.sizes.iter().map(|(n, s)| (n.as_str(), *s)).collect(),
        mode,
    }
}

/// An error of function `f`, naming it, its config and its object.
fn function_error(f: &DesiredFunction, e: ApplyError) -> ApplyError {
    ApplyError::Function {
        function: f.name.clone(),
        source_at: f.source.clone(),
        object: f.program.origin.to_string(),
        error: Box::new(e),
    }
}

/// One instance of a function to build, as the plan describes it.
pub(super) struct Instance {
    pub(super) fn_id: u32,
    pub(super) slot: u32,
    pub(super) proceed_on: u32,
    pub(super) fresh_maps: bool,
    pub(super) new_function: bool,
    pub(super) reset_state: Vec<String>,
}

impl Instance {
    /// The instance a `LoadFunction` action asks for (None for other actions).
    pub(super) fn of(action: &Action) -> Option<(&str, Self)> {
        let Action::LoadFunction {
            function,
            fn_id,
            slot,
            proceed_on,
            fresh_maps,
            reason,
            reset_state,
            ..
        } = action
        else {
            return None;
        };
        Some((
            function,
            Instance {
                fn_id: *fn_id,
                slot: *slot,
                proceed_on: *proceed_on,
                fresh_maps: *fresh_maps,
                new_function: matches!(reason, crate::plan::LoadReason::New),
                reset_state: reset_state.clone(),
            },
        ))
    }
}

fn prog_kind(hook: Hook) -> ProgKind {
    match hook {
        Hook::Xdp => ProgKind::Xdp,
        Hook::TcIngress | Hook::TcEgress => ProgKind::Classifier,
    }
}

/// The map whose entries a config map holds: itself, or a map-in-map's inner map.
fn entries_target(path: &Path) -> Result<ByteMap, ApplyError> {
    let m = open_map(path)?;
    if !map_type::is_map_in_map(m.info().map_type) {
        return Ok(m);
    }
    m.inner(0)
        .map_err(|source| map_err(path, source))?
        .ok_or_else(|| ApplyError::Internal {
            what: format!("{}: the map-in-map's slot is empty", path.display()),
        })
}

/// A new, filled inner map for a map-in-map.
fn new_inner(
    name: &str,
    shape: &MapShape,
    entries: &EntrySet,
) -> Result<ByteMap, crate::kernel::MapError> {
    let list = ByteMap::create(
        &MapCreate {
            name,
            map_type: shape.map_type,
            key_size: shape.key_size,
            value_size: shape.value_size,
            max_entries: shape.max_entries,
            map_flags: shape.map_flags,
        },
        None,
    )?;
    list.update_batch(entries)?;
    Ok(list)
}

impl ChainRun<'_> {
    /// Writes the seed entries a live map lacks, each only if its key is
    /// still missing (the program may have created it meanwhile); undo
    /// removes just the ones written.
    fn seed_entries(
        &mut self,
        function: &str,
        map: &str,
        entries: &EntrySet,
    ) -> Result<(), ApplyError> {
        let paths = self.live(function);
        let path = [paths.config_map(map), paths.state_map(map)]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| paths.state_map(map));
        let m = open_map(&path)?;
        let mut written = Vec::new();
        let t = Instant::now();
        hit("before-map-write");
        let result = entries.iter().try_for_each(|(k, v)| {
            if m.insert_new(k, v)? {
                written.extend_from_slice(k);
            }
            Ok(())
        });
        hit("after-map-write");
        self.map_write_time += t.elapsed();
        self.entries_written += written.len() / entries.key_size().max(1);
        self.undo.push(Undo::Entries {
            map: m.try_clone().map_err(|source| map_err(&path, source))?,
            restore: EntrySet::new(entries.key_size(), entries.value_size()),
            remove: written,
        });
        result.map_err(|source| map_err(&path, source))
    }

    /// Rewrites a live instance's load record with `f`'s origin.
    fn record_origin(&mut self, f: &DesiredFunction) -> Result<(), ApplyError> {
        let path = self.live(&f.name).meta();
        let map = open_map(&path)?;
        let key = 0u32.to_ne_bytes();
        let old = map
            .lookup_raw(&key)
            .map_err(|source| map_err(&path, source))?
            .unwrap_or_default();
        let Some(mut meta) = FnMeta::from_bytes(&old) else {
            // The planner reloads an instance whose record is damaged.
            return Err(ApplyError::Internal {
                what: format!("the load record {} is unreadable", path.display()),
            });
        };
        meta.origin = Some(f.origin);
        hit("before-map-write");
        map.update(&key, &meta.to_bytes())
            .map_err(|source| map_err(&path, source))?;
        hit("after-map-write");
        self.undo.push(Undo::Record { map, bytes: old });
        Ok(())
    }
}

fn write_meta(path: &Path, meta: &FnMeta) -> Result<(), ApplyError> {
    let map = ByteMap::create(
        &MapCreate {
            name: "kfd_meta",
            map_type: map_type::ARRAY,
            key_size: 4,
            value_size: META_SIZE as u32,
            max_entries: 1,
            map_flags: 0,
        },
        None,
    )
    .map_err(|source| map_err(path, source))?;
    map.update(&0u32.to_ne_bytes(), &meta.to_bytes())
        .map_err(|source| map_err(path, source))?;
    map.pin(path).map_err(|source| map_err(path, source))
}
