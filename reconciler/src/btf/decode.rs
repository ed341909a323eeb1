//! Bytes of a BTF type → YAML flow text, for `kfd plan` and `kfd status`.
//!
//! The text is what the [encoder](super::encode) takes back: LPM keys as
//! `192.0.2.0/24`, addresses as IPv4/IPv6/MAC text, integers in decimal,
//! enums by name when a name matches, structs as `{rate_pps: 100, burst: 10}`,
//! arrays as `[1, 2]`, `char[N]` as a string, anything else as `0x…` bytes.
//! For every byte string the encoder can produce, encoding the decoded text
//! gives the same bytes back. Null pointers are left out of structs (as
//! config leaves them out). Bytes the encoder can't produce (non-zero padding,
//! `_Bool` 2, a non-null pointer, a NaN's payload) still decode, but may not
//! round-trip.

use std::fmt::Write as _;

use super::layout::{
    ArrayStep, ArrayText, CompositeStep, Layout, LayoutError, Step, StepKind, read_bits, read_uint,
    sign_extend,
};
use super::object::{BPF_MAP_TYPE_LPM_TRIE, GlobalVar, MapDef};
use super::text::{self, Family};
use super::types::{Btf, Endian};

/// A precomputed decoder for one type (the counterpart of [`super::Encoder`]).
#[derive(Debug, Clone)]
pub struct Decoder {
    layout: Layout,
}

impl Decoder {
    /// A decoder for `type_id`.
    pub fn new(btf: &Btf, type_id: u32) -> Result<Decoder, LayoutError> {
        Ok(Decoder {
            layout: Layout::build(btf, type_id, false)?,
        })
    }

    /// A decoder for a map's keys: CIDR text for LPM trie keys, hex without a key type.
    pub fn map_key(btf: &Btf, map: &MapDef) -> Result<Decoder, LayoutError> {
        Ok(Decoder {
            layout: match map.key_type {
                Some(ty) => Layout::build(btf, ty, map.map_type == BPF_MAP_TYPE_LPM_TRIE)?,
                None => Layout::raw(map.key_size as usize),
            },
        })
    }

    /// A decoder for a map's values: hex without a value type.
    pub fn map_value(btf: &Btf, map: &MapDef) -> Result<Decoder, LayoutError> {
        Ok(Decoder {
            layout: match map.value_type {
                Some(ty) => Layout::build(btf, ty, false)?,
                None => Layout::raw(map.value_size as usize),
            },
        })
    }

    /// A decoder for a global variable.
    pub fn global(btf: &Btf, var: &GlobalVar) -> Result<Decoder, LayoutError> {
        Decoder::new(btf, var.type_id)
    }

    /// A decoder of `size` untyped bytes: always `0x…`.
    pub fn raw(size: usize) -> Decoder {
        Decoder {
            layout: Layout::raw(size),
        }
    }

    /// Bytes a value of the type takes.
    pub fn size(&self) -> usize {
        self.layout.size
    }

    /// The value's YAML flow text. Bytes of the wrong length decode as `0x…`.
    pub fn decode(&self, bytes: &[u8]) -> String {
        let mut out = String::new();
        self.decode_into(bytes, &mut out);
        out
    }

    /// Appends the value's YAML flow text to `out`.
    pub fn decode_into(&self, bytes: &[u8], out: &mut String) {
        if bytes.len() != self.layout.size {
            text::write_hex(bytes, out);
            return;
        }
        self.step(self.layout.root, bytes, out);
    }

    fn step(&self, index: usize, buf: &[u8], out: &mut String) {
        let Some(step) = self.layout.steps.get(index) else {
            text::write_hex(buf, out);
            return;
        };
        match &step.kind {
            StepKind::Int(int) => {
                let big = int.big_endian || self.layout.endian == Endian::Big;
                if int.ipv4 && !int.is_partial(step.size) {
                    text::write_addr(Family::V4, buf, out);
                    return;
                }
                let raw = if int.is_partial(step.size) {
                    let endian = if int.big_endian {
                        Endian::Big
                    } else {
                        self.layout.endian
                    };
                    read_bits(buf, u32::from(int.offset), int.bits, endian)
                } else {
                    read_uint(buf, big)
                };
                self.int(step, raw, u32::from(int.bits), out);
            }
            StepKind::Enum(_) => {
                let raw = read_uint(buf, self.layout.endian == Endian::Big);
                self.int(step, raw, step.size as u32 * 8, out);
            }
            StepKind::Float => {
                let big = self.layout.endian == Endian::Big;
                let value = match <[u8; 4]>::try_from(buf) {
                    Ok(b) if big => f64::from(f32::from_be_bytes(b)),
                    Ok(b) => f64::from(f32::from_le_bytes(b)),
                    Err(_) => {
                        let b = <[u8; 8]>::try_from(buf).unwrap_or_default();
                        if big {
                            f64::from_be_bytes(b)
                        } else {
                            f64::from_le_bytes(b)
                        }
                    }
                };
                write_float(value, step.size == 4, out);
            }
            StepKind::Composite(c) => self.composite(c, buf, out),
            StepKind::Array(a) => self.array(a, buf, out),
            StepKind::Addr { family, .. } => {
                let mut text = String::new();
                text::write_addr(*family, buf, &mut text);
                text::write_scalar(&text, out);
            }
            StepKind::Lpm {
                family,
                addr_offset,
                inner,
            } => {
                let prefix = read_uint(
                    buf.get(..*addr_offset).unwrap_or_default(),
                    self.layout.endian == Endian::Big,
                );
                let addr = buf
                    .get(*addr_offset..addr_offset + family.len())
                    .unwrap_or_default();
                let max = (family.len() * 8) as u128;
                if prefix <= max && !text::host_bits_set(addr, prefix as u32) {
                    let mut text = String::new();
                    text::write_addr(*family, addr, &mut text);
                    let _ = write!(text, "/{prefix}");
                    text::write_scalar(&text, out);
                } else {
                    // Not a canonical CIDR: the mapping form says exactly what is there.
                    self.step(*inner, buf, out);
                }
            }
            StepKind::Pointer | StepKind::Opaque => text::write_hex(buf, out),
        }
    }

