//! Config layer tests: real files in temp dirs, exact `file:line:col` messages.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::model::{ChainKey, Hook, XdpMode};

static N: AtomicU32 = AtomicU32::new(0);

/// A temp config dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "kfd-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        Dir(p)
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> &Self {
        let p = self.0.join(name);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        self
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Loads against nothing live and an empty store.
    fn load_fresh(&self) -> Loaded {
        self.load(&Applied::default())
    }

    /// Loads as if `applied` were what the last apply converged.
    fn load(&self, applied: &Applied) -> Loaded {
        load(&self.0, &applied.store, &applied.live, &rules()).expect("dir readable")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn rules() -> ReadRules {
    ReadRules {
        max_size: DEFAULT_MAX_FILE_SIZE,
        strict_permissions: true,
    }
}

fn errors(l: &Loaded) -> Vec<String> {
    l.errors.iter().map(ToString::to_string).collect()
}

fn blocklist(name: &str, iface: &str, deny: &[&str]) -> String {
    let entries: String = deny
        .iter()
        .map(|d| format!("\n          - {{key: {d}, value: 1}}"))
        .collect();
    format!(
        "version: 1\nfunctions:\n  - name: {name}\n    interface: {iface}\n    hook: xdp\n    program: {{builtin: blocklist}}\n    maps:\n      deny_v4:\n        entries:{}\n",
        if entries.is_empty() {
            " []".to_owned()
        } else {
            entries
        }
    )
}

fn eth0() -> ChainKey {
    ChainKey {
        netns: None,
        interface: "eth0".into(),
        hook: Hook::Xdp,
    }
}

/// What a past apply left: the store's copies, and the kernel running them.
#[derive(Default)]
struct Applied {
    store: Snapshot,
    live: Live,
}

/// `files` applied: each in the store, and every function it defines live
/// with its origin.
fn applied(files: &[(&str, &str)]) -> Applied {
    let mut a = Applied::default();
    for (name, content) in files {
        a.store = std::mem::take(&mut a.store).with(name, Some(Arc::from(content.as_bytes())));
        let fd = process(
            name,
            name,
            content.as_bytes(),
            &mut Objects::default(),
            &rules(),
            &mut Timings::default(),
        )
        .expect("an applied file is valid");
        for (key, f) in fd.functions {
            a.live
                .insert((key, f.name), Some(origin_of(name, content.as_bytes())));
        }
    }
    a
}

#[test]
fn an_error_is_one_line_whatever_the_file_name_holds() {
    let e = ConfigError::file("/etc/kf.d/a\nb\u{7}.yaml", ErrorKind::Empty);
    assert_eq!(
        e.to_string(),
        "/etc/kf.d/a\\nb\\u{7}.yaml: file is empty (an empty file changes nothing; its last good version stays in force)"
    );
}

#[test]
fn the_bundled_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config.d");
    let l = load(&dir, &Snapshot::default(), &Live::new(), &rules()).unwrap();
    assert_eq!(errors(&l), Vec::<String>::new());
    let key = ChainKey {
        netns: Some("kfd-demo-edge".into()),
        interface: "edge0".into(),
        hook: Hook::Xdp,
    };
    let chain = &l.desired.chains[&key];
    assert_eq!(chain.xdp_mode, XdpMode::Auto);
    let names: Vec<&str> = chain.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["edge-blocklist", "edge-ratelimit", "edge-counter"]);
    let bl = &chain.functions[0];
    assert_eq!(bl.maps["deny_v4"].entries.len(), 2);
    // 203.0.113.0/24 and 192.0.2.66/32, sorted by key bytes (prefixlen first).
    let keys: Vec<String> = bl.maps["deny_v4"]
        .entries
        .iter()
        .map(|(k, _)| bl.maps["deny_v4"].format.key(k))
        .collect();
    assert_eq!(keys, ["203.0.113.0/24", "192.0.2.66/32"]);
    assert!(chain.functions.iter().all(|f| f.program.uses_abi));
    let rl = &chain.functions[1].maps["rl_config"];
    let mut want = 1000u64.to_le_bytes().to_vec();
    want.extend(50u64.to_le_bytes());
    assert_eq!(rl.entries.get(&0u32.to_le_bytes()), Some(&want[..]));

    let egress = &l.desired.chains[&ChainKey {
        hook: Hook::TcEgress,
        ..key
    }];
    assert_eq!(egress.tc, crate::model::TcSettings::default());
    let names: Vec<&str> = egress.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["egress-mark", "egress-counter"]);
    let rules = &egress.functions[0].maps["rules"];
    let sip = rules
        .entries
        .get(&1u32.to_ne_bytes())
        .map(|v| rules.format.value(v))
        .expect("rule 1");
    assert!(
        sip.contains("set: MARK_SET_BOTH")
            && sip.contains("dscp: 46")
            && sip.contains("dst4: 10.10.0.0/24"),
        "{sip}"
    );
}

