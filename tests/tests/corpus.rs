//! The bad-input corpus (`tests/corpus/`, see its README.md).
//!
//! Every case is checked twice:
//! - `kfd validate` prints exactly the case's expected `file:line:col: message`
//!   lines and exits 1, and never panics;
//! - against a live chain: the good configuration is applied, the bad input
//!   replaces it (or joins it), `kfd apply` prints the same lines and exits
//!   1, and the last good state stays in force in the kernel: the same
//!   programs in the same slots, the same pins, the same map entries, the
//!   same program on the interface, and a denied source is still dropped.
//!
//! Cases are the files of `tests/corpus/` and a few that cannot be committed
//! (symlinks, a FIFO, a directory named `*.yaml`, a 100 MiB file, modes and
//! owners), which are built here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kfd_tests::{A4, Env, TEST_OBJECTS, kfd_bin, reconciler};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus");
/// Stands for the directory of test objects in corpus files and expected lines.
const OBJDIR: &str = "/kfd-corpus-objects";
/// The interface and namespace corpus files name; the kernel test swaps in its own.
const IFACE: &str = "eth0";
const NETNS: &str = "blue";
/// Set to 1 to rewrite the `.expected` files of committed cases from what
/// `kfd validate` prints (review the diff!).
const BLESS_ENV: &str = "KFD_CORPUS_BLESS";

const DENIED: &str = "203.0.113.7";

/// What one entry of a case's config dir is.
#[derive(Clone)]
enum Content {
    /// A regular file with this mode (and owner, when not root).
    File {
        bytes: Arc<[u8]>,
        mode: u32,
        uid: u32,
    },
    /// A regular file (0644) written as is: the interface, netns and objects
    /// are not swapped in (the 100 MiB files, which never get that far).
    Raw(Arc<[u8]>),
    /// A symlink to this target.
    Symlink(PathBuf),
    /// An empty directory.
    Dir,
    /// A named pipe.
    Fifo,
}

impl Content {
    fn file(bytes: impl Into<Arc<[u8]>>) -> Self {
        Content::File {
            bytes: bytes.into(),
            mode: 0o644,
            uid: 0,
        }
    }
}

/// One bad input.
#[derive(Clone)]
struct Case {
    name: String,
    /// Entries of the config dir, by name. Files equal to `good.yaml` are the
    /// configuration in force before the bad ones arrive.
    files: Vec<(String, Content)>,
    /// Expected lines of `kfd validate`, paths relative to the config dir.
    expected: Vec<String>,
    /// Expected lines of `kfd apply` against the live chain, where they
    /// differ (a clash is blamed on the file that changed since it was
    /// applied, which only the live chain can tell); else `expected`.
    expected_live: Option<Vec<String>>,
    /// The errors appear only at apply (a verifier rejection): validate passes.
    apply_only: bool,
    /// Extra flags for kfd.
    flags: Vec<String>,
    /// Committed (its `.expected` can be blessed).
    committed: bool,
    /// `kfd validate` is given the dir, not the files (a dir given by name is
    /// validated as a config dir).
    validate_dir: bool,
}

fn good() -> Vec<u8> {
    fs::read(Path::new(CORPUS).join("good.yaml")).expect("tests/corpus/good.yaml")
}

/// An `.expected` file: plain lines are printed by `validate` and `apply`;
/// `apply: LINE` only by `apply` (the case is valid, the kernel refuses
/// it); `validate: LINE` and `live: LINE` only by `validate`, resp. by
/// `apply` against the live chain.
struct Expected {
    validate: Vec<String>,
    live: Option<Vec<String>>,
    apply_only: bool,
}

fn parse_expected(text: &str) -> Expected {
    let mut validate = Vec::new();
    let mut live = Vec::new();
    let mut apply_only = false;
    let mut differs = false;
    for l in text.lines() {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(rest) = l.strip_prefix("apply: ") {
            apply_only = true;
            validate.push(rest.to_owned());
            live.push(rest.to_owned());
        } else if let Some(rest) = l.strip_prefix("validate: ") {
            differs = true;
            validate.push(rest.to_owned());
        } else if let Some(rest) = l.strip_prefix("live: ") {
            differs = true;
            live.push(rest.to_owned());
        } else {
            validate.push(l.to_owned());
            live.push(l.to_owned());
        }
    }
    Expected {
        validate,
        live: differs.then_some(live),
        apply_only,
    }
}

