//! Where kfd pins things under its bpffs root. This is the on-disk contract
//! between kfd runs (and versions): observe reads it, apply writes it.
//!
//! ```text
//! <root>/                                  --bpffs (default /sys/fs/bpf/kfd)
//!   <hook>@<interface>[@<netns>]/          one chain (netns percent-encoded)
//!     root                                 the root program
//!     link                                 the bpf_link attaching root (XDP, TCX)
//!     meta                                 kfd's record of the chain (e.g. it added clsact)
//!     kf_progs kf_stats kf_ctl             the chain maps (ebpf/include/kf.h)
//!     fn/<name>/prog                       a function's program
//!     fn/<name>/meta                       kfd's load record (stats row, digests)
//!     fn/<name>/maps/<map>                 config maps (kfd writes them)
//!     fn/<name>/state/<map>                state maps (kfd never writes them)
//!     fn/<name>@new/...                    a function being built (make before break)
//!     fn/<name>@old/...                    the instance it replaced, until cleanup
//!   shared/<share>                         a map functions share (`share:`)
//! ```
//!
//! bpffs refuses names containing a dot (reserved by the kernel), so dots
//! in interface or netns names are escaped, and suffixes use `@`.

use std::path::{Path, PathBuf};

use crate::model::{ChainKey, Hook};

/// The chain maps every program in a chain shares (ebpf/include/kf.h).
pub const CHAIN_MAPS: [&str; 3] = ["kf_progs", "kf_stats", "kf_ctl"];

/// Read-only globals kfd sets in every instance of a KF that uses the ABI.
pub mod abi_globals {
    /// The instance's index in `kf_progs`.
    pub const SLOT_IDX: &str = "kf_slot_idx";
    /// The function's row in `kf_stats`.
    pub const FN_ID: &str = "kf_fn_id";
    /// Verdict bits that continue the chain.
    pub const PROCEED_ON: &str = "kf_proceed_on";
}

/// Suffix of a function directory under construction.
pub const BUILDING_SUFFIX: &str = "@new";
/// Suffix of a function directory replaced by a newer instance.
pub const RETIRED_SUFFIX: &str = "@old";

/// Paths under one bpffs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root` (kfd's `--bpffs`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A chain's directory.
    pub fn chain_dir(&self, key: &ChainKey) -> PathBuf {
        self.root.join(chain_dir_name(key))
    }

    /// A chain map's pin.
    pub fn chain_map(&self, key: &ChainKey, map: &str) -> PathBuf {
        self.chain_dir(key).join(map)
    }

    /// The root program's pin.
    pub fn root_prog(&self, key: &ChainKey) -> PathBuf {
        self.chain_dir(key).join("root")
    }

    /// The link's pin.
    pub fn link(&self, key: &ChainKey) -> PathBuf {
        self.chain_dir(key).join("link")
    }

    /// The chain's record (what kfd added to the interface, e.g. a clsact qdisc).
    pub fn chain_meta(&self, key: &ChainKey) -> PathBuf {
        self.chain_dir(key).join("meta")
    }

    /// Where maps shared by several functions (`share:`) are pinned, once
    /// for the whole root.
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// The pin of shared map `name`.
    pub fn shared_map(&self, name: &str) -> PathBuf {
        self.shared_dir().join(name)
    }

    /// The directory holding the chain's functions.
    pub fn functions_dir(&self, key: &ChainKey) -> PathBuf {
        self.chain_dir(key).join("fn")
    }

    /// A function's directory.
    pub fn fn_dir(&self, key: &ChainKey, function: &str) -> PathBuf {
        self.functions_dir(key).join(function)
    }

    /// The directory where a new instance of a function is assembled.
    pub fn fn_building_dir(&self, key: &ChainKey, function: &str) -> PathBuf {
        self.functions_dir(key)
            .join(format!("{function}{BUILDING_SUFFIX}"))
    }

    /// Where a replaced instance waits for cleanup.
    pub fn fn_retired_dir(&self, key: &ChainKey, function: &str) -> PathBuf {
        self.functions_dir(key)
            .join(format!("{function}{RETIRED_SUFFIX}"))
    }
}

/// Paths inside one function directory (live or under construction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnPaths {
    dir: PathBuf,
}

impl FnPaths {
    /// Paths inside `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The program's pin.
    pub fn prog(&self) -> PathBuf {
        self.dir.join("prog")
    }

    /// The load record's pin.
    pub fn meta(&self) -> PathBuf {
        self.dir.join("meta")
    }

    /// Directory of config maps.
    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }

    /// Directory of state maps.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// A config map's pin.
    pub fn config_map(&self, map: &str) -> PathBuf {
        self.maps_dir().join(map)
    }

    /// A state map's pin.
    pub fn state_map(&self, map: &str) -> PathBuf {
        self.state_dir().join(map)
    }
}

/// `xdp@eth0`, or `xdp@eth0@blue` / `xdp@eth0@%2Frun%2Fnetns%2Fblue` with a netns.
pub fn chain_dir_name(key: &ChainKey) -> String {
    let mut s = format!("{}@{}", key.hook, escape(&key.interface));
    if let Some(ns) = &key.netns {
        s.push('@');
        s.push_str(&escape(ns));
    }
    s
}

/// The inverse of [`chain_dir_name`]; None for anything kfd did not create.
pub fn parse_chain_dir_name(name: &str) -> Option<ChainKey> {
    let mut parts = name.split('@');
    let hook = Hook::parse(parts.next()?)?;
    let interface = unescape(parts.next()?)?;
    let netns = match parts.next() {
        Some(ns) => Some(unescape(ns)?),
        None => None,
    };
    if parts.next().is_some() || interface.is_empty() {
        return None;
    }
    Some(ChainKey {
        netns,
        interface,
        hook,
    })
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '@' => out.push_str("%40"),
            '.' => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "2F" => '/',
            "40" => '@',
            "2E" => '.',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_dir_names_round_trip() {
        for (netns, iface, hook, name) in [
            (None, "eth0", Hook::Xdp, "xdp@eth0"),
            (
                Some("blue"),
                "veth-b",
                Hook::TcIngress,
                "tc-ingress@veth-b@blue",
            ),
            (
                Some("/var/run/netns/x@y"),
                "e%1",
                Hook::TcEgress,
                "tc-egress@e%251@%2Fvar%2Frun%2Fnetns%2Fx%40y",
            ),
        ] {
            let key = ChainKey {
                netns: netns.map(str::to_owned),
                interface: iface.to_owned(),
                hook,
            };
            assert_eq!(chain_dir_name(&key), name);
            assert_eq!(parse_chain_dir_name(name), Some(key));
        }
        for junk in ["", "xdp", "xdp@", "foo@eth0", "xdp@eth0@a@b", "xdp@e%zz"] {
            assert_eq!(parse_chain_dir_name(junk), None, "{junk}");
        }
    }
}