#[test]
fn semantic_errors_name_file_line_and_column() {
    let cases: &[(&str, &str)] = &[
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    maps:\n      deny:\n        entries: []\n",
            "8:7: program blocklist has no map \"deny\" (maps: allow_v4, allow_v6, deny_v4, deny_v6)",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    maps:\n      deny_v4:\n        entries:\n          - {key: 192.0.2.1/24, value: 1}\n",
            "10:19: map deny_v4: key: host bits set in 192.0.2.1/24 (did you mean 192.0.2.0/24?)",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    maps:\n      deny_v4:\n        entries:\n          - {key: 10.0.0.0/8, value: 300}\n",
            "10:38: map deny_v4: value: 300 is out of range for __u8 (0 to 255)",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    maps:\n      deny_v4:\n        entries:\n          - {key: 10.0.0.0/8, value: 1}\n          - {key: 10.0.0.0/8, value: 1}\n",
            "11:19: map deny_v4: duplicate key 10.0.0.0/8 (first at line 10)",
        ),
        (
            // The same key written as a mapping: named as kfd reads it back.
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    maps:\n      deny_v4:\n        entries:\n          - {key: 203.0.113.0/24, value: 1}\n          - {key: {prefixlen: 24, addr: 203.0.113.0}, value: 1}\n",
            "11:19: map deny_v4: duplicate key 203.0.113.0/24 (first at line 10)",
        ),
        (
            // A key holding a newline is quoted: one error, one line.
            "version: 1\n\"a\\nb\": 1\n",
            "2:1: \"a\\nb\": unknown field \"a\\nb\" (expected one of: version, chains, functions)",
        ),
        (
            // Found by fuzzing: `%0A` in a tag decodes to a newline.
            "version: 1\nfunctions: !a%0Ab []\n",
            "2:12: unsupported tag `!a\\nb` (only `!!str` and `!` are supported)",
        ),
        (
            "%YAML 2.0\n---\nversion: 1\n",
            "1:1: unsupported yaml version 2.0 (only 1.x is read)",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklst}\n",
            "6:24: unknown builtin program \"blocklst\" (builtins: blocklist, blocklist-swap, counter, mark, ratelimit)",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    interfaces: [eth1]\n    hook: xdp\n    program: {builtin: blocklist}\n",
            "3:5: function bl: give exactly one of `interface` or `interfaces`",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    proceed_on: [pass, shot]\n    program: {builtin: blocklist}\n",
            "6:24: \"shot\" is not a xdp verdict (valid: aborted, drop, pass, tx, redirect)",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    globals:\n      rate: 3\n",
            "8:7: the object has no read-only global \"rate\" (settable: none; kf_* names are reserved)",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    globals:\n      kf_slot_idx: 3\n",
            "8:7: the object has no read-only global \"kf_slot_idx\" (settable: none; kf_* names are reserved)",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    maps:\n      kf_progs:\n        entries: []\n",
            "8:7: map \"kf_progs\" belongs to the chain (kfd ABI); it cannot be configured",
        ),
        (
            "version: 1\nchains:\n  - {interface: eth0, hook: tc-ingress, xdp_mode: native}\n",
            "3:51: xdp_mode applies to xdp chains only, not tc-ingress",
        ),
        (
            "version: 1\nfunctions:\n  - name: Edge_BL\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n",
            "3:11: functions[0].name: \"Edge_BL\" does not match \"^[a-z0-9][a-z0-9-]{0,31}$\"",
        ),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: ratelimit}\n    maps:\n      rl_config:\n        entries:\n          - {key: 1, value: {rate_pps: 1, burst: 1}}\n",
            "10:19: map rl_config: index 1 is out of range (array of 1 elements)",
        ),
    ];
    for (content, want) in cases {
        let d = Dir::new();
        d.write("10-test.yaml", content);
        let l = d.load_fresh();
        let got = errors(&l);
        let expected = format!("{}:{want}", d.path("10-test.yaml"));
        assert_eq!(got, [expected], "for:\n{content}");
        assert_eq!(l.files["10-test.yaml"], FileStatus::Rejected);
        assert!(l.desired.chains.is_empty());
    }
}