/// The committed cases: `NAME.expected` next to `NAME.yaml` or a dir `NAME/`.
fn committed_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut seen = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(CORPUS)
        .expect("tests/corpus")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in &entries {
        let Some(stem) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".expected"))
        else {
            continue;
        };
        let Expected {
            validate: expected,
            live: expected_live,
            apply_only,
        } = parse_expected(&fs::read_to_string(p).expect("expected file"));
        let single = Path::new(CORPUS).join(format!("{stem}.yaml"));
        let dir = Path::new(CORPUS).join(stem);
        let files = if single.is_file() {
            seen.push(single.clone());
            vec![(
                format!("{stem}.yaml"),
                Content::file(fs::read(&single).expect("case file")),
            )]
        } else if dir.is_dir() {
            seen.push(dir.clone());
            let mut files: Vec<(String, Content)> = fs::read_dir(&dir)
                .expect("case dir")
                .map(|e| {
                    let e = e.expect("entry");
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        Content::file(fs::read(e.path()).expect("case file")),
                    )
                })
                .collect();
            files.sort_by(|a, b| a.0.cmp(&b.0));
            files
        } else {
            panic!("{stem}.expected has no {stem}.yaml or {stem}/ in tests/corpus");
        };
        cases.push(Case {
            name: stem.to_owned(),
            files,
            expected,
            expected_live,
            apply_only,
            flags: Vec::new(),
            committed: true,
            validate_dir: false,
        });
    }
    // Every case has its expected lines.
    for p in &entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let is_case = (name.ends_with(".yaml") && name != "good.yaml") || p.is_dir();
        assert!(
            !is_case || seen.contains(p),
            "tests/corpus/{name} has no .expected file"
        );
    }
    cases
}

/// 100 MiB exactly: the good file's function with ~2 million deny entries,
/// the last of which is bad.
fn huge_file() -> (Arc<[u8]>, usize) {
    const SIZE: usize = 100 << 20;
    let mut s = String::with_capacity(SIZE + 100);
    s.push_str(
        "version: 1\nfunctions:\n  - name: edge-bl\n    interface: eth0\n    netns: blue\n    hook: xdp\n    program:\n      builtin: blocklist\n    maps:\n      deny_v4:\n        entries:\n",
    );
    let bad = "          - key: 10.255.255.256/32\n            value: 1\n";
    let pad = "# padding to exactly 100 MiB\n";
    let mut i: u32 = 0;
    while s.len() + 60 + bad.len() + pad.len() + 80 < SIZE {
        let a = (0x0a00_0000 + i).to_be_bytes();
        let _ = write!(
            s,
            "          - key: {}.{}.{}.{}/32\n            value: 1\n",
            a[0], a[1], a[2], a[3]
        );
        i += 1;
    }
    let line = s.lines().count() + 1;
    s.push_str(bad);
    s.push_str(pad);
    let fill = SIZE - s.len() - 1;
    s.push('#');
    s.push_str(&" ".repeat(fill - 1));
    s.push('\n');
    assert_eq!(s.len(), SIZE);
    (Arc::from(s.into_bytes()), line)
}

