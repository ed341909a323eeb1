//! Trust rules: kfd runs as root and loads code into the kernel, so it only
//! reads config and objects that nobody but root can change (like sshd's
//! StrictModes), follows symlinks only through trusted dirs, honours
//! `sha256:` pins, never runs a shell, serves metrics on loopback by
//! default, and caps file sizes, map entries and functions per chain with
//! clear errors. Each rule is checked through the real `kfd` binary.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use kfd_tests::{REQUIRE_ENV, TEST_OBJECTS, kfd_bin, sh};

static N: AtomicU32 = AtomicU32::new(0);

/// The tail of every "insecure" message.
const INSECURE: &str = "; kfd runs as root and refuses config that others can change (fix the ownership/mode, or pass --insecure-permissions)";

/// A scratch dir (0755, root's), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    /// None (the test skips) when not root, unless kernel tests are required.
    fn new() -> Option<Scratch> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var(REQUIRE_ENV).is_ok_and(|v| v != "1")
                    || std::env::var(REQUIRE_ENV).is_err(),
                "trust tests need root, but {REQUIRE_ENV}=1"
            );
            eprintln!("skipped: trust tests need root (chown)");
            return None;
        }
        let p = std::env::temp_dir().join(format!(
            "kfd-trust-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).expect("scratch dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        Some(Scratch(p))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn dir(&self, rel: &str, mode: u32) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).expect("mkdir");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    fn file(&self, rel: &str, content: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let p = self.path(rel);
        fs::write(&p, content).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    fn object(&self, rel: &str, name: &str, mode: u32) -> PathBuf {
        let bytes = TEST_OBJECTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .expect("test object");
        self.file(rel, bytes, mode)
    }

    fn link(&self, rel: &str, target: impl AsRef<Path>) -> PathBuf {
        let p = self.path(rel);
        std::os::unix::fs::symlink(target, &p).expect("symlink");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

macro_rules! scratch {
    () => {
        match Scratch::new() {
            Some(s) => s,
            None => return,
        }
    };
}

/// `kfd validate PATH` with extra flags: (exit code, stderr lines without the summary).
fn validate(path: &Path, flags: &[&str]) -> (i32, Vec<String>) {
    let out = Command::new(kfd_bin())
        .args(flags)
        .arg("validate")
        .arg(path)
        .output()
        .expect("running kfd");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines = stderr
        .lines()
        .filter(|l| !l.starts_with("invalid: "))
        .map(str::to_owned)
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

fn valid(path: &Path, flags: &[&str]) {
    let (code, lines) = validate(path, flags);
    assert_eq!(
        (code, lines),
        (0, vec![]),
        "{} must be valid",
        path.display()
    );
}

fn refused(path: &Path, flags: &[&str], want: &str) {
    let (code, lines) = validate(path, flags);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines, [want], "for {}", path.display());
}

/// `config(limit)` as `10.yaml` is valid; `config(limit + 1)` is refused
/// with the one error `want(path)`.
fn limit_is_exact(
    s: &Scratch,
    limit: usize,
    config: impl Fn(usize) -> String,
    want: impl FnOnce(&Path) -> String,
) {
    let f = s.file("10.yaml", config(limit), 0o644);
    valid(&f, &[]);
    s.file("10.yaml", config(limit + 1), 0o644);
    refused(&f, &[], &want(&f));
}

const CONFIG: &str = "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program:\n      builtin: blocklist\n";

/// A config running `object` (with extra program keys).
fn with_object(object: &Path, extra: &str) -> String {
    format!(
        "version: 1\nfunctions:\n  - name: extra\n    interface: eth0\n    hook: xdp\n    program:\n      object: {}\n{extra}",
        object.display()
    )
}

#[test]
fn config_files_others_can_change_are_refused_unless_relaxed() {
    let s = scratch!();
    let f = s.file("10.yaml", CONFIG, 0o644);
    valid(&f, &[]);
    for (mode, who) in [(0o664, "its group"), (0o646, "others"), (0o666, "others")] {
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).expect("chmod");
        refused(
            &f,
            &[],
            &format!(
                "{0}: the file is writable by {who} (mode {mode:04o}, {0}){INSECURE}",
                f.display()
            ),
        );
        valid(&f, &["--insecure-permissions"]);
    }
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::chown(&f, Some(65534), None).expect("chown");
    refused(
        &f,
        &[],
        &format!(
            "{0}: the file is owned by uid 65534 ({0}){INSECURE}",
            f.display()
        ),
    );
    valid(&f, &["--insecure-permissions"]);
    // The environment variable relaxes it too.
    let out = Command::new(kfd_bin())
        .env("KFD_INSECURE_PERMISSIONS", "true")
        .arg("validate")
        .arg(&f)
        .output()
        .expect("kfd");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_dir_others_can_change_anywhere_above_a_config_file_is_refused() {
    let s = scratch!();
    let open = s.dir("open", 0o777);
    s.dir("open/conf", 0o755);
    let f = s.file("open/conf/10.yaml", CONFIG, 0o644);
    // Whoever can write `open` can rename `conf` away and put their own in place.
    refused(
        &f,
        &[],
        &format!(
            "{}: a directory on its path is writable by others (mode 0777, {}){INSECURE}",
            f.display(),
            open.display()
        ),
    );
    valid(&f, &["--insecure-permissions"]);
    // Sticky, like /tmp: others cannot replace root's entries.
    fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).expect("chmod");
    valid(&f, &[]);
    // The file's own dir.
    let conf = s.dir("open/conf", 0o775);
    refused(
        &f,
        &[],
        &format!(
            "{}: its directory is writable by its group (mode 0775, {}){INSECURE}",
            f.display(),
            conf.display()
        ),
    );
}

#[test]
fn the_config_dir_itself_must_be_trusted_for_apply_and_plan() {
    let s = scratch!();
    let conf = s.dir("conf", 0o757);
    s.file("conf/10.yaml", CONFIG, 0o644);
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/kfd-trust-{}", std::process::id()));
    let out = Command::new(kfd_bin())
        .arg("--config-dir")
        .arg(&conf)
        .arg("--bpffs")
        .arg(&bpffs)
        .arg("--state-dir")
        .arg(s.path("state"))
        .arg("plan")
        .output()
        .expect("kfd");
    let _ = fs::remove_dir(&bpffs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "config dir {0}: the config dir is writable by others (mode 0757, {0}){INSECURE}",
            conf.display()
        )),
        "{stderr}"
    );
}