#[test]
fn a_function_defined_in_two_files_names_both() {
    let d = Dir::new();
    d.write("10-a.yaml", blocklist("bl", "eth0", &["10.0.0.0/8"]));
    d.write("20-b.yaml", blocklist("bl", "eth0", &["10.1.0.0/16"]));
    let l = d.load_fresh();
    assert_eq!(
        errors(&l),
        [format!(
            "{}:3:5: function bl is defined twice on eth0 xdp; the other definition is at {}:3:5",
            d.path("20-b.yaml"),
            d.path("10-a.yaml")
        )]
    );
    // Neither is in the store: the later file is rejected, the first stays.
    assert_eq!(l.files["10-a.yaml"], FileStatus::Valid);
    assert_eq!(l.files["20-b.yaml"], FileStatus::Rejected);
    assert_eq!(
        l.desired.chains[&eth0()].functions[0].maps["deny_v4"]
            .entries
            .len(),
        1
    );
}

#[test]
fn a_clash_rejects_the_file_that_changed_and_keeps_its_last_good_version() {
    let d = Dir::new();
    let a = blocklist("bl", "eth0", &["10.0.0.0/8"]);
    let b_old = blocklist("other", "eth0", &[]);
    let snap = applied(&[("10-a.yaml", &a), ("20-b.yaml", &b_old)]);
    d.write("10-a.yaml", &a);
    // 20-b now also defines `bl`: 20-b changed, so 20-b is the culprit even
    // though it sorts later, and its last good version stands in.
    d.write("20-b.yaml", blocklist("bl", "eth0", &["10.9.0.0/16"]));
    let l = d.load(&snap);
    assert_eq!(l.errors.len(), 1, "{:?}", errors(&l));
    assert_eq!(l.files["10-a.yaml"], FileStatus::Valid);
    assert_eq!(l.files["20-b.yaml"], FileStatus::KeptLastGood);
    let names: Vec<&str> = l.desired.chains[&eth0()]
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["bl", "other"]);
    assert_eq!(&l.effective["20-b.yaml"][..], b_old.as_bytes());
}

#[test]
fn conflicting_chain_settings_name_both_files() {
    let d = Dir::new();
    d.write(
        "10-a.yaml",
        "version: 1\nchains:\n  - {interface: eth0, hook: xdp, xdp_mode: native}\n",
    );
    d.write(
        "20-b.yaml",
        "version: 1\nchains:\n  - {interface: eth0, hook: xdp, xdp_mode: generic}\n",
    );
    let l = d.load_fresh();
    assert_eq!(
        errors(&l),
        [format!(
            "{}:3:5: chain eth0 xdp is given xdp_mode generic here but native; the other setting is at {}:3:5",
            d.path("20-b.yaml"),
            d.path("10-a.yaml")
        )]
    );
}

#[test]
fn bad_empty_and_half_written_files_keep_their_last_good_version() {
    let good = blocklist("bl", "eth0", &["10.0.0.0/8", "192.0.2.0/24"]);
    let snap = applied(&[("10-bl.yaml", &good)]);
    for (bad, err) in [
        ("", "file is empty"),
        (
            "version: 1\nfunctions:\n  - name: bl\n    interface: [",
            "4:17: while parsing a node",
        ),
        ("\u{0}\u{1}\u{2}binary\u{ff}", ""),
    ] {
        let d = Dir::new();
        d.write("10-bl.yaml", bad);
        let l = d.load(&snap);
        assert_eq!(l.files["10-bl.yaml"], FileStatus::KeptLastGood, "{bad:?}");
        assert!(errors(&l)[0].contains(err), "{:?}", errors(&l));
        assert_eq!(
            l.desired.chains[&eth0()].functions[0].maps["deny_v4"]
                .entries
                .len(),
            2
        );
    }
    // Invalid UTF-8 names the position of the first bad byte.
    let d = Dir::new();
    d.write("10-bl.yaml", b"version: 1\nfunctions: [\xff]\n");
    let l = d.load(&snap);
    assert_eq!(
        errors(&l),
        [format!(
            "{}:2:13: not valid UTF-8 (is this a YAML file?)",
            d.path("10-bl.yaml")
        )]
    );
}

