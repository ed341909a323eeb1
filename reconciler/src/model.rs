//! Plain types shared by the desired state, the observed state and the
//! planner. Nothing here touches the kernel or the filesystem.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::error::Escaped;

/// Where a chain hangs in the network stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Hook {
    /// XDP, before the stack allocates an skb.
    #[serde(rename = "xdp")]
    Xdp,
    /// TC ingress (clsact/TCX).
    #[serde(rename = "tc-ingress")]
    TcIngress,
    /// TC egress (clsact/TCX).
    #[serde(rename = "tc-egress")]
    TcEgress,
}

impl Hook {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::TcIngress => "tc-ingress",
            Self::TcEgress => "tc-egress",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xdp" => Some(Self::Xdp),
            "tc-ingress" => Some(Self::TcIngress),
            "tc-egress" => Some(Self::TcEgress),
            _ => None,
        }
    }

    /// Verdict names valid in `proceed_on` for this hook, by counter bit.
    pub fn verdicts(self) -> &'static [(&'static str, u32)] {
        match self {
            Self::Xdp => XDP_VERDICTS,
            Self::TcIngress | Self::TcEgress => TC_VERDICTS,
        }
    }

    /// The counter bit of a verdict name, if valid on this hook.
    pub fn verdict_bit(self, name: &str) -> Option<u32> {
        self.verdicts()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
    }

    /// The name of a counter bit on this hook.
    pub fn verdict_name(self, bit: u32) -> Option<&'static str> {
        self.verdicts()
            .iter()
            .find(|(_, b)| *b == bit)
            .map(|(n, _)| *n)
    }

    /// `proceed_on` when the config says nothing: continue after "pass" (XDP)
    /// or after "ok"/"unspec"/"pipe" (TC), the verdicts that mean "not my business".
    pub fn default_proceed_on(self) -> u32 {
        match self {
            Self::Xdp => 1 << 2,
            Self::TcIngress | Self::TcEgress => (1 << 0) | (1 << 1) | (1 << 4),
        }
    }
}

/// XDP verdicts: counter bit = the XDP action value.
const XDP_VERDICTS: &[(&str, u32)] = &[
    ("aborted", 0),
    ("drop", 1),
    ("pass", 2),
    ("tx", 3),
    ("redirect", 4),
];

/// TC verdicts: counter bit = TC_ACT_* + 1 (TC_ACT_UNSPEC is -1).
const TC_VERDICTS: &[(&str, u32)] = &[
    ("unspec", 0),
    ("ok", 1),
    ("reclassify", 2),
    ("shot", 3),
    ("pipe", 4),
    ("stolen", 5),
    ("queued", 6),
    ("repeat", 7),
    ("redirect", 8),
    ("trap", 9),
];

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chain: a hook of an interface in a network namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChainKey {
    /// The namespace as written in config (a name under /run/netns or an
    /// absolute path); None for kfd's own namespace.
    pub netns: Option<String>,
    /// Interface name.
    pub interface: String,
    /// Hook.
    pub hook: Hook,
}

impl fmt::Display for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Linux allows control characters in interface names, and so do
        // namespace file names: they print escaped, on one line.
        write!(f, "{} {}", Escaped(&self.interface), self.hook)?;
        if let Some(ns) = &self.netns {
            write!(f, " (netns {})", Escaped(ns))?;
        }
        Ok(())
    }
}

/// XDP attach modes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native if the driver supports it, else generic.
    #[default]
    Auto,
    /// Driver (native) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

impl XdpMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    /// Whether a chain attached in `actual` mode satisfies this setting.
    pub fn accepts(self, actual: XdpMode) -> bool {
        self == XdpMode::Auto || self == actual
    }
}

/// How a TC chain's root is attached.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TcAttach {
    /// A TCX link where the kernel has TCX (6.6+), else a clsact filter.
    #[default]
    Auto,
    /// A TCX link only.
    Tcx,
    /// A cls_bpf filter on a clsact qdisc only.
    Clsact,
}

impl TcAttach {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        }
    }
}

/// Where a TC chain's root sits among the hook's other programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcSettings {
    /// How it is attached.
    pub attach: TcAttach,
    /// TCX: first among the hook's TCX programs (else last).
    pub first: bool,
    /// clsact: the filter's priority (lower runs first).
    pub priority: u16,
}

impl Default for TcSettings {
    fn default() -> Self {
        Self {
            attach: TcAttach::Auto,
            first: true,
            priority: 1,
        }
    }
}

