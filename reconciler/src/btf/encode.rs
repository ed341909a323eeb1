//! YAML values → the bytes of a BTF type: how map keys, map values and
//! globals written in config become what the kernel stores.
//!
//! # Rules
//!
//! - **Integers** (`__u8` … `__u64`, signed or not, `char`, `_Bool`): a YAML
//!   integer (`10`, `-3`, `0x0a`, `0o12`), range-checked exactly against the
//!   type (`char` takes -128..=255; `_Bool` takes `true`/`false`/`0`/`1`;
//!   bitfields are checked against their width). Stored in the object's byte
//!   order (little-endian for every `-target bpf` object on x86 and arm64),
//!   except through a `__be16`/`__be32`/`__be64` typedef: big-endian. A quoted
//!   `"10"` is a string, not an integer. `__be32` also takes IPv4 text.
//! - **Enums**: an enumerator name (`KF_MODE_FAST`), or an integer in range
//!   for the enum's size.
//! - **Floats**: a YAML integer or float.
//! - **Structs**: a mapping of field names; omitted fields and padding are
//!   zero. Members of anonymous structs and unions are named directly, as in C;
//!   two members of one anonymous union can't both be set. **Unions**: a
//!   mapping with exactly one member.
//! - **Arrays**: a list of exactly as many items as the array has. `char[N]`
//!   also takes a string (UTF-8, NUL-padded, at most N-1 bytes so it stays
//!   NUL-terminated); `__u8[4]` and `struct in_addr` take IPv4 text, `__u8[16]`
//!   and `struct in6_addr` IPv6 text (`2001:db8::1`, `::ffff:192.0.2.1`),
//!   `__u8[6]` a MAC address (`aa:bb:cc:dd:ee:ff` or with `-`).
//! - **LPM trie keys** (the key of a `BPF_MAP_TYPE_LPM_TRIE` map shaped
//!   `{__u32 prefixlen; <IPv4 or IPv6 address> addr;}`): CIDR text
//!   (`192.0.2.0/24`, `2001:db8::/32`) or a bare address (a full-length
//!   prefix). Host bits past the prefix are an error, which names the network
//!   meant. The mapping form `{prefixlen: 24, addr: 192.0.2.0}` and hex
//!   bytes work too, with the same checks (the prefix within the address,
//!   no host bits): the kernel refuses a longer prefix, and host bits make a
//!   second key for the kernel's one entry, so the map would never converge.
//! - **Hex bytes, for any type but integers, enums and floats**: a string `0x`
//!   followed by exactly two hex digits per byte of the type (either case) is
//!   the raw bytes in memory order, whether written plain or quoted. For
//!   integers, enums and floats `0x…` is what YAML says it is: a plain `0x10`
//!   is the integer 16, and a quoted `"0x10"` is a string, hence an error. A
//!   `char[N]` string that is not exactly the hex form is text. Maps without
//!   BTF types take only hex ([`Encoder::raw`]).
//! - **Pointers** can't be set, not even as hex (leave them out of the
//!   struct: they are zero).
//!
//! Errors carry the mark of the innermost offending node and a path from the
//! top of the value (`key.addr`, `value.list[2]`), and read well after a
//! `file:line:col: ` prefix.

use std::fmt;

use crate::config::yaml::{Kind, Mark, Node, Resolved};

use super::layout::{
    ArrayStep, ArrayText, CompositeStep, EnumStep, Field, IntStep, Layout, LayoutError, Step,
    StepKind, read_uint, write_bits, write_uint,
};
use super::object::{BPF_MAP_TYPE_LPM_TRIE, GlobalVar, MapDef};
use super::text::{self, CidrError, Family};
use super::types::{Btf, Endian};

/// How many valid names an error lists before "and N more".
const MAX_LISTED: usize = 10;

/// A value that does not fit its BTF type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct EncodeError {
    /// Where the offending node starts.
    pub mark: Mark,
    /// Where in the value: `key`, `key.addr`, `value.list[2]`.
    pub path: String,
    /// What is wrong.
    pub reason: EncodeErrorKind,
}

