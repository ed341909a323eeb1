//! Compiles the test-only eBPF objects in `bpf/` (clang, like the bundled
//! ones) so tests can hand kfd real object files.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed={}", dir.join("bpf").display());
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("../ebpf/include").display()
    );
    let mut list = String::new();
    let mut sources: Vec<PathBuf> = fs::read_dir(dir.join("bpf"))
        .expect("tests/bpf")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .expect("UTF-8 .bpf.c name")
            .to_owned();
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-Wall",
                "-D__TARGET_ARCH_x86",
            ])
            .arg("-I")
            .arg(dir.join("../ebpf/include"))
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("running {clang}: {e} (install clang and libbpf-dev)"));
        assert!(status.success(), "clang failed on {}", src.display());
        list.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            obj.display().to_string()
        ));
    }
    fs::write(
        out.join("test_objects.rs"),
        format!("/// Test-only eBPF objects: (name, ELF bytes).\npub static TEST_OBJECTS: &[(&str, &[u8])] = &[\n{list}];\n"),
    )
    .expect("writing test_objects.rs");
}
