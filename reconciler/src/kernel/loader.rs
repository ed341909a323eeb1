//! Loading one program instance from an ELF object through aya: relocation,
//! BTF, map creation (reusing pinned maps where asked), globals, verifier.
//!
//! aya 0.14 reuses a pinned map without checking that it fits the object's
//! definition, so every pin handed to aya is checked here first.

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};
use aya::programs::{Program, ProgramError};

use super::map::{ByteMap, MapError};
use super::sys::{self, ProgInfo};

pub use crate::model::MapShape;

/// The shape of an existing map.
pub fn shape_of(info: &sys::MapInfo) -> MapShape {
    MapShape {
        map_type: info.map_type,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        map_flags: info.map_flags,
    }
}

/// The program type a hook needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgKind {
    /// `SEC("xdp")`.
    Xdp,
    /// `SEC("classifier")` (TC).
    Classifier,
}

/// A map to reuse from, or create at, a pin path.
#[derive(Debug, Clone)]
pub struct PinnedMap<'a> {
    /// The map's name in the object.
    pub name: &'a str,
    /// Where it is (or will be) pinned.
    pub path: PathBuf,
    /// What the object defines; an existing pin must match.
    pub shape: MapShape,
}

/// One program instance to load.
#[derive(Debug, Clone)]
pub struct LoadRequest<'a> {
    /// The ELF object.
    pub object: &'a [u8],
    /// The program (function symbol) to load.
    pub program: &'a str,
    /// The program type the hook needs.
    pub kind: ProgKind,
    /// Maps shared through pins (chain maps, state maps). Others are created fresh.
    pub pinned: Vec<PinnedMap<'a>>,
    /// Read-only globals to set, as encoded bytes.
    pub globals: Vec<(&'a str, &'a [u8])>,
}

/// A loaded program instance: its fd and every map it uses, by object name.
#[derive(Debug)]
pub struct Loaded {
    /// The program.
    pub prog: OwnedFd,
    /// The kernel's view of it.
    pub info: ProgInfo,
    /// Maps of the object by name (including pinned ones).
    pub maps: BTreeMap<String, ByteMap>,
}