/// Kinds of address text, for [`EncodeErrorKind::BadAddress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
    /// An IPv4 address or CIDR (LPM keys).
    Ipv4Cidr,
    /// An IPv6 address or CIDR (LPM keys).
    Ipv6Cidr,
    /// A MAC address.
    Mac,
}

impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressKind::Ipv4 => "an IPv4 address",
            AddressKind::Ipv6 => "an IPv6 address",
            AddressKind::Ipv4Cidr => "an IPv4 address or CIDR (like 192.0.2.0/24)",
            AddressKind::Ipv6Cidr => "an IPv6 address or CIDR (like 2001:db8::/32)",
            AddressKind::Mac => "a MAC address (like 02:00:00:00:00:01)",
        })
    }
}

/// Lists names for a message, at most [`MAX_LISTED`].
struct Names<'a>(&'a [String]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().take(MAX_LISTED).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        if self.0.len() > MAX_LISTED {
            write!(f, ", and {} more", self.0.len() - MAX_LISTED)?;
        }
        Ok(())
    }
}

/// What is wrong with a value. `ty` fields are C type names (`__u8`, `struct rl_config`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeErrorKind {
    /// An integer outside the type's range.
    #[error("{value} is out of range for {ty} ({min} to {max})")]
    OutOfRange {
        /// The value written.
        value: i128,
        /// Smallest allowed.
        min: i128,
        /// Largest allowed.
        max: i128,
        /// The type (with the width for bitfields: `__u32:3`).
        ty: String,
    },
    /// Not a YAML integer where one is needed.
    #[error("expected an integer for {ty}, found {found}")]
    ExpectedInteger {
        /// The type.
        ty: String,
        /// What was written (`a string "10"`, `a mapping`, ...).
        found: String,
    },
    /// Not an integer nor IPv4 text for a `__be32`.
    #[error("expected an integer or an IPv4 address for {ty}, found {found}")]
    ExpectedIntegerOrIpv4 {
        /// The type.
        ty: String,
        /// What was written.
        found: String,
    },
    /// Not a boolean for `_Bool`.
    #[error("expected true, false, 0 or 1 for {ty}, found {found}")]
    ExpectedBool {
        /// The type.
        ty: String,
        /// What was written.
        found: String,
    },
    /// Not a number for a float.
    #[error("expected a number for {ty}, found {found}")]
    ExpectedNumber {
        /// The type.
        ty: String,
        /// What was written.
        found: String,
    },
    /// A float too large for `float`.
    #[error("{value:?} is out of range for {ty}")]
    FloatOutOfRange {
        /// The value written.
        value: f64,
        /// The type.
        ty: String,
    },
    /// Neither an enumerator name nor an integer.
    #[error(
        "expected an enumerator of {ty} or an integer, found {found} (valid: {})",
        Names(valid)
    )]
    ExpectedEnum {
        /// The enum type.
        ty: String,
        /// What was written.
        found: String,
        /// Its enumerators.
        valid: Vec<String>,
    },
    /// A name that is not an enumerator of the enum.
    #[error("unknown enumerator {name} for {ty} (valid: {})", Names(valid))]
    UnknownEnumerator {
        /// The name written.
        name: String,
        /// The enum type.
        ty: String,
        /// Its enumerators.
        valid: Vec<String>,
    },
    /// Not a mapping for a struct or union.
    #[error("expected a mapping of field names for {ty}, found {found}")]
    ExpectedMapping {
        /// The struct or union.
        ty: String,
        /// What was written.
        found: String,
    },
    /// A mapping key that is not a plain name.
    #[error("expected a field name of {ty}, found {found}")]
    ExpectedFieldName {
        /// The struct or union.
        ty: String,
        /// What the key is.
        found: String,
    },
    /// A field the struct does not have.
    #[error("unknown field {field} in {ty} (fields: {})", Names(valid))]
    UnknownField {
        /// The name written.
        field: String,
        /// The struct or union.
        ty: String,
        /// Its fields.
        valid: Vec<String>,
    },
    /// A union mapping with other than one member.
    #[error(
        "{ty} takes exactly one member, found {found} (members: {})",
        Names(valid)
    )]
    UnionArity {
        /// The union.
        ty: String,
        /// How many members were written.
        found: usize,
        /// Its members.
        valid: Vec<String>,
    },
    /// Two members of one anonymous union.
    #[error("{first} and {second} share storage (an anonymous union in {ty}): set only one")]
    OverlappingFields {
        /// The struct.
        ty: String,
        /// The field written first.
        first: String,
        /// The field written second.
        second: String,
    },
    /// Not a list (or a textual form) for an array.
    #[error("expected {expected} for {ty}, found {found}")]
    ExpectedList {
        /// The array type.
        ty: String,
        /// What it takes, e.g. "a list of 3 items".
        expected: String,
        /// What was written.
        found: String,
    },
    /// A list of the wrong length.
    #[error("expected {expected} items for {ty}, found {found}")]
    WrongLength {
        /// The array type.
        ty: String,
        /// Its length.
        expected: usize,
        /// Items written.
        found: usize,
    },
    /// A string too long for a `char[N]`.
    #[error(
        "a string of {len} bytes is too long for {ty} (at most {max}, leaving room for the NUL terminator)"
    )]
    StringTooLong {
        /// The array type.
        ty: String,
        /// The string's length in bytes.
        len: usize,
        /// The longest string that fits.
        max: usize,
    },
    /// Text that is not the address the type holds.
    #[error("expected {kind} for {ty}, found {found}")]
    BadAddress {
        /// What text the type takes.
        kind: AddressKind,
        /// The type.
        ty: String,
        /// What was written.
        found: String,
    },
    /// A CIDR with bits set past its prefix.
    #[error("host bits set in {text} (did you mean {suggestion}?)")]
    HostBitsSet {
        /// The CIDR written.
        text: String,
        /// The network it most likely means.
        suggestion: String,
    },
    /// A prefix longer than the address.
    #[error("prefix length {prefix} is longer than the {max} bits of the address in {text}")]
    PrefixTooLong {
        /// The CIDR written.
        text: String,
        /// The prefix length written.
        prefix: u32,
        /// The address's length in bits.
        max: u32,
    },
    /// `0x…` with the wrong number of digits, or a non-hex digit.
    #[error("expected 0x followed by {digits} hex digits for {ty} ({bytes} bytes), found {found}")]
    BadHex {
        /// The type.
        ty: String,
        /// Hex digits needed.
        digits: usize,
        /// Its size.
        bytes: usize,
        /// What was written.
        found: String,
    },
    /// A pointer.
    #[error("pointers can't be set from config ({ty})")]
    NotSettable {
        /// The pointer type.
        ty: String,
    },
}