/// The cases that cannot be committed: built here.
fn generated_cases() -> Vec<Case> {
    let case = |name: &str, files: Vec<(&str, Content)>, expected: &[&str]| Case {
        name: name.to_owned(),
        files: files.into_iter().map(|(n, c)| (n.to_owned(), c)).collect(),
        expected: expected.iter().map(|s| (*s).to_owned()).collect(),
        expected_live: None,
        apply_only: false,
        flags: Vec::new(),
        committed: false,
        validate_dir: false,
    };
    let good: Arc<[u8]> = Arc::from(good());
    let (huge, bad_line) = huge_file();
    let mut too_many = String::from(
        "version: 1\nfunctions:\n  - name: edge-bl\n    interface: eth0\n    netns: blue\n    hook: xdp\n    program:\n      builtin: blocklist\n    maps:\n      allow_v4:\n        entries:\n",
    );
    for i in 0..65_537u32 {
        let a = (0x0a00_0000 + i).to_be_bytes();
        let _ = writeln!(
            too_many,
            "          - {{key: {}.{}.{}.{}, value: 1}}",
            a[0], a[1], a[2], a[3]
        );
    }
    let insecure = "; kfd runs as root and refuses config that others can change (fix the ownership/mode, or pass --insecure-permissions)";
    let mut cases = vec![
        case(
            "symlink-loop",
            vec![(
                "symlink-loop.yaml",
                Content::Symlink("symlink-loop.yaml".into()),
            )],
            &[
                "symlink-loop.yaml: symlink loop: more than 40 symlinks to follow (the last one: symlink-loop.yaml -> symlink-loop.yaml)",
            ],
        ),
        case(
            "symlink-loop-through-a-hidden-file",
            vec![
                (
                    "symlink-loop-two.yaml",
                    Content::Symlink(".loop-b.yaml".into()),
                ),
                (
                    ".loop-b.yaml",
                    Content::Symlink("symlink-loop-two.yaml".into()),
                ),
            ],
            &[
                "symlink-loop-two.yaml: symlink loop: more than 40 symlinks to follow (the last one: symlink-loop-two.yaml -> .loop-b.yaml)",
            ],
        ),
        case(
            "symlink-dangling",
            vec![(
                "symlink-dangling.yaml",
                Content::Symlink("/nonexistent/kfd/10-edge.yaml".into()),
            )],
            &[
                "symlink-dangling.yaml: symlink symlink-dangling.yaml points to /nonexistent/kfd/10-edge.yaml, which does not exist",
            ],
        ),
        case(
            "directory-named-yaml",
            vec![("directory.yaml", Content::Dir)],
            &["directory.yaml: not a regular file but a directory"],
        ),
        case(
            "fifo-named-yaml",
            vec![("fifo.yaml", Content::Fifo)],
            &["fifo.yaml: not a regular file but a FIFO"],
        ),
        case(
            "group-writable-file",
            vec![(
                "group-writable.yaml",
                Content::File {
                    bytes: good.clone(),
                    mode: 0o664,
                    uid: 0,
                },
            )],
            &[&format!(
                "group-writable.yaml: the file is writable by its group (mode 0664, group-writable.yaml){insecure}"
            )],
        ),
        case(
            "world-writable-file",
            vec![(
                "world-writable.yaml",
                Content::File {
                    bytes: good.clone(),
                    mode: 0o666,
                    uid: 0,
                },
            )],
            &[&format!(
                "world-writable.yaml: the file is writable by others (mode 0666, world-writable.yaml){insecure}"
            )],
        ),
        case(
            "file-owned-by-another-user",
            vec![(
                "owned-by-nobody.yaml",
                Content::File {
                    bytes: good.clone(),
                    mode: 0o644,
                    uid: 65534,
                },
            )],
            &[&format!(
                "owned-by-nobody.yaml: the file is owned by uid 65534 (owned-by-nobody.yaml){insecure}"
            )],
        ),
        case(
            "huge-100mib-bad-last-entry",
            vec![("huge.yaml", Content::Raw(huge.clone()))],
            &[&format!(
                "huge.yaml:{bad_line}:18: map deny_v4: key: expected an IPv4 address or CIDR (like 192.0.2.0/24) for struct lpm_v4_key, found a string \"10.255.255.256/32\""
            )],
        ),
        case(
            "huge-100mib-over-max-file-size",
            vec![("huge-over.yaml", Content::Raw(huge))],
            &[
                "huge-over.yaml: file is 104857600 bytes, over the 67108864-byte limit (--max-file-size)",
            ],
        ),
        case(
            "map-overfilled-65537-entries",
            vec![("overfilled.yaml", Content::file(too_many.into_bytes()))],
            &[
                "overfilled.yaml:10:7: function edge-bl: map allow_v4: 65537 entries, but it holds at most 65536 (max_entries)",
            ],
        ),
    ];
    cases
        .iter_mut()
        .find(|c| c.name == "huge-100mib-over-max-file-size")
        .expect("case")
        .flags = vec!["--max-file-size".into(), (64u64 << 20).to_string()];
    cases
        .iter_mut()
        .find(|c| c.name == "directory-named-yaml")
        .expect("case")
        .validate_dir = true;
    cases
}

fn all_cases() -> Vec<Case> {
    let mut cases = committed_cases();
    cases.extend(generated_cases());
    cases
}

/// The digest `sha256sum` prints for a file.
fn sha256_hex(path: &Path) -> String {
    let out = kfd_tests::sh(&["sha256sum", path.to_str().expect("UTF-8 path")]);
    out.split_whitespace().next().expect("digest").to_owned()
}

