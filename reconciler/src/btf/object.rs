//! What an eBPF object file holds: its programs, map definitions, global
//! variables and BTF, read the way libbpf reads them.
//!
//! - Programs are global functions in executable sections other than `.text`
//!   (`.text` holds subprograms, which are only called).
//! - Maps come from the `.maps` DATASEC (BTF-defined maps: `__uint`, `__type`,
//!   `__array` members, see `bpf_helpers.h`) and from a legacy `maps` section
//!   (`struct bpf_map_def`, found through the symbol table).
//! - Globals are the variables of the `.data*`, `.rodata*` and `.bss*` DATASECs;
//!   unlinked clang output leaves their BTF offsets at 0, so offsets come from
//!   the symbol table.
//! - For each program, the maps its code references: relocations against map
//!   symbols in the program's function, followed through BPF-to-BPF calls.

use std::collections::{BTreeSet, HashMap};

use object::{Object, ObjectSection, ObjectSymbol, SectionIndex, SymbolKind};

use super::types::{Btf, BtfError, TypeKind};

/// `BPF_MAP_TYPE_HASH`.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PROG_ARRAY`.
pub const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
/// `BPF_MAP_TYPE_PERCPU_HASH`.
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
pub const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS`.
pub const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
/// `BPF_MAP_TYPE_HASH_OF_MAPS`.
pub const BPF_MAP_TYPE_HASH_OF_MAPS: u32 = 13;

/// `EM_BPF`'s section flag for executable code.
const SHF_EXECINSTR: u64 = 0x4;
/// Size of one BPF instruction.
const INSN_SIZE: u64 = 8;
/// `BPF_JMP | BPF_CALL`.
const OP_CALL: u8 = 0x85;
/// `BPF_LD | BPF_IMM | BPF_DW` (the 16-byte load of a map or function address).
const OP_LD_IMM64: u8 = 0x18;
/// `src_reg` of a call to a BPF function (rather than a helper).
const PSEUDO_CALL: u8 = 1;

/// Why an object could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The bytes are not a readable object file.
    #[error("not an ELF object: {source}")]
    Parse {
        /// The ELF reader's error.
        source: object::Error,
    },
    /// A readable object, but not ELF (PE, Mach-O, ...).
    #[error("not an ELF object (it is {format})")]
    NotElf {
        /// The format found.
        format: String,
    },
    /// An ELF object for another machine.
    #[error("not an eBPF object: it is built for {machine} (compile with clang -target bpf)")]
    NotBpf {
        /// The architecture found.
        machine: String,
    },
    /// Some part of the ELF could not be read.
    #[error("malformed ELF: reading {what}: {source}")]
    Elf {
        /// What was being read, e.g. "section xdp".
        what: String,
        /// The ELF reader's error.
        source: object::Error,
    },
    /// No `.BTF` section.
    #[error("no .BTF section (compile with clang -g)")]
    NoBtf,
    /// The `.BTF` section is malformed.
    #[error("malformed .BTF section: {source}")]
    Btf {
        /// What is wrong with it.
        #[from]
        source: BtfError,
    },
    /// A map definition kfd cannot read.
    #[error("map {name}: {reason}")]
    Map {
        /// The map's name.
        name: String,
        /// What is wrong with its definition.
        reason: MapDefError,
    },
    /// A DATASEC variable that is not a VAR.
    #[error("section {section}: entry [{type_id}] is not a variable")]
    NotAVariable {
        /// The data section.
        section: String,
        /// The offending type id.
        type_id: u32,
    },
}

/// What is wrong with a map definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapDefError {
    /// The `.maps` variable's type is not a struct.
    #[error("the definition is a {found}, not a struct")]
    NotAStruct {
        /// The kind found, e.g. "INT".
        found: &'static str,
    },
    /// A member that does not have the shape `__uint`/`__type`/`__array` give it.
    #[error("field {field} must be declared with {expected}")]
    BadField {
        /// The member.
        field: String,
        /// The macro that declares it, e.g. "__uint(field, N)".
        expected: &'static str,
    },
    /// A member libbpf does not know.
    #[error("unknown field {field}")]
    UnknownField {
        /// The member.
        field: String,
    },
    /// `key_size` (or `value_size`) disagrees with the size of `key` (`value`).
    #[error("{field} {declared} disagrees with the {from_type}-byte type given for it")]
    SizeMismatch {
        /// "key_size" or "value_size".
        field: &'static str,
        /// The declared size.
        declared: u32,
        /// The size of the declared type.
        from_type: u32,
    },
    /// A key or value type without a size.
    #[error("the {field} type has no size")]
    UnsizedType {
        /// "key" or "value".
        field: &'static str,
    },
    /// A legacy `maps` definition shorter than `struct bpf_map_def`'s 5 fields.
    #[error("legacy definition is {size} bytes, struct bpf_map_def needs at least 20")]
    LegacyTooShort {
        /// The definition's size.
        size: u64,
    },
    /// A legacy definition outside its section's data.
    #[error("legacy definition at offset {offset} lies outside the maps section")]
    LegacyOutOfBounds {
        /// The symbol's offset.
        offset: u64,
    },
}

/// A program: a global function in an executable section other than `.text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInfo {
    /// The function's symbol name, e.g. `blocklist`.
    pub name: String,
    /// Its ELF section, e.g. `xdp`, `tc`, `classifier`, `xdp.frags`: libbpf derives the program type from it.
    pub section: String,
    /// Names of the maps its code references, directly or through the
    /// subprograms it calls; sorted.
    pub maps: Vec<String>,
}