/// A precomputed encoder for one type: build it once per map key, map value
/// or global, then call [`Encoder::encode`] for every entry.
#[derive(Debug, Clone)]
pub struct Encoder {
    layout: Layout,
    label: Box<str>,
}

/// Internal results carry boxed errors so the success path stays small.
type Res = Result<(), Box<EncodeError>>;

impl Encoder {
    /// An encoder for `type_id`; error paths start with `label` (e.g. `value`).
    pub fn new(btf: &Btf, type_id: u32, label: &str) -> Result<Encoder, LayoutError> {
        Ok(Encoder {
            layout: Layout::build(btf, type_id, false)?,
            label: label.into(),
        })
    }

    /// An encoder for a map's keys (label `key`): CIDR text for LPM trie keys,
    /// hex only when the map has no key type.
    pub fn map_key(btf: &Btf, map: &MapDef) -> Result<Encoder, LayoutError> {
        let layout = match map.key_type {
            Some(ty) => Layout::build(btf, ty, map.map_type == BPF_MAP_TYPE_LPM_TRIE)?,
            None => Layout::raw(map.key_size as usize),
        };
        Ok(Encoder {
            layout,
            label: "key".into(),
        })
    }

    /// An encoder for a map's values (label `value`), hex only when the map
    /// has no value type (including map-in-map and program arrays).
    pub fn map_value(btf: &Btf, map: &MapDef) -> Result<Encoder, LayoutError> {
        let layout = match map.value_type {
            Some(ty) => Layout::build(btf, ty, false)?,
            None => Layout::raw(map.value_size as usize),
        };
        Ok(Encoder {
            layout,
            label: "value".into(),
        })
    }

    /// An encoder for a global variable (label: its name).
    pub fn global(btf: &Btf, var: &GlobalVar) -> Result<Encoder, LayoutError> {
        Encoder::new(btf, var.type_id, &var.name)
    }

