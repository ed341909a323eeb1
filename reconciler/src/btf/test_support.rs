//! Test helpers: bundled and compiled objects, a synthetic BTF builder, and
//! YAML nodes built by hand or by a tiny flow-syntax reader (the config
//! parser is developed separately; these tests must not depend on it).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use object::{Object, ObjectSection};

use crate::builtin::{ObjectKind, object as builtin_object};
use crate::config::yaml::{Kind, Mark, Node, Scalar, ScalarStyle};

use super::types::Btf;

/// A bundled KF's ELF bytes.
pub fn bundled(name: &str) -> &'static [u8] {
    builtin_object(ObjectKind::Function, name)
        .unwrap_or_else(|| panic!("bundled function {name} is embedded"))
}

/// File offset and size of an ELF section.
pub fn section_range(elf: &[u8], name: &str) -> (usize, usize) {
    let file = object::File::parse(elf).expect("a valid ELF");
    let section = file.section_by_name(name).expect("the section exists");
    let (offset, size) = section.file_range().expect("the section has file data");
    (offset as usize, size as usize)
}

/// The `.BTF` bytes of a bundled KF.
pub fn bundled_btf_bytes(name: &str) -> Vec<u8> {
    let elf = bundled(name);
    let (start, len) = section_range(elf, ".BTF");
    elf[start..start + len].to_vec()
}

/// The parsed BTF of a bundled KF.
pub fn bundled_btf(name: &str) -> Btf {
    Btf::parse(&bundled_btf_bytes(name)).expect("bundled BTF parses")
}

/// Compiles C source for BPF with clang; panics with a clear message when
/// clang is missing or the compile fails.
pub fn compile_c(name: &str, source: &str, extra_args: &[&str]) -> Vec<u8> {
    let dir = TempDir::new(name);
    let src = dir.0.join(format!("{name}.bpf.c"));
    std::fs::write(&src, source).expect("writing the C source");
    compile_file(&src, &dir.0.join(format!("{name}.bpf.o")), extra_args)
}

/// A directory for one compile, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kfd-btf-tests-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn compile_file(src: &Path, obj: &Path, extra_args: &[&str]) -> Vec<u8> {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall"]);
    cmd.args(extra_args);
    cmd.args([
        "-I/usr/include/x86_64-linux-gnu",
        "-I/usr/include/aarch64-linux-gnu",
        "-c",
    ]);
    cmd.arg(src).arg("-o").arg(obj);
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("these tests compile BPF C fixtures: running `{clang}` failed: {e} (install clang and libbpf-dev, or set CLANG)")
    });
    assert!(
        output.status.success(),
        "clang failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(obj).expect("reading the compiled object")
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/btf/testdata/fixture.bpf.c")
}

/// `testdata/fixture.bpf.c`, compiled once per test process.
pub fn fixture_object() -> Vec<u8> {
    static OBJ: OnceLock<Vec<u8>> = OnceLock::new();
    OBJ.get_or_init(|| {
        let dir = TempDir::new("fixture");
        compile_file(&fixture_path(), &dir.0.join("fixture.bpf.o"), &[])
    })
    .clone()
}

/// The fixture compiled for big-endian BPF (`-target bpfeb`).
pub fn fixture_object_big_endian() -> Vec<u8> {
    static OBJ: OnceLock<Vec<u8>> = OnceLock::new();
    OBJ.get_or_init(|| {
        let dir = TempDir::new("fixture-eb");
        // A later -target wins over the default one.
        compile_file(
            &fixture_path(),
            &dir.0.join("fixture.bpf.o"),
            &["-target", "bpfeb"],
        )
    })
    .clone()
}

/// Builds synthetic BTF blobs type by type.
#[derive(Default)]
pub struct BtfBuilder {
    words: Vec<u32>,
    strings: Vec<u8>,
    count: u32,
}

impl BtfBuilder {
    /// An empty builder (only void).
    pub fn new() -> Self {
        BtfBuilder {
            words: Vec::new(),
            strings: vec![0],
            count: 0,
        }
    }

    fn string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let offset = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        offset
    }

    /// Adds a raw type record (name, info, size_or_type, then extra words).
    pub fn raw(&mut self, name: &str, info: u32, size_or_type: u32, extra: &[u32]) -> u32 {
        let name = self.string(name);
        self.words.extend([name, info, size_or_type]);
        self.words.extend_from_slice(extra);
        self.count += 1;
        self.count
    }

    /// An INT.
    pub fn int(&mut self, name: &str, size: u32, bits: u32, signed: bool) -> u32 {
        let encoding = if signed { 1 << 24 } else { 0 };
        self.raw(name, 1 << 24, size, &[encoding | bits])
    }

    /// A PTR.
    pub fn ptr(&mut self, target: u32) -> u32 {
        self.raw("", 2 << 24, target, &[])
    }

    /// An ARRAY (index type = element type; nothing reads it).
    pub fn array(&mut self, elem: u32, len: u32) -> u32 {
        self.raw("", 3 << 24, 0, &[elem, elem, len])
    }

    /// A TYPEDEF.
    pub fn typedef(&mut self, name: &str, target: u32) -> u32 {
        self.raw(name, 8 << 24, target, &[])
    }

    /// A STRUCT of (name, type, bit offset) members.
    pub fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let mut extra = Vec::new();
        for (member, ty, offset) in members {
            extra.extend([self.string(member), *ty, *offset]);
        }
        self.raw(name, 4 << 24 | members.len() as u32, size, &extra)
    }

    /// The blob, little-endian.
    pub fn build(&self) -> Vec<u8> {
        self.encode(u32::to_le_bytes, u16::to_le_bytes)
    }

    /// The blob, big-endian.
    pub fn build_big_endian(&self) -> Vec<u8> {
        self.encode(u32::to_be_bytes, u16::to_be_bytes)
    }

    fn encode(&self, word: fn(u32) -> [u8; 4], half: fn(u16) -> [u8; 2]) -> Vec<u8> {
        let type_len = self.words.len() as u32 * 4;
        let mut out = Vec::new();
        out.extend(half(0xEB9F));
        out.extend([1, 0]);
        for w in [24, 0, type_len, type_len, self.strings.len() as u32] {
            out.extend(word(w));
        }
        for w in &self.words {
            out.extend(word(*w));
        }
        out.extend(&self.strings);
        out
    }
}

