//! Loading one program instance from an ELF object: kfd's own thin loader on
//! aya-obj (parsing, relocation, CO-RE) and raw `bpf()` (BTF, maps, the
//! program), so that libbpf-style objects load unchanged:
//!
//! - the hook decides the program type, whatever the section is called
//!   (`SEC("tc")`, `tcx/ingress`, `xdp_foo`: see `btf::elfpatch`);
//! - every map is created here, never pinned by the object's own
//!   `pinning` attribute: kfd pins what it decides to, under its root;
//! - a map the object leaves unsized gets its size from config;
//! - pinned maps are reused only after their shape is checked (aya 0.14
//!   reused pins without checking).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::OnceLock;

use aya_obj::btf::{Btf, BtfFeatures};
use aya_obj::generated::{BPF_F_XDP_HAS_FRAGS, bpf_attach_type, bpf_prog_type};
use aya_obj::{EbpfSectionKind, Map, Object, ProgramSection};

use super::map::{ByteMap, MapError};
use super::sys::{self, MapBtf, MapCreate, ProgInfo, ProgLoad, Refused};
use crate::btf::elfpatch::{self, ElfPatchError};

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
    /// XDP.
    Xdp,
    /// TC (`SCHED_CLS`).
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

/// Whether a load may create pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A real load: a [`PinnedMap`] that does not exist yet is created and
    /// pinned at its path.
    Pin,
    /// A check (`kfd plan`): nothing is pinned; maps that are not pinned
    /// yet are created, used for the verifier, and dropped.
    Check,
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
    /// XDP: the program handles multi-buffer packets (`xdp.frags`).
    pub frags: bool,
    /// Maps shared through pins (chain maps, state maps). Others are created fresh.
    pub pinned: Vec<PinnedMap<'a>>,
    /// Sizes for maps, by name, where the config sets them (or the object
    /// leaves them open).
    pub sizes: Vec<(&'a str, u32)>,
    /// Read-only globals to set, as encoded bytes.
    pub globals: Vec<(&'a str, &'a [u8])>,
    /// Whether pins may be created.
    pub mode: Mode,
}

/// A loaded program instance: its fd and every map it uses, by object name.
#[derive(Debug)]
pub struct Loaded {
    /// The program.
    pub prog: OwnedFd,
    /// The kernel's view of it.
    pub info: ProgInfo,
    /// Maps of the object by name (including pinned ones; not global data).
    pub maps: BTreeMap<String, ByteMap>,
}

