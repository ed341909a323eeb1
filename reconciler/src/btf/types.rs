//! The BTF type graph, parsed from the raw bytes of a `.BTF` section.
//!
//! The format is the kernel's (`Documentation/bpf/btf.rst`): a header, a type
//! section of variable-length records (ids start at 1; id 0 is `void`), and a
//! string section. Both byte orders are read, as the header magic says.
//!
//! [`Btf::parse`] validates the whole graph up front — every type reference is
//! in range, every string is NUL-terminated UTF-8, every sized type has a
//! computable size without cycles, every struct member lies inside its struct —
//! so the lookups afterwards ([`Btf::resolve`], [`Btf::size_of`], the encoder's
//! layouts) can trust it and never index out of bounds. Malformed input is a
//! [`BtfError`], never a panic.

use std::fmt;

/// The BTF header magic, as a native `u16`.
const MAGIC: u16 = 0xEB9F;
/// The only BTF version there is.
const VERSION: u8 = 1;
/// Size of the header fields this parser reads (`hdr_len` may be larger).
const HEADER_LEN: u32 = 24;
/// How deep type references may nest (modifiers, arrays, members) before the
/// graph is rejected. The kernel allows 32 modifier hops; nesting of real
/// program types stays far below this, and the bound keeps recursion shallow.
const MAX_DEPTH: u32 = 128;

/// Byte order of a BTF blob, which is also the byte order of the object and
/// of the machine it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Little-endian (`-target bpf` on x86, arm64, ...).
    Little,
    /// Big-endian (`-target bpfeb`).
    Big,
}

/// Why a `.BTF` blob was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// Fewer bytes than a header.
    #[error("BTF is truncated: {len} bytes, the header alone needs {HEADER_LEN}")]
    TooShort {
        /// Length of the blob.
        len: usize,
    },
    /// The first two bytes are not 0xEB9F in either byte order.
    #[error("not BTF: bad magic {found:#06x} (expected 0xeb9f)")]
    BadMagic {
        /// The first two bytes, little-endian.
        found: u16,
    },
    /// A version other than 1.
    #[error("unsupported BTF version {version}")]
    UnsupportedVersion {
        /// The header's version byte.
        version: u8,
    },
    /// `hdr_len` smaller than the fields it must hold.
    #[error("BTF header length {hdr_len} is shorter than {HEADER_LEN}")]
    BadHeaderLength {
        /// The header's `hdr_len`.
        hdr_len: u32,
    },
    /// The type or string section lies (partly) outside the blob.
    #[error("BTF {section} section [{start}, {end}) is outside the {len}-byte blob")]
    SectionOutOfBounds {
        /// "type" or "string".
        section: &'static str,
        /// Start offset in the blob.
        start: u64,
        /// End offset in the blob.
        end: u64,
        /// Length of the blob.
        len: usize,
    },
    /// A type record runs past the end of the type section.
    #[error("BTF type [{id}] is truncated at offset {offset} of the type section")]
    Truncated {
        /// The type being read.
        id: u32,
        /// Offset in the type section where more bytes were needed.
        offset: usize,
    },
    /// A kind number this parser does not know.
    #[error("BTF type [{id}] has unknown kind {kind}")]
    UnknownKind {
        /// The type.
        id: u32,
        /// Its kind number.
        kind: u32,
    },
    /// A name offset outside the string section, unterminated, or not UTF-8.
    #[error("BTF type [{id}] has a bad name at string offset {offset}")]
    BadString {
        /// The type the name belongs to.
        id: u32,
        /// The string offset.
        offset: u32,
    },
    /// A reference to a type id that does not exist.
    #[error("BTF type [{id}] refers to type [{target}], but there are only {count} types")]
    BadTypeRef {
        /// The referring type.
        id: u32,
        /// The missing id.
        target: u32,
        /// How many types there are (including void).
        count: u32,
    },
    /// A size that this kind cannot have (an INT of 3 bytes, a bit count larger than the size, ...).
    #[error("BTF type [{id}] ({kind}) has an invalid size or layout: {detail}")]
    InvalidLayout {
        /// The type.
        id: u32,
        /// Its kind, e.g. "INT".
        kind: &'static str,
        /// What is wrong, e.g. "size 3".
        detail: String,
    },
    /// A type that contains itself (not through a pointer).
    #[error("BTF type [{id}] contains itself")]
    Cycle {
        /// A type on the cycle.
        id: u32,
    },
    /// Type references nest deeper than the parser allows.
    #[error("BTF type [{id}] nests more than {MAX_DEPTH} levels deep")]
    TooDeep {
        /// The type where the limit was hit.
        id: u32,
    },
    /// A member whose type has no size (a function, a forward declaration, void).
    #[error("BTF type [{id}] member {member:?} has a type without a size")]
    UnsizedMember {
        /// The struct, union or array.
        id: u32,
        /// The member's name (empty for array elements and anonymous members).
        member: String,
    },
    /// A member that lies (partly) outside its struct or union.
    #[error("BTF type [{id}] member {member:?} lies outside the {size}-byte type")]
    MemberOutOfBounds {
        /// The struct or union.
        id: u32,
        /// The member's name.
        member: String,
        /// The struct's size.
        size: u32,
    },
}

