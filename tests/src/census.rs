//! What a test's kfd holds in the kernel: the pins under its bpffs root and
//! every program, map and link reachable from them or from the hooks of the
//! test's two namespaces (`bpftool net`), following programs to their maps
//! (`bpftool prog`), links to their programs, prog arrays to their programs
//! and map-in-maps to their inner maps.
//!
//! Once kfd has exited, the kernel frees whatever nothing reaches, so this
//! is everything kfd left behind, and nothing of other tests running at the
//! same time. Two censuses of the same converged config must be equal in
//! size; a leak shows up as a difference.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::os::fd::AsRawFd as _;
use std::path::Path;

use reconciler::kernel::map::ByteMap;
use reconciler::kernel::sys;
use reconciler::model::map_type;

use crate::{Env, sh};

/// Objects reachable from one test's pins and hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Pinned files, relative to the bpffs root.
    pub pins: BTreeSet<String>,
    /// Program ids.
    pub progs: BTreeSet<u32>,
    /// Map ids.
    pub maps: BTreeSet<u32>,
    /// Link ids.
    pub links: BTreeSet<u32>,
}

impl Census {
    /// (pins, programs, maps, links).
    pub fn counts(&self) -> [usize; 4] {
        [
            self.pins.len(),
            self.progs.len(),
            self.maps.len(),
            self.links.len(),
        ]
    }
}

impl fmt::Display for Census {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [pins, progs, maps, links] = self.counts();
        write!(
            f,
            "{pins} pins, {progs} programs, {maps} maps, {links} links"
        )
    }
}

/// What a pinned file is, from `/proc/self/fdinfo`.
enum Object {
    Prog(u32),
    Map(u32),
    Link(u32),
}

fn identify(path: &Path) -> Option<Object> {
    let fd = sys::obj_get(path).ok()?;
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u32>().ok())
    };
    if info.contains("link_type:") {
        field("link_id:").map(Object::Link)
    } else if info.contains("prog_type:") {
        field("prog_id:").map(Object::Prog)
    } else {
        field("map_id:").map(Object::Map)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, std::path::PathBuf)>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            out.push((rel, p));
        }
    }
}

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = sh(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// The u32 values of a map (prog ids of a prog array, inner map ids of a
/// map-in-map).
fn id_values(map_id: u32) -> Vec<u32> {
    let Ok(fd) = sys::map_fd_by_id(map_id) else {
        return Vec::new(); // freed meanwhile
    };
    let Ok(map) = ByteMap::from_fd(fd) else {
        return Vec::new();
    };
    let Ok((_, values)) = map.read_all_raw() else {
        return Vec::new();
    };
    values
        .chunks_exact(4)
        .map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
        .filter(|id| *id != 0)
        .collect()
}

impl Env {
    /// Everything this test's kfd holds in the kernel now.
    pub fn census(&self) -> Census {
        let mut c = Census::default();
        let (mut progs, mut maps, mut links) = (Vec::new(), Vec::new(), Vec::new());
        let mut files = Vec::new();
        walk(&self.bpffs, &self.bpffs, &mut files);
        for (rel, path) in files {
            match identify(&path) {
                Some(Object::Prog(id)) => progs.push(id),
                Some(Object::Map(id)) => maps.push(id),
                Some(Object::Link(id)) => links.push(id),
                None => {}
            }
            c.pins.insert(rel);
        }
        for ns in [&self.ns_a, &self.ns_b] {
            let net = bpftool_json(&["ip", "netns", "exec", ns, "bpftool", "-j", "net", "show"]);
            for hook in ["xdp", "tc"] {
                for a in net[0][hook].as_array().into_iter().flatten() {
                    progs.extend(a["id"].as_u64().map(|id| id as u32));
                }
            }
        }
        let all_progs = bpftool_json(&["bpftool", "-j", "prog", "show"]);
        let prog_maps: BTreeMap<u32, Vec<u32>> = all_progs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let ids = p["map_ids"].as_array().map(|m| {
                    m.iter()
                        .filter_map(|i| i.as_u64().map(|i| i as u32))
                        .collect()
                });
                Some((p["id"].as_u64()? as u32, ids.unwrap_or_default()))
            })
            .collect();
        let all_links = bpftool_json(&["bpftool", "-j", "link", "show"]);
        let link_prog: BTreeMap<u32, u32> = all_links
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| Some((l["id"].as_u64()? as u32, l["prog_id"].as_u64()? as u32)))
            .collect();
        // The closure.
        while !(progs.is_empty() && maps.is_empty() && links.is_empty()) {
            for id in std::mem::take(&mut links) {
                if c.links.insert(id) {
                    progs.extend(link_prog.get(&id));
                }
            }
            for id in std::mem::take(&mut progs) {
                if c.progs.insert(id) {
                    maps.extend(prog_maps.get(&id).into_iter().flatten());
                }
            }
            for id in std::mem::take(&mut maps) {
                if !c.maps.insert(id) {
                    continue;
                }
                let Ok(fd) = sys::map_fd_by_id(id) else {
                    continue;
                };
                let Ok(info) = sys::map_info(std::os::fd::AsFd::as_fd(&fd)) else {
                    continue;
                };
                match info.map_type {
                    map_type::PROG_ARRAY => progs.extend(id_values(id)),
                    map_type::ARRAY_OF_MAPS | map_type::HASH_OF_MAPS => {
                        maps.extend(id_values(id));
                    }
                    _ => {}
                }
            }
        }
        c
    }
}