    /// An encoder of `size` untyped bytes: takes only `0x` and `2 * size` hex digits.
    pub fn raw(size: usize, label: &str) -> Encoder {
        Encoder {
            layout: Layout::raw(size),
            label: label.into(),
        }
    }

    /// Bytes every encoded value takes.
    pub fn size(&self) -> usize {
        self.layout.size
    }

    /// Appends exactly [`Encoder::size`] bytes encoding `node` to `out`. On
    /// error `out` is left as it was.
    pub fn encode(&self, node: &Node<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.resize(start + self.layout.size, 0);
        let buf = &mut out[start..];
        match self.step(self.layout.root, node, buf) {
            Ok(()) => Ok(()),
            Err(mut err) => {
                out.truncate(start);
                err.path.insert_str(0, &self.label);
                Err(*err)
            }
        }
    }

    fn fail(node: &Node<'_>, reason: EncodeErrorKind) -> Box<EncodeError> {
        Box::new(EncodeError {
            mark: node.mark,
            path: String::new(),
            reason,
        })
    }

    /// Encodes `node` as step `index` into `buf` (zeroed, exactly the step's size).
    fn step(&self, index: usize, node: &Node<'_>, buf: &mut [u8]) -> Res {
        // Step indices all come from the layout builder: never out of range.
        let Some(step) = self.layout.steps.get(index) else {
            return Ok(());
        };
        match &step.kind {
            StepKind::Int(int) => {
                if int.is_partial(step.size) {
                    // Clang never emits these (it uses member bitfields), but the format allows them.
                    let width = u32::from(int.bits);
                    let value = self.int_value(step, int, node, width, false)?;
                    let endian = if int.big_endian {
                        Endian::Big
                    } else {
                        self.layout.endian
                    };
                    write_bits(buf, u32::from(int.offset), int.bits, value.bits(), endian);
                } else {
                    match self.int_value(step, int, node, step.size as u32 * 8, int.ipv4)? {
                        IntValue::Int(v) => write_uint(buf, v as u128, self.big_endian(int)),
                        IntValue::Ipv4(octets) => buf.copy_from_slice(&octets),
                    }
                }
                Ok(())
            }
            StepKind::Enum(e) => {
                let value = self.enum_value(step, e, node, step.size as u32 * 8)?;
                write_uint(buf, value as u128, self.layout.endian == Endian::Big);
                Ok(())
            }
            StepKind::Float => self.float(step, node, buf),
            _ => {
                // Hex bytes, except for pointers: an address from config is never meaningful.
                if let Kind::Scalar(s) = &node.kind
                    && !matches!(step.kind, StepKind::Pointer)
                    && let Some(digits) = text::hex_digits(&s.text)
                {
                    if text::parse_hex(digits, buf) {
                        // Raw bytes skip the CIDR parser, not its checks.
                        return match &step.kind {
                            StepKind::Lpm {
                                family,
                                addr_offset,
                                ..
                            } => self.check_prefix(*family, *addr_offset, node, buf, Some(&s.text)),
                            _ => Ok(()),
                        };
                    }
                    let is_chars = matches!(&step.kind,
                        StepKind::Array(a) if a.text == Some(ArrayText::Chars));
                    if !is_chars {
                        return Err(Self::bad_hex(step, node));
                    }
                }
                match &step.kind {
                    StepKind::Composite(c) => self.composite(step, c, node, buf),
                    StepKind::Array(a) => self.array(step, a, node, buf),
                    StepKind::Addr { family, inner } => match &node.kind {
                        Kind::Mapping(_) => self.step(*inner, node, buf),
                        _ => self.address(step, *family, node, buf),
                    },
                    StepKind::Lpm {
                        family,
                        addr_offset,
                        inner,
                    } => match &node.kind {
                        Kind::Mapping(_) => {
                            self.step(*inner, node, buf)?;
                            self.check_prefix(*family, *addr_offset, node, buf, None)
                        }
                        _ => self.lpm(step, *family, *addr_offset, node, buf),
                    },
                    StepKind::Pointer => Err(Self::fail(
                        node,
                        EncodeErrorKind::NotSettable {
                            ty: step.name.to_string(),
                        },
                    )),
                    _ => Err(Self::bad_hex(step, node)),
                }
            }
        }
    }