/// Loading errors.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A pinned map exists but does not fit the object's definition.
    #[error("pinned map {path} is incompatible with the object's `{name}`: {mismatch}")]
    Incompatible {
        /// Map name.
        name: String,
        /// Pin path.
        path: PathBuf,
        /// The first difference.
        mismatch: String,
    },
    /// Opening a pinned map failed.
    #[error(transparent)]
    Map(#[from] MapError),
    /// aya rejected the object (relocation, BTF, map creation).
    #[error("preparing object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    /// The object has no such program.
    #[error("object has no program `{program}` (it has: {available})")]
    NoProgram {
        /// Requested.
        program: String,
        /// What it has.
        available: String,
    },
    /// The program is of the wrong type for the hook.
    #[error("program `{program}` is not {expected} (check its SEC())")]
    WrongType {
        /// The program.
        program: String,
        /// What the hook needs.
        expected: &'static str,
    },
    /// The verifier (or BPF_PROG_LOAD) refused the program.
    #[error("the kernel refused program `{program}`: {errno}\n{log_tail}")]
    Rejected {
        /// The program.
        program: String,
        /// The syscall error.
        errno: std::io::Error,
        /// The last lines of the verifier log.
        log_tail: String,
    },
    /// Another aya program error.
    #[error("loading program `{program}`: {source}")]
    Program {
        /// The program.
        program: String,
        /// The failure.
        #[source]
        source: Box<ProgramError>,
    },
    /// Duplicating an fd failed.
    #[error("duplicating an fd: {0}")]
    Dup(#[source] std::io::Error),
    /// Reading the loaded program's info failed.
    #[error(transparent)]
    Sys(#[from] sys::SysError),
}

/// Verifies that an existing pin at `path` fits `shape`; Ok if nothing is pinned there.
pub fn check_pin(name: &str, path: &Path, shape: &MapShape) -> Result<(), LoadError> {
    if !path.exists() {
        return Ok(());
    }
    let map = ByteMap::from_pin(path)?;
    let pinned = shape_of(map.info());
    match pinned.mismatch(shape) {
        None => Ok(()),
        Some(mismatch) => Err(LoadError::Incompatible {
            name: name.to_owned(),
            path: path.to_owned(),
            mismatch,
        }),
    }
}

/// Loads one program instance. Nothing is pinned except the shared maps that
/// did not exist yet (aya pins those as it creates them); the caller pins
/// the program and fresh maps once the whole change is ready.
pub fn load(req: &LoadRequest<'_>) -> Result<Loaded, LoadError> {
    for p in &req.pinned {
        check_pin(p.name, &p.path, &p.shape)?;
    }
    let mut loader = aya::EbpfLoader::new();
    for p in &req.pinned {
        loader.map_pin_path(p.name, p.path.as_path());
    }
    for (name, bytes) in &req.globals {
        loader.override_global(name, *bytes, true);
    }
    let mut ebpf = loader
        .load(req.object)
        .map_err(|e| LoadError::Object(Box::new(e)))?;

    if ebpf.program(req.program).is_none() {
        let mut names: Vec<_> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
        names.sort();
        return Err(LoadError::NoProgram {
            program: req.program.to_owned(),
            available: names.join(", "),
        });
    }
    let Some(program) = ebpf.program_mut(req.program) else {
        unreachable!("checked just above");
    };
    let loaded = match (req.kind, &mut *program) {
        (ProgKind::Xdp, Program::Xdp(p)) => p.load(),
        (ProgKind::Classifier, Program::SchedClassifier(p)) => p.load(),
        (ProgKind::Xdp, _) => {
            return Err(LoadError::WrongType {
                program: req.program.to_owned(),
                expected: "an XDP program (SEC(\"xdp\"))",
            });
        }
        (ProgKind::Classifier, _) => {
            return Err(LoadError::WrongType {
                program: req.program.to_owned(),
                expected: "a TC program (SEC(\"classifier\"))",
            });
        }
    };
    if let Err(e) = loaded {
        return Err(match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => LoadError::Rejected {
                program: req.program.to_owned(),
                errno: io_error,
                log_tail: tail(&verifier_log.to_string(), 12),
            },
            other => LoadError::Program {
                program: req.program.to_owned(),
                source: Box::new(other),
            },
        });
    }
    let prog_fd = program
        .fd()
        .map_err(|source| LoadError::Program {
            program: req.program.to_owned(),
            source: Box::new(source),
        })?
        .as_fd()
        .try_clone_to_owned()
        .map_err(LoadError::Dup)?;
    let info = sys::prog_info(prog_fd.as_fd())?;

    let mut maps = BTreeMap::new();
    for (name, map) in ebpf.maps() {
        let Some(data) = map_data(map) else { continue };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(LoadError::Dup)?;
        maps.insert(name.to_owned(), ByteMap::from_fd(fd)?);
    }
    Ok(Loaded {
        prog: prog_fd,
        info,
        maps,
    })
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

macro_rules! data_of {
    ($map:expr, $($variant:ident),+ $(,)?) => {
        match $map {
            $(Map::$variant(data) => Some(data),)+
            #[allow(unreachable_patterns)]
            _ => None,
        }
    };
}

/// aya has no accessor for the `MapData` inside a `Map`.
fn map_data(map: &Map) -> Option<&MapData> {
    data_of!(
        map,
        Array,
        ArrayOfMaps,
        BloomFilter,
        CgroupArray,
        CgroupStorage,
        CgrpStorage,
        CpuMap,
        DevMap,
        DevMapHash,
        HashMap,
        HashOfMaps,
        InodeStorage,
        LpmTrie,
        LruHashMap,
        PerCpuArray,
        PerCpuCgroupStorage,
        PerCpuHashMap,
        PerCpuLruHashMap,
        PerfEventArray,
        ProgramArray,
        Queue,
        ReusePortSockArray,
        RingBuf,
        SockHash,
        SockMap,
        SkStorage,
        Stack,
        StackTraceMap,
        Unsupported,
        XskMap,
    )
}