/// An INT type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int {
    /// Storage size in bytes: 1, 2, 4, 8 or 16.
    pub size: u32,
    /// `BTF_INT_SIGNED`.
    pub signed: bool,
    /// `BTF_INT_CHAR`. clang marks `char` SIGNED rather than CHAR, so also check the name.
    pub char: bool,
    /// `BTF_INT_BOOL` (`_Bool`).
    pub bool: bool,
    /// Bit offset of the value inside its storage (0 for everything clang emits).
    pub offset: u8,
    /// Number of value bits.
    pub bits: u8,
}

/// An ARRAY type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Array {
    /// Element type.
    pub elem: u32,
    /// Index type (informational).
    pub index: u32,
    /// Number of elements (0 for flexible arrays and `__array` map values).
    pub len: u32,
}

/// A STRUCT or UNION member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member name; empty for anonymous struct/union members.
    pub name: String,
    /// Member type.
    pub ty: u32,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
    /// Bitfield width in bits, or 0 when the member is not a bitfield.
    pub bitfield_size: u8,
}

/// A STRUCT or UNION type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composite {
    /// Size in bytes.
    pub size: u32,
    /// Members, in declaration order.
    pub members: Vec<Member>,
}

/// One enumerator of an ENUM or ENUM64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enumerator {
    /// Its name, e.g. `KF_MODE_FAST`.
    pub name: String,
    /// Its value: sign-extended when the enum is signed, zero-extended otherwise.
    pub value: i128,
}

/// An ENUM or ENUM64 type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enum {
    /// Size in bytes (1, 2, 4 or 8).
    pub size: u32,
    /// The kind flag: values are signed. clang before 15 never sets it.
    pub signed: bool,
    /// Enumerators, in declaration order.
    pub values: Vec<Enumerator>,
}

/// A FUNC_PROTO parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name (may be empty).
    pub name: String,
    /// Parameter type (0 with an empty name for `...`).
    pub ty: u32,
}

/// One variable of a DATASEC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarSecInfo {
    /// The VAR (or FUNC, for `.ksyms`) type.
    pub ty: u32,
    /// Offset in the section. Zero in unlinked clang output: the symbol table is authoritative.
    pub offset: u32,
    /// Size of the variable.
    pub size: u32,
}

/// What a type is. Reference fields are type ids, all valid in the parsed [`Btf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// Type id 0.
    Void,
    /// BTF_KIND_INT.
    Int(Int),
    /// BTF_KIND_PTR.
    Ptr {
        /// Pointee.
        target: u32,
    },
    /// BTF_KIND_ARRAY.
    Array(Array),
    /// BTF_KIND_STRUCT.
    Struct(Composite),
    /// BTF_KIND_UNION.
    Union(Composite),
    /// BTF_KIND_ENUM and BTF_KIND_ENUM64.
    Enum(Enum),
    /// BTF_KIND_FWD.
    Fwd {
        /// A forward-declared union rather than struct.
        union: bool,
    },
    /// BTF_KIND_TYPEDEF.
    Typedef {
        /// Aliased type.
        target: u32,
    },
    /// BTF_KIND_VOLATILE.
    Volatile {
        /// Qualified type.
        target: u32,
    },
    /// BTF_KIND_CONST.
    Const {
        /// Qualified type.
        target: u32,
    },
    /// BTF_KIND_RESTRICT.
    Restrict {
        /// Qualified type.
        target: u32,
    },
    /// BTF_KIND_FUNC.
    Func {
        /// The FUNC_PROTO.
        proto: u32,
        /// 0 static, 1 global, 2 extern.
        linkage: u16,
    },
    /// BTF_KIND_FUNC_PROTO.
    FuncProto {
        /// Return type (0 for void).
        ret: u32,
        /// Parameters.
        params: Vec<Param>,
    },
    /// BTF_KIND_VAR.
    Var {
        /// The variable's type.
        target: u32,
        /// 0 static, 1 global, 2 extern.
        linkage: u32,
    },
    /// BTF_KIND_DATASEC.
    Datasec {
        /// Section size (0 in unlinked clang output).
        size: u32,
        /// Variables in the section.
        vars: Vec<VarSecInfo>,
    },
    /// BTF_KIND_FLOAT.
    Float {
        /// Size in bytes.
        size: u32,
    },
    /// BTF_KIND_DECL_TAG.
    DeclTag {
        /// Tagged type.
        target: u32,
        /// -1 for the type itself, else the member/parameter index.
        component: i32,
    },
    /// BTF_KIND_TYPE_TAG.
    TypeTag {
        /// Tagged type.
        target: u32,
    },
}