/// A scalar node.
pub fn scalar(text: &str, style: ScalarStyle) -> Node<'static> {
    Node {
        mark: Mark::new(1, 1),
        kind: Kind::Scalar(Scalar {
            text: Cow::Owned(text.to_owned()),
            style,
        }),
    }
}

/// Parses YAML flow syntax (`{a: 1, b: [x, "y"]}`, plain/quoted scalars) on
/// one line, with marks. Enough for these tests; panics on what it can't read.
pub fn yaml(text: &str) -> Node<'static> {
    let chars: Vec<char> = text.chars().collect();
    let mut reader = Reader { chars, pos: 0 };
    let node = reader.value(false);
    reader.skip_ws();
    assert!(
        reader.pos == reader.chars.len(),
        "trailing input at column {} of {text:?}",
        reader.pos + 1
    );
    node
}

struct Reader {
    chars: Vec<char>,
    pos: usize,
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c == ' ') {
            self.pos += 1;
        }
    }

    fn mark(&self) -> Mark {
        Mark::new(1, self.pos as u32 + 1)
    }

    fn expect(&mut self, c: char) {
        self.skip_ws();
        assert_eq!(
            self.peek(),
            Some(c),
            "expected {c:?} at column {}",
            self.pos + 1
        );
        self.pos += 1;
    }

    fn value(&mut self, in_flow: bool) -> Node<'static> {
        self.skip_ws();
        let mark = self.mark();
        let kind = match self.peek() {
            Some('{') => {
                self.pos += 1;
                let mut pairs = Vec::new();
                loop {
                    self.skip_ws();
                    if self.peek() == Some('}') {
                        self.pos += 1;
                        break;
                    }
                    let key = self.value(true);
                    self.expect(':');
                    let value = self.value(true);
                    pairs.push((key, value));
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        _ => {
                            self.expect('}');
                            break;
                        }
                    }
                }
                Kind::Mapping(pairs)
            }
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.peek() == Some(']') {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value(true));
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        _ => {
                            self.expect(']');
                            break;
                        }
                    }
                }
                Kind::Sequence(items)
            }
            Some('"') => {
                self.pos += 1;
                let mut text = String::new();
                loop {
                    let c = self.peek().expect("unterminated double-quoted string");
                    self.pos += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = self.peek().expect("escape");
                            self.pos += 1;
                            match e {
                                'n' => text.push('\n'),
                                't' => text.push('\t'),
                                '0' => text.push('\0'),
                                'u' | 'x' => {
                                    let n = if e == 'u' { 4 } else { 2 };
                                    let hex: String =
                                        self.chars[self.pos..self.pos + n].iter().collect();
                                    self.pos += n;
                                    let code = u32::from_str_radix(&hex, 16).expect("hex escape");
                                    text.push(char::from_u32(code).expect("a char"));
                                }
                                other => text.push(other),
                            }
                        }
                        c => text.push(c),
                    }
                }
                Kind::Scalar(Scalar {
                    text: Cow::Owned(text),
                    style: ScalarStyle::DoubleQuoted,
                })
            }
            Some('\'') => {
                self.pos += 1;
                let mut text = String::new();
                loop {
                    let c = self.peek().expect("unterminated single-quoted string");
                    self.pos += 1;
                    if c == '\'' {
                        if self.peek() == Some('\'') {
                            self.pos += 1;
                            text.push('\'');
                            continue;
                        }
                        break;
                    }
                    text.push(c);
                }
                Kind::Scalar(Scalar {
                    text: Cow::Owned(text),
                    style: ScalarStyle::SingleQuoted,
                })
            }
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    let next = self.chars.get(self.pos + 1).copied();
                    let ends_key = c == ':' && matches!(next, None | Some(' ' | ',' | '}' | ']'));
                    if ends_key || (in_flow && matches!(c, ',' | ']' | '}')) {
                        break;
                    }
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                Kind::Scalar(Scalar {
                    text: Cow::Owned(text.trim_end().to_owned()),
                    style: ScalarStyle::Plain,
                })
            }
        };
        Node { mark, kind }
    }
}

#[test]
fn flow_reader() {
    let node = yaml("{a: 1, b: [x, \"y\\n\"], 'c': 2001:db8::1}");
    let Kind::Mapping(pairs) = &node.kind else {
        panic!("a mapping")
    };
    assert_eq!(pairs.len(), 3);
    assert_eq!(pairs[1].1.mark, Mark::new(1, 11));
    assert_eq!(node.get("c").and_then(|n| n.as_str()), Some("2001:db8::1"));
    let Some(Kind::Sequence(items)) = node.get("b").map(|n| &n.kind) else {
        panic!("a list")
    };
    assert_eq!(items[1].as_str(), Some("y\n"));
    assert_eq!(yaml("  10.0.0.0/8").as_str(), Some("10.0.0.0/8"));
}