    /// An integer or enum value `width` bits wide, from its raw bits.
    fn int(&self, step: &Step, raw: u128, width: u32, out: &mut String) {
        match &step.kind {
            StepKind::Int(int) => {
                if int.boolean && raw <= 1 {
                    out.push_str(if raw == 1 { "true" } else { "false" });
                } else if int.signed {
                    let _ = write!(out, "{}", sign_extend(raw, width));
                } else {
                    let _ = write!(out, "{raw}");
                }
            }
            StepKind::Enum(e) => {
                let mask = if width >= 128 {
                    u128::MAX
                } else {
                    (1u128 << width) - 1
                };
                match e.values.iter().find(|(_, v)| (*v as u128) & mask == raw) {
                    Some((name, _)) => text::write_scalar(name, out),
                    None if e.signed => {
                        let _ = write!(out, "{}", sign_extend(raw, width));
                    }
                    None => {
                        let _ = write!(out, "{raw}");
                    }
                }
            }
            _ => {
                let _ = write!(out, "{raw}");
            }
        }
    }

    fn composite(&self, c: &CompositeStep, buf: &[u8], out: &mut String) {
        // A union without a member covering it all can't be shown by one member.
        if c.groups.iter().any(|g| g.shown.is_none()) {
            text::write_hex(buf, out);
            return;
        }
        out.push('{');
        let mut first = true;
        for field in &c.fields {
            let shown = field
                .groups
                .iter()
                .all(|&(g, m)| c.groups.get(usize::from(g)).and_then(|g| g.shown) == Some(m));
            let Some(step) = self.layout.steps.get(field.step) else {
                continue;
            };
            let end = field.offset.saturating_add(step.size);
            let bytes = buf.get(field.offset..end).unwrap_or_default();
            // A null pointer is what leaving the field out gives; config can't set pointers.
            let null_pointer =
                matches!(step.kind, StepKind::Pointer) && bytes.iter().all(|&b| b == 0);
            if !shown || null_pointer {
                continue;
            }
            if !first {
                out.push_str(", ");
            }
            first = false;
            out.push_str(&field.name);
            out.push_str(": ");
            match field.bitfield {
                Some(bits) => {
                    let raw = read_bits(buf, bits.bit_offset, bits.width, self.layout.endian);
                    self.int(step, raw, u32::from(bits.width), out);
                }
                None => self.step(field.step, bytes, out),
            }
        }
        out.push('}');
    }

    fn array(&self, a: &ArrayStep, buf: &[u8], out: &mut String) {
        match a.text {
            Some(ArrayText::Chars) => {
                if let Some(s) = as_c_string(buf) {
                    text::write_quoted(s, out);
                    return;
                }
            }
            Some(ArrayText::Addr(family)) => {
                let mut text = String::new();
                text::write_addr(family, buf, &mut text);
                text::write_scalar(&text, out);
                return;
            }
            Some(ArrayText::Mac) => {
                let mut text = String::new();
                text::write_mac(buf, &mut text);
                text::write_scalar(&text, out);
                return;
            }
            None => {}
        }
        out.push('[');
        for (i, item) in buf.chunks_exact(a.elem_size.max(1)).take(a.len).enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.step(a.elem, item, out);
        }
        out.push(']');
    }
}

/// The text of a `char[N]` the encoder would produce from a string: UTF-8
/// without NULs or control characters, then only NULs (at least one).
fn as_c_string(buf: &[u8]) -> Option<&str> {
    let len = buf.iter().position(|&b| b == 0)?;
    if buf[len..].iter().any(|&b| b != 0) {
        return None;
    }
    // At most N-1 bytes, so never the 2N+2 of the hex form the encoder would read as bytes.
    let s = std::str::from_utf8(&buf[..len]).ok()?;
    (!s.chars().any(char::is_control)).then_some(s)
}

/// A float as YAML reads it back: Rust's shortest round-trip form, with the
/// YAML spellings of infinities and NaN.
fn write_float(value: f64, narrow: bool, out: &mut String) {
    if value.is_nan() {
        out.push_str(".nan");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { ".inf" } else { "-.inf" });
    } else if narrow {
        // The f32's own shortest form, so 0.1f32 shows as 0.1.
        let _ = write!(out, "{:?}", value as f32);
    } else {
        let _ = write!(out, "{value:?}");
    }
}

#[cfg(test)]
mod tests;
