//! Making a libbpf-style object parseable by aya-obj 0.3, in a copy of its
//! bytes, without changing what it means.
//!
//! aya-obj refuses a whole object when one program section has a name it
//! does not know (libbpf's `SEC("tc")`, `tc/ingress`, `tcx/egress`, custom
//! names such as `xdp_foo`, iproute2's `action`). kfd decides a program's
//! type from the hook it runs on, so the name only has to parse: each such
//! section is renamed `classifier/kfd<index>` (unique, so aya-obj's tables
//! keyed by section name stay apart). The name must change consistently in
//! two string tables:
//!
//! - the ELF section-header string table (clang shares it with the symbol
//!   names, tail-merged, so it is never edited in place: a copy with the new
//!   names appended is put at the end of the file, and every old offset
//!   stays valid);
//! - the `.BTF` string section, which `.BTF.ext` records (func_info,
//!   line_info, CO-RE relocations) name their section by: the new names are
//!   appended there too (the copy again goes at the end of the file) and the
//!   records whose section was renamed point at them. Without that, the
//!   programs lose their func_info (the kernel then refuses callbacks such
//!   as `bpf_loop`'s) and CO-RE relocation fails.
//!
//! Legacy `struct bpf_map_def SEC("maps")` definitions carry a `pinning`
//! field that aya-obj reads into an enum (iproute2's values 2 and up are
//! not valid there), and which kfd never honours anyway: it is zeroed.
//!
//! ELF64 little-endian only (BPF objects on x86-64 and arm64). Every read
//! is bounds-checked: a damaged object is an error, never a panic.

use std::collections::BTreeMap;

/// Sections aya-obj classifies by name prefix (and so never parses as programs).
const KNOWN_PREFIXES: [&str; 8] = [
    "license", "version", "maps", ".maps", ".text", ".bss", ".data", ".rodata",
];
const SHT_PROGBITS: u32 = 1;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;
/// `offsetof(struct bpf_map_def, pinning)` (libbpf and iproute2 agree).
const LEGACY_PINNING_AT: u64 = 24;

/// Why an object could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfPatchError {
    /// Not an object kfd can read.
    #[error("not an ELF64 little-endian object")]
    NotElf64,
    /// A header, table or string lies outside the file.
    #[error("damaged ELF: {what} lies outside the file")]
    OutOfBounds {
        /// What was being read.
        what: &'static str,
    },
    /// `.BTF`'s strings are not where kfd can append to them.
    #[error("the .BTF section's strings do not end it, so kfd cannot rename sections in it")]
    BtfLayout,
    /// A `.BTF.ext` record names a string that is not there.
    #[error(
        "damaged .BTF.ext: a record names a section string at offset {offset}, past the strings"
    )]
    BtfExtName {
        /// The offset.
        offset: u32,
    },
}

/// An object ready for aya-obj, and what was renamed.
#[derive(Debug, Clone)]
pub struct Patched {
    /// The bytes to parse.
    pub bytes: Vec<u8>,
    /// New section name → the name the object gave it.
    pub renamed: BTreeMap<String, String>,
}

fn get<'a>(d: &'a [u8], at: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfPatchError> {
    let start = usize::try_from(at).map_err(|_| ElfPatchError::OutOfBounds { what })?;
    let len = usize::try_from(len).map_err(|_| ElfPatchError::OutOfBounds { what })?;
    d.get(
        start
            ..start
                .checked_add(len)
                .ok_or(ElfPatchError::OutOfBounds { what })?,
    )
    .ok_or(ElfPatchError::OutOfBounds { what })
}

