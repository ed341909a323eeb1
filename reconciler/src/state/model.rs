//! The observed state: what is live in bpffs and the kernel, as plain data.
//! Built by `state::observe`, read by the planner and `status`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::entries::EntrySet;
use crate::model::{ChainKey, ContentId, Digest, FileId, MapShape, Origin, XdpMode};

/// Everything kfd owns under its bpffs root, plus the interfaces it cares about.
#[derive(Debug, Clone, Default)]
pub struct ObservedState {
    /// Chains found under the bpffs root.
    pub chains: BTreeMap<ChainKey, ObservedChain>,
    /// Interfaces of observed and desired chains, by (netns, name).
    pub interfaces: BTreeMap<(Option<String>, String), InterfaceState>,
    /// Chains whose pins could not be read, with the error: kfd leaves them
    /// exactly as they are (the error is theirs alone) and retries.
    pub unreadable: BTreeMap<ChainKey, String>,
    /// Whether the kernel has TCX (6.6+): where it does, `tc_attach: auto`
    /// means a TCX link.
    pub tcx: bool,
    /// Maps shared by functions (`<root>/shared/`), by share name, with
    /// their entries.
    pub shared: BTreeMap<String, ObservedMap>,
    /// Shared maps whose pins could not be read, with the error.
    pub shared_errors: BTreeMap<String, String>,
}

/// An interface, as its namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum InterfaceState {
    /// It does not exist (or its namespace does not).
    Missing,
    /// It could not be queried (its namespace cannot be entered, say):
    /// chains on it are left as they are.
    Unknown {
        /// Why.
        error: String,
    },
    /// It exists.
    Present {
        /// Its index.
        ifindex: u32,
        /// Program ids on its XDP hook, with their mode.
        xdp: Vec<(XdpMode, u32)>,
    },
}

/// One chain kfd has pinned.
#[derive(Debug, Clone, Default)]
pub struct ObservedChain {
    /// The chain's directory under the bpffs root.
    pub dir: String,
    /// Whether all chain maps and the root program are pinned.
    pub complete: bool,
    /// The pinned root program's id.
    pub root_prog_id: Option<u32>,
    /// The pinned link (XDP, or TCX).
    pub link: Option<ObservedLink>,
    /// TC with clsact: kfd's cls_bpf filter on the hook, if there.
    pub tc_filter: Option<ObservedFilter>,
    /// Whether kfd added the interface's clsact qdisc (so may remove it).
    pub clsact_created: bool,
    /// XDP: whether the root was loaded for multi-buffer packets.
    pub frags: bool,
    /// The revision the root runs.
    pub active_rev: u32,
    /// Slots of the active revision, in order (index = position).
    pub active: Vec<ObservedSlot>,
    /// Whether the inactive revision holds anything (left over from an interrupted change).
    pub inactive_used: bool,
    /// Functions pinned under the chain, by name.
    pub functions: BTreeMap<String, ObservedFunction>,
    /// What an interrupted run left in the chain dir, relative to it
    /// (`fn/<name>@new`, `fn/<name>@old`, `link@new`): removed by the next apply.
    pub leftovers: Vec<String>,
}

/// The chain's pinned link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ObservedLink {
    /// Link id.
    pub id: u32,
    /// The program it runs.
    pub prog_id: u32,
    /// The interface it is attached to; 0 when the interface went away.
    pub ifindex: u32,
}

/// kfd's clsact filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ObservedFilter {
    /// Its priority.
    pub priority: u16,
    /// The program it runs.
    pub prog_id: Option<u32>,
}

/// Size of a chain's pinned record (an ARRAY map of one element).
pub const CHAIN_META_SIZE: usize = 8;

/// Encodes the chain record: magic, then flags (bit 0: kfd added the
/// clsact qdisc; bit 1: the root was loaded for multi-buffer XDP).
pub fn chain_meta_bytes(clsact_created: bool, frags: bool) -> [u8; CHAIN_META_SIZE] {
    let mut b = [0u8; CHAIN_META_SIZE];
    b[0..4].copy_from_slice(b"KFDC");
    b[4] = u8::from(clsact_created) | (u8::from(frags) << 1);
    b
}

/// Whether a chain record says kfd added the clsact qdisc.
pub fn chain_meta_clsact_created(b: &[u8]) -> bool {
    b.len() >= 5 && &b[0..4] == b"KFDC" && b[4] & 1 != 0
}