/// Where a map definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSource {
    /// The `.maps` section, described by BTF.
    Btf,
    /// A legacy `maps` section (`struct bpf_map_def`), without types.
    Legacy,
    /// The inner map definition of a map-in-map (`__array(values, ...)`).
    Inner,
}

/// A map definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    /// The map's name (the variable's name; `<outer>.inner` for an inner definition).
    pub name: String,
    /// `BPF_MAP_TYPE_*` (see the constants of this module).
    pub map_type: u32,
    /// Key size in bytes: `key_size`, or the size of the `key` type.
    pub key_size: u32,
    /// Value size in bytes: `value_size`, the size of the `value` type, or 4 (a
    /// file descriptor) for map-in-map and `__array` program arrays.
    pub value_size: u32,
    /// `max_entries`.
    pub max_entries: u32,
    /// `map_flags` (`BPF_F_*`).
    pub map_flags: u32,
    /// `pinning` (`LIBBPF_PIN_*`).
    pub pinning: u32,
    /// `numa_node`.
    pub numa_node: u32,
    /// `map_extra` (bloom filter hash count, ...).
    pub map_extra: u64,
    /// The `key` type id as declared (typedefs kept, so `__be32` is visible); `None` without BTF types.
    pub key_type: Option<u32>,
    /// The `value` type id as declared; `None` without BTF types.
    pub value_type: Option<u32>,
    /// For map-in-map, the inner map's definition.
    pub inner: Option<Box<MapDef>>,
    /// Where the definition came from.
    pub source: MapSource,
}

/// A global variable of a data section, settable before load (`.rodata`) or after (`.data`, `.bss`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalVar {
    /// The variable's name.
    pub name: String,
    /// Its section: `.rodata`, `.data`, `.bss`, or a named one like `.rodata.str`.
    pub section: String,
    /// Its type (qualifiers kept: `const volatile __u32`).
    pub type_id: u32,
    /// Offset in the section, from the symbol table when the symbol exists.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Everything kfd needs to know about an object before loading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Programs, in section then symbol order.
    pub programs: Vec<ProgramInfo>,
    /// Map definitions: BTF-defined in `.maps` order, then legacy ones.
    pub maps: Vec<MapDef>,
    /// Global variables of the data sections.
    pub globals: Vec<GlobalVar>,
    /// The object's BTF.
    pub btf: Btf,
}

impl ObjectInfo {
    /// Whether `program`'s code references the map `map_name` (directly or
    /// through a subprogram). kfd uses it to tell whether a program speaks the
    /// kfd ABI: those reference `kf_progs`.
    pub fn references_map(&self, program: &str, map_name: &str) -> bool {
        self.program(program)
            .is_some_and(|p| p.maps.iter().any(|m| m == map_name))
    }

    /// The program with this function name.
    pub fn program(&self, name: &str) -> Option<&ProgramInfo> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The map with this name.
    pub fn map(&self, name: &str) -> Option<&MapDef> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// The global variable with this name.
    pub fn global(&self, name: &str) -> Option<&GlobalVar> {
        self.globals.iter().find(|g| g.name == name)
    }
}

/// Reads an eBPF ELF object: programs, maps, globals, BTF.
pub fn inspect(elf: &[u8]) -> Result<ObjectInfo, ObjectError> {
    let file = object::File::parse(elf).map_err(|source| ObjectError::Parse { source })?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(ObjectError::NotElf {
            format: format!("{:?}", file.format()),
        });
    }
    if file.architecture() != object::Architecture::Bpf {
        return Err(ObjectError::NotBpf {
            machine: format!("{:?}", file.architecture()),
        });
    }
    let btf_section = file.section_by_name(".BTF").ok_or(ObjectError::NoBtf)?;
    let btf_bytes = btf_section.data().map_err(|source| ObjectError::Elf {
        what: "section .BTF".into(),
        source,
    })?;
    let btf = Btf::parse(btf_bytes)?;
    let elf = Elf::read(&file)?;

    let mut maps = btf_maps(&btf)?;
    maps.extend(legacy_maps(&file, &elf)?);
    let globals = globals(&btf, &elf)?;
    let programs = programs(&elf);
    Ok(ObjectInfo {
        programs,
        maps,
        globals,
        btf,
    })
}

/// A symbol, reduced to what inspection needs.
#[derive(Debug, Clone)]
struct Sym {
    name: String,
    kind: SymbolKind,
    global: bool,
    section: Option<SectionIndex>,
    value: u64,
    size: u64,
}