    fn big_endian(&self, int: &IntStep) -> bool {
        int.big_endian || self.layout.endian == Endian::Big
    }

    fn bad_hex(step: &Step, node: &Node<'_>) -> Box<EncodeError> {
        Self::fail(
            node,
            EncodeErrorKind::BadHex {
                ty: step.name.to_string(),
                digits: step.size * 2,
                bytes: step.size,
                found: text::describe(node),
            },
        )
    }

    /// The integer `node` holds for an int `width` bits wide, or (when
    /// `ipv4` and the type is `__be32`) the address its IPv4 text names.
    fn int_value(
        &self,
        step: &Step,
        int: &IntStep,
        node: &Node<'_>,
        width: u32,
        ipv4: bool,
    ) -> Result<IntValue, Box<EncodeError>> {
        let ty = || {
            if width as usize != step.size * 8 && !int.boolean {
                format!("{}:{width}", step.name)
            } else {
                step.name.to_string()
            }
        };
        let resolved = match &node.kind {
            Kind::Scalar(s) => Some(s.resolve()),
            _ => None,
        };
        let value = match resolved {
            Some(Resolved::Int(v)) => v,
            Some(Resolved::Bool(b)) if int.boolean => i128::from(b),
            Some(Resolved::Str(text)) if int.ipv4 => {
                let mut octets = [0u8; 4];
                if ipv4 && text::parse_addr(Family::V4, text, &mut octets) {
                    return Ok(IntValue::Ipv4(octets));
                }
                return Err(Self::fail(
                    node,
                    EncodeErrorKind::ExpectedIntegerOrIpv4 {
                        ty: ty(),
                        found: text::describe(node),
                    },
                ));
            }
            _ => {
                let found = text::describe(node);
                let reason = if int.boolean {
                    EncodeErrorKind::ExpectedBool { ty: ty(), found }
                } else if int.ipv4 {
                    EncodeErrorKind::ExpectedIntegerOrIpv4 { ty: ty(), found }
                } else {
                    EncodeErrorKind::ExpectedInteger { ty: ty(), found }
                };
                return Err(Self::fail(node, reason));
            }
        };
        let (min, max) = int.range(width);
        if value < min || value > max {
            return Err(Self::fail(
                node,
                EncodeErrorKind::OutOfRange {
                    value,
                    min,
                    max,
                    ty: ty(),
                },
            ));
        }
        Ok(IntValue::Int(value))
    }

    fn enum_value(
        &self,
        step: &Step,
        e: &EnumStep,
        node: &Node<'_>,
        width: u32,
    ) -> Result<i128, Box<EncodeError>> {
        let valid = || e.values.iter().map(|(n, _)| n.to_string()).collect();
        let ty = || {
            if width as usize != step.size * 8 {
                format!("{}:{width}", step.name)
            } else {
                step.name.to_string()
            }
        };
        let resolved = match &node.kind {
            Kind::Scalar(s) => Some(s.resolve()),
            _ => None,
        };
        let value = match resolved {
            Some(Resolved::Int(v)) => v,
            Some(Resolved::Str(name)) => {
                return match e.values.iter().find(|(n, _)| **n == *name) {
                    Some((_, v)) => Ok(*v),
                    None => Err(Self::fail(
                        node,
                        EncodeErrorKind::UnknownEnumerator {
                            name: name.to_owned(),
                            ty: ty(),
                            valid: valid(),
                        },
                    )),
                };
            }
            // Other scalars (bools, floats, null) and collections.
            _ => {
                return Err(Self::fail(
                    node,
                    EncodeErrorKind::ExpectedEnum {
                        ty: ty(),
                        found: text::describe(node),
                        valid: valid(),
                    },
                ));
            }
        };
        let (min, max) = e.range(width);
        if value < min || value > max {
            return Err(Self::fail(
                node,
                EncodeErrorKind::OutOfRange {
                    value,
                    min,
                    max,
                    ty: ty(),
                },
            ));
        }
        Ok(value)
    }