/// `BPF_MAP_TYPE_*` values kfd reasons about.
pub mod map_type {
    /// Hash.
    pub const HASH: u32 = 1;
    /// Array.
    pub const ARRAY: u32 = 2;
    /// Program array (tail calls).
    pub const PROG_ARRAY: u32 = 3;
    /// Per-CPU hash.
    pub const PERCPU_HASH: u32 = 5;
    /// Per-CPU array.
    pub const PERCPU_ARRAY: u32 = 6;
    /// LRU hash.
    pub const LRU_HASH: u32 = 9;
    /// Per-CPU LRU hash.
    pub const LRU_PERCPU_HASH: u32 = 10;
    /// Longest-prefix-match trie.
    pub const LPM_TRIE: u32 = 11;
    /// Array of maps.
    pub const ARRAY_OF_MAPS: u32 = 12;
    /// Hash of maps.
    pub const HASH_OF_MAPS: u32 = 13;
    /// Per-CPU cgroup storage.
    pub const PERCPU_CGROUP_STORAGE: u32 = 21;
    /// Perf event array (libbpf sizes an unsized one to the CPU count).
    pub const PERF_EVENT_ARRAY: u32 = 4;

    /// Whether the type keeps one value per CPU.
    pub fn is_per_cpu(t: u32) -> bool {
        matches!(
            t,
            PERCPU_HASH | PERCPU_ARRAY | LRU_PERCPU_HASH | PERCPU_CGROUP_STORAGE
        )
    }

    /// Whether elements always exist (arrays): "absent" means all-zero.
    pub fn is_array(t: u32) -> bool {
        matches!(t, ARRAY | PERCPU_ARRAY)
    }

    /// Whether the type holds other maps.
    pub fn is_map_in_map(t: u32) -> bool {
        matches!(t, ARRAY_OF_MAPS | HASH_OF_MAPS)
    }

    /// A readable name for messages.
    pub fn name(t: u32) -> String {
        match t {
            HASH => "hash".into(),
            ARRAY => "array".into(),
            PROG_ARRAY => "prog_array".into(),
            PERCPU_HASH => "percpu_hash".into(),
            PERCPU_ARRAY => "percpu_array".into(),
            LRU_HASH => "lru_hash".into(),
            LRU_PERCPU_HASH => "lru_percpu_hash".into(),
            LPM_TRIE => "lpm_trie".into(),
            ARRAY_OF_MAPS => "array_of_maps".into(),
            HASH_OF_MAPS => "hash_of_maps".into(),
            other => format!("type {other}"),
        }
    }
}

/// The shape of a map: what must match for a pinned map to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MapShape {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `BPF_F_*` flags.
    pub map_flags: u32,
}

impl MapShape {
    /// The first difference from `other`, as "field: pinned vs object".
    pub fn mismatch(&self, other: &MapShape) -> Option<String> {
        let fields = [
            ("type", self.map_type, other.map_type),
            ("key size", self.key_size, other.key_size),
            ("value size", self.value_size, other.value_size),
            ("max_entries", self.max_entries, other.max_entries),
            ("flags", self.map_flags, other.map_flags),
        ];
        fields
            .iter()
            .find(|(_, a, b)| a != b)
            .map(|(what, a, b)| format!("{what} {a} (pinned) vs {b} (object)"))
    }

    /// Whether elements always exist (arrays): "absent" means all-zero.
    pub fn is_array(&self) -> bool {
        map_type::is_array(self.map_type)
    }
}

/// How changes to a map's entries should land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    /// kfd picks by the size of the change.
    #[default]
    Auto,
    /// Entry by entry (batched upserts, then deletes).
    Entries,
    /// As one atomic swap (map-in-map, or a program swap).
    Swap,
}

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Lower-case hex of a digest, shortened for display.
pub fn short_digest(d: &Digest) -> String {
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where something was defined: a config file and a position in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Source {
    /// The file name (relative to the config dir).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", Escaped(&self.file), self.line, self.col)
    }
}

/// Which config file a function instance was converged from, and which
/// content of that file. kfd's load record of each instance keeps it, so
/// the kernel itself says what was last applied: a copy in the last-good
/// store is trusted only when it is that content, and when a file turns
/// bad with no such copy, its live functions are kept exactly as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The file (a hash of its name in the config dir).
    pub file: FileId,
    /// The content (a hash of its bytes).
    pub content: ContentId,
}

/// A config file's name, hashed (128 bits of SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId(pub [u8; 16]);

/// A config file's content, hashed (128 bits of SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentId(pub [u8; 16]);

/// The kfd ABI version (`KF_ABI_VERSION` in ebpf/include/kf.h), stored in `kf_ctl`.
pub const ABI_VERSION: u32 = 1;

/// Limits that keep one config from exhausting the machine.
pub mod limits {
    /// Functions per chain (the ABI's KF_MAX_SLOTS).
    pub const MAX_SLOTS: usize = 32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_keys_and_sources_print_control_characters_escaped() {
        let key = ChainKey {
            netns: Some("blue\nred".into()),
            interface: "e\u{1b}[31mth0".into(),
            hook: Hook::TcIngress,
        };
        assert_eq!(
            key.to_string(),
            "e\\u{1b}[31mth0 tc-ingress (netns blue\\nred)"
        );
        let source = Source {
            file: "a\rb.yaml".into(),
            line: 3,
            col: 7,
        };
        assert_eq!(source.to_string(), "a\\rb.yaml:3:7");
    }
}