#[test]
fn a_deleted_file_removes_its_functions() {
    let snap = applied(&[("10-bl.yaml", &blocklist("bl", "eth0", &[]))]);
    let d = Dir::new();
    let l = d.load(&snap);
    assert!(l.desired.chains.is_empty());
    assert!(l.effective.is_empty());
}

#[test]
fn files_others_can_write_are_refused() {
    let d = Dir::new();
    d.write("10-bl.yaml", blocklist("bl", "eth0", &[]));
    fs::set_permissions(d.0.join("10-bl.yaml"), fs::Permissions::from_mode(0o664)).unwrap();
    let l = d.load_fresh();
    let e = errors(&l);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(&format!(
            "{}: the file is writable by its group (mode 0664",
            d.path("10-bl.yaml")
        )),
        "{e:?}"
    );
    let relaxed = load(
        &d.0,
        &Snapshot::default(),
        &Live::new(),
        &ReadRules {
            strict_permissions: false,
            ..rules()
        },
    )
    .unwrap();
    assert!(relaxed.errors.is_empty());
}

#[test]
fn objects_are_checked_for_sha256_abi_and_order() {
    let d = Dir::new();
    let obj = d.0.join("pass.bpf.o");
    let bytes = crate::builtin::object(crate::builtin::ObjectKind::Bench, "xdp_pass").unwrap();
    fs::write(&obj, bytes).unwrap();
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
    let sha = {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let func = |name: &str, prio: u32, extra: &str| {
        format!(
            "  - name: {name}\n    interface: eth0\n    hook: xdp\n    priority: {prio}\n    program: {{object: {}{extra}}}\n",
            obj.display()
        )
    };
    // A wrong pin is refused.
    d.write(
        "10-a.yaml",
        format!(
            "version: 1\nfunctions:\n{}",
            func("third", 10, &format!(", sha256: \"{}\"", "0".repeat(64)))
        ),
    );
    let e = errors(&d.load_fresh());
    assert!(
        e[0].contains(&format!(
            "has sha256 {sha}, but the config pins {}",
            "0".repeat(64)
        )),
        "{e:?}"
    );
    // The right pin loads; a program without the ABI may only run last.
    d.write(
        "10-a.yaml",
        format!(
            "version: 1\nfunctions:\n{}{}",
            func("third", 10, &format!(", sha256: {sha}")),
            "  - {name: after, interface: eth0, hook: xdp, priority: 20, program: {builtin: counter}}\n"
        ),
    );
    let l = d.load_fresh();
    assert_eq!(
        errors(&l),
        [format!(
            "{}:3:5: function third does not use the kfd ABI (it never calls kf_next), so it can only run last on eth0 xdp, but after runs after it (give third a larger priority number)",
            d.path("10-a.yaml")
        )]
    );
    d.write(
        "10-a.yaml",
        format!(
            "version: 1\nfunctions:\n{}{}",
            func("third", 30, ""),
            "  - {name: after, interface: eth0, hook: xdp, priority: 20, program: {builtin: counter}}\n"
        ),
    );
    let l = d.load_fresh();
    assert_eq!(errors(&l), Vec::<String>::new());
    assert!(!l.desired.chains[&eth0()].functions[1].program.uses_abi);
    // A missing object names the path.
    d.write("10-a.yaml", "version: 1\nfunctions:\n  - {name: x, interface: eth0, hook: xdp, program: {object: /nonexistent/x.o}}\n");
    let e = errors(&d.load_fresh());
    assert_eq!(
        e,
        [format!(
            "{}:3:61: object /nonexistent/x.o: No such file or directory (os error 2)",
            d.path("10-a.yaml")
        )]
    );
}

#[test]
fn validate_checks_a_file_whatever_its_name() {
    let d = Dir::new();
    d.write("tmpXYZ123", blocklist("bl", "eth0", &["10.0.0.0/8"]));
    assert_eq!(validate(&[&d.0.join("tmpXYZ123")], &rules()).unwrap(), 1);
    d.write("tmpbad", blocklist("bl", "eth0", &["10.0.0.0/33"]));
    let e = validate(&[&d.0.join("tmpbad")], &rules()).unwrap_err();
    assert!(
        e[0].to_string()
            .starts_with(&format!("{}:10:19:", d.path("tmpbad"))),
        "{}",
        e[0]
    );
}

#[test]
fn garbage_never_panics() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..400), |bytes| {
            let _ = process(
                "f.yaml",
                "f.yaml",
                &bytes,
                &mut Objects::default(),
                &rules(),
                &mut Timings::default(),
            );
            Ok(())
        })
        .unwrap();
    let valid = blocklist("bl", "eth0", &["10.0.0.0/8"]);
    runner
        .run(&(0..valid.len(), any::<u8>()), |(at, b)| {
            let mut bytes = valid.clone().into_bytes();
            bytes[at] = b;
            let _ = process(
                "f.yaml",
                "f.yaml",
                &bytes,
                &mut Objects::default(),
                &rules(),
                &mut Timings::default(),
            );
            Ok(())
        })
        .unwrap();
}