#[test]
fn objects_others_can_change_are_refused() {
    let s = scratch!();
    s.dir("objs", 0o755);
    let obj = s.object("objs/pass.bpf.o", "pass_v2", 0o644);
    let cfg = |o: &Path| s.file("10.yaml", with_object(o, ""), 0o644);
    valid(&cfg(&obj), &[]);
    let f = s.path("10.yaml");
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o664)).expect("chmod");
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {1}: the file is writable by its group (mode 0664, {1}){INSECURE}",
            f.display(),
            obj.display()
        ),
    );
    valid(&f, &["--insecure-permissions"]);
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::chown(&obj, Some(65534), None).expect("chown");
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {1}: the file is owned by uid 65534 ({1}){INSECURE}",
            f.display(),
            obj.display()
        ),
    );
    // Its directory, and every one above it.
    std::os::unix::fs::chown(&obj, Some(0), None).expect("chown");
    let objs = s.dir("objs", 0o777);
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {1}: its directory is writable by others (mode 0777, {2}){INSECURE}",
            f.display(),
            obj.display(),
            objs.display()
        ),
    );
    fs::set_permissions(&objs, fs::Permissions::from_mode(0o755)).expect("chmod");
    let up = s.dir("up", 0o770);
    s.dir("up/objs", 0o755);
    let deep = s.object("up/objs/pass.bpf.o", "pass_v2", 0o644);
    cfg(&deep);
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {1}: a directory on its path is writable by its group (mode 0770, {2}){INSECURE}",
            f.display(),
            deep.display(),
            up.display()
        ),
    );
}

