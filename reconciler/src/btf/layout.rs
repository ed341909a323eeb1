//! A precomputed plan of how a BTF type maps to YAML and back.
//!
//! Walking the BTF graph (resolving typedefs, finding `__be32`, flattening
//! anonymous members, deciding which textual forms a type takes) happens once
//! per key/value/global type, in [`Layout::build`]. The encoder and decoder
//! then only follow the flat list of [`Step`]s, so encoding a million map
//! entries costs no BTF lookups and no allocation.

use std::collections::HashMap;

use super::text::Family;
use super::types::{Btf, Composite, Endian, TypeKind};

/// How deep a layout may nest (structs in arrays in structs ...). Bounds the
/// recursion of the builder, the encoder and the decoder.
const MAX_DEPTH: u32 = 64;

/// Why a type cannot be encoded or decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The type id does not exist.
    #[error("type [{id}] does not exist in the object's BTF")]
    UnknownType {
        /// The missing id.
        id: u32,
    },
    /// A type without a size (void, a function, an incomplete struct).
    #[error("{ty} has no size, so it can't hold a key, value or global")]
    Unsized {
        /// The type's C name.
        ty: String,
    },
    /// Nesting deeper than the encoder supports.
    #[error("{ty} nests more than {MAX_DEPTH} levels deep")]
    TooDeep {
        /// The type's C name.
        ty: String,
    },
}

/// The plan for one type: steps, the root step, the total size.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub steps: Vec<Step>,
    pub root: usize,
    pub size: usize,
    /// The object's byte order: the order of every integer not typed `__be*`.
    pub endian: Endian,
}

/// One type in the plan.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub size: usize,
    /// The C name for messages: `__u8`, `struct rl_config`, `char[16]`.
    pub name: Box<str>,
    pub kind: StepKind,
}

#[derive(Debug, Clone)]
pub(super) enum StepKind {
    Int(IntStep),
    Enum(EnumStep),
    /// FLOAT of 4 or 8 bytes (others are [`StepKind::Opaque`]).
    Float,
    Composite(CompositeStep),
    Array(ArrayStep),
    /// `struct in_addr` / `struct in6_addr`: address text, or the composite rule via `inner`.
    Addr {
        family: Family,
        inner: usize,
    },
    /// The key of an LPM trie: CIDR text, or the composite rule via `inner`.
    Lpm {
        family: Family,
        addr_offset: usize,
        inner: usize,
    },
    Pointer,
    /// Only hex bytes (maps without BTF types, FLOATs of unusual sizes).
    Opaque,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct IntStep {
    pub signed: bool,
    /// Reached through a `__be16`/`__be32`/`__be64` typedef.
    pub big_endian: bool,
    pub boolean: bool,
    /// `char`: takes -128..=255, whatever its signedness.
    pub char: bool,
    /// Value bits and their offset in the storage (clang: all bits, offset 0).
    pub bits: u8,
    pub offset: u8,
    /// `__be32`: also takes IPv4 text.
    pub ipv4: bool,
}

impl IntStep {
    /// Whether the value occupies only part of its storage.
    pub fn is_partial(&self, size: usize) -> bool {
        self.offset != 0 || usize::from(self.bits) != size * 8
    }

    /// Inclusive range of a value `width` bits wide.
    pub fn range(&self, width: u32) -> (i128, i128) {
        if self.boolean {
            return (0, 1);
        }
        let (smin, smax) = signed_range(width);
        let umax = unsigned_max(width);
        if self.char && width == 8 {
            (smin, umax)
        } else if self.signed {
            (smin, smax)
        } else {
            (0, umax)
        }
    }
}

/// The range of a `width`-bit two's complement integer.
pub(super) fn signed_range(width: u32) -> (i128, i128) {
    match width {
        0 => (0, 0),
        w if w >= 128 => (i128::MIN, i128::MAX),
        w => (-(1i128 << (w - 1)), (1i128 << (w - 1)) - 1),
    }
}

/// The largest `width`-bit unsigned integer (clamped to what YAML can write).
pub(super) fn unsigned_max(width: u32) -> i128 {
    match width {
        0 => 0,
        w if w >= 127 => i128::MAX,
        w => (1i128 << w) - 1,
    }
}

#[derive(Debug, Clone)]
pub(super) struct EnumStep {
    pub signed: bool,
    pub values: Vec<(Box<str>, i128)>,
}

impl EnumStep {
    /// Values an enum of `width` bits takes. Unsigned enums also take negative
    /// values: clang before 15 never sets the signed flag, even for `-1`.
    pub fn range(&self, width: u32) -> (i128, i128) {
        let (smin, smax) = signed_range(width);
        if self.signed {
            (smin, smax)
        } else {
            (smin, unsigned_max(width))
        }
    }
}

/// A struct or union, with anonymous members flattened into named fields.
#[derive(Debug, Clone)]
pub(super) struct CompositeStep {
    pub union: bool,
    pub fields: Vec<Field>,
    /// The union itself (group 0 when `union`) and every anonymous union inside.
    pub groups: Vec<Group>,
}

/// A union whose members exclude each other.
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// The member the decoder shows: the first one that covers the whole union.
    pub shown: Option<u16>,
}