/// Loading errors. Each names the map or program it is about; the caller
/// adds the function, its config and the object.
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
    /// Opening or pinning a map failed.
    #[error(transparent)]
    Map(#[from] MapError),
    /// The object could not be prepared for parsing.
    #[error("reading the object: {0}")]
    Elf(#[from] ElfPatchError),
    /// aya-obj could not parse the object.
    #[error("parsing the object: {0}")]
    Parse(String),
    /// The object has no such program.
    #[error("object has no program `{program}` (it has: {available})")]
    NoProgram {
        /// Requested.
        program: String,
        /// What it has.
        available: String,
    },
    /// A global could not be set.
    #[error("setting globals: {0}")]
    Globals(String),
    /// The object's BTF could not be fixed up for this kernel.
    #[error("preparing the object's BTF: {0}")]
    Btf(String),
    /// A CO-RE relocation failed.
    #[error("CO-RE relocation against the kernel's BTF: {0}")]
    Core(String),
    /// Map or call relocation failed.
    #[error("relocating the program: {0}")]
    Relocate(String),
    /// A map has no size: neither the object nor the config gives one.
    #[error("map {map} has max_entries 0: set maps.{map}.max_entries in the config")]
    NoSize {
        /// The map.
        map: String,
    },
    /// The kernel refused to create a map.
    #[error("creating map {map} ({shape}): {source}{hint}")]
    CreateMap {
        /// The map.
        map: String,
        /// Its type, sizes and flags, for the reader.
        shape: String,
        /// The failure.
        #[source]
        source: sys::SysError,
        /// What to do about it, where known.
        hint: String,
    },
    /// The verifier (or BPF_PROG_LOAD) refused the program.
    #[error("the kernel refused program `{program}`: {errno}{log_tail}")]
    Rejected {
        /// The program.
        program: String,
        /// The syscall error.
        errno: std::io::Error,
        /// The last lines of the verifier log, each after a newline.
        log_tail: String,
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

/// The kernel's BTF, parsed once per process (CO-RE relocations need it).
fn vmlinux() -> Result<&'static Btf, LoadError> {
    static VMLINUX: OnceLock<Result<Btf, String>> = OnceLock::new();
    VMLINUX
        .get_or_init(|| Btf::from_sys_fs().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| LoadError::Core(e.clone()))
}

/// Map types the kernel refuses BTF key/value ids for.
fn takes_btf_ids(map_type: u32) -> bool {
    use aya_obj::generated::bpf_map_type::*;
    ![
        BPF_MAP_TYPE_PERF_EVENT_ARRAY,
        BPF_MAP_TYPE_CGROUP_ARRAY,
        BPF_MAP_TYPE_STACK_TRACE,
        BPF_MAP_TYPE_ARRAY_OF_MAPS,
        BPF_MAP_TYPE_HASH_OF_MAPS,
        BPF_MAP_TYPE_DEVMAP,
        BPF_MAP_TYPE_DEVMAP_HASH,
        BPF_MAP_TYPE_CPUMAP,
        BPF_MAP_TYPE_XSKMAP,
        BPF_MAP_TYPE_SOCKMAP,
        BPF_MAP_TYPE_SOCKHASH,
        BPF_MAP_TYPE_QUEUE,
        BPF_MAP_TYPE_STACK,
        BPF_MAP_TYPE_RINGBUF,
    ]
    .iter()
    .any(|t| *t as u32 == map_type)
}

fn is_map_in_map(map_type: u32) -> bool {
    crate::model::map_type::is_map_in_map(map_type)
}

/// Loads one program instance. Nothing is pinned except the shared maps that
/// did not exist yet (in [`Mode::Pin`]); the caller pins the program and the
/// fresh maps once the whole change is ready.
pub fn load(req: &LoadRequest<'_>) -> Result<Loaded, LoadError> {
    for p in &req.pinned {
        check_pin(p.name, &p.path, &p.shape)?;
    }
    let patched = elfpatch::prepare(req.object, |name| ProgramSection::from_str(name).is_ok())?;
    let mut obj = Object::parse(&patched.bytes).map_err(|e| LoadError::Parse(chain(&e)))?;
    if !obj.programs.contains_key(req.program) {
        let mut names: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        names.sort_unstable();
        return Err(LoadError::NoProgram {
            program: req.program.to_owned(),
            available: names.join(", "),
        });
    }
    if !req.globals.is_empty() {
        let globals: HashMap<&str, (&[u8], bool)> =
            req.globals.iter().map(|(n, b)| (*n, (*b, true))).collect();
        obj.patch_map_data(globals)
            .map_err(|e| LoadError::Globals(chain(&e)))?;
    }
    // Every BTF feature is there on the kernels kfd supports (5.15+).
    let features = BtfFeatures::new(true, true, true, true, true, true, true, true);
    let btf = obj
        .fixup_and_sanitize_btf(&features)
        .map_err(|e| LoadError::Btf(chain(&e)))?
        .map(|b| b.to_bytes());
    // Without BTF a program still loads (it loses its line info and
    // callbacks); with BTF the kernel refuses, the reason is kept.
    let btf_fd = match btf.as_deref().map(sys::btf_load) {
        Some(Ok(fd)) => Some(fd),
        Some(Err(_)) | None => None,
    };
    if obj.has_btf_relocations() {
        obj.relocate_btf(vmlinux()?)
            .map_err(|e| LoadError::Core(chain(&e)))?;
    }

    let maps = create_maps(&mut obj, req, btf_fd.as_ref().map(|f| f.as_fd()))?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    let relocs: Vec<(String, i32, Map)> = maps
        .iter()
        .map(|(n, m)| (n.clone(), m.fd.as_raw_fd(), obj.maps[n].clone()))
        .collect();
    obj.relocate_maps(
        relocs.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)),
        &text_sections,
    )
    .map_err(|e| LoadError::Relocate(chain(&e)))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| LoadError::Relocate(chain(&e)))?;

    let program = &obj.programs[req.program];
    let Some(function) = obj.functions.get(&program.function_key()) else {
        return Err(LoadError::Relocate(format!(
            "program `{}` has no code after linking",
            req.program
        )));
    };
    let insns: Vec<u8> = function
        .instructions
        .iter()
        .flat_map(|i| {
            // SAFETY: bpf_insn is 8 bytes of plain data.
            unsafe { std::mem::transmute::<aya_obj::generated::bpf_insn, [u8; 8]>(*i) }
        })
        .collect();
    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    let (prog_type, expected) = match req.kind {
        ProgKind::Xdp => (
            bpf_prog_type::BPF_PROG_TYPE_XDP as u32,
            bpf_attach_type::BPF_XDP as u32,
        ),
        ProgKind::Classifier => (bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS as u32, 0),
    };
    let license = program.license.clone();
    let name = CString::new(req.program).unwrap_or_default();
    let prog = sys::prog_load(&ProgLoad {
        prog_type,
        expected_attach_type: expected,
        flags: if req.frags && req.kind == ProgKind::Xdp {
            BPF_F_XDP_HAS_FRAGS
        } else {
            0
        },
        name: name.to_str().unwrap_or(req.program),
        insns: &insns,
        license: &license,
        btf: btf_fd
            .as_ref()
            .map(|fd| (fd.as_fd(), &func_info[..], &line_info[..])),
    })
    .map_err(|Refused { error, log }| LoadError::Rejected {
        program: req.program.to_owned(),
        errno: error.source,
        log_tail: tail(&log, 12),
    })?;
    let info = sys::prog_info(prog.as_fd())?;
    let maps = maps
        .into_iter()
        .filter(|(_, m)| !m.data)
        .map(|(n, m)| Ok((n, ByteMap::from_fd(m.fd)?)))
        .collect::<Result<_, LoadError>>()?;
    Ok(Loaded { prog, info, maps })
}