impl TypeKind {
    /// The kind's name as the kernel spells it ("INT", "STRUCT", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            TypeKind::Void => "VOID",
            TypeKind::Int(_) => "INT",
            TypeKind::Ptr { .. } => "PTR",
            TypeKind::Array(_) => "ARRAY",
            TypeKind::Struct(_) => "STRUCT",
            TypeKind::Union(_) => "UNION",
            TypeKind::Enum(_) => "ENUM",
            TypeKind::Fwd { .. } => "FWD",
            TypeKind::Typedef { .. } => "TYPEDEF",
            TypeKind::Volatile { .. } => "VOLATILE",
            TypeKind::Const { .. } => "CONST",
            TypeKind::Restrict { .. } => "RESTRICT",
            TypeKind::Func { .. } => "FUNC",
            TypeKind::FuncProto { .. } => "FUNC_PROTO",
            TypeKind::Var { .. } => "VAR",
            TypeKind::Datasec { .. } => "DATASEC",
            TypeKind::Float { .. } => "FLOAT",
            TypeKind::DeclTag { .. } => "DECL_TAG",
            TypeKind::TypeTag { .. } => "TYPE_TAG",
        }
    }

    /// The target of a typedef or qualifier (the kinds [`Btf::resolve`] skips).
    pub fn modifier_target(&self) -> Option<u32> {
        match *self {
            TypeKind::Typedef { target }
            | TypeKind::Volatile { target }
            | TypeKind::Const { target }
            | TypeKind::Restrict { target }
            | TypeKind::TypeTag { target } => Some(target),
            _ => None,
        }
    }
}

/// One BTF type: its name (empty when anonymous) and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// Name; empty for anonymous types.
    pub name: String,
    /// What the type is.
    pub kind: TypeKind,
}

/// A parsed and validated BTF type graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Btf {
    /// Index = type id; index 0 is [`TypeKind::Void`].
    types: Vec<Type>,
    /// Size of each type in bytes, `None` for unsized kinds (void, FWD, FUNC, ...).
    sizes: Vec<Option<u32>>,
    endian: Endian,
}

/// Byte-order-aware reads from a byte slice, all bounds-checked.
#[derive(Clone, Copy)]
struct Reader<'a> {
    data: &'a [u8],
    endian: Endian,
}

impl Reader<'_> {
    fn u32_at(&self, offset: usize) -> Option<u32> {
        let bytes: [u8; 4] = self
            .data
            .get(offset..offset.checked_add(4)?)?
            .try_into()
            .ok()?;
        Some(match self.endian {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        })
    }
}

// Kind numbers from include/uapi/linux/btf.h.
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Parses the type section; a cursor that turns short reads into [`BtfError::Truncated`].
struct TypeCursor<'a> {
    reader: Reader<'a>,
    pos: usize,
    id: u32,
    strings: &'a [u8],
}

impl TypeCursor<'_> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let value = self.reader.u32_at(self.pos).ok_or(BtfError::Truncated {
            id: self.id,
            offset: self.pos,
        })?;
        self.pos += 4;
        Ok(value)
    }

    fn name(&self, offset: u32) -> Result<String, BtfError> {
        string_at(self.strings, offset)
            .map(str::to_owned)
            .ok_or(BtfError::BadString {
                id: self.id,
                offset,
            })
    }
}

/// The NUL-terminated UTF-8 string at `offset` of a string section.
fn string_at(strings: &[u8], offset: u32) -> Option<&str> {
    let tail = strings.get(usize::try_from(offset).ok()?..)?;
    let len = tail.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&tail[..len]).ok()
}