const HALF_WRITTEN: &str = "version: 1\nfunctions:\n  - name: bl\n    interface: [";

#[test]
fn a_bad_file_with_no_copy_the_kernel_runs_holds_its_live_functions() {
    use crate::desired::Hold;
    let good = blocklist("bl", "eth0", &["10.0.0.0/8"]);
    let newer = blocklist("bl", "eth0", &["10.0.0.0/8", "10.1.0.0/16"]);
    let runs = |c: &str| applied(&[("10-bl.yaml", c)]);
    // The store lost the file, lags behind the kernel, or runs ahead of it.
    let cases = [
        ("lost", Snapshot::default(), runs(&good).live),
        ("behind", runs(&good).store, runs(&newer).live),
        ("ahead", runs(&newer).store, runs(&good).live),
    ];
    for (what, store, live) in cases {
        let d = Dir::new();
        d.write("10-bl.yaml", HALF_WRITTEN);
        let l = d.load(&Applied { store, live });
        assert_eq!(
            l.files["10-bl.yaml"],
            FileStatus::HeldLive { functions: 1 },
            "{what}"
        );
        assert_eq!(
            l.files["10-bl.yaml"].describe().unwrap(),
            "invalid, and no last good copy of it matches the kernel: its 1 live function \
             instance is kept exactly as it is"
        );
        let c = &l.desired.chains[&eth0()];
        assert!(c.functions.is_empty(), "{what}");
        assert_eq!(
            c.held["bl"],
            Hold::FileInvalid {
                file: "10-bl.yaml".into()
            }
        );
        assert!(l.desired.incomplete && l.unknown.contains("10-bl.yaml"));
        assert!(!l.effective.contains_key("10-bl.yaml"));
    }
    // A copy the kernel runs stands in (and repairs drift, adds what is missing).
    let d = Dir::new();
    d.write("10-bl.yaml", HALF_WRITTEN);
    let l = d.load(&runs(&newer));
    assert_eq!(l.files["10-bl.yaml"], FileStatus::KeptLastGood);
    assert!(l.desired.chains[&eth0()].held.is_empty());
    assert!(!l.desired.incomplete);
    // A bad file nothing of which is live, and no copy: it contributes nothing.
    let d = Dir::new();
    d.write("10-bl.yaml", HALF_WRITTEN);
    let l = d.load_fresh();
    assert_eq!(l.files["10-bl.yaml"], FileStatus::Rejected);
    assert!(l.desired.chains.is_empty());
}

#[test]
fn a_valid_new_file_that_overfills_a_chain_is_the_one_refused() {
    let many = |prefix: &str, n: usize, prio: u32| {
        let mut s = String::from("version: 1\nfunctions:\n");
        for i in 0..n {
            s.push_str(&format!(
                "  - {{name: {prefix}{i}, interface: eth0, hook: xdp, priority: {prio}, program: {{builtin: counter}}}}\n"
            ));
        }
        s
    };
    // 30 live functions from 10-old.yaml; the new 20-new.yaml adds 3 that
    // sort first. Before, the 33rd in sort order (one of 10-old's) was blamed
    // and 10-old's live functions went.
    let old = many("old", 30, 500);
    let d = Dir::new();
    d.write("10-old.yaml", &old);
    d.write("20-new.yaml", many("new", 3, 1));
    let l = d.load(&applied(&[("10-old.yaml", &old)]));
    assert_eq!(
        errors(&l),
        [format!(
            "{}:3:5: chain eth0 xdp would hold 33 functions (3 from this file); at most 32 fit",
            d.path("20-new.yaml")
        )]
    );
    assert_eq!(l.files["10-old.yaml"], FileStatus::Valid);
    assert_eq!(l.files["20-new.yaml"], FileStatus::Rejected);
    assert_eq!(l.desired.chains[&eth0()].functions.len(), 30);
    // A file's error points at its first function past the limit: with
    // nothing live, the later file is blamed.
    d.write("20-new.yaml", many("new", 3, 900));
    let l = d.load_fresh();
    assert_eq!(
        errors(&l),
        [format!(
            "{}:5:5: chain eth0 xdp would hold 33 functions (3 from this file); at most 32 fit",
            d.path("20-new.yaml")
        )]
    );
}