/// An executable section: its code and relocations (offset → symbol index).
struct Code<'data> {
    name: String,
    data: &'data [u8],
    relocs: HashMap<u64, usize>,
}

/// The parts of the ELF inspection reads more than once.
struct Elf<'data> {
    little_endian: bool,
    /// Section index → name.
    section_names: HashMap<SectionIndex, String>,
    /// Executable sections by index.
    code: HashMap<SectionIndex, Code<'data>>,
    /// Symbols by symbol-table index.
    symbols: HashMap<usize, Sym>,
}

impl<'data> Elf<'data> {
    fn read(file: &object::File<'data>) -> Result<Self, ObjectError> {
        let mut section_names = HashMap::new();
        let mut code = HashMap::new();
        for section in file.sections() {
            let name = section.name().map_err(|source| ObjectError::Elf {
                what: format!("the name of section {}", section.index().0),
                source,
            })?;
            section_names.insert(section.index(), name.to_owned());
            let executable = matches!(section.flags(),
                object::SectionFlags::Elf { sh_flags } if sh_flags & SHF_EXECINSTR != 0);
            if !executable {
                continue;
            }
            let data = section.data().map_err(|source| ObjectError::Elf {
                what: format!("section {name}"),
                source,
            })?;
            let relocs = section
                .relocations()
                .filter_map(|(offset, reloc)| match reloc.target() {
                    object::RelocationTarget::Symbol(index) => Some((offset, index.0)),
                    _ => None,
                })
                .collect();
            code.insert(
                section.index(),
                Code {
                    name: name.to_owned(),
                    data,
                    relocs,
                },
            );
        }
        let mut symbols = HashMap::new();
        for symbol in file.symbols() {
            // Unnamed symbols (other than section symbols) carry nothing inspection needs.
            let name = symbol.name().unwrap_or_default().to_owned();
            symbols.insert(
                symbol.index().0,
                Sym {
                    name,
                    kind: symbol.kind(),
                    global: symbol.is_global(),
                    section: symbol.section_index(),
                    value: symbol.address(),
                    size: symbol.size(),
                },
            );
        }
        Ok(Elf {
            little_endian: file.is_little_endian(),
            section_names,
            code,
            symbols,
        })
    }

    fn section_named(&self, name: &str) -> Option<SectionIndex> {
        self.section_names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(index, _)| *index)
    }

    /// Function symbols of an executable section, sorted by offset.
    fn functions(&self, section: SectionIndex) -> Vec<&Sym> {
        let mut funcs: Vec<&Sym> = self
            .symbols
            .values()
            .filter(|s| s.section == Some(section) && s.kind == SymbolKind::Text)
            .collect();
        funcs.sort_by(|a, b| (a.value, &a.name).cmp(&(b.value, &b.name)));
        funcs
    }

    fn u32_at(&self, data: &[u8], offset: u64) -> Option<u32> {
        let start = usize::try_from(offset).ok()?;
        let bytes: [u8; 4] = data.get(start..start.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    }
}

/// The BTF-defined maps of the `.maps` DATASEC.
fn btf_maps(btf: &Btf) -> Result<Vec<MapDef>, ObjectError> {
    let mut maps = Vec::new();
    for (_, ty) in btf.types() {
        let TypeKind::Datasec { vars, .. } = &ty.kind else {
            continue;
        };
        if ty.name != ".maps" {
            continue;
        }
        for var in vars {
            let Some(var_ty) = btf.ty(var.ty) else {
                continue;
            };
            let TypeKind::Var { target, .. } = var_ty.kind else {
                return Err(ObjectError::NotAVariable {
                    section: ".maps".into(),
                    type_id: var.ty,
                });
            };
            let name = var_ty.name.clone();
            let def = parse_map_def(btf, &name, target, MapSource::Btf).map_err(|reason| {
                ObjectError::Map {
                    name: name.clone(),
                    reason,
                }
            })?;
            maps.push(def);
        }
    }
    Ok(maps)
}

/// The number a `__uint(field, N)` member encodes: `int (*field)[N]`.
fn uint_field(btf: &Btf, member_ty: u32) -> Option<u32> {
    let TypeKind::Ptr { target } = btf.ty(btf.resolve(member_ty))?.kind else {
        return None;
    };
    match &btf.ty(btf.resolve(target))?.kind {
        TypeKind::Array(a) => Some(a.len),
        _ => None,
    }
}

/// The type a `__type(field, T)` member names: `T *field`.
fn type_field(btf: &Btf, member_ty: u32) -> Option<u32> {
    match btf.ty(btf.resolve(member_ty))?.kind {
        TypeKind::Ptr { target } => Some(target),
        _ => None,
    }
}

