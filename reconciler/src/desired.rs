//! The desired state: what the config directory asks for, merged across
//! files, with every key and value already encoded to bytes. Built by
//! `config::load`, read by the planner. Plain data: no kernel, no files.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::entries::EntrySet;
use crate::model::{ChainKey, Digest, MapShape, Origin, Source, TcSettings, UpdateMode, XdpMode};

/// Everything the config asks for, by chain.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    /// Chains, in key order.
    pub chains: BTreeMap<ChainKey, DesiredChain>,
    /// Some file's content is unknown (invalid, with no last-good copy that
    /// matches the kernel): chain settings it may have set are unknown too,
    /// so live attachments are kept as they are.
    pub incomplete: bool,
    /// Maps shared by several functions, by share name.
    pub shared: BTreeMap<String, DesiredShared>,
}

/// A map several functions of the root use (`share:`), pinned once.
#[derive(Debug, Clone)]
pub struct DesiredShared {
    /// Its shape; every user's object must define it so.
    pub shape: MapShape,
    /// For a map-in-map: the inner maps' shape.
    pub inner: Option<MapShape>,
    /// Who uses it.
    pub users: Vec<SharedUser>,
    /// Entries kfd owns, when one user's config lists them (None: the
    /// programs' map, kfd writes only its seed).
    pub entries: Option<DesiredMap>,
    /// Seed entries (see [`DesiredMap::seed`]).
    pub seed: Arc<EntrySet>,
    /// How to print its entries.
    pub format: Arc<dyn EntryFormat>,
}

/// What one function's config says of a map it shares.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    /// The share's name.
    pub share: String,
    /// The map's shape in this function's object (sized by its config).
    pub shape: MapShape,
    /// For a map-in-map: the inner maps' shape.
    pub inner: Option<MapShape>,
    /// Entries, if this config lists them.
    pub entries: Option<DesiredMap>,
    /// Seed entries (empty: none).
    pub seed: Arc<EntrySet>,
    /// How to print its entries.
    pub format: Arc<dyn EntryFormat>,
    /// Where `share:` is written.
    pub source: Source,
}

/// One function using a shared map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SharedUser {
    /// Its chain.
    pub chain: ChainKey,
    /// The function.
    pub function: String,
    /// The map's name in its object.
    pub map: String,
    /// Where its `share:` is.
    pub source: Source,
}

/// One chain: its settings and its functions in run order.
#[derive(Debug, Clone)]
pub struct DesiredChain {
    /// XDP attach mode (ignored for TC hooks).
    pub xdp_mode: XdpMode,
    /// TC attach settings (ignored for XDP).
    pub tc: TcSettings,
    /// Where the chain's settings came from, if a `chains:` entry set them.
    pub settings: Option<Source>,
    /// Functions sorted by (priority, name): the order packets see them.
    pub functions: Vec<DesiredFunction>,
    /// XDP: the chain's programs handle multi-buffer packets (every
    /// function's section is `xdp.frags`), so the root is loaded so too.
    pub frags: bool,
    /// Live functions to keep exactly as they are, by name: what the config
    /// asks of them is unknown or cannot be built right now. A pass never
    /// unloads, reloads or rewrites them, and leaves the chain's order alone.
    pub held: BTreeMap<String, Hold>,
}

impl DesiredChain {
    /// A chain with default settings and nothing in it.
    pub fn empty() -> Self {
        Self {
            xdp_mode: XdpMode::Auto,
            tc: TcSettings::default(),
            settings: None,
            functions: Vec::new(),
            frags: false,
            held: BTreeMap::new(),
        }
    }
}

/// Why a live function is kept exactly as it is: an error, never a valid
/// config, so nothing of it may be removed or rolled back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Hold {
    /// The file that defines it is invalid, and no copy of that file which
    /// matches the kernel is known (the store lost it, or lags behind).
    FileInvalid {
        /// The file's name in the config dir.
        file: String,
    },
    /// Its object cannot be used right now.
    Object {
        /// Where the function is defined.
        source: Source,
        /// Its priority in the config (so its place in the chain is known).
        priority: u32,
        /// The error, as reported.
        error: String,
    },
    /// Loaded by a kfd that kept no origin, while some file's content is
    /// unknown: it may be that file's.
    UnknownOrigin,
}

impl Hold {
    /// The function's priority, when the config still says it.
    pub fn priority(&self) -> Option<u32> {
        match self {
            Hold::Object { priority, .. } => Some(*priority),
            Hold::FileInvalid { .. } | Hold::UnknownOrigin => None,
        }
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::FileInvalid { file } => write!(
                f,
                "{file} is invalid and no last good copy of it matches the kernel"
            ),
            Hold::Object { source, error, .. } => write!(f, "{source}: {error}"),
            Hold::UnknownOrigin => f.write_str(
                "its file is not recorded (loaded by an older kfd) and some file is invalid",
            ),
        }
    }
}