impl Btf {
    /// Parses and validates raw `.BTF` section bytes.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < HEADER_LEN as usize {
            return Err(BtfError::TooShort { len: data.len() });
        }
        let magic = [data[0], data[1]];
        let endian = if u16::from_le_bytes(magic) == MAGIC {
            Endian::Little
        } else if u16::from_be_bytes(magic) == MAGIC {
            Endian::Big
        } else {
            return Err(BtfError::BadMagic {
                found: u16::from_le_bytes(magic),
            });
        };
        if data[2] != VERSION {
            return Err(BtfError::UnsupportedVersion { version: data[2] });
        }
        let reader = Reader { data, endian };
        // The header is 24 bytes and data.len() >= 24: these reads succeed.
        let field = |offset| reader.u32_at(offset).unwrap_or(0);
        let hdr_len = field(4);
        if hdr_len < HEADER_LEN {
            return Err(BtfError::BadHeaderLength { hdr_len });
        }
        let section = |name, off: u32, len: u32| {
            let start = u64::from(hdr_len) + u64::from(off);
            let end = start + u64::from(len);
            if end > data.len() as u64 {
                return Err(BtfError::SectionOutOfBounds {
                    section: name,
                    start,
                    end,
                    len: data.len(),
                });
            }
            // Both fit in usize: they are at most data.len().
            Ok(&data[start as usize..end as usize])
        };
        let type_data = section("type", field(8), field(12))?;
        let strings = section("string", field(16), field(20))?;

        let mut types = vec![Type {
            name: String::new(),
            kind: TypeKind::Void,
        }];
        let mut cursor = TypeCursor {
            reader: Reader {
                data: type_data,
                endian,
            },
            pos: 0,
            id: 1,
            strings,
        };
        while cursor.pos < type_data.len() {
            types.push(parse_type(&mut cursor)?);
            cursor.id = cursor.id.checked_add(1).ok_or(BtfError::Truncated {
                id: cursor.id,
                offset: cursor.pos,
            })?;
        }

        let mut btf = Btf {
            sizes: Vec::new(),
            types,
            endian,
        };
        btf.check_refs()?;
        btf.sizes = Sizer::new(&btf).run()?;
        Ok(btf)
    }

    /// Every type id referenced anywhere must exist.
    fn check_refs(&self) -> Result<(), BtfError> {
        let count = self.types.len() as u32;
        for (id, ty) in self.types.iter().enumerate() {
            let id = id as u32;
            let check = |target: u32| {
                if target < count {
                    Ok(())
                } else {
                    Err(BtfError::BadTypeRef { id, target, count })
                }
            };
            match &ty.kind {
                TypeKind::Void
                | TypeKind::Int(_)
                | TypeKind::Enum(_)
                | TypeKind::Fwd { .. }
                | TypeKind::Float { .. } => {}
                TypeKind::Ptr { target }
                | TypeKind::Typedef { target }
                | TypeKind::Volatile { target }
                | TypeKind::Const { target }
                | TypeKind::Restrict { target }
                | TypeKind::TypeTag { target }
                | TypeKind::Var { target, .. }
                | TypeKind::DeclTag { target, .. } => check(*target)?,
                TypeKind::Func { proto, .. } => check(*proto)?,
                TypeKind::Array(a) => {
                    check(a.elem)?;
                    check(a.index)?;
                }
                TypeKind::Struct(c) | TypeKind::Union(c) => {
                    for m in &c.members {
                        check(m.ty)?;
                    }
                }
                TypeKind::FuncProto { ret, params } => {
                    check(*ret)?;
                    for p in params {
                        check(p.ty)?;
                    }
                }
                TypeKind::Datasec { vars, .. } => {
                    for v in vars {
                        check(v.ty)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The byte order of the blob (and of the object it came from).
    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// Number of type ids, including id 0 (void).
    pub fn len(&self) -> u32 {
        // Ids are u32 (the parser stops before overflowing them).
        self.types.len() as u32
    }

    /// Whether there are no types besides void.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// The type with this id (0 is void), or `None` when out of range.
    pub fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(usize::try_from(id).ok()?)
    }

    /// All types with their ids, void first.
    pub fn types(&self) -> impl Iterator<Item = (u32, &Type)> {
        self.types.iter().enumerate().map(|(id, t)| (id as u32, t))
    }

    /// The type's name, or `None` when it is anonymous or the id is out of range.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.ty(id)
            .map(|t| t.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// The first type with this name (any kind), e.g. `rl_config`.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.types().find(|(_, t)| t.name == name).map(|(id, _)| id)
    }

    /// Follows typedefs and qualifiers (const, volatile, restrict, type tags) to
    /// the underlying type. Out-of-range ids are returned unchanged.
    pub fn resolve(&self, id: u32) -> u32 {
        self.chain(id).last().unwrap_or(id)
    }

    /// The ids [`Btf::resolve`] walks through, starting with `id` and ending with
    /// the resolved type. This is how a caller sees typedef names on the way,
    /// e.g. that a member's type is `__be32` and not just `unsigned int`.
    pub fn chain(&self, id: u32) -> impl Iterator<Item = u32> + '_ {
        // Validation rejected modifier cycles, but bound the walk anyway.
        let mut next = self.ty(id).map(|_| id);
        let mut hops = 0u32;
        std::iter::from_fn(move || {
            let current = next?;
            hops += 1;
            next = self
                .ty(current)
                .and_then(|t| t.kind.modifier_target())
                .filter(|_| hops <= self.len());
            Some(current)
        })
    }

    /// Whether a typedef with one of these names is on the chain from `id` to
    /// its resolved type (e.g. `["__be16", "__be32", "__be64"]`).
    pub fn has_typedef(&self, id: u32, names: &[&str]) -> bool {
        self.chain(id).any(|t| {
            self.ty(t).is_some_and(|t| {
                matches!(t.kind, TypeKind::Typedef { .. }) && names.contains(&t.name.as_str())
            })
        })
    }

    /// Size of the type in bytes; `None` for void, FWD, FUNC, FUNC_PROTO,
    /// DECL_TAG and out-of-range ids. Pointers are 8 bytes.
    pub fn size_of(&self, id: u32) -> Option<u32> {
        *self.sizes.get(usize::try_from(id).ok()?)?
    }

    /// A C-like spelling of the type for messages: `__u8`, `struct rl_config`,
    /// `__u8[16]`, `char *`, `enum kf_mode`, `struct (anon)`. Typedef names win
    /// over what they alias; qualifiers are dropped.
    pub fn type_name(&self, id: u32) -> String {
        let mut out = String::new();
        self.write_type_name(id, &mut out, 0);
        out
    }

    fn write_type_name(&self, id: u32, out: &mut String, depth: u32) {
        use fmt::Write as _;
        let Some(ty) = self.ty(id) else {
            let _ = write!(out, "<type {id}>");
            return;
        };
        if depth > MAX_DEPTH {
            out.push_str("...");
            return;
        }
        let named = |out: &mut String, prefix: &str| {
            out.push_str(prefix);
            out.push_str(if ty.name.is_empty() {
                "(anon)"
            } else {
                &ty.name
            });
        };
        match &ty.kind {
            TypeKind::Void => out.push_str("void"),
            TypeKind::Int(_) | TypeKind::Float { .. } | TypeKind::Typedef { .. } => named(out, ""),
            TypeKind::Struct(_) => named(out, "struct "),
            TypeKind::Union(_) => named(out, "union "),
            TypeKind::Enum(_) => named(out, "enum "),
            TypeKind::Fwd { union } => named(out, if *union { "union " } else { "struct " }),
            TypeKind::Ptr { target } => {
                self.write_type_name(*target, out, depth + 1);
                out.push_str(" *");
            }
            TypeKind::Array(a) => {
                self.write_type_name(a.elem, out, depth + 1);
                let _ = write!(out, "[{}]", a.len);
            }
            TypeKind::Volatile { target }
            | TypeKind::Const { target }
            | TypeKind::Restrict { target }
            | TypeKind::TypeTag { target }
            | TypeKind::Var { target, .. }
            | TypeKind::DeclTag { target, .. } => self.write_type_name(*target, out, depth + 1),
            TypeKind::Func { .. } => named(out, "function "),
            TypeKind::FuncProto { .. } => out.push_str("function"),
            TypeKind::Datasec { .. } => named(out, "section "),
        }
    }
}

fn parse_type(c: &mut TypeCursor<'_>) -> Result<Type, BtfError> {
    let name_off = c.u32()?;
    let info = c.u32()?;
    let size_or_type = c.u32()?;
    let name = c.name(name_off)?;
    let vlen = info & 0xffff;
    let kind = (info >> 24) & 0x1f;
    let kind_flag = info >> 31 == 1;
    let id = c.id;
    let kind = match kind {
        KIND_INT => {
            let data = c.u32()?;
            TypeKind::Int(Int {
                size: size_or_type,
                signed: data & (1 << 24) != 0,
                char: data & (2 << 24) != 0,
                bool: data & (4 << 24) != 0,
                offset: ((data >> 16) & 0xff) as u8,
                bits: (data & 0xff) as u8,
            })
        }
        KIND_PTR => TypeKind::Ptr {
            target: size_or_type,
        },
        KIND_ARRAY => TypeKind::Array(Array {
            elem: c.u32()?,
            index: c.u32()?,
            len: c.u32()?,
        }),
        KIND_STRUCT | KIND_UNION => {
            let mut members = Vec::new();
            for _ in 0..vlen {
                let name = c.u32()?;
                let ty = c.u32()?;
                let offset = c.u32()?;
                // With the kind flag, the offset packs the bitfield width in its top byte.
                let (bit_offset, bitfield_size) = if kind_flag {
                    (offset & 0x00ff_ffff, (offset >> 24) as u8)
                } else {
                    (offset, 0)
                };
                members.push(Member {
                    name: c.name(name)?,
                    ty,
                    bit_offset,
                    bitfield_size,
                });
            }
            let composite = Composite {
                size: size_or_type,
                members,
            };
            if kind == KIND_STRUCT {
                TypeKind::Struct(composite)
            } else {
                TypeKind::Union(composite)
            }
        }
        KIND_ENUM | KIND_ENUM64 => {
            let mut values = Vec::new();
            for _ in 0..vlen {
                let name = c.u32()?;
                let lo = c.u32()?;
                let raw = if kind == KIND_ENUM64 {
                    let hi = c.u32()?;
                    u64::from(hi) << 32 | u64::from(lo)
                } else {
                    u64::from(lo)
                };
                let value = match (kind == KIND_ENUM64, kind_flag) {
                    (true, true) => i128::from(raw as i64),
                    (false, true) => i128::from(lo as i32),
                    (_, false) => i128::from(raw),
                };
                values.push(Enumerator {
                    name: c.name(name)?,
                    value,
                });
            }
            TypeKind::Enum(Enum {
                size: size_or_type,
                signed: kind_flag,
                values,
            })
        }
        KIND_FWD => TypeKind::Fwd { union: kind_flag },
        KIND_TYPEDEF => TypeKind::Typedef {
            target: size_or_type,
        },
        KIND_VOLATILE => TypeKind::Volatile {
            target: size_or_type,
        },
        KIND_CONST => TypeKind::Const {
            target: size_or_type,
        },
        KIND_RESTRICT => TypeKind::Restrict {
            target: size_or_type,
        },
        KIND_FUNC => TypeKind::Func {
            proto: size_or_type,
            linkage: vlen as u16,
        },
        KIND_FUNC_PROTO => {
            let mut params = Vec::new();
            for _ in 0..vlen {
                let name = c.u32()?;
                let ty = c.u32()?;
                params.push(Param {
                    name: c.name(name)?,
                    ty,
                });
            }
            TypeKind::FuncProto {
                ret: size_or_type,
                params,
            }
        }
        KIND_VAR => TypeKind::Var {
            target: size_or_type,
            linkage: c.u32()?,
        },
        KIND_DATASEC => {
            let mut vars = Vec::new();
            for _ in 0..vlen {
                vars.push(VarSecInfo {
                    ty: c.u32()?,
                    offset: c.u32()?,
                    size: c.u32()?,
                });
            }
            TypeKind::Datasec {
                size: size_or_type,
                vars,
            }
        }
        KIND_FLOAT => TypeKind::Float { size: size_or_type },
        KIND_DECL_TAG => TypeKind::DeclTag {
            target: size_or_type,
            component: c.u32()? as i32,
        },
        KIND_TYPE_TAG => TypeKind::TypeTag {
            target: size_or_type,
        },
        kind => return Err(BtfError::UnknownKind { id, kind }),
    };
    Ok(Type { name, kind })
}

/// Computes every type's size once, rejecting cycles, overflow and members
/// outside their struct. Memoized depth-first walk.
struct Sizer<'a> {
    btf: &'a Btf,
    sizes: Vec<Option<u32>>,
    state: Vec<State>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Todo,
    InProgress,
    Done,
}

impl<'a> Sizer<'a> {
    fn new(btf: &'a Btf) -> Self {
        let n = btf.types.len();
        Sizer {
            btf,
            sizes: vec![None; n],
            state: vec![State::Todo; n],
        }
    }

    fn run(mut self) -> Result<Vec<Option<u32>>, BtfError> {
        for id in 0..self.btf.len() {
            self.size(id, 0)?;
        }
        Ok(self.sizes)
    }

    fn size(&mut self, id: u32, depth: u32) -> Result<Option<u32>, BtfError> {
        let index = id as usize;
        // check_refs guarantees every id reached here is in range.
        let (Some(state), Some(ty)) = (self.state.get(index).copied(), self.btf.ty(id)) else {
            return Err(BtfError::BadTypeRef {
                id,
                target: id,
                count: self.btf.len(),
            });
        };
        match state {
            State::Done => return Ok(self.sizes[index]),
            State::InProgress => return Err(BtfError::Cycle { id }),
            State::Todo => {}
        }
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id });
        }
        self.state[index] = State::InProgress;
        let invalid = |detail: String| BtfError::InvalidLayout {
            id,
            kind: ty.kind.kind_name(),
            detail,
        };
        let size = match &ty.kind {
            TypeKind::Void
            | TypeKind::Fwd { .. }
            | TypeKind::Func { .. }
            | TypeKind::FuncProto { .. }
            | TypeKind::DeclTag { .. } => None,
            TypeKind::Int(int) => {
                if !matches!(int.size, 1 | 2 | 4 | 8 | 16)
                    || int.bits == 0
                    || u32::from(int.offset) + u32::from(int.bits) > int.size * 8
                {
                    return Err(invalid(format!(
                        "size {} with {} bits at offset {}",
                        int.size, int.bits, int.offset
                    )));
                }
                Some(int.size)
            }
            TypeKind::Enum(e) => {
                if !matches!(e.size, 1 | 2 | 4 | 8) {
                    return Err(invalid(format!("size {}", e.size)));
                }
                Some(e.size)
            }
            TypeKind::Float { size } => {
                if !matches!(size, 2 | 4 | 8 | 12 | 16) {
                    return Err(invalid(format!("size {size}")));
                }
                Some(*size)
            }
            TypeKind::Ptr { .. } => Some(8),
            TypeKind::Typedef { target }
            | TypeKind::Volatile { target }
            | TypeKind::Const { target }
            | TypeKind::Restrict { target }
            | TypeKind::TypeTag { target }
            | TypeKind::Var { target, .. } => self.size(*target, depth + 1)?,
            TypeKind::Datasec { size, vars } => {
                for v in vars {
                    self.size(v.ty, depth + 1)?;
                }
                Some(*size)
            }
            TypeKind::Array(a) => {
                let elem =
                    self.size(a.elem, depth + 1)?
                        .ok_or_else(|| BtfError::UnsizedMember {
                            id,
                            member: String::new(),
                        })?;
                Some(
                    elem.checked_mul(a.len)
                        .ok_or_else(|| invalid(format!("{} elements of {elem} bytes", a.len)))?,
                )
            }
            TypeKind::Struct(c) | TypeKind::Union(c) => {
                for m in &c.members {
                    let member_size =
                        self.size(m.ty, depth + 1)?
                            .ok_or_else(|| BtfError::UnsizedMember {
                                id,
                                member: m.name.clone(),
                            })?;
                    let bits = if m.bitfield_size > 0 {
                        u64::from(m.bitfield_size)
                    } else {
                        u64::from(member_size) * 8
                    };
                    if u64::from(m.bit_offset) + bits > u64::from(c.size) * 8 {
                        return Err(BtfError::MemberOutOfBounds {
                            id,
                            member: m.name.clone(),
                            size: c.size,
                        });
                    }
                }
                Some(c.size)
            }
        };
        self.sizes[index] = size;
        self.state[index] = State::Done;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::test_support::{BtfBuilder, bundled_btf};
    use proptest::prelude::*;

    #[test]
    fn bundled_blocklist_types() {
        let btf = bundled_btf("blocklist");
        assert_eq!(btf.endian(), Endian::Little);
        let key = btf.find("lpm_v4_key").expect("lpm_v4_key");
        assert_eq!(btf.size_of(key), Some(8));
        assert_eq!(btf.type_name(key), "struct lpm_v4_key");
        let TypeKind::Struct(s) = &btf.ty(key).expect("type").kind else {
            panic!("lpm_v4_key is a struct");
        };
        assert_eq!(s.members[1].name, "addr");
        assert_eq!(s.members[1].bit_offset, 32);
        let addr = s.members[1].ty;
        assert_eq!(btf.type_name(addr), "__be32");
        assert!(btf.has_typedef(addr, &["__be32"]));
        assert!(!btf.has_typedef(s.members[0].ty, &["__be32"]));
        let resolved = btf.resolve(addr);
        assert_eq!(btf.name(resolved), Some("unsigned int"));
        assert_eq!(
            btf.chain(addr)
                .map(|id| btf.type_name(id))
                .collect::<Vec<_>>(),
            ["__be32", "__u32", "unsigned int"]
        );
        let in6 = btf.find("in6_addr").expect("in6_addr");
        assert_eq!(btf.size_of(in6), Some(16));
    }

    #[test]
    fn header_errors() {
        assert_eq!(Btf::parse(&[0; 4]), Err(BtfError::TooShort { len: 4 }));
        let mut bytes = BtfBuilder::new().build();
        bytes[0] = 0;
        assert!(matches!(Btf::parse(&bytes), Err(BtfError::BadMagic { .. })));
        let mut bytes = BtfBuilder::new().build();
        bytes[2] = 2;
        assert_eq!(
            Btf::parse(&bytes),
            Err(BtfError::UnsupportedVersion { version: 2 })
        );
        let mut bytes = BtfBuilder::new().build();
        bytes[20] = 0xff; // str_len
        assert!(matches!(
            Btf::parse(&bytes),
            Err(BtfError::SectionOutOfBounds {
                section: "string",
                ..
            })
        ));
    }

    #[test]
    fn empty_btf_parses() {
        let btf = Btf::parse(&BtfBuilder::new().build()).expect("empty BTF");
        assert!(btf.is_empty());
        assert_eq!(btf.size_of(0), None);
        assert_eq!(btf.ty(1), None);
        assert_eq!(btf.resolve(99), 99);
    }

    #[test]
    fn rejects_cycles_and_bad_refs() {
        // [1] typedef a -> [2], [2] typedef b -> [1]
        let mut b = BtfBuilder::new();
        b.typedef("a", 2);
        b.typedef("b", 1);
        assert!(matches!(
            Btf::parse(&b.build()),
            Err(BtfError::Cycle { .. })
        ));
        let mut b = BtfBuilder::new();
        b.typedef("a", 7);
        assert_eq!(
            Btf::parse(&b.build()),
            Err(BtfError::BadTypeRef {
                id: 1,
                target: 7,
                count: 2
            })
        );
        // A struct containing itself.
        let mut b = BtfBuilder::new();
        b.strukt("s", 4, &[("me", 1, 0)]);
        assert!(matches!(
            Btf::parse(&b.build()),
            Err(BtfError::Cycle { id: 1 })
        ));
        // A pointer to itself is fine.
        let mut b = BtfBuilder::new();
        b.ptr(1);
        let btf = Btf::parse(&b.build()).expect("self pointer");
        assert_eq!(btf.size_of(1), Some(8));
        assert!(btf.type_name(1).ends_with(" *"));
    }

    #[test]
    fn rejects_bad_layouts() {
        let mut b = BtfBuilder::new();
        b.int("u24", 3, 24, false);
        assert!(matches!(
            Btf::parse(&b.build()),
            Err(BtfError::InvalidLayout { kind: "INT", .. })
        ));
        let mut b = BtfBuilder::new();
        let u32_id = b.int("unsigned int", 4, 32, false);
        b.strukt("s", 4, &[("a", u32_id, 0), ("b", u32_id, 32)]);
        assert_eq!(
            Btf::parse(&b.build()),
            Err(BtfError::MemberOutOfBounds {
                id: 2,
                member: "b".into(),
                size: 4
            })
        );
        let mut b = BtfBuilder::new();
        let u32_id = b.int("unsigned int", 4, 32, false);
        b.array(u32_id, u32::MAX);
        assert!(matches!(
            Btf::parse(&b.build()),
            Err(BtfError::InvalidLayout { kind: "ARRAY", .. })
        ));
    }

    #[test]
    fn big_endian_matches_little_endian() {
        let mut b = BtfBuilder::new();
        let u8_id = b.int("unsigned char", 1, 8, false);
        let arr = b.array(u8_id, 6);
        b.strukt("mac", 6, &[("bytes", arr, 0)]);
        let le = Btf::parse(&b.build()).expect("LE");
        let be = Btf::parse(&b.build_big_endian()).expect("BE");
        assert_eq!(be.endian(), Endian::Big);
        assert_eq!(
            le.types().collect::<Vec<_>>(),
            be.types().collect::<Vec<_>>()
        );
        assert_eq!(be.size_of(3), Some(6));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Btf::parse(&bytes);
        }

        #[test]
        fn random_headers_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            words in proptest::array::uniform4(0u32..300),
        ) {
            let mut bytes = vec![0x9F, 0xEB, 1, 0];
            bytes.extend_from_slice(&24u32.to_le_bytes());
            for w in words {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend_from_slice(&body);
            if let Ok(btf) = Btf::parse(&bytes) {
                for id in 0..btf.len() + 2 {
                    let _ = (btf.size_of(id), btf.resolve(id), btf.type_name(id));
                }
            }
        }

        #[test]
        fn mutated_real_btf_never_panics(
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = crate::btf::test_support::bundled_btf_bytes("blocklist");
            for (index, byte) in mutations {
                let i = index.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(btf) = Btf::parse(&bytes) {
                for id in 0..btf.len() {
                    let _ = (btf.size_of(id), btf.resolve(id), btf.type_name(id));
                }
            }
        }
    }
}