/// Reads one BTF map definition struct. Inner definitions are read leniently
/// (unknown fields ignored) like libbpf does.
fn parse_map_def(
    btf: &Btf,
    name: &str,
    type_id: u32,
    source: MapSource,
) -> Result<MapDef, MapDefError> {
    let resolved = btf.resolve(type_id);
    let composite = match btf.ty(resolved).map(|t| &t.kind) {
        Some(TypeKind::Struct(c)) => c,
        other => {
            return Err(MapDefError::NotAStruct {
                found: other.map_or("VOID", TypeKind::kind_name),
            });
        }
    };
    let mut def = MapDef {
        name: name.to_owned(),
        map_type: 0,
        key_size: 0,
        value_size: 0,
        max_entries: 0,
        map_flags: 0,
        pinning: 0,
        numa_node: 0,
        map_extra: 0,
        key_type: None,
        value_type: None,
        inner: None,
        source,
    };
    let mut key_size = None;
    let mut value_size = None;
    let mut has_values = false;
    for member in &composite.members {
        let field = member.name.as_str();
        let uint = || {
            uint_field(btf, member.ty).ok_or_else(|| MapDefError::BadField {
                field: field.to_owned(),
                expected: "__uint(field, N)",
            })
        };
        match field {
            "type" => def.map_type = uint()?,
            "max_entries" => def.max_entries = uint()?,
            "map_flags" => def.map_flags = uint()?,
            "pinning" => def.pinning = uint()?,
            "numa_node" => def.numa_node = uint()?,
            "map_extra" => def.map_extra = u64::from(uint()?),
            "key_size" => key_size = Some(uint()?),
            "value_size" => value_size = Some(uint()?),
            "key" | "value" => {
                let ty = type_field(btf, member.ty).ok_or_else(|| MapDefError::BadField {
                    field: field.to_owned(),
                    expected: "__type(field, T)",
                })?;
                if field == "key" {
                    def.key_type = Some(ty);
                } else {
                    def.value_type = Some(ty);
                }
            }
            "values" => {
                has_values = true;
                def.inner = parse_values(btf, name, member.ty)?;
            }
            _ if source == MapSource::Inner => {}
            _ => {
                return Err(MapDefError::UnknownField {
                    field: field.to_owned(),
                });
            }
        }
    }
    def.key_size = sized(btf, "key", "key_size", def.key_type, key_size)?;
    def.value_size = sized(btf, "value", "value_size", def.value_type, value_size)?;
    if has_values && def.value_type.is_none() {
        // Map-in-map and program-array values are file descriptors.
        if def.value_size != 0 && def.value_size != 4 {
            return Err(MapDefError::SizeMismatch {
                field: "value_size",
                declared: def.value_size,
                from_type: 4,
            });
        }
        def.value_size = 4;
    }
    Ok(def)
}

/// The size of a key or value: the declared size, the type's size, and they must agree.
fn sized(
    btf: &Btf,
    field: &'static str,
    size_field: &'static str,
    ty: Option<u32>,
    declared: Option<u32>,
) -> Result<u32, MapDefError> {
    let from_type = match ty {
        Some(ty) => Some(btf.size_of(ty).ok_or(MapDefError::UnsizedType { field })?),
        None => None,
    };
    match (declared, from_type) {
        (Some(declared), Some(from_type)) if declared != from_type => {
            Err(MapDefError::SizeMismatch {
                field: size_field,
                declared,
                from_type,
            })
        }
        (Some(size), _) | (None, Some(size)) => Ok(size),
        (None, None) => Ok(0),
    }
}

/// `__array(values, struct inner)` is `typeof(struct inner) *values[]`: an
/// array of pointers to the inner definition. Program arrays use it with a
/// function prototype instead, which has no inner definition.
fn parse_values(
    btf: &Btf,
    outer: &str,
    member_ty: u32,
) -> Result<Option<Box<MapDef>>, MapDefError> {
    let bad = || MapDefError::BadField {
        field: "values".into(),
        expected: "__array(values, T)",
    };
    let TypeKind::Array(array) = &btf.ty(btf.resolve(member_ty)).ok_or_else(bad)?.kind else {
        return Err(bad());
    };
    let TypeKind::Ptr { target } = btf.ty(btf.resolve(array.elem)).ok_or_else(bad)?.kind else {
        return Err(bad());
    };
    match btf.ty(btf.resolve(target)).map(|t| &t.kind) {
        Some(TypeKind::Struct(_)) => Ok(Some(Box::new(parse_map_def(
            btf,
            &format!("{outer}.inner"),
            target,
            MapSource::Inner,
        )?))),
        Some(TypeKind::FuncProto { .. }) => Ok(None),
        _ => Err(bad()),
    }
}