#[test]
fn symlinked_objects_are_resolved_and_checked_at_both_ends() {
    let s = scratch!();
    s.dir("safe", 0o755);
    let open = s.dir("open", 0o777);
    let real = s.object("safe/pass.bpf.o", "pass_v2", 0o644);
    let f = s.path("10.yaml");
    // A link in a safe dir to a safe object: fine.
    let good = s.link("safe/current.bpf.o", "pass.bpf.o");
    s.file("10.yaml", with_object(&good, ""), 0o644);
    valid(&f, &[]);
    // A link in a dir others can write: they could point it anywhere.
    let swappable = s.link("open/current.bpf.o", &real);
    s.file("10.yaml", with_object(&swappable, ""), 0o644);
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {}: its directory is writable by others (mode 0777, {}){INSECURE}",
            f.display(),
            swappable.display(),
            open.display()
        ),
    );
    // A safe link to an object in a dir others can write.
    let planted = s.object("open/pass.bpf.o", "pass_v2", 0o644);
    let to_open = s.link("safe/to-open.bpf.o", &planted);
    s.file("10.yaml", with_object(&to_open, ""), 0o644);
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {}: its directory is writable by others (mode 0777, {}){INSECURE}",
            f.display(),
            to_open.display(),
            open.display()
        ),
    );
    // A safe link to a group-writable object: the object itself is checked.
    let gw = s.object("safe/gw.bpf.o", "pass_v2", 0o664);
    let to_gw = s.link("safe/to-gw.bpf.o", "gw.bpf.o");
    s.file("10.yaml", with_object(&to_gw, ""), 0o644);
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {}: the file is writable by its group (mode 0664, {}){INSECURE}",
            f.display(),
            to_gw.display(),
            gw.display()
        ),
    );
    // A loop and a dangling link name themselves.
    let a = s.link("safe/a.bpf.o", "b.bpf.o");
    s.link("safe/b.bpf.o", "a.bpf.o");
    s.file("10.yaml", with_object(&a, ""), 0o644);
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {}: symlink loop: more than 40 symlinks to follow (the last one: {} -> b.bpf.o)",
            f.display(),
            a.display(),
            a.display()
        ),
    );
    let dangling = s.link("safe/gone.bpf.o", "/nonexistent/kfd.bpf.o");
    s.file("10.yaml", with_object(&dangling, ""), 0o644);
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: object {}: symlink {} points to /nonexistent/kfd.bpf.o, which does not exist",
            f.display(),
            dangling.display(),
            dangling.display()
        ),
    );
}

#[test]
fn object_paths_must_be_absolute() {
    let s = scratch!();
    let f = s.file(
        "10.yaml",
        with_object(Path::new("objs/pass.bpf.o"), ""),
        0o644,
    );
    refused(
        &f,
        &[],
        &format!(
            "{}:7:15: functions[0].program.object: \"objs/pass.bpf.o\" does not match \"^/\"",
            f.display()
        ),
    );
}

#[test]
fn a_sha256_pin_must_match_the_object() {
    let s = scratch!();
    s.dir("objs", 0o755);
    let obj = s.object("objs/pass.bpf.o", "pass_v2", 0o644);
    let digest = sh(&["sha256sum", obj.to_str().expect("UTF-8")])
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned();
    let f = s.path("10.yaml");
    for pin in [digest.clone(), digest.to_uppercase()] {
        s.file(
            "10.yaml",
            with_object(&obj, &format!("      sha256: \"{pin}\"\n")),
            0o644,
        );
        valid(&f, &[]);
    }
    let other = format!("{}0", &digest[..63]);
    let other = if other == digest {
        format!("{}1", &digest[..63])
    } else {
        other
    };
    s.file(
        "10.yaml",
        with_object(&obj, &format!("      sha256: \"{other}\"\n")),
        0o644,
    );
    let want = format!(
        "{}:8:15: object {} has sha256 {digest}, but the config pins {other}; refusing to load it",
        f.display(),
        obj.display()
    );
    refused(&f, &[], &want);
    // --insecure-permissions relaxes ownership checks, never the pin.
    refused(&f, &["--insecure-permissions"], &want);
    // The object changes under a pinned config: refused from then on.
    s.file(
        "10.yaml",
        with_object(&obj, &format!("      sha256: \"{digest}\"\n")),
        0o644,
    );
    s.object("objs/pass.bpf.o", "corpus_types", 0o644);
    let (code, lines) = validate(&f, &[]);
    assert_eq!(code, 1);
    assert!(
        lines[0].contains(&format!(
            "but the config pins {digest}; refusing to load it"
        )),
        "{lines:?}"
    );
}