/// Writes the objects corpus files name into `dir`; returns the
/// replacements that turn kfd's output back into the corpus's spelling.
fn write_objects(dir: &Path) -> Vec<(String, String)> {
    fs::create_dir_all(dir).expect("objects dir");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let bench = reconciler::builtin::object(reconciler::builtin::ObjectKind::Bench, "xdp_pass")
        .expect("bench object xdp_pass");
    let mut objects: Vec<(String, &[u8])> = TEST_OBJECTS
        .iter()
        .map(|(n, b)| (format!("{n}.bpf.o"), *b))
        .collect();
    objects.push(("xdp_pass.bpf.o".into(), bench));
    objects.push((
        "not-elf.bpf.o".into(),
        b"this is a text file, not an ELF object\n",
    ));
    let mut norm = vec![(dir.display().to_string(), OBJDIR.to_owned())];
    for (name, bytes) in objects {
        let p = dir.join(&name);
        fs::write(&p, bytes).expect("write object");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        norm.push((sha256_hex(&p), format!("@sha256({name})@")));
    }
    norm
}

/// `hay` with every `from` replaced by `to`, in order of the pairs.
fn replace_all(hay: &[u8], pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = hay.to_vec();
    for (from, to) in pairs {
        let from = from.as_bytes();
        if from.is_empty() || !out.windows(from.len()).any(|w| w == from) {
            continue;
        }
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i] == from[0] && out[i..].starts_with(from) {
                next.extend_from_slice(to.as_bytes());
                i += from.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

fn replace_str(s: &str, pairs: &[(String, String)]) -> String {
    String::from_utf8_lossy(&replace_all(s.as_bytes(), pairs)).into_owned()
}

fn is_good(c: &Content, good: &[u8]) -> bool {
    matches!(c, Content::File { bytes, mode: 0o644, uid: 0 } if bytes[..] == good[..])
}

/// Creates the case's entries in `dir`, with `subst` applied to file contents.
fn materialize(dir: &Path, files: &[(String, Content)], subst: &[(String, String)]) {
    for (name, content) in files {
        let p = dir.join(name);
        let _ = fs::remove_file(&p);
        let _ = fs::remove_dir_all(&p);
        match content {
            Content::File { bytes, mode, uid } => {
                fs::write(&p, replace_all(bytes, subst)).expect("write case file");
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod");
                if *uid != 0 {
                    std::os::unix::fs::chown(&p, Some(*uid), None).expect("chown");
                }
            }
            Content::Raw(bytes) => {
                fs::write(&p, bytes).expect("write case file");
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
            }
            Content::Symlink(target) => {
                std::os::unix::fs::symlink(target, &p).expect("symlink");
            }
            Content::Dir => fs::create_dir(&p).expect("mkdir"),
            Content::Fifo => {
                let c = std::ffi::CString::new(p.to_str().expect("UTF-8 path")).expect("path");
                // SAFETY: mkfifo with a valid NUL-terminated path.
                let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
                assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// Empties a config dir, whatever is in it.
fn clear(dir: &Path) {
    for e in fs::read_dir(dir).expect("config dir").flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&p).expect("remove dir");
        } else {
            fs::remove_file(&p).expect("remove entry");
        }
    }
}

/// Names kfd reads as config (not hidden).
fn config_names(case: &Case) -> Vec<String> {
    case.files
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Rewrites a case's `.expected` from what kfd printed (bless mode).
fn bless(case: &Case, got: &[String]) {
    let path = Path::new(CORPUS).join(format!("{}.expected", case.name));
    let old = fs::read_to_string(&path).unwrap_or_default();
    let mut text: String = old
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    for l in got {
        text.push_str(l);
        text.push('\n');
    }
    fs::write(&path, text).expect("bless");
}

#[test]
fn the_corpus_has_at_least_60_distinct_cases() {
    let cases = all_cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    // Distinct inputs, too.
    let mut inputs: Vec<Vec<u8>> = cases
        .iter()
        .filter(|c| c.committed)
        .map(|c| {
            c.files
                .iter()
                .flat_map(|(n, f)| match f {
                    Content::File { bytes, .. } => [n.as_bytes(), &bytes[..]].concat(),
                    _ => n.as_bytes().to_vec(),
                })
                .collect()
        })
        .collect();
    let n = inputs.len();
    inputs.sort();
    inputs.dedup();
    assert_eq!(inputs.len(), n, "two committed cases have the same input");
    // Every committed dir case starts from the good configuration.
    let good = good();
    for c in cases.iter().filter(|c| c.files.len() > 1 && c.committed) {
        assert!(
            c.files.iter().any(|(_, f)| is_good(f, &good)),
            "dir case {} has no file equal to good.yaml",
            c.name
        );
    }
}

#[test]
fn kfd_validate_gives_every_case_its_exact_messages() {
    let bin = kfd_bin();
    let root = std::env::temp_dir().join(format!("kfd-corpus-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("temp dir");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
    let objects = root.join("objects");
    let mut norm = write_objects(&objects);
    let to_objects = vec![(OBJDIR.to_owned(), objects.display().to_string())];
    // SAFETY: geteuid cannot fail.
    let root_user = unsafe { libc::geteuid() } == 0;
    let blessing = std::env::var(BLESS_ENV).is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut tried = 0;
    for case in all_cases() {
        let owned_by_other = case
            .files
            .iter()
            .any(|(_, f)| matches!(f, Content::File { uid, .. } if *uid != 0));
        if owned_by_other && !root_user {
            eprintln!("skipped {}: chown needs root", case.name);
            continue;
        }
        let dir = root.join(&case.name);
        fs::create_dir(&dir).expect("case dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        materialize(&dir, &case.files, &to_objects);
        let targets = if case.validate_dir {
            vec![dir.display().to_string()]
        } else {
            config_names(&case)
        };
        let t = std::time::Instant::now();
        let out = Command::new(&bin)
            .args(&case.flags)
            .arg("validate")
            .args(targets)
            .current_dir(&dir)
            .output()
            .expect("running kfd validate");
        tried += 1;
        if t.elapsed() > Duration::from_secs(2) {
            eprintln!("{}: kfd validate took {:?}", case.name, t.elapsed());
        }
        norm.insert(0, (format!("{}/", dir.display()), String::new()));
        let stderr = replace_str(&String::from_utf8_lossy(&out.stderr), &norm);
        norm.remove(0);
        let got = lines(&stderr);
        let code = out.status.code();
        if blessing && case.committed && !case.apply_only && case.expected_live.is_none() {
            bless(&case, got.split_last().map_or(&[][..], |(_, rest)| rest));
            continue;
        }
        let (want_code, want) = if case.apply_only {
            (Some(0), Vec::new())
        } else {
            let mut w = case.expected.clone();
            w.push(format!(
                "invalid: {} error{}",
                w.len(),
                plural(case.expected.len())
            ));
            (Some(1), w)
        };
        if code != want_code || got != want || stderr.contains("panicked") {
            failures.push(format!(
                "{}: exit {code:?} (want {want_code:?})\n  got:  {got:#?}\n  want: {want:#?}",
                case.name
            ));
        }
    }
    let _ = fs::remove_dir_all(&root);
    assert!(
        failures.is_empty(),
        "{} of {tried} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What must not change while bad inputs are refused.
#[derive(Debug, PartialEq)]
struct Live {
    /// `kfd status` without the verdict counters (traffic moves them).
    status: serde_json::Value,
    /// Every pin under the bpffs root.
    pins: Vec<String>,
    /// The blocklist's deny entries.
    deny: Option<std::collections::BTreeSet<String>>,
    /// Programs on the interface's XDP hook.
    attached: Vec<u32>,
}

fn live(env: &Env) -> Live {
    let mut status = env.status();
    for c in status["chains"].as_array_mut().into_iter().flatten() {
        for f in c["functions"].as_array_mut().into_iter().flatten() {
            if let Some(f) = f.as_object_mut() {
                f.remove("verdicts");
            }
        }
    }
    let pins = kfd_tests::pins_under(&env.bpffs);
    Live {
        status,
        pins,
        deny: env.deny_v4("edge-bl"),
        attached: env.xdp_prog_ids(),
    }
}

#[test]
fn a_bad_input_never_changes_what_runs_in_the_kernel() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    let objects = env.dir.join("objects");
    let mut norm = write_objects(&objects);
    let subst = vec![
        (OBJDIR.to_owned(), objects.display().to_string()),
        (IFACE.to_owned(), env.if_b.clone()),
        (NETNS.to_owned(), env.ns_b.clone()),
    ];
    norm.insert(0, (format!("{}/", env.conf().display()), String::new()));
    norm.push((env.ns_b.clone(), NETNS.to_owned()));
    norm.push((env.if_b.clone(), IFACE.to_owned()));
    let good = good();
    let conf = env.conf();
    materialize(
        &conf,
        &[("good.yaml".into(), Content::file(good.clone()))],
        &subst,
    );
    let first = env.apply().json();
    assert_eq!(first["in_sync_before"], false, "{first}");
    let baseline = live(&env);
    assert_eq!(
        baseline.deny.as_ref().map(|d| d.len()),
        Some(1),
        "{baseline:?}"
    );
    let rx = env.receiver();
    let mut allowed = 0;
    let mut tried = 0;
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    for case in all_cases() {
        // The good configuration, under the names the case replaces.
        clear(&conf);
        let mut goods: Vec<String> = case
            .files
            .iter()
            .filter(|(_, f)| is_good(f, &good))
            .map(|(n, _)| n.clone())
            .collect();
        if goods.is_empty() {
            goods.push(config_names(&case)[0].clone());
        }
        for n in &goods {
            materialize(&conf, &[(n.clone(), Content::file(good.clone()))], &subst);
        }
        let r = env.kfd(&["apply", "--output", "json"]);
        assert_eq!(
            r.code, 0,
            "{}: the good config must apply: {r:?}",
            case.name
        );
        // Under another file name it is the same chain: at most the load
        // records learn the new name; no entry is written, nothing reloaded.
        assert_eq!(r.json()["entries_written"], 0, "{}: {r:?}", case.name);
        assert_eq!(
            live(&env),
            baseline,
            "{}: the good config changed the chain",
            case.name
        );

        // The bad input arrives.
        let bad: Vec<(String, Content)> = case
            .files
            .iter()
            .filter(|(_, f)| !is_good(f, &good))
            .cloned()
            .collect();
        materialize(&conf, &bad, &subst);
        let mut args: Vec<&str> = case.flags.iter().map(String::as_str).collect();
        args.push("apply");
        let r = env.kfd(&args);
        tried += 1;
        let stderr = replace_str(&r.stderr, &norm);
        let (status_lines, errors): (Vec<String>, Vec<String>) = lines(&stderr)
            .into_iter()
            .partition(|l| l.starts_with("kfd: "));
        let mut problems = Vec::new();
        if r.code != 1 {
            problems.push(format!("exit {} (want 1)", r.code));
        }
        if stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        if case.apply_only {
            // The kernel's verifier log follows the error, line by line.
            let all = lines(&stderr);
            let names = config_names(&case);
            if let Some(e) = all
                .iter()
                .find(|l| names.iter().any(|n| l.starts_with(&format!("{n}:"))))
            {
                problems.push(format!("a config error: {e}"));
            }
            for want in &case.expected {
                if !all.contains(want) {
                    problems.push(format!("missing {want:?} in {all:#?}"));
                }
            }
        } else {
            let want = case.expected_live.as_ref().unwrap_or(&case.expected);
            if &errors != want {
                problems.push(format!("errors\n  got:  {errors:#?}\n  want: {want:#?}"));
            }
            let mut want_status: Vec<String> = bad
                .iter()
                .map(|(n, _)| n)
                .filter(|n| !n.starts_with('.'))
                .map(|n| {
                    if goods.contains(n) {
                        format!("kfd: {n}: invalid; its last good version stays in force")
                    } else {
                        format!("kfd: {n}: invalid and never applied; it contributes nothing")
                    }
                })
                .collect();
            want_status.sort();
            let mut got_status = status_lines.clone();
            got_status.sort();
            if got_status != want_status {
                problems.push(format!(
                    "status lines\n  got:  {got_status:#?}\n  want: {want_status:#?}"
                ));
            }
        }
        // The kernel still runs the last good configuration...
        let now = live(&env);
        assert_eq!(
            now, baseline,
            "{}: the live state changed:\n{stderr}",
            case.name
        );
        // ...and it still drops the denied source and passes the others.
        env.send(DENIED, 2);
        env.send(A4, 2);
        allowed += 2;
        assert_eq!(
            rx.wait_for(A4, allowed, Duration::from_secs(3)),
            allowed,
            "{}: allowed traffic lost",
            case.name
        );
        assert_eq!(rx.count(DENIED), 0, "{}: denied traffic passed", case.name);
        if !problems.is_empty() {
            failures.insert(case.name.clone(), problems.join("\n"));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.count(DENIED), 0, "denied traffic passed");
    let v = env.verdicts("edge-bl");
    assert_eq!(v.get("drop").copied(), Some(2 * tried as u64), "{v:?}");
    assert!(
        failures.is_empty(),
        "{} of {tried} cases differ:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(n, p)| format!("{n}: {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