/// Legacy `struct bpf_map_def` maps of a `maps` section, one per symbol.
fn legacy_maps(file: &object::File<'_>, elf: &Elf<'_>) -> Result<Vec<MapDef>, ObjectError> {
    let Some(section) = file.section_by_name("maps") else {
        return Ok(Vec::new());
    };
    let index = section.index();
    let data = section.data().map_err(|source| ObjectError::Elf {
        what: "section maps".into(),
        source,
    })?;
    let mut syms: Vec<&Sym> = elf
        .symbols
        .values()
        .filter(|s| {
            s.section == Some(index)
                && matches!(s.kind, SymbolKind::Data | SymbolKind::Unknown)
                && !s.name.is_empty()
        })
        .collect();
    syms.sort_by_key(|s| s.value);
    let count = syms.len() as u64;
    let mut maps = Vec::new();
    for sym in syms {
        let map_err = |reason| ObjectError::Map {
            name: sym.name.clone(),
            reason,
        };
        // Symbols without a size share the section evenly, as libbpf assumes.
        let size = if sym.size > 0 {
            sym.size
        } else {
            data.len() as u64 / count.max(1)
        };
        if size < 20 {
            return Err(map_err(MapDefError::LegacyTooShort { size }));
        }
        let field = |i: u64| {
            elf.u32_at(data, sym.value.saturating_add(4 * i))
                .ok_or(MapDefError::LegacyOutOfBounds { offset: sym.value })
        };
        let read = || -> Result<MapDef, MapDefError> {
            Ok(MapDef {
                name: sym.name.clone(),
                map_type: field(0)?,
                key_size: field(1)?,
                value_size: field(2)?,
                max_entries: field(3)?,
                map_flags: field(4)?,
                pinning: 0,
                numa_node: 0,
                map_extra: 0,
                key_type: None,
                value_type: None,
                inner: None,
                source: MapSource::Legacy,
            })
        };
        maps.push(read().map_err(map_err)?);
    }
    Ok(maps)
}