/// A map made (or opened) for a load.
struct Made {
    fd: OwnedFd,
    /// Global data (`.rodata`, `.data`, `.bss`): internal to the instance.
    data: bool,
}

/// Creates (or opens from its pin) every map of the object: plain maps
/// first, then maps of maps (which need their inner template).
fn create_maps(
    obj: &mut Object,
    req: &LoadRequest<'_>,
    btf: Option<BorrowedFd<'_>>,
) -> Result<BTreeMap<String, Made>, LoadError> {
    let mut names: Vec<String> = obj.maps.keys().cloned().collect();
    names.sort_by_key(|n| (is_map_in_map(obj.maps[n].map_type()), n.clone()));
    let mut out = BTreeMap::new();
    for name in names {
        let pinned = req.pinned.iter().find(|p| p.name == name);
        if let Some(p) = pinned.filter(|p| p.path.exists()) {
            let map = ByteMap::from_pin(&p.path)?;
            let fd = map.fd().try_clone_to_owned().map_err(LoadError::Dup)?;
            out.insert(name, Made { fd, data: false });
            continue;
        }
        let Some(m) = obj.maps.get_mut(&name) else {
            continue;
        };
        let data = matches!(
            m.section_kind(),
            EbpfSectionKind::Data | EbpfSectionKind::Rodata | EbpfSectionKind::Bss
        );
        if let Some((_, size)) = req.sizes.iter().find(|(n, _)| *n == name) {
            m.set_max_entries(*size);
        }
        if m.max_entries() == 0 {
            return Err(LoadError::NoSize { map: name });
        }
        let fd = create_one(&name, m, btf)?;
        if data {
            fill_data(&name, m, fd.as_fd())?;
        }
        if let (Some(p), Mode::Pin) = (pinned, req.mode) {
            sys::obj_pin(fd.as_fd(), &p.path).map_err(|source| MapError::Sys {
                map: format!("{name} (pinning at {})", p.path.display()),
                source,
            })?;
        }
        out.insert(name, Made { fd, data });
    }
    Ok(out)
}

fn create_one(name: &str, m: &Map, btf: Option<BorrowedFd<'_>>) -> Result<OwnedFd, LoadError> {
    let inner = match m.inner() {
        Some(inner) if inner.max_entries() == 0 => {
            return Err(LoadError::NoSize {
                map: format!("{name}'s inner map"),
            });
        }
        Some(inner) => Some(create_one(&format!("{name}.inner"), &inner, btf)?),
        None => None,
    };
    let spec = MapCreate {
        name,
        map_type: m.map_type(),
        key_size: m.key_size(),
        value_size: m.value_size(),
        max_entries: m.max_entries(),
        map_flags: m.map_flags(),
    };
    let types = match (m, btf) {
        (Map::Btf(b), Some(btf)) if takes_btf_ids(m.map_type()) => Some(MapBtf {
            btf,
            key_type_id: b.def.btf_key_type_id,
            value_type_id: b.def.btf_value_type_id,
        }),
        _ => None,
    };
    let created = sys::map_create_typed(&spec, inner.as_ref().map(|f| f.as_fd()), types);
    // Some kernels know a type's BTF ids for fewer map types than others:
    // the ids are only for display, so try once more without them.
    let created = match created {
        Err(e) if types.is_some() && e.errno() == Some(sys::ENOTSUPP) => {
            sys::map_create_typed(&spec, inner.as_ref().map(|f| f.as_fd()), None)
        }
        other => other,
    };
    created.map_err(|source| {
        let hint = match source.errno() {
            Some(libc::EINVAL) if m.key_size() == 0 || m.value_size() == 0 => {
                " (a key or value size of 0: is the map's type declared?)".to_owned()
            }
            Some(libc::E2BIG | libc::ENOMEM) => {
                format!(
                    " (max_entries {} may be too large: set maps.{name}.max_entries)",
                    m.max_entries()
                )
            }
            _ => String::new(),
        };
        LoadError::CreateMap {
            map: name.to_owned(),
            shape: format!(
                "{}, key {} B, value {} B, max_entries {}, flags {:#x}",
                crate::model::map_type::name(m.map_type()),
                m.key_size(),
                m.value_size(),
                m.max_entries(),
                m.map_flags()
            ),
            source,
            hint,
        }
    })
}

/// Writes a global-data map's initial value (and freezes `.rodata`).
fn fill_data(name: &str, m: &Map, fd: BorrowedFd<'_>) -> Result<(), LoadError> {
    let err = |source| MapError::Sys {
        map: name.to_owned(),
        source,
    };
    if !m.data().is_empty() {
        sys::map_update(fd, &0u32.to_ne_bytes(), m.data(), 0).map_err(err)?;
    }
    if m.section_kind() == EbpfSectionKind::Rodata {
        sys::map_freeze(fd).map_err(err)?;
    }
    Ok(())
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cause = c.source();
    }
    s
}

/// The last `lines` non-empty lines of a verifier log, each after a newline.
fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("\n{l}"))
        .collect()
}