/// Whether a chain record says the root handles multi-buffer XDP.
pub fn chain_meta_frags(b: &[u8]) -> bool {
    b.len() >= 5 && &b[0..4] == b"KFDC" && b[4] & 2 != 0
}

/// One slot of the active revision: the program in it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ObservedSlot {
    /// The program in the slot, if any.
    pub prog_id: Option<u32>,
}

/// One function's pins.
#[derive(Debug, Clone, Default)]
pub struct ObservedFunction {
    /// The pinned program's id.
    pub prog_id: Option<u32>,
    /// What kfd recorded when it loaded the program.
    pub meta: Option<FnMeta>,
    /// Config maps (pinned under `maps/`), with their entries.
    pub maps: BTreeMap<String, ObservedMap>,
    /// State maps (pinned under `state/`); entries only where asked for.
    pub state: BTreeMap<String, ObservedMap>,
    /// Found only as `fn/<name>@old`: a run was killed between moving the
    /// live instance aside and putting the new one in its place. The next
    /// apply moves it back first; until then it is the live instance.
    pub retired: bool,
}

/// kfd's record of a loaded function instance, pinned next to it. The
/// slot, stats row and proceed_on are also baked into the instance as
/// read-only globals; this record is how kfd reads them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FnMeta {
    /// Its stats row in the chain.
    pub fn_id: u32,
    /// The `kf_progs` index the instance was built for.
    pub slot_idx: u32,
    /// The verdict bits it continues the chain on.
    pub proceed_on: u32,
    /// Digest of the object and program name it was loaded from.
    pub code_digest: Digest,
    /// Digest of the globals it was loaded with.
    pub globals_digest: Digest,
    /// The config file and content it was last converged from (None in
    /// records written before kfd kept it).
    pub origin: Option<Origin>,
}

/// A pinned map.
#[derive(Debug, Clone)]
pub struct ObservedMap {
    /// Its shape.
    pub shape: MapShape,
    /// For a map-in-map: the shape of the inner map in slot 0, if any.
    pub inner: Option<MapShape>,
    /// Its entries (arrays: the non-zero ones; map-in-map: the inner map's),
    /// when read.
    pub entries: Option<EntrySet>,
}

impl ObservedChain {
    /// The function whose pinned program has this id.
    pub fn function_by_prog(&self, prog_id: u32) -> Option<&str> {
        self.functions
            .iter()
            .find(|(_, f)| f.prog_id == Some(prog_id))
            .map(|(n, _)| n.as_str())
    }
}

/// Size of a function's pinned load record (an ARRAY map of one element).
pub const META_SIZE: usize = 128;
const META_MAGIC: &[u8; 4] = b"KFD2";
/// The byte that says the record carries an origin.
const ORIGIN_FLAG: usize = 112;

impl FnMeta {
    /// The record as stored: magic, fn_id, slot, proceed_on, code digest,
    /// globals digest, origin (file id, content id, then 1 when set), zero
    /// padding. Records of older kfds have zeros where the origin goes.
    pub fn to_bytes(&self) -> [u8; META_SIZE] {
        let mut b = [0u8; META_SIZE];
        b[0..4].copy_from_slice(META_MAGIC);
        b[4..8].copy_from_slice(&self.fn_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.slot_idx.to_le_bytes());
        b[12..16].copy_from_slice(&self.proceed_on.to_le_bytes());
        b[16..48].copy_from_slice(&self.code_digest);
        b[48..80].copy_from_slice(&self.globals_digest);
        if let Some(o) = &self.origin {
            b[80..96].copy_from_slice(&o.file.0);
            b[96..112].copy_from_slice(&o.content.0);
            b[ORIGIN_FLAG] = 1;
        }
        b
    }

    /// Parses a stored record; None if it is not one kfd wrote.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < 80 || &b[0..4] != META_MAGIC {
            return None;
        }
        let word = |at: usize| b[at..at + 4].try_into().ok().map(u32::from_le_bytes);
        Some(Self {
            fn_id: word(4)?,
            slot_idx: word(8)?,
            proceed_on: word(12)?,
            code_digest: b[16..48].try_into().ok()?,
            globals_digest: b[48..80].try_into().ok()?,
            origin: match b.get(ORIGIN_FLAG) {
                Some(1) => Some(Origin {
                    file: FileId(b[80..96].try_into().ok()?),
                    content: ContentId(b[96..112].try_into().ok()?),
                }),
                _ => None,
            },
        })
    }
}