#[derive(Debug, Clone)]
pub(super) struct Field {
    pub name: Box<str>,
    /// Byte offset in the composite (for bitfields: of the composite's start).
    pub offset: usize,
    pub bitfield: Option<Bitfield>,
    pub step: usize,
    /// (group, member) for every union the field is a member of, outermost first.
    pub groups: Box<[(u16, u16)]>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Bitfield {
    /// Offset from the composite's start, in bits.
    pub bit_offset: u32,
    pub width: u8,
}

#[derive(Debug, Clone)]
pub(super) struct ArrayStep {
    pub elem: usize,
    pub elem_size: usize,
    pub len: usize,
    pub text: Option<ArrayText>,
}

/// Textual forms an array takes besides a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArrayText {
    /// `char[N]`: a string.
    Chars,
    /// `__u8[4]` / `__u8[16]`: an address.
    Addr(Family),
    /// `__u8[6]`: a MAC address.
    Mac,
}

/// Typedef names that make an integer big-endian.
const BIG_ENDIAN_TYPEDEFS: [&str; 3] = ["__be16", "__be32", "__be64"];

impl Layout {
    /// The plan for `type_id`. With `lpm`, a key struct shaped like an LPM
    /// trie key (`{__u32 prefixlen; <address> addr;}`) also takes CIDR text.
    pub fn build(btf: &Btf, type_id: u32, lpm: bool) -> Result<Layout, LayoutError> {
        let size = btf.size_of(type_id);
        if btf.ty(type_id).is_none() {
            return Err(LayoutError::UnknownType { id: type_id });
        }
        let Some(size) = size else {
            return Err(LayoutError::Unsized {
                ty: btf.type_name(type_id),
            });
        };
        let mut builder = Builder {
            btf,
            steps: Vec::new(),
            memo: HashMap::new(),
        };
        let mut root = builder.step(type_id, 0)?;
        if lpm && let Some((family, addr_offset)) = lpm_shape(btf, type_id) {
            root = builder.push(Step {
                size: size as usize,
                name: btf.type_name(type_id).into(),
                kind: StepKind::Lpm {
                    family,
                    addr_offset,
                    inner: root,
                },
            });
        }
        Ok(Layout {
            steps: builder.steps,
            root,
            size: size as usize,
            endian: btf.endian(),
        })
    }

    /// A plan taking only hex bytes, for maps without BTF types.
    pub fn raw(size: usize) -> Layout {
        Layout {
            steps: vec![Step {
                size,
                name: "untyped bytes".into(),
                kind: StepKind::Opaque,
            }],
            root: 0,
            size,
            endian: Endian::Little,
        }
    }
}

/// For an LPM key struct: the address family and the address's byte offset.
/// The shape: exactly two members, a 4-byte unsigned int at 0 and an address
/// right after it, and nothing else in the struct.
fn lpm_shape(btf: &Btf, type_id: u32) -> Option<(Family, usize)> {
    let TypeKind::Struct(c) = &btf.ty(btf.resolve(type_id))?.kind else {
        return None;
    };
    let [prefix, addr] = c.members.as_slice() else {
        return None;
    };
    let TypeKind::Int(int) = btf.ty(btf.resolve(prefix.ty))?.kind else {
        return None;
    };
    if int.size != 4 || int.signed || prefix.bit_offset != 0 || prefix.bitfield_size != 0 {
        return None;
    }
    if addr.bit_offset != 32 || addr.bitfield_size != 0 {
        return None;
    }
    let family = address_family(btf, addr.ty)?;
    (c.size as usize == 4 + family.len()).then_some((family, 4))
}