#[test]
fn kfd_never_runs_other_programs() {
    // No shell-outs: nothing in the daemon's sources starts a process.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reconciler/src");
    let forbidden = [
        "Command::new",
        "process::Command",
        "std::process::Child",
        "libc::system",
        "libc::popen",
        "libc::fork",
        "libc::vfork",
        "libc::exec",
        "libc::posix_spawn",
        "/bin/sh",
    ];
    // The BTF tests compile their fixture with clang; that module is test-only.
    let test_only = ["btf/test_support.rs"];
    let btf_mod = fs::read_to_string(src.join("btf/mod.rs")).expect("btf/mod.rs");
    assert!(
        btf_mod.contains("#[cfg(test)]\nmod test_support;"),
        "btf/test_support.rs must stay test-only"
    );
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src, &mut files);
    assert!(files.len() > 20, "{files:?}");
    let mut found = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .expect("under src")
            .display()
            .to_string();
        if test_only.contains(&rel.as_str()) {
            continue;
        }
        let text = fs::read_to_string(f).expect("source");
        // Unit tests at the end of a file (`#[cfg(test)] mod tests { … }`) may use anything.
        let code = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or(&text);
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for pat in forbidden {
                if line.contains(pat) {
                    found.push(format!("{rel}:{}: {}", n + 1, line));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "kfd must not start processes:\n{}",
        found.join("\n")
    );
}