/// One function on one chain.
#[derive(Debug, Clone)]
pub struct DesiredFunction {
    /// Its name, unique on the chain.
    pub name: String,
    /// Lower runs first.
    pub priority: u32,
    /// Where it is defined.
    pub source: Source,
    /// The program to run.
    pub program: Arc<ProgramImage>,
    /// Verdict bits after which the next function runs.
    pub proceed_on: u32,
    /// Read-only globals, encoded, sorted by name.
    pub globals: Vec<(String, Vec<u8>)>,
    /// Digest of `globals`: a change means a program swap.
    pub globals_digest: Digest,
    /// Config maps (the ones kfd writes), by name.
    pub maps: BTreeMap<String, DesiredMap>,
    /// State maps the config says something about (a seed), by name.
    pub state: BTreeMap<String, StateMap>,
    /// Sizes (`max_entries:`) the config gives, for any of the object's maps.
    pub sizes: BTreeMap<String, u32>,
    /// Maps of the object that are shared (`share:`), by object name. They
    /// are neither in `maps` nor in `state`; merging gathers every user's
    /// into [`DesiredState::shared`].
    pub shares: BTreeMap<String, ShareConfig>,
    /// The file and content it comes from (recorded with the live instance).
    pub origin: Origin,
}

/// Where a program comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramOrigin {
    /// A KF shipped inside kfd.
    Builtin(String),
    /// An object file.
    Object(std::path::PathBuf),
}

impl fmt::Display for ProgramOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin(n) => write!(f, "builtin:{n}"),
            Self::Object(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A program ready to load: object bytes and what kfd learned from them.
#[derive(Debug)]
pub struct ProgramImage {
    /// Where it comes from.
    pub origin: ProgramOrigin,
    /// The program (function symbol) to load from the object.
    pub symbol: String,
    /// XDP: the program handles multi-buffer packets (`SEC("xdp.frags")`).
    pub frags: bool,
    /// The ELF object.
    pub bytes: Arc<[u8]>,
    /// SHA-256 over the object and the program name: a change means a program swap.
    pub digest: Digest,
    /// Whether the program ends with `kf_next` (uses the chain's `kf_progs`).
    /// One that does not can only run last.
    pub uses_abi: bool,
    /// The object's own maps (not the chain's `kf_*`, not global data), by name.
    pub maps: BTreeMap<String, MapShape>,
    /// The chain maps (`kf_*`) the object declares; they must fit the chain's pins.
    pub chain_maps: BTreeMap<String, MapShape>,
}

#[cfg(test)]
impl ProgramImage {
    /// A copy (the image is shared behind an `Arc` elsewhere).
    pub fn clone_for_test(other: &ProgramImage) -> ProgramImage {
        ProgramImage {
            origin: other.origin.clone(),
            symbol: other.symbol.clone(),
            frags: other.frags,
            bytes: other.bytes.clone(),
            digest: other.digest,
            uses_abi: other.uses_abi,
            maps: other.maps.clone(),
            chain_maps: other.chain_maps.clone(),
        }
    }
}

/// Renders encoded keys and values for humans (plan and status output).
pub trait EntryFormat: Send + Sync + fmt::Debug {
    /// A key as config would write it.
    fn key(&self, bytes: &[u8]) -> String;
    /// A value as config would write it.
    fn value(&self, bytes: &[u8]) -> String;
}

/// Hex for both, when nothing better is known.
#[derive(Debug, Default)]
pub struct HexFormat;

impl EntryFormat for HexFormat {
    fn key(&self, bytes: &[u8]) -> String {
        crate::entries::hex(bytes)
    }
    fn value(&self, bytes: &[u8]) -> String {
        crate::entries::hex(bytes)
    }
}

/// One config map of a function.
#[derive(Debug, Clone)]
pub struct DesiredMap {
    /// Its shape in the object.
    pub shape: MapShape,
    /// For a map-in-map: the shape of the inner maps, whose entries
    /// `entries` are (the outer map has one slot, key 0).
    pub inner: Option<MapShape>,
    /// `update: auto` swaps when more than this fraction of entries change
    /// (None: the global `--swap-threshold`).
    pub swap_threshold: Option<f64>,
    /// How changes should land.
    pub update: UpdateMode,
    /// The entries, encoded. Shared between the chains of a multi-interface function.
    pub entries: Arc<EntrySet>,
    /// Seed entries: written when their key is missing, then the
    /// program's (never overwritten, deleted or reported as drift).
    pub seed: Arc<EntrySet>,
    /// Where the map is configured.
    pub source: Source,
    /// How to print its entries.
    pub format: Arc<dyn EntryFormat>,
}

/// A state map (the program's) that config seeds.
#[derive(Debug, Clone)]
pub struct StateMap {
    /// Entries written when their key is missing (and in a fresh map).
    pub seed: Arc<EntrySet>,
    /// Where the map is configured.
    pub source: Source,
    /// How to print its entries.
    pub format: Arc<dyn EntryFormat>,
}

impl DesiredFunction {
    /// The shape of the object's map `name` as this function creates it
    /// (with the config's size, where it gives one).
    pub fn shape(&self, name: &str) -> Option<MapShape> {
        let mut shape = *self.program.maps.get(name)?;
        if let Some(size) = self.sizes.get(name) {
            shape.max_entries = *size;
        }
        Some(shape)
    }

    /// Every map of the object with the shape it is created with.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, MapShape)> + '_ {
        self.program
            .maps
            .keys()
            .filter_map(|n| self.shape(n).map(|s| (n.as_str(), s)))
    }

    /// The seed of map `name`, config or state.
    pub fn seed(&self, name: &str) -> Option<&Arc<EntrySet>> {
        self.maps
            .get(name)
            .map(|m| &m.seed)
            .or_else(|| self.state.get(name).map(|m| &m.seed))
            .filter(|s| !s.is_empty())
    }
}

impl DesiredState {
    /// Total number of functions over all chains.
    pub fn function_count(&self) -> usize {
        self.chains.values().map(|c| c.functions.len()).sum()
    }
}