#[test]
fn a_function_whose_object_cannot_be_used_keeps_running_and_the_rest_of_its_file_applies() {
    use crate::desired::Hold;
    let d = Dir::new();
    let obj = d.0.join("pass.bpf.o");
    let bytes = crate::builtin::object(crate::builtin::ObjectKind::Bench, "xdp_pass").unwrap();
    let content = format!(
        "version: 1\nfunctions:\n  - {{name: bl, interface: eth0, hook: xdp, priority: 10, program: {{builtin: blocklist}}}}\n  - {{name: ext, interface: eth0, hook: xdp, priority: 90, program: {{object: {}}}}}\n",
        obj.display()
    );
    d.write("10-a.yaml", &content);
    let put = |mode: u32| {
        fs::write(&obj, bytes).unwrap();
        fs::set_permissions(&obj, fs::Permissions::from_mode(mode)).unwrap();
    };
    put(0o644);
    let was = applied(&[("10-a.yaml", &content)]);
    // Deleted, replaced by garbage (a copy in progress), made writable by others.
    let faults: [(&str, &dyn Fn()); 3] = [
        ("deleted", &|| fs::remove_file(&obj).unwrap()),
        ("garbage", &|| fs::write(&obj, b"half an object").unwrap()),
        ("chmod", &|| {
            fs::set_permissions(&obj, fs::Permissions::from_mode(0o666)).unwrap()
        }),
    ];
    for (what, fault) in faults {
        put(0o644);
        fault();
        let l = d.load(&was);
        let e = errors(&l);
        assert_eq!(e.len(), 1, "{what}: {e:?}");
        assert!(
            e[0].starts_with(&format!(
                "{}:4:77: object {}",
                d.path("10-a.yaml"),
                obj.display()
            )),
            "{what}: {e:?}"
        );
        assert_eq!(l.object_errors, 1);
        // The copy stands in; its `ext` is held, `bl` is configured as ever.
        assert_eq!(l.files["10-a.yaml"], FileStatus::KeptLastGood, "{what}");
        let c = &l.desired.chains[&eth0()];
        assert_eq!(c.functions.len(), 1);
        assert_eq!(c.functions[0].name, "bl");
        let Hold::Object { source, error, .. } = &c.held["ext"] else {
            panic!("{what}: {:?}", c.held)
        };
        assert_eq!(source.line, 4);
        assert!(e[0].ends_with(error.as_str()), "{what}: {error}");
    }
    // The object is good again: nothing is held.
    put(0o644);
    let l = d.load(&was);
    assert!(l.errors.is_empty(), "{:?}", errors(&l));
    assert!(l.desired.chains[&eth0()].held.is_empty());
}

#[test]
fn a_function_loaded_by_an_older_kfd_is_held_only_while_some_file_is_unknown() {
    use crate::desired::Hold;
    let old = Applied {
        store: Snapshot::default(),
        live: [((eth0(), "legacy".to_owned()), None)]
            .into_iter()
            .collect(),
    };
    let d = Dir::new();
    d.write("10-bl.yaml", blocklist("bl", "eth0", &[]));
    d.write("20-new.yaml", HALF_WRITTEN);
    let l = d.load(&old);
    assert_eq!(
        l.desired.chains[&eth0()].held["legacy"],
        Hold::UnknownOrigin
    );
    // Every file known: what no file asks for goes.
    d.write("20-new.yaml", blocklist("other", "eth0", &[]));
    let l = d.load(&old);
    assert!(l.desired.chains[&eth0()].held.is_empty());
}