/// Whether a type holds an address: `__be32`, `struct in_addr`, `__u8[4]`
/// (IPv4); `struct in6_addr`, `__u8[16]` (IPv6).
fn address_family(btf: &Btf, type_id: u32) -> Option<Family> {
    let resolved = btf.resolve(type_id);
    let ty = btf.ty(resolved)?;
    match &ty.kind {
        TypeKind::Int(int) if int.size == 4 && btf.has_typedef(type_id, &["__be32"]) => {
            Some(Family::V4)
        }
        TypeKind::Struct(c) | TypeKind::Union(c) => match (ty.name.as_str(), c.size) {
            ("in_addr", 4) => Some(Family::V4),
            ("in6_addr", 16) => Some(Family::V6),
            _ => None,
        },
        TypeKind::Array(a) if is_u8(btf, a.elem) => match a.len {
            4 => Some(Family::V4),
            16 => Some(Family::V6),
            _ => None,
        },
        _ => None,
    }
}

/// An unsigned byte that is not `char` (`__u8`, `unsigned char`).
fn is_u8(btf: &Btf, type_id: u32) -> bool {
    let resolved = btf.resolve(type_id);
    btf.ty(resolved).is_some_and(|t| match t.kind {
        TypeKind::Int(int) => {
            int.size == 1 && !int.signed && !int.char && !int.bool && t.name != "char"
        }
        _ => false,
    })
}

/// `char` (clang marks it SIGNED, not CHAR, so the name decides too).
fn is_char(btf: &Btf, type_id: u32) -> bool {
    let resolved = btf.resolve(type_id);
    btf.ty(resolved).is_some_and(|t| match t.kind {
        TypeKind::Int(int) => int.size == 1 && (int.char || t.name == "char"),
        _ => false,
    })
}

struct Builder<'a> {
    btf: &'a Btf,
    steps: Vec<Step>,
    /// Declared type id → step, so shared types are planned once.
    memo: HashMap<u32, usize>,
}