/// Whether a DATASEC holds global data (as opposed to maps, license, kconfig, ksyms).
fn is_data_section(name: &str) -> bool {
    [".data", ".rodata", ".bss"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

fn globals(btf: &Btf, elf: &Elf<'_>) -> Result<Vec<GlobalVar>, ObjectError> {
    let mut globals = Vec::new();
    for (_, ty) in btf.types() {
        let TypeKind::Datasec { vars, .. } = &ty.kind else {
            continue;
        };
        if !is_data_section(&ty.name) {
            continue;
        }
        let section_index = elf.section_named(&ty.name);
        for var in vars {
            let Some(var_ty) = btf.ty(var.ty) else {
                continue;
            };
            let TypeKind::Var { target, .. } = var_ty.kind else {
                return Err(ObjectError::NotAVariable {
                    section: ty.name.clone(),
                    type_id: var.ty,
                });
            };
            let symbol = elf.symbols.values().find(|s| {
                s.name == var_ty.name && section_index.is_some() && s.section == section_index
            });
            let size = match var.size {
                0 => btf.size_of(target).unwrap_or(0),
                size => size,
            };
            globals.push(GlobalVar {
                name: var_ty.name.clone(),
                section: ty.name.clone(),
                type_id: target,
                offset: symbol.map_or(u64::from(var.offset), |s| s.value),
                size: u64::from(size),
            });
        }
    }
    Ok(globals)
}

fn programs(elf: &Elf<'_>) -> Vec<ProgramInfo> {
    let mut sections: Vec<(&SectionIndex, &Code<'_>)> = elf
        .code
        .iter()
        .filter(|(_, code)| code.name != ".text")
        .collect();
    sections.sort_by_key(|(index, _)| index.0);
    let mut programs = Vec::new();
    for (&index, code) in sections {
        for func in elf.functions(index) {
            if !func.global || func.name.is_empty() {
                continue;
            }
            programs.push(ProgramInfo {
                name: func.name.clone(),
                section: code.name.clone(),
                maps: referenced_maps(elf, index, func.value),
            });
        }
    }
    programs
}

/// The byte range of the function starting at `offset` in an executable
/// section: up to the next function symbol (sizes of local functions are not
/// always set), or to the symbol's own size when it has one.
fn function_range(elf: &Elf<'_>, section: SectionIndex, offset: u64) -> (u64, u64) {
    let len = elf.code.get(&section).map_or(0, |c| c.data.len() as u64);
    let funcs = elf.functions(section);
    let sized_end = funcs
        .iter()
        .find(|f| f.value == offset && f.size > 0)
        .map(|f| offset.saturating_add(f.size));
    let next = funcs
        .iter()
        .map(|f| f.value)
        .find(|&v| v > offset)
        .unwrap_or(len);
    (offset, sized_end.unwrap_or(next).min(next).min(len))
}

/// Names of the maps referenced by the function at `offset` of `section` and
/// by every function it calls or takes the address of.
fn referenced_maps(elf: &Elf<'_>, section: SectionIndex, offset: u64) -> Vec<String> {
    let mut maps = BTreeSet::new();
    let mut visited = BTreeSet::new();
    let mut todo = vec![(section, offset)];
    let map_sections: Vec<SectionIndex> = [".maps", "maps"]
        .iter()
        .filter_map(|n| elf.section_named(n))
        .collect();
    while let Some((section, start)) = todo.pop() {
        if !visited.insert((section.0, start)) {
            continue;
        }
        let Some(code) = elf.code.get(&section) else {
            continue;
        };
        let (start, end) = function_range(elf, section, start);
        let mut pc = start;
        while pc < end {
            let insn = usize::try_from(pc)
                .ok()
                .and_then(|i| code.data.get(i..i.checked_add(8)?));
            let Some(insn) = insn else { break };
            let opcode = insn[0];
            let src_reg = if elf.little_endian {
                insn[1] >> 4
            } else {
                insn[1] & 0x0f
            };
            let imm = elf.u32_at(insn, 4).map_or(0, |v| v as i32);
            if let Some(&sym_index) = code.relocs.get(&pc) {
                if let Some(sym) = elf.symbols.get(&sym_index) {
                    match sym.section {
                        Some(target) if map_sections.contains(&target) => {
                            if sym.kind == SymbolKind::Section {
                                // Against the section symbol: the map is at imm.
                                let at = sym.value.wrapping_add(imm as i64 as u64);
                                if let Some(m) = map_at(elf, target, at) {
                                    maps.insert(m);
                                }
                            } else {
                                maps.insert(sym.name.clone());
                            }
                        }
                        Some(target) if elf.code.contains_key(&target) => {
                            // libbpf: a call's target is sym + (imm + 1) instructions;
                            // a function address (ld_imm64) is sym + imm bytes.
                            let callee = if opcode == OP_CALL {
                                (i64::from(imm) + 1)
                                    .checked_mul(INSN_SIZE as i64)
                                    .map(|delta| sym.value.wrapping_add(delta as u64))
                            } else if opcode == OP_LD_IMM64 {
                                Some(sym.value.wrapping_add(imm as i64 as u64))
                            } else {
                                None
                            };
                            if let Some(callee) = callee {
                                todo.push((target, containing_function(elf, target, callee)));
                            }
                        }
                        _ => {}
                    }
                }
            } else if opcode == OP_CALL && src_reg == PSEUDO_CALL {
                // A call inside the same section needs no relocation.
                let callee = (i64::from(imm) + 1)
                    .checked_mul(INSN_SIZE as i64)
                    .map(|delta| pc.wrapping_add(delta as u64));
                if let Some(callee) = callee {
                    todo.push((section, containing_function(elf, section, callee)));
                }
            }
            pc += if opcode == OP_LD_IMM64 {
                2 * INSN_SIZE
            } else {
                INSN_SIZE
            };
        }
    }
    maps.into_iter().collect()
}

/// The start of the function containing `offset`, or `offset` itself when no
/// function symbol covers it.
fn containing_function(elf: &Elf<'_>, section: SectionIndex, offset: u64) -> u64 {
    elf.functions(section)
        .iter()
        .rev()
        .find(|f| f.value <= offset)
        .map_or(offset, |f| f.value)
}

/// The name of the map symbol defined at `offset` of a maps section.
fn map_at(elf: &Elf<'_>, section: SectionIndex, offset: u64) -> Option<String> {
    elf.symbols
        .values()
        .find(|s| {
            s.section == Some(section)
                && s.kind != SymbolKind::Section
                && !s.name.is_empty()
                && s.value == offset
        })
        .map(|s| s.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::test_support::{bundled, fixture_object, fixture_object_big_endian};
    use proptest::prelude::*;

    fn names(maps: &[MapDef]) -> Vec<&str> {
        maps.iter().map(|m| m.name.as_str()).collect()
    }

    /// Type, key size, value size and max_entries.
    fn dims(m: &MapDef) -> (u32, u32, u32, u32) {
        (m.map_type, m.key_size, m.value_size, m.max_entries)
    }

    /// The chain maps every KF shares (kf.h).
    const KF_MAPS: [&str; 3] = ["kf_progs", "kf_stats", "kf_ctl"];

    #[test]
    fn blocklist_object() {
        let info = inspect(bundled("blocklist")).expect("inspect blocklist");
        let mut expected = KF_MAPS.to_vec();
        expected.extend(["deny_v4", "deny_v6", "allow_v4", "allow_v6"]);
        assert_eq!(names(&info.maps), expected);
        for (name, key_size, max_entries) in [
            ("deny_v4", 8, 1 << 21),
            ("deny_v6", 20, 1 << 21),
            ("allow_v4", 8, 1 << 16),
            ("allow_v6", 20, 1 << 16),
        ] {
            let map = info.map(name).expect(name);
            assert_eq!(map.map_type, BPF_MAP_TYPE_LPM_TRIE, "{name}");
            assert_eq!(map.key_size, key_size, "{name}");
            assert_eq!(map.value_size, 1, "{name}");
            assert_eq!(map.max_entries, max_entries, "{name}");
            assert_eq!(map.map_flags, 1, "{name}: BPF_F_NO_PREALLOC");
            assert_eq!(map.source, MapSource::Btf);
            let btf = &info.btf;
            let key = map.key_type.expect("key type");
            let expected_key = if key_size == 8 {
                "struct lpm_v4_key"
            } else {
                "struct lpm_v6_key"
            };
            assert_eq!(btf.type_name(key), expected_key);
            assert_eq!(btf.type_name(map.value_type.expect("value type")), "__u8");
        }
        let progs = info.map("kf_progs").expect("kf_progs");
        assert_eq!(dims(progs), (BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 64));
        let stats = info.map("kf_stats").expect("kf_stats");
        assert_eq!(
            (stats.map_type, stats.value_size, stats.max_entries),
            (BPF_MAP_TYPE_PERCPU_ARRAY, 128, 32)
        );
        // One program per hook type; both use everything but kf_ctl, which
        // only the root reads.
        let maps = [
            "allow_v4", "allow_v6", "deny_v4", "deny_v6", "kf_progs", "kf_stats",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            info.programs,
            [
                ProgramInfo {
                    name: "blocklist".into(),
                    section: "xdp".into(),
                    maps: maps.clone(),
                },
                ProgramInfo {
                    name: "blocklist_tc".into(),
                    section: "classifier".into(),
                    maps,
                },
            ]
        );
        assert!(info.references_map("blocklist", "kf_progs"));
        assert!(!info.references_map("blocklist", "rl_config"));
        assert!(!info.references_map("nope", "kf_progs"));
        // kf.h's per-instance settings.
        assert_eq!(
            info.globals
                .iter()
                .map(|g| (g.name.as_str(), g.section.as_str(), g.offset, g.size))
                .collect::<Vec<_>>(),
            [
                ("kf_slot_idx", ".rodata", 0, 4),
                ("kf_fn_id", ".rodata", 4, 4),
                ("kf_proceed_on", ".rodata", 8, 4)
            ]
        );
    }

    #[test]
    fn ratelimit_and_counter_objects() {
        let info = inspect(bundled("ratelimit")).expect("inspect ratelimit");
        let mut expected = KF_MAPS.to_vec();
        expected.extend(["rl_config", "rl_buckets"]);
        assert_eq!(names(&info.maps), expected);
        let config = info.map("rl_config").expect("rl_config");
        assert_eq!(dims(config), (BPF_MAP_TYPE_ARRAY, 4, 16, 1));
        assert_eq!(
            info.btf.type_name(config.value_type.expect("value type")),
            "struct rl_config"
        );
        let buckets = info.map("rl_buckets").expect("rl_buckets");
        assert_eq!(dims(buckets), (BPF_MAP_TYPE_LRU_HASH, 20, 16, 65536));
        assert_eq!(info.programs[0].name, "ratelimit");
        assert!(info.references_map("ratelimit", "kf_progs"));
        assert!(info.references_map("ratelimit", "rl_buckets"));

        let info = inspect(bundled("counter")).expect("inspect counter");
        let mut expected = KF_MAPS.to_vec();
        expected.push("counts");
        assert_eq!(names(&info.maps), expected);
        let counts = info.map("counts").expect("counts");
        assert_eq!(dims(counts), (BPF_MAP_TYPE_PERCPU_ARRAY, 4, 16, 257));
        assert_eq!(info.programs[0].section, "xdp");
        assert!(info.references_map("counter", "kf_progs"));

        let root =
            crate::builtin::object(crate::builtin::ObjectKind::Root, "xdp_root").expect("xdp_root");
        let info = inspect(root).expect("inspect xdp_root");
        assert_eq!(info.programs[0].name, "kf_root_xdp");
        assert!(info.references_map("kf_root_xdp", "kf_progs"));
        assert!(info.references_map("kf_root_xdp", "kf_ctl"));
        assert!(!info.references_map("kf_root_xdp", "kf_stats"));
    }

    #[test]
    fn fixture_object_contents() {
        let elf = fixture_object();
        let info = inspect(&elf).expect("inspect fixture");
        assert_eq!(
            info.programs
                .iter()
                .map(|p| (p.name.as_str(), p.section.as_str()))
                .collect::<Vec<_>>(),
            [
                ("fx_xdp", "xdp"),
                ("fx_tc", "tc"),
                ("fx_frags", "xdp.frags")
            ]
        );
        // fx_xdp calls fx_helper (in .text), which looks up fx_values.
        assert_eq!(
            info.program("fx_xdp").expect("fx_xdp").maps,
            ["fx_legacy", "fx_lpm_in_addr", "fx_outer", "fx_values"]
        );
        // fx_static is static: its relocation is against the .maps section symbol.
        assert_eq!(
            info.program("fx_tc").expect("fx_tc").maps,
            ["fx_lpm_bytes", "fx_static"]
        );
        assert_eq!(
            info.program("fx_frags").expect("fx_frags").maps,
            ["fx_values"]
        );
        assert!(!info.references_map("fx_xdp", "kf_progs"));

        assert_eq!(
            names(&info.maps),
            [
                "fx_lpm_in_addr",
                "fx_outer",
                "fx_lpm_bytes",
                "fx_static",
                "fx_values",
                "fx_sized",
                "fx_legacy"
            ]
        );
        let outer = info.map("fx_outer").expect("fx_outer");
        assert_eq!(outer.map_type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
        assert_eq!(
            (outer.key_size, outer.value_size, outer.max_entries),
            (4, 4, 2)
        );
        assert_eq!(outer.value_type, None);
        let inner = outer.inner.as_deref().expect("inner definition");
        assert_eq!(inner.name, "fx_outer.inner");
        assert_eq!(inner.source, MapSource::Inner);
        assert_eq!(dims(inner), (BPF_MAP_TYPE_ARRAY, 4, 8, 4));
        assert_eq!(
            info.btf.type_name(inner.value_type.expect("inner value")),
            "__u64"
        );

        let sized = info.map("fx_sized").expect("fx_sized");
        assert_eq!(
            (
                sized.key_size,
                sized.value_size,
                sized.pinning,
                sized.key_type
            ),
            (4, 12, 1, None)
        );
        let legacy = info.map("fx_legacy").expect("fx_legacy");
        assert_eq!(
            legacy,
            &MapDef {
                name: "fx_legacy".into(),
                map_type: BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: 8,
                max_entries: 3,
                map_flags: 0,
                pinning: 0,
                numa_node: 0,
                map_extra: 0,
                key_type: None,
                value_type: None,
                inner: None,
                source: MapSource::Legacy,
            }
        );

        let globals: Vec<_> = info
            .globals
            .iter()
            .map(|g| {
                (
                    g.name.as_str(),
                    g.section.as_str(),
                    info.btf.type_name(g.type_id),
                    g.offset,
                    g.size,
                )
            })
            .collect();
        assert_eq!(
            globals,
            [
                ("packets_seen", ".bss", "__u64".to_owned(), 0, 8),
                ("scratch", ".bss", "__u32[4]".to_owned(), 8, 16),
                ("sample_rate", ".rodata", "__u32".to_owned(), 0, 4),
                ("start_mode", ".rodata", "enum fx_mode".to_owned(), 4, 4),
                ("many_mode", ".rodata", "enum fx_many".to_owned(), 8, 4),
                ("greeting", ".rodata.str", "char[8]".to_owned(), 0, 8),
            ]
        );
    }

    #[test]
    fn big_endian_object() {
        let le = inspect(&fixture_object()).expect("LE fixture");
        let be = inspect(&fixture_object_big_endian()).expect("BE fixture");
        assert_eq!(be.btf.endian(), crate::btf::Endian::Big);
        assert_eq!(le.maps, be.maps);
        assert_eq!(le.programs, be.programs);
        assert_eq!(le.globals, be.globals);
    }

    #[test]
    fn rejects_non_bpf() {
        assert!(matches!(inspect(b"hello"), Err(ObjectError::Parse { .. })));
        // The test binary itself is an ELF for the host machine.
        let exe = std::fs::read(std::env::current_exe().expect("current exe")).expect("read exe");
        let err = inspect(&exe).expect_err("host ELF");
        assert!(matches!(err, ObjectError::NotBpf { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("not an eBPF object: it is built for")
        );
    }

    #[test]
    fn rejects_object_without_btf() {
        let elf =
            crate::btf::test_support::compile_c("nobtf", "int x(void) { return 0; }", &["-g0"]);
        let err = inspect(&elf).expect_err("no BTF");
        assert_eq!(err.to_string(), "no .BTF section (compile with clang -g)");
    }

    #[test]
    fn map_definition_errors() {
        let src = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, 8);
	__type(key, __u32);
	__type(value, __u32);
} bad_size SEC(".maps");
"#;
        let err = inspect(&crate::btf::test_support::compile_c("badsize", src, &[]))
            .expect_err("size mismatch");
        assert_eq!(
            err.to_string(),
            "map bad_size: key_size 8 disagrees with the 4-byte type given for it"
        );
        let src = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__u32 color;
} bad_field SEC(".maps");
struct {
	int type;
} bad_uint SEC(".maps");
"#;
        let err = inspect(&crate::btf::test_support::compile_c("badfield", src, &[]))
            .expect_err("unknown field");
        assert_eq!(err.to_string(), "map bad_field: unknown field color");
        let src = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
	int type;
} bad_uint SEC(".maps");
"#;
        let err = inspect(&crate::btf::test_support::compile_c("baduint", src, &[]))
            .expect_err("bad uint");
        assert_eq!(
            err.to_string(),
            "map bad_uint: field type must be declared with __uint(field, N)"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn mutated_objects_never_panic(
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            truncate in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = bundled("blocklist").to_vec();
            for (index, byte) in mutations {
                let i = index.index(bytes.len());
                bytes[i] = byte;
            }
            if let Some(t) = truncate {
                bytes.truncate(t.index(bytes.len()));
            }
            let _ = inspect(&bytes);
        }

        #[test]
        fn mutated_btf_sections_never_panic(
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            // Focus the mutations on the .BTF section, where most parsing happens.
            let mut bytes = bundled("ratelimit").to_vec();
            let (start, len) = crate::btf::test_support::section_range(&bytes, ".BTF");
            for (index, byte) in mutations {
                let i = start + index.index(len);
                bytes[i] = byte;
            }
            let _ = inspect(&bytes);
        }
    }
}
