//! Compiles the C eBPF sources under `../ebpf` with clang and embeds the
//! objects, so `program: {builtin: NAME}` works without installing anything.
//!
//! Objects are always built from source (never committed): a fresh checkout
//! needs `clang` and `libbpf-dev` (see README). `CLANG` overrides the compiler.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directories whose `*.bpf.c` are compiled, and whether their objects are bundled KFs.
const DIRS: &[(&str, Kind)] = &[
    ("root", Kind::Root),
    ("functions", Kind::Function),
    ("bench", Kind::Bench),
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Root,
    Function,
    Bench,
}

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed={}", ebpf.join("include").display());

    let arch_include = multiarch_include();
    let mut table =
        String::from("/// Objects compiled from `ebpf/` by build.rs: (kind, name, ELF bytes).\n");
    table.push_str("pub static OBJECTS: &[(ObjectKind, &str, &[u8])] = &[\n");
    for (dir, kind) in DIRS {
        let src_dir = ebpf.join(dir);
        println!("cargo:rerun-if-changed={}", src_dir.display());
        let mut sources: Vec<PathBuf> = fs::read_dir(&src_dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", src_dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
            .collect();
        sources.sort();
        for src in sources {
            println!("cargo:rerun-if-changed={}", src.display());
            let name = src
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".bpf.c"))
                .expect("source names are UTF-8 and end in .bpf.c")
                .to_owned();
            let obj = out.join(format!("{name}.bpf.o"));
            compile(&clang, &ebpf, &arch_include, &src, &obj);
            writeln!(
                table,
                "    (ObjectKind::{kind:?}, {name:?}, aya::include_bytes_aligned!({:?})),",
                obj.display().to_string()
            )
            .expect("writing to a String");
        }
    }
    table.push_str("];\n");
    fs::write(out.join("objects.rs"), table).expect("writing objects.rs");
}

fn compile(clang: &str, ebpf: &Path, arch_include: &Option<PathBuf>, src: &Path, obj: &Path) {
    let mut cmd = Command::new(clang);
    cmd.args([
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-Wall",
        "-Werror",
        "-D__TARGET_ARCH_x86",
    ])
    .arg("-I")
    .arg(ebpf.join("include"))
    .arg("-I")
    .arg(src.parent().expect("a source has a parent dir"));
    if let Some(dir) = arch_include {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("-c").arg(src).arg("-o").arg(obj);
    let output = cmd.output().unwrap_or_else(|e| {
        panic!(
            "running `{clang}` to build {}: {e}\n(install clang and libbpf-dev, or set CLANG)",
            src.display()
        )
    });
    if !output.status.success() {
        panic!(
            "clang failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `<asm/types.h>` lives in the multiarch dir on Debian; `-target bpf` does not search it.
fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => return Some(PathBuf::from(format!("/usr/include/{other}-linux-gnu"))),
    };
    Some(PathBuf::from(format!("/usr/include/{triple}")))
}