impl Builder<'_> {
    fn push(&mut self, step: Step) -> usize {
        self.steps.push(step);
        self.steps.len() - 1
    }

    fn step(&mut self, type_id: u32, depth: u32) -> Result<usize, LayoutError> {
        if let Some(&index) = self.memo.get(&type_id) {
            return Ok(index);
        }
        if depth > MAX_DEPTH {
            return Err(LayoutError::TooDeep {
                ty: self.btf.type_name(type_id),
            });
        }
        let step = self.plan(type_id, depth)?;
        let mut index = self.push(step);
        // A `{__u32 prefixlen; <address> addr;}` member (a prefix inside a
        // value, as in match rules) also takes CIDR text, like an LPM key.
        if depth > 0
            && let Some((family, addr_offset)) = lpm_shape(self.btf, type_id)
        {
            index = self.push(Step {
                size: self.steps[index].size,
                name: self.steps[index].name.clone(),
                kind: StepKind::Lpm {
                    family,
                    addr_offset,
                    inner: index,
                },
            });
        }
        self.memo.insert(type_id, index);
        Ok(index)
    }

    fn plan(&mut self, type_id: u32, depth: u32) -> Result<Step, LayoutError> {
        let btf = self.btf;
        let name: Box<str> = btf.type_name(type_id).into();
        let unsized_err = || LayoutError::Unsized {
            ty: btf.type_name(type_id),
        };
        let size = btf.size_of(type_id).ok_or_else(unsized_err)? as usize;
        let resolved = btf.resolve(type_id);
        let ty = btf
            .ty(resolved)
            .ok_or(LayoutError::UnknownType { id: resolved })?;
        let kind = match &ty.kind {
            TypeKind::Int(int) => {
                let big_endian = btf.has_typedef(type_id, &BIG_ENDIAN_TYPEDEFS);
                StepKind::Int(IntStep {
                    signed: int.signed,
                    big_endian,
                    boolean: int.bool,
                    char: int.char || ty.name == "char",
                    bits: int.bits,
                    offset: int.offset,
                    ipv4: big_endian && int.size == 4,
                })
            }
            TypeKind::Enum(e) => StepKind::Enum(EnumStep {
                signed: e.signed,
                values: e
                    .values
                    .iter()
                    .map(|v| (v.name.as_str().into(), v.value))
                    .collect(),
            }),
            TypeKind::Float { size: 4 | 8 } => StepKind::Float,
            TypeKind::Float { .. } => StepKind::Opaque,
            TypeKind::Ptr { .. } => StepKind::Pointer,
            TypeKind::Array(a) => {
                let elem = self.step(a.elem, depth + 1)?;
                let elem_size = btf.size_of(a.elem).ok_or_else(unsized_err)? as usize;
                let text = if is_char(btf, a.elem) {
                    Some(ArrayText::Chars)
                } else if a.len == 6 && is_u8(btf, a.elem) {
                    Some(ArrayText::Mac)
                } else {
                    address_family(btf, type_id).map(ArrayText::Addr)
                };
                StepKind::Array(ArrayStep {
                    elem,
                    elem_size,
                    len: a.len as usize,
                    text,
                })
            }
            TypeKind::Struct(c) | TypeKind::Union(c) => {
                let composite = self.composite(c, matches!(ty.kind, TypeKind::Union(_)), depth)?;
                match address_family(btf, type_id) {
                    Some(family) => {
                        let inner = self.push(Step {
                            size,
                            name: name.clone(),
                            kind: StepKind::Composite(composite),
                        });
                        StepKind::Addr { family, inner }
                    }
                    None => StepKind::Composite(composite),
                }
            }
            _ => return Err(unsized_err()),
        };
        Ok(Step { size, name, kind })
    }

    fn composite(
        &mut self,
        c: &Composite,
        union: bool,
        depth: u32,
    ) -> Result<CompositeStep, LayoutError> {
        let mut out = CompositeStep {
            union,
            fields: Vec::new(),
            groups: Vec::new(),
        };
        self.flatten(c, union, 0, &[], &mut out, depth)?;
        Ok(out)
    }

    /// Adds the members of `c` (at `base_bits` in the outermost composite) as
    /// fields; anonymous struct/union members contribute their own members.
    fn flatten(
        &mut self,
        c: &Composite,
        union: bool,
        base_bits: u32,
        groups: &[(u16, u16)],
        out: &mut CompositeStep,
        depth: u32,
    ) -> Result<(), LayoutError> {
        if depth > MAX_DEPTH {
            return Err(LayoutError::TooDeep {
                ty: "an anonymous member".into(),
            });
        }
        let btf = self.btf;
        let group = if union {
            let covers = |m: &super::types::Member| {
                let bits = match m.bitfield_size {
                    0 => btf.size_of(m.ty).map_or(0, |s| u64::from(s) * 8),
                    w => u64::from(w),
                };
                bits == u64::from(c.size) * 8
            };
            out.groups.push(Group {
                shown: c.members.iter().position(covers).map(|i| i as u16),
            });
            Some((out.groups.len() - 1) as u16)
        } else {
            None
        };
        for (index, member) in c.members.iter().enumerate() {
            let mut member_groups = groups.to_vec();
            if let Some(g) = group {
                member_groups.push((g, index as u16));
            }
            let bit_offset = base_bits.saturating_add(member.bit_offset);
            if member.name.is_empty() {
                let resolved = btf.resolve(member.ty);
                match btf.ty(resolved).map(|t| &t.kind) {
                    Some(TypeKind::Struct(inner)) if member.bitfield_size == 0 => {
                        self.flatten(inner, false, bit_offset, &member_groups, out, depth + 1)?;
                    }
                    Some(TypeKind::Union(inner)) if member.bitfield_size == 0 => {
                        self.flatten(inner, true, bit_offset, &member_groups, out, depth + 1)?;
                    }
                    // Unnamed bitfields are padding: nothing to set.
                    _ => {}
                }
                continue;
            }
            let step = self.step(member.ty, depth + 1)?;
            let bitfield = (member.bitfield_size > 0).then_some(Bitfield {
                bit_offset,
                width: member.bitfield_size,
            });
            out.fields.push(Field {
                name: member.name.as_str().into(),
                offset: (bit_offset / 8) as usize,
                bitfield,
                step,
                groups: member_groups.into(),
            });
        }
        Ok(())
    }
}