    fn float(&self, step: &Step, node: &Node<'_>, buf: &mut [u8]) -> Res {
        let value = match &node.kind {
            Kind::Scalar(s) => match s.resolve() {
                Resolved::Int(v) => Some(v as f64),
                Resolved::Float(v) => Some(v),
                _ => None,
            },
            _ => None,
        };
        let Some(value) = value else {
            return Err(Self::fail(
                node,
                EncodeErrorKind::ExpectedNumber {
                    ty: step.name.to_string(),
                    found: text::describe(node),
                },
            ));
        };
        let big = self.layout.endian == Endian::Big;
        if step.size == 4 {
            let narrow = value as f32;
            if value.is_finite() && narrow.is_infinite() {
                return Err(Self::fail(
                    node,
                    EncodeErrorKind::FloatOutOfRange {
                        value,
                        ty: step.name.to_string(),
                    },
                ));
            }
            let bytes = if big {
                narrow.to_be_bytes()
            } else {
                narrow.to_le_bytes()
            };
            buf.copy_from_slice(&bytes);
        } else {
            let bytes = if big {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            buf.copy_from_slice(&bytes);
        }
        Ok(())
    }

    fn composite(&self, step: &Step, c: &CompositeStep, node: &Node<'_>, buf: &mut [u8]) -> Res {
        let Kind::Mapping(pairs) = &node.kind else {
            return Err(Self::fail(
                node,
                EncodeErrorKind::ExpectedMapping {
                    ty: step.name.to_string(),
                    found: text::describe(node),
                },
            ));
        };
        let valid = || c.fields.iter().map(|f| f.name.to_string()).collect();
        if c.union && pairs.is_empty() {
            return Err(Self::fail(
                node,
                EncodeErrorKind::UnionArity {
                    ty: step.name.to_string(),
                    found: 0,
                    valid: valid(),
                },
            ));
        }
        for (i, (key, value)) in pairs.iter().enumerate() {
            let field_index = self.field_index(step, c, key)?;
            let field = &c.fields[field_index];
            if !c.groups.is_empty() {
                // Members of one union (named or anonymous) exclude each other.
                for (earlier_key, _) in &pairs[..i] {
                    let earlier = &c.fields[self.field_index(step, c, earlier_key)?];
                    if let Some(group) = conflict(earlier, field) {
                        let reason = if c.union && group == 0 {
                            EncodeErrorKind::UnionArity {
                                ty: step.name.to_string(),
                                found: pairs.len(),
                                valid: valid(),
                            }
                        } else {
                            EncodeErrorKind::OverlappingFields {
                                ty: step.name.to_string(),
                                first: earlier.name.to_string(),
                                second: field.name.to_string(),
                            }
                        };
                        return Err(Self::fail(key, reason));
                    }
                }
            }
            self.field(field, value, buf).map_err(|mut err| {
                err.path.insert_str(0, &field.name);
                err.path.insert(0, '.');
                err
            })?;
        }
        Ok(())
    }

    fn field_index(
        &self,
        step: &Step,
        c: &CompositeStep,
        key: &Node<'_>,
    ) -> Result<usize, Box<EncodeError>> {
        let Kind::Scalar(s) = &key.kind else {
            return Err(Self::fail(
                key,
                EncodeErrorKind::ExpectedFieldName {
                    ty: step.name.to_string(),
                    found: text::describe(key),
                },
            ));
        };
        let name: &str = &s.text;
        c.fields
            .iter()
            .position(|f| *f.name == *name)
            .ok_or_else(|| {
                Self::fail(
                    key,
                    EncodeErrorKind::UnknownField {
                        field: name.to_owned(),
                        ty: step.name.to_string(),
                        valid: c.fields.iter().map(|f| f.name.to_string()).collect(),
                    },
                )
            })
    }

    fn field(&self, field: &Field, value: &Node<'_>, buf: &mut [u8]) -> Res {
        let Some(step) = self.layout.steps.get(field.step) else {
            return Ok(());
        };
        if let Some(bits) = field.bitfield {
            let width = u32::from(bits.width);
            let raw = match &step.kind {
                StepKind::Int(int) => {
                    self.int_value(step, int, value, width, false)?.bits() as i128
                }
                StepKind::Enum(e) => self.enum_value(step, e, value, width)?,
                _ => return Ok(()),
            };
            write_bits(
                buf,
                bits.bit_offset,
                bits.width,
                raw as u128,
                self.layout.endian,
            );
            return Ok(());
        }
        let end = field.offset.saturating_add(step.size);
        match buf.get_mut(field.offset..end) {
            Some(slot) => self.step(field.step, value, slot),
            None => Ok(()),
        }
    }

    fn array(&self, step: &Step, a: &ArrayStep, node: &Node<'_>, buf: &mut [u8]) -> Res {
        match &node.kind {
            Kind::Sequence(items) => {
                if items.len() != a.len {
                    return Err(Self::fail(
                        node,
                        EncodeErrorKind::WrongLength {
                            ty: step.name.to_string(),
                            expected: a.len,
                            found: items.len(),
                        },
                    ));
                }
                for (i, (item, slot)) in items
                    .iter()
                    .zip(buf.chunks_exact_mut(a.elem_size.max(1)))
                    .enumerate()
                {
                    self.step(a.elem, item, slot).map_err(|mut err| {
                        err.path.insert_str(0, &format!("[{i}]"));
                        err
                    })?;
                }
                Ok(())
            }
            Kind::Scalar(s) => match a.text {
                Some(ArrayText::Chars) => {
                    let text: &str = match s.resolve() {
                        Resolved::Null => {
                            return Err(self.expected_list(step, a, node));
                        }
                        _ => &s.text,
                    };
                    if text.len() >= buf.len() && !(text.is_empty() && buf.is_empty()) {
                        return Err(Self::fail(
                            node,
                            EncodeErrorKind::StringTooLong {
                                ty: step.name.to_string(),
                                len: text.len(),
                                max: buf.len().saturating_sub(1),
                            },
                        ));
                    }
                    buf[..text.len()].copy_from_slice(text.as_bytes());
                    Ok(())
                }
                Some(ArrayText::Addr(family)) => self.address(step, family, node, buf),
                Some(ArrayText::Mac) => match text::parse_mac(&s.text) {
                    Some(mac) => {
                        buf.copy_from_slice(&mac);
                        Ok(())
                    }
                    None => Err(Self::fail(
                        node,
                        EncodeErrorKind::BadAddress {
                            kind: AddressKind::Mac,
                            ty: step.name.to_string(),
                            found: text::describe(node),
                        },
                    )),
                },
                None => Err(self.expected_list(step, a, node)),
            },
            Kind::Mapping(_) => Err(self.expected_list(step, a, node)),
        }
    }

    fn expected_list(&self, step: &Step, a: &ArrayStep, node: &Node<'_>) -> Box<EncodeError> {
        let items = format!("a list of {} items", a.len);
        let expected = match a.text {
            Some(ArrayText::Chars) => format!("a string or {items}"),
            Some(ArrayText::Addr(Family::V4)) => format!("an IPv4 address or {items}"),
            Some(ArrayText::Addr(Family::V6)) => format!("an IPv6 address or {items}"),
            Some(ArrayText::Mac) => format!("a MAC address or {items}"),
            None => items,
        };
        Self::fail(
            node,
            EncodeErrorKind::ExpectedList {
                ty: step.name.to_string(),
                expected,
                found: text::describe(node),
            },
        )
    }

    fn address(&self, step: &Step, family: Family, node: &Node<'_>, buf: &mut [u8]) -> Res {
        if let Kind::Scalar(s) = &node.kind
            && text::parse_addr(family, &s.text, buf)
        {
            return Ok(());
        }
        let kind = match family {
            Family::V4 => AddressKind::Ipv4,
            Family::V6 => AddressKind::Ipv6,
        };
        Err(Self::fail(
            node,
            EncodeErrorKind::BadAddress {
                kind,
                ty: step.name.to_string(),
                found: text::describe(node),
            },
        ))
    }

    fn lpm(
        &self,
        step: &Step,
        family: Family,
        addr_offset: usize,
        node: &Node<'_>,
        buf: &mut [u8],
    ) -> Res {
        let kind = match family {
            Family::V4 => AddressKind::Ipv4Cidr,
            Family::V6 => AddressKind::Ipv6Cidr,
        };
        let bad = || {
            Self::fail(
                node,
                EncodeErrorKind::BadAddress {
                    kind,
                    ty: step.name.to_string(),
                    found: text::describe(node),
                },
            )
        };
        let Kind::Scalar(s) = &node.kind else {
            return Err(bad());
        };
        let text: &str = &s.text;
        let (prefix_buf, rest) = buf.split_at_mut(addr_offset.min(buf.len()));
        let Some(addr) = rest.get_mut(..family.len()) else {
            return Err(bad());
        };
        match text::parse_cidr(family, text, addr) {
            Ok(prefix) => {
                write_uint(
                    prefix_buf,
                    u128::from(prefix),
                    self.layout.endian == Endian::Big,
                );
                Ok(())
            }
            Err(CidrError::Syntax) => Err(bad()),
            Err(CidrError::TooLong(prefix)) => Err(Self::fail(
                node,
                EncodeErrorKind::PrefixTooLong {
                    text: text.to_owned(),
                    prefix,
                    max: (family.len() * 8) as u32,
                },
            )),
            Err(CidrError::HostBits(prefix)) => {
                Err(Self::host_bits(family, addr, prefix, node, text.to_owned()))
            }
        }
    }

    /// The CIDR checks for an LPM key (or a prefix member) written as hex
    /// or as a `{prefixlen, addr}` mapping, now in `buf`: a prefix the
    /// kernel refuses would fail every apply, and host bits past the prefix
    /// make a second key for the kernel's one entry, so `plan` would never
    /// be in sync. `written` is the hex text, if that is how it came.
    fn check_prefix(
        &self,
        family: Family,
        addr_offset: usize,
        node: &Node<'_>,
        buf: &[u8],
        written: Option<&str>,
    ) -> Res {
        let (prefix_buf, rest) = buf.split_at(addr_offset.min(buf.len()));
        let Some(addr) = rest.get(..family.len()) else {
            return Ok(());
        };
        // A u32 in the kernel's struct; anything wider is out of range anyway.
        let prefix = u32::try_from(read_uint(prefix_buf, self.layout.endian == Endian::Big))
            .unwrap_or(u32::MAX);
        let text = || match written {
            Some(w) => w.to_owned(),
            None => {
                let mut t = String::new();
                text::write_addr(family, addr, &mut t);
                t.push('/');
                t.push_str(&prefix.to_string());
                t
            }
        };
        let max = (family.len() * 8) as u32;
        if prefix > max {
            return Err(Self::fail(
                node,
                EncodeErrorKind::PrefixTooLong {
                    text: text(),
                    prefix,
                    max,
                },
            ));
        }
        if text::host_bits_set(addr, prefix) {
            return Err(Self::host_bits(family, addr, prefix, node, text()));
        }
        Ok(())
    }

    /// A host-bits error naming the network `addr/prefix` most likely means.
    fn host_bits(
        family: Family,
        addr: &[u8],
        prefix: u32,
        node: &Node<'_>,
        text: String,
    ) -> Box<EncodeError> {
        let mut network = addr.to_vec();
        text::mask_host_bits(&mut network, prefix);
        let mut suggestion = String::new();
        text::write_addr(family, &network, &mut suggestion);
        suggestion.push('/');
        suggestion.push_str(&prefix.to_string());
        Self::fail(node, EncodeErrorKind::HostBitsSet { text, suggestion })
    }
}

/// What an integer node holds.
enum IntValue {
    /// A range-checked integer.
    Int(i128),
    /// IPv4 text for a `__be32`: the address in network order.
    Ipv4([u8; 4]),
}

impl IntValue {
    /// The value as raw bits (two's complement; an address as its big-endian number).
    fn bits(&self) -> u128 {
        match *self {
            IntValue::Int(v) => v as u128,
            IntValue::Ipv4(octets) => u128::from(u32::from_be_bytes(octets)),
        }
    }
}

/// The group in which two fields are different members of one union.
fn conflict(a: &Field, b: &Field) -> Option<u16> {
    a.groups.iter().find_map(|&(group, member)| {
        b.groups
            .iter()
            .find(|&&(g, m)| g == group && m != member)
            .map(|_| group)
    })
}

#[cfg(test)]
mod tests;