#[test]
fn metrics_listen_on_loopback_by_default() {
    let out = Command::new(kfd_bin())
        .args(["run", "--help"])
        .output()
        .expect("kfd run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let start = help
        .find("--metrics-address")
        .unwrap_or_else(|| panic!("no --metrics-address in:\n{help}"));
    let default = help[start..]
        .split("[default: ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_else(|| panic!("no default for --metrics-address in:\n{help}"));
    let addr: std::net::SocketAddr = default.parse().expect("an IP:PORT default");
    assert!(
        addr.ip().is_loopback(),
        "metrics must listen on loopback by default, not {addr}"
    );
}

#[test]
fn the_file_size_limit_is_exact() {
    let s = scratch!();
    let f = s.file("10.yaml", CONFIG, 0o644);
    let size = CONFIG.len().to_string();
    valid(&f, &["--max-file-size", &size]);
    let below = (CONFIG.len() - 1).to_string();
    refused(
        &f,
        &["--max-file-size", &below],
        &format!(
            "{}: file is {size} bytes, over the {below}-byte limit (--max-file-size)",
            f.display()
        ),
    );
    // Objects are read under the same limit.
    s.dir("objs", 0o755);
    let obj = s.object("objs/pass.bpf.o", "pass_v2", 0o644);
    let len = fs::metadata(&obj).expect("object").len();
    let cfg = s.file("20.yaml", with_object(&obj, ""), 0o644);
    let limit = (len - 1).to_string();
    refused(
        &cfg,
        &["--max-file-size", &limit],
        &format!(
            "{}:7:15: object {}: file is {len} bytes, over the {limit}-byte limit (--max-file-size)",
            cfg.display(),
            obj.display()
        ),
    );
}

#[test]
fn a_chain_holds_at_most_32_functions() {
    let s = scratch!();
    let config = |n: usize| {
        let mut c = String::from("version: 1\nfunctions:\n");
        for i in 0..n {
            c.push_str(&format!(
                "  - name: f{i:02}\n    interface: eth0\n    hook: xdp\n    program:\n      builtin: counter\n"
            ));
        }
        c
    };
    // Reported at the 33rd function in run order (f32, line 3 + 32 * 5).
    limit_is_exact(&s, 32, config, |f| {
        format!(
            "{}:163:5: chain eth0 xdp would hold 33 functions (33 from this file); at most 32 fit",
            f.display()
        )
    });
}

#[test]
fn a_map_holds_at_most_its_max_entries() {
    let s = scratch!();
    s.dir("objs", 0o755);
    // corpus_types' `by_mac` is a hash of 4 entries.
    let obj = s.object("objs/types.bpf.o", "corpus_types", 0o644);
    let config = |n: usize| {
        let mut c = with_object(&obj, "    maps:\n      by_mac:\n        entries:\n");
        for i in 0..n {
            c.push_str(&format!(
                "          - {{key: \"02:00:00:00:00:{i:02x}\", value: {{mode: CORPUS_LOG}}}}\n"
            ));
        }
        c
    };
    limit_is_exact(&s, 4, config, |f| {
        format!(
            "{}:9:7: function extra: map by_mac: 5 entries, but it holds at most 4 (max_entries)",
            f.display()
        )
    });
}

#[test]
fn a_bpffs_root_that_is_not_roots_alone_is_refused_and_nothing_changes() {
    use std::os::unix::fs::MetadataExt as _;
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge", &["203.0.113.0/24"]),
    );
    let root = env.bpffs.clone();
    let tail = "; kfd keeps its pins and its lock there, so nobody but root may change it \
                (remove it and kfd creates it with mode 0700, or make it root's and writable only by root)";
    // Another user made kfd's root before kfd did (/sys/fs/bpf is 1777).
    fs::create_dir(&root).expect("mkdir root");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&root, Some(65534), Some(65534)).expect("chown nobody");
    let untouched = |why: &str| {
        assert_eq!(kfd_tests::pins_under(&root), Vec::<String>::new(), "{why}");
        assert_eq!(env.xdp_prog_ids(), Vec::<u32>::new(), "{why}");
        assert!(
            !env.dir.join("state").exists(),
            "{why}: the state dir was written"
        );
    };
    // apply prepares the root; plan and status only read it, and say so plainly.
    for (args, code, doing) in [
        (&["apply"][..], 1, "preparing bpffs: "),
        (&["plan"], 1, ""),
        (&["status"], 1, ""),
    ] {
        let r = env.kfd(args);
        assert_eq!(
            (r.code, r.stderr.as_str()),
            (
                code,
                format!(
                    "kfd: {doing}bpffs root {}: owned by uid 65534{tail}\n",
                    root.display()
                )
                .as_str()
            ),
            "{args:?}: {r:?}"
        );
        untouched("a root owned by nobody");
    }
    // Root's, but its group may write it.
    std::os::unix::fs::chown(&root, Some(0), Some(0)).expect("chown root");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o1770)).expect("chmod");
    let r = env.kfd(&["apply"]);
    assert_eq!(
        (r.code, r.stderr),
        (
            1,
            format!(
                "kfd: preparing bpffs: bpffs root {}: writable by its group (mode 1770){tail}\n",
                root.display()
            )
        )
    );
    untouched("a group-writable root");
    // Fixed: kfd converges.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).expect("chmod");
    env.apply();
    assert_eq!(env.xdp_prog_ids().len(), 1);
    // A root kfd creates itself is 0700.
    assert_eq!(env.kfd(&["down"]).code, 0);
    assert!(!root.exists(), "down removes the empty root");
    env.apply();
    assert_eq!(fs::metadata(&root).expect("root").mode() & 0o7777, 0o700);

    // A dir above the root that others can write: they could swap the root.
    let open = root.join("open");
    fs::create_dir(&open).expect("mkdir");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
    let inner = open.join("kfd");
    let out = Command::new(kfd_bin())
        .arg("--config-dir")
        .arg(env.conf())
        .arg("--bpffs")
        .arg(&inner)
        .arg("--state-dir")
        .arg(env.dir.join("state-inner"))
        .arg("apply")
        .output()
        .expect("running kfd");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "kfd: preparing bpffs: bpffs root {}: a directory on its path is writable by others (mode 0777, {}){tail}\n",
            inner.display(),
            open.display()
        )
    );
    assert!(
        !inner.exists(),
        "nothing is created in a dir others can write"
    );
    fs::remove_dir(&open).expect("cleanup");
}