/// Reads bits `[bit_offset, bit_offset + width)` of `buf` as an unsigned value.
/// Little-endian numbers bits from the least significant bit of byte 0;
/// big-endian from the most significant bit of byte 0, value MSB first.
pub(super) fn read_bits(buf: &[u8], bit_offset: u32, width: u8, endian: Endian) -> u128 {
    let mut value = 0u128;
    for k in 0..u32::from(width) {
        let pos = (bit_offset + k) as usize;
        let Some(&byte) = buf.get(pos / 8) else {
            break;
        };
        match endian {
            Endian::Little => value |= u128::from((byte >> (pos % 8)) & 1) << k,
            Endian::Big => value = value << 1 | u128::from((byte >> (7 - pos % 8)) & 1),
        }
    }
    value
}

/// Writes the low `width` bits of `value` at `bit_offset` (see [`read_bits`]).
pub(super) fn write_bits(buf: &mut [u8], bit_offset: u32, width: u8, value: u128, endian: Endian) {
    for k in 0..u32::from(width) {
        let pos = (bit_offset + k) as usize;
        let (bit, shift) = match endian {
            Endian::Little => ((value >> k) & 1, pos % 8),
            Endian::Big => ((value >> (u32::from(width) - 1 - k)) & 1, 7 - pos % 8),
        };
        if let Some(byte) = buf.get_mut(pos / 8) {
            *byte = (*byte & !(1 << shift)) | ((bit as u8) << shift);
        }
    }
}

/// Reads an integer of `buf.len()` bytes (1..=16), zero-extended.
pub(super) fn read_uint(buf: &[u8], big_endian: bool) -> u128 {
    let mut bytes = [0u8; 16];
    let n = buf.len().min(16);
    if big_endian {
        bytes[16 - n..].copy_from_slice(&buf[..n]);
        u128::from_be_bytes(bytes)
    } else {
        bytes[..n].copy_from_slice(&buf[..n]);
        u128::from_le_bytes(bytes)
    }
}

/// Writes the low `buf.len()` bytes (1..=16) of `value`.
pub(super) fn write_uint(buf: &mut [u8], value: u128, big_endian: bool) {
    let n = buf.len().min(16);
    if big_endian {
        buf[..n].copy_from_slice(&value.to_be_bytes()[16 - n..]);
    } else {
        buf[..n].copy_from_slice(&value.to_le_bytes()[..n]);
    }
}

/// Sign-extends the low `width` bits of `value`.
pub(super) fn sign_extend(value: u128, width: u32) -> i128 {
    if width == 0 || width >= 128 {
        return value as i128;
    }
    let shift = 128 - width;
    ((value << shift) as i128) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip() {
        for endian in [Endian::Little, Endian::Big] {
            let mut buf = [0u8; 4];
            write_bits(&mut buf, 3, 5, 0b10110, endian);
            write_bits(&mut buf, 8, 7, 0x55, endian);
            assert_eq!(read_bits(&buf, 3, 5, endian), 0b10110);
            assert_eq!(read_bits(&buf, 8, 7, endian), 0x55);
            assert_eq!(read_bits(&buf, 0, 3, endian), 0);
        }
        let mut buf = [0u8; 2];
        write_bits(&mut buf, 3, 5, 0b10110, Endian::Little);
        assert_eq!(buf, [0b1011_0000, 0]);
        let mut buf = [0u8; 2];
        write_bits(&mut buf, 3, 5, 0b10110, Endian::Big);
        assert_eq!(buf, [0b0001_0110, 0]);
    }

    #[test]
    fn ints() {
        let mut buf = [0u8; 2];
        write_uint(&mut buf, 0x1234, true);
        assert_eq!(buf, [0x12, 0x34]);
        assert_eq!(read_uint(&buf, true), 0x1234);
        write_uint(&mut buf, 0x1234, false);
        assert_eq!(buf, [0x34, 0x12]);
        assert_eq!(sign_extend(0x7f, 7), -1);
        assert_eq!(sign_extend(0x3f, 7), 63);
        assert_eq!(signed_range(8), (-128, 127));
        assert_eq!(unsigned_max(64), u64::MAX.into());
        assert_eq!(unsigned_max(128), i128::MAX);
    }
}