fn u16_at(d: &[u8], at: u64, what: &'static str) -> Result<u16, ElfPatchError> {
    let b = get(d, at, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], at: u64, what: &'static str) -> Result<u32, ElfPatchError> {
    let b = get(d, at, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(d: &[u8], at: u64, what: &'static str) -> Result<u64, ElfPatchError> {
    let b = get(d, at, 8, what)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

fn put(d: &mut [u8], at: u64, bytes: &[u8]) {
    // Only called at offsets read (and so checked) before.
    let at = at as usize;
    d[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The NUL-terminated string at `at` of `table`.
fn cstr(table: &[u8], at: u32) -> Option<&str> {
    let rest = table.get(at as usize..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// A section's name ("" when it has none that reads).
fn section_name<'a>(names: &'a [u8], s: &Section) -> &'a str {
    cstr(names, s.name).unwrap_or("")
}

struct Section {
    header: u64,
    name: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
}

fn sections(d: &[u8]) -> Result<(Vec<Section>, usize), ElfPatchError> {
    if d.len() < 64 || &d[..4] != b"\x7fELF" || d[4] != 2 || d[5] != 1 {
        return Err(ElfPatchError::NotElf64);
    }
    let shoff = u64_at(d, 0x28, "the section header table")?;
    let entsize = u64::from(u16_at(d, 0x3a, "the ELF header")?);
    let count = u64::from(u16_at(d, 0x3c, "the ELF header")?);
    let strndx = usize::from(u16_at(d, 0x3e, "the ELF header")?);
    if entsize < 64 {
        return Err(ElfPatchError::OutOfBounds {
            what: "a section header",
        });
    }
    let mut out = Vec::new();
    for i in 0..count {
        let h = shoff + i * entsize;
        let what = "a section header";
        out.push(Section {
            header: h,
            name: u32_at(d, h, what)?,
            kind: u32_at(d, h + 4, what)?,
            flags: u64_at(d, h + 8, what)?,
            offset: u64_at(d, h + 0x18, what)?,
            size: u64_at(d, h + 0x20, what)?,
        });
    }
    if strndx >= out.len() {
        return Err(ElfPatchError::OutOfBounds {
            what: "the section name table",
        });
    }
    Ok((out, strndx))
}

/// Appends `bytes` at the end of `out` (8-aligned), returning where.
fn append(out: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let at = out.len() as u64;
    out.extend_from_slice(bytes);
    at
}

/// Prepares `elf` for aya-obj: renames program sections whose names
/// `parses` refuses, and zeroes legacy maps' `pinning`.
pub fn prepare(elf: &[u8], parses: impl Fn(&str) -> bool) -> Result<Patched, ElfPatchError> {
    let (secs, strndx) = sections(elf)?;
    let names = get(
        elf,
        secs[strndx].offset,
        secs[strndx].size,
        "the section name table",
    )?;
    let name_of = |s: &Section| section_name(names, s);
    let mut out = elf.to_vec();
    zero_legacy_pinning(elf, &secs, names, &mut out)?;

    let renames: Vec<(usize, String, String)> = secs
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            let name = name_of(s);
            s.kind == SHT_PROGBITS
                && s.flags & SHF_ALLOC != 0
                && s.flags & SHF_EXECINSTR != 0
                && s.size > 0
                && !KNOWN_PREFIXES.iter().any(|p| name.starts_with(p))
                && name != ".BTF"
                && name != ".BTF.ext"
                && !parses(name)
        })
        .map(|(i, s)| (i, name_of(s).to_owned(), format!("classifier/kfd{i}")))
        .collect();
    if renames.is_empty() {
        return Ok(Patched {
            bytes: out,
            renamed: BTreeMap::new(),
        });
    }

    // 1. The section-header string table, copied with the new names.
    let mut table = names.to_vec();
    for (i, _, new) in &renames {
        let at = table.len() as u32;
        table.extend_from_slice(new.as_bytes());
        table.push(0);
        put(&mut out, secs[*i].header, &at.to_le_bytes());
    }
    let at = append(&mut out, &table);
    put(&mut out, secs[strndx].header + 0x18, &at.to_le_bytes());
    put(
        &mut out,
        secs[strndx].header + 0x20,
        &(table.len() as u64).to_le_bytes(),
    );

    // 2. `.BTF`'s strings, copied with the new names; 3. `.BTF.ext` repointed.
    let find = |want: &str| secs.iter().find(|s| name_of(s) == want);
    if let Some(btf) = find(".BTF") {
        let b = get(elf, btf.offset, btf.size, "the .BTF section")?;
        let hdr_len = u64::from(u32_at(b, 4, "the .BTF header")?);
        let str_off = u64::from(u32_at(b, 16, "the .BTF header")?);
        let str_len = u64::from(u32_at(b, 20, "the .BTF header")?);
        if hdr_len + str_off + str_len != b.len() as u64 {
            return Err(ElfPatchError::BtfLayout);
        }
        let strings = get(b, hdr_len + str_off, str_len, "the .BTF strings")?;
        let mut copy = b.to_vec();
        let mut new_at: BTreeMap<&str, u32> = BTreeMap::new();
        for (_, old, new) in &renames {
            new_at.insert(old.as_str(), (copy.len() as u64 - hdr_len - str_off) as u32);
            copy.extend_from_slice(new.as_bytes());
            copy.push(0);
        }
        let new_len = (copy.len() as u64 - hdr_len - str_off) as u32;
        put(&mut copy, 20, &new_len.to_le_bytes());
        let at = append(&mut out, &copy);
        put(&mut out, btf.header + 0x18, &at.to_le_bytes());
        put(
            &mut out,
            btf.header + 0x20,
            &(copy.len() as u64).to_le_bytes(),
        );
        if let Some(ext) = find(".BTF.ext") {
            repoint_btf_ext(elf, ext, strings, &new_at, &mut out)?;
        }
    }
    Ok(Patched {
        bytes: out,
        renamed: renames
            .into_iter()
            .map(|(_, old, new)| (new, old))
            .collect(),
    })
}

/// Points `.BTF.ext` records of renamed sections at their new names (in
/// place: the records keep their size).
fn repoint_btf_ext(
    elf: &[u8],
    ext: &Section,
    strings: &[u8],
    new_at: &BTreeMap<&str, u32>,
    out: &mut [u8],
) -> Result<(), ElfPatchError> {
    let what = "the .BTF.ext header";
    let e = get(elf, ext.offset, ext.size, "the .BTF.ext section")?;
    let hdr_len = u64::from(u32_at(e, 4, what)?);
    // func_info, line_info, and (headers of 32 bytes or more) CO-RE records.
    let mut parts = vec![(8u64, 12u64), (16, 20)];
    if hdr_len >= 32 {
        parts.push((24, 28));
    }
    for (off_at, len_at) in parts {
        let off = u64::from(u32_at(e, off_at, what)?);
        let len = u64::from(u32_at(e, len_at, what)?);
        if len == 0 {
            continue;
        }
        let what = "a .BTF.ext record";
        let start = hdr_len + off;
        let end = start + len;
        let rec_size = u64::from(u32_at(e, start, what)?);
        let mut p = start + 4;
        while p < end {
            let name_off = u32_at(e, p, what)?;
            let count = u64::from(u32_at(e, p + 4, what)?);
            let name =
                cstr(strings, name_off).ok_or(ElfPatchError::BtfExtName { offset: name_off })?;
            if let Some(at) = new_at.get(name) {
                put(out, ext.offset + p, &at.to_le_bytes());
            }
            p += 8 + count * rec_size;
        }
    }
    Ok(())
}

/// Zeroes `pinning` in every legacy map definition long enough to have one.
fn zero_legacy_pinning(
    elf: &[u8],
    secs: &[Section],
    names: &[u8],
    out: &mut [u8],
) -> Result<(), ElfPatchError> {
    let Some((maps_index, maps)) = secs
        .iter()
        .enumerate()
        .find(|(_, s)| section_name(names, s).starts_with("maps"))
    else {
        return Ok(());
    };
    let Some(symtab) = secs.iter().find(|s| s.kind == 2) else {
        return Ok(()); // SHT_SYMTAB
    };
    let syms = get(elf, symtab.offset, symtab.size, "the symbol table")?;
    for sym in syms.chunks_exact(24) {
        // Elf64_Sym: name u32, info u8, other u8, shndx u16, value u64, size u64.
        let shndx = usize::from(u16::from_le_bytes([sym[6], sym[7]]));
        let value = u64::from_le_bytes(sym[8..16].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(sym[16..24].try_into().unwrap_or_default());
        if shndx != maps_index || size < LEGACY_PINNING_AT + 4 || value + size > maps.size {
            continue;
        }
        put(out, maps.offset + value + LEGACY_PINNING_AT, &[0; 4]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_objects_are_errors_not_panics() {
        assert_eq!(
            prepare(b"nope", |_| true).unwrap_err(),
            ElfPatchError::NotElf64
        );
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x28..0x30].copy_from_slice(&1000u64.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(
            prepare(&elf, |_| true),
            Err(ElfPatchError::OutOfBounds { .. })
        ));
        // Truncations of a real object never panic.
        let real = crate::builtin::object(crate::builtin::ObjectKind::Function, "counter")
            .expect("counter");
        for cut in (0..real.len()).step_by(97) {
            let _ = prepare(&real[..cut], |_| false);
        }
    }

    #[test]
    fn an_object_aya_obj_accepts_is_left_as_it_is() {
        let real = crate::builtin::object(crate::builtin::ObjectKind::Function, "counter")
            .expect("counter");
        let p = prepare(real, |_| true).expect("prepared");
        assert!(p.renamed.is_empty());
        assert_eq!(p.bytes, real);
    }
}
