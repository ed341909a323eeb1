//! Faults outside the config file (issue #12), each against real chains
//! and real packets:
//!
//! - an object replaced under a live chain, a state dir that is lost, full,
//!   read-only or tampered with, a kill between the kernel write and the
//!   store write, a file that tips a chain over its limit: what is live is
//!   unchanged (the census of pins, programs, maps and links, the deny
//!   entries, a denied source still dropped while the others pass), the
//!   error names its cause (the object, the store path, the file), the other
//!   chain keeps converging while the fault lasts, and once the fault is
//!   cleared kfd converges again;
//! - names that hold control characters, namespace paths that are not
//!   namespaces (a FIFO, a regular file) or that others can change, an
//!   interface renamed under a live chain: the error names its cause
//!   exactly, nothing hangs, and nothing live is removed.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kfd_tests::census::Census;
use kfd_tests::{A4, Env, Receiver, Run, sh, test_env};

const DENIED: &str = "203.0.113.7";
const EDGE: &str = "10-edge.yaml";
const OTHER: &str = "20-other.yaml";

/// Two chains on the receiver: its XDP chain (a blocklist denying DENIED,
/// then the test object `pass_v2` loaded from a file) from 10-edge.yaml,
/// and its TC ingress chain (a blocklist) from 20-other.yaml, which must
/// keep converging while 10-edge's chain is hit.
struct World {
    env: Env,
    object: PathBuf,
    rx: Receiver,
    allowed: usize,
    other_round: u8,
}

impl World {
    fn new(env: Env) -> World {
        env.add_source(DENIED);
        let objects = env.dir.join("objects");
        fs::create_dir_all(&objects).expect("objects dir");
        let object = objects.join("pass.bpf.o");
        fs::rename(env.test_object("pass_v2"), &object).expect("place the object");
        let rx = env.receiver();
        let w = World {
            env,
            object,
            rx,
            allowed: 0,
            other_round: 0,
        };
        w.env.write(EDGE, &w.edge(&["203.0.113.0/24"]));
        w.env.write(OTHER, &w.other(0));
        w.env.apply();
        w
    }

    fn edge(&self, deny: &[&str]) -> String {
        let (i, n) = (&self.env.if_b, &self.env.ns_b);
        let mut s = format!(
            "version: 1\nfunctions:\n  - name: bl\n    interface: {i}\n    netns: {n}\n    hook: xdp\n    priority: 10\n    program: {{builtin: blocklist}}\n    maps:\n      deny_v4:\n        entries:\n"
        );
        for d in deny {
            s += &format!("          - {{key: {d}, value: 1}}\n");
        }
        s += &format!(
            "  - name: ext\n    interface: {i}\n    netns: {n}\n    hook: xdp\n    priority: 20\n    program: {{object: {}}}\n",
            self.object.display()
        );
        s
    }

    /// The TC chain's config, denying 198.51.100.N/32 for N in 0..=round.
    fn other(&self, round: u8) -> String {
        let mut s = format!(
            "version: 1\nfunctions:\n  - name: tcbl\n    interface: {}\n    netns: {}\n    hook: tc-ingress\n    program: {{builtin: blocklist}}\n    maps:\n      deny_v4:\n        entries:\n",
            self.env.if_b, self.env.ns_b
        );
        for n in 0..=round {
            s += &format!("          - {{key: 198.51.100.{n}/32, value: 1}}\n");
        }
        s
    }

    /// The TC chain's deny entries.
    fn other_entries(&self) -> usize {
        let dir = self
            .env
            .chain_dir_of("tc-ingress", &self.env.if_b, &self.env.ns_b);
        self.env
            .map_in(&dir, "tcbl", "maps", "deny_v4")
            .read_all()
            .map_or(0, |s| s.len())
    }

    /// Changes the other chain's file; `run` applies it. The other chain
    /// converges whatever the fault does to the first.
    fn other_converges(&mut self, what: &str, run: impl FnOnce(&Env) -> Run) -> Run {
        self.other_round += 1;
        self.env.write(OTHER, &self.other(self.other_round));
        let r = run(&self.env);
        assert_eq!(
            self.other_entries(),
            usize::from(self.other_round) + 1,
            "{what}: the other chain did not converge: {r:?}"
        );
        r
    }

    /// The XDP chain still drops DENIED and passes the rest.
    fn filters(&mut self, what: &str) {
        self.env.send(DENIED, 3);
        self.env.send(A4, 3);
        self.allowed += 3;
        assert_eq!(
            self.rx.wait_for(A4, self.allowed, Duration::from_secs(3)),
            self.allowed,
            "{what}: allowed traffic lost"
        );
        assert_eq!(self.rx.count(DENIED), 0, "{what}: a denied packet passed");
    }

    /// What must not change: every pin, program, map and link of the XDP
    /// chain, and its entries.
    fn edge_state(&self) -> (Census, Option<std::collections::BTreeSet<String>>) {
        let mut c = self.env.census();
        c.pins.retain(|p| p.starts_with("xdp@"));
        (c, self.env.deny_v4("bl"))
    }
}

fn stderr_has(r: &Run, needle: &str) -> bool {
    r.stderr.contains(needle)
}

#[test]
fn an_object_deleted_replaced_or_chmodded_under_a_live_chain_keeps_running() {
    let env = test_env!();
    let mut w = World::new(env);
    let before = w.edge_state();
    w.filters("before");
    let obj = w.object.clone();
    let original = fs::read(&obj).expect("object");
    let faults: [(&str, &dyn Fn(), &str); 3] = [
        (
            "deleted",
            &|| fs::remove_file(&obj).expect("rm"),
            "No such file or directory",
        ),
        (
            "replaced by half an object",
            &|| fs::write(&obj, &original[..original.len() / 2]).expect("write"),
            "",
        ),
        (
            "made writable by others",
            &|| fs::set_permissions(&obj, fs::Permissions::from_mode(0o666)).expect("chmod"),
            "writable by others (mode 0666",
        ),
    ];
    for (what, fault, because) in faults {
        fault();
        let r = w.other_converges(what, |e| e.kfd(&["apply"]));
        assert_eq!(r.code, 1, "{what}: {r:?}");
        assert!(
            stderr_has(&r, &format!("object {}", obj.display())) && stderr_has(&r, because),
            "{what}: the error does not name the object: {r:?}"
        );
        assert!(
            stderr_has(&r, "ext on ") && stderr_has(&r, "is kept exactly as it is live"),
            "{what}: the held function is not reported: {r:?}"
        );
        assert_eq!(w.edge_state(), before, "{what}: the live chain changed");
        w.filters(what);
        // `plan` says the same, and exits 1.
        let p = w.env.kfd(&["plan"]);
        assert_eq!(p.code, 1, "{what}: {p:?}");
        assert!(
            p.stdout.contains("= ext is kept exactly as live"),
            "{what}: {p:?}"
        );
        // The object is good again: in sync, nothing reloaded.
        fs::write(&obj, &original).expect("restore");
        fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).expect("chmod");
        let r = w.env.kfd(&["apply"]);
        assert_eq!(
            r.code, 0,
            "{what}: not converged once the object is back: {r:?}"
        );
        assert_eq!(w.env.kfd(&["plan"]).code, 0, "{what}");
        assert_eq!(w.edge_state(), before, "{what}: reloaded after recovery");
    }
}

#[test]
fn under_kfd_run_a_deleted_object_is_held_through_resyncs_and_retried() {
    let env = test_env!();
    let mut w = World::new(env);
    let before = w.edge_state();
    let d = w.env.daemon(&["--resync-interval", "1s"]);
    let original = fs::read(&w.object).expect("object");
    let mark = d.mark();
    fs::remove_file(&w.object).expect("rm");
    // No config event: the resync finds it, reports it, and fails the pass.
    d.expect_log(
        mark,
        &format!("object {}: No such file", w.object.display()),
    );
    d.expect_log(mark, "result=\"failure\"");
    let later = d.mark();
    d.expect_log(later, "reconcile #");
    assert_eq!(
        w.edge_state(),
        before,
        "the live chain changed under kfd run"
    );
    w.filters("under kfd run");
    // Back: a retry (not only the next resync) converges it.
    let mark = d.mark();
    fs::write(&w.object, &original).expect("restore");
    d.expect_log(mark, "result=\"success\"");
    assert_eq!(w.edge_state(), before);
    assert!(
        !d.log().contains("unload"),
        "something was unloaded:\n{}",
        d.log()
    );
}

#[test]
fn a_lost_state_dir_and_then_a_half_written_file_remove_nothing() {
    let env = test_env!();
    let mut w = World::new(env);
    let before = w.edge_state();
    fs::remove_dir_all(w.env.dir.join("state")).expect("rm state dir");
    w.env.write(
        EDGE,
        "version: 1\nfunctions:\n  - name: bl\n    interface: [",
    );
    let r = w.other_converges("store lost", |e| e.kfd(&["apply"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        stderr_has(
            &r,
            &format!(
                "kfd: {EDGE}: invalid, and no last good copy of it matches the kernel: its 2 live \
                 function instances are kept exactly as they are"
            )
        ),
        "{r:?}"
    );
    assert_eq!(w.edge_state(), before, "the live chain changed");
    w.filters("store lost");
    // A valid version converges again (and drops what it no longer asks for).
    w.env
        .write(EDGE, &w.edge(&["203.0.113.0/24", "192.0.2.0/24"]));
    let r = w.env.kfd(&["apply"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(w.env.deny_v4("bl").map(|d| d.len()), Some(2));
}

/// A tmpfs over the state dir, unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path, size: &str) -> Mounted {
        fs::create_dir_all(at).expect("mount point");
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            at.to_str().expect("utf8"),
        ]);
        Mounted(at.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_state_dir_never_lets_a_bad_file_roll_the_kernel_back() {
    let env = test_env!();
    let mut w = World::new(env);
    let state = w.env.dir.join("state");
    fs::remove_dir_all(&state).expect("rm state");
    let _mount = Mounted::tmpfs(&state, "256k");
    // A first apply fills the store.
    assert_eq!(w.env.kfd(&["apply"]).code, 0);
    for (round, (what, fault)) in [("full", "full"), ("read-only", "ro")]
        .into_iter()
        .enumerate()
    {
        let extra = format!("192.0.2.{round}/32");
        let wanted = ["203.0.113.0/24", "192.0.2.100/32", extra.as_str()];
        if fault == "full" {
            // Leave no room for a new copy.
            let _ = std::process::Command::new("dd")
                .args(["if=/dev/zero", "bs=4k", "status=none"])
                .arg(format!("of={}", state.join("filler").display()))
                .status();
        } else {
            sh(&["mount", "-o", "remount,ro", state.to_str().expect("utf8")]);
        }
        w.env.write(EDGE, &w.edge(&wanted));
        let r = w.env.kfd(&["apply"]);
        assert_eq!(r.code, 1, "{what}: {r:?}");
        let errno = if fault == "full" {
            "No space left on device"
        } else {
            "Read-only file system"
        };
        assert!(
            stderr_has(&r, "the kernel converged as above, but last-good store ")
                && stderr_has(&r, errno),
            "{what}: {r:?}"
        );
        // The kernel has the new entries...
        let live = w.env.deny_v4("bl").expect("bl");
        assert_eq!(live.len(), wanted.len(), "{what}");
        // ...and a bad file now does not roll them back to the stale copy.
        let before = w.edge_state();
        w.env.write(EDGE, "version: 1\nfunctions: [");
        let r = w.other_converges(what, |e| e.kfd(&["apply"]));
        assert_eq!(r.code, 1, "{what}: {r:?}");
        assert_eq!(w.edge_state(), before, "{what}: rolled back");
        w.filters(what);
        // Cleared: converges and records the store.
        if fault == "full" {
            fs::remove_file(state.join("filler")).expect("rm filler");
        } else {
            sh(&["mount", "-o", "remount,rw", state.to_str().expect("utf8")]);
        }
        w.env.write(EDGE, &w.edge(&wanted));
        let r = w.env.kfd(&["apply"]);
        assert_eq!(r.code, 0, "{what}: {r:?}");
        assert_eq!(w.env.kfd(&["plan"]).code, 0, "{what}");
    }
}

#[test]
fn a_kill_between_the_kernel_write_and_the_store_write_rolls_nothing_back() {
    let env = test_env!();
    let mut w = World::new(env);
    let wanted = ["203.0.113.0/24", "192.0.2.1/32"];
    w.env.write(EDGE, &w.edge(&wanted));
    let r = w
        .env
        .kfd_with_env(&["apply"], &[("KFD_FAILPOINT", "before-store")]);
    assert_eq!(r.signal, Some(libc::SIGKILL), "{r:?}");
    let before = w.edge_state();
    assert_eq!(before.1.as_ref().map(|d| d.len()), Some(2));
    w.env.write(
        EDGE,
        "version: 1\nfunctions:\n  - name: bl\n    interface: [",
    );
    let r = w.other_converges("killed before the store", |e| e.kfd(&["apply"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        stderr_has(&r, "no last good copy of it matches the kernel"),
        "{r:?}"
    );
    assert_eq!(w.edge_state(), before, "rolled back to the stale copy");
    w.filters("after the kill");
}

#[test]
fn a_store_holding_a_fifo_or_another_users_copy_is_not_trusted() {
    let env = test_env!();
    let mut w = World::new(env);
    let before = w.edge_state();
    let copy = w.env.dir.join("state/applied").join(EDGE);
    assert!(copy.is_file(), "no store copy at {}", copy.display());
    // A copy swapped for another user's, with other content.
    let planted = w.edge(&[]);
    fs::write(&copy, &planted).expect("plant");
    sh(&["chown", "65534", copy.to_str().expect("utf8")]);
    w.env.write(EDGE, "version: 1\nfunctions: [");
    let r = w.other_converges("a foreign copy", |e| e.kfd(&["apply"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        stderr_has(
            &r,
            &format!(
                "kfd: last-good store {}: the file is owned by uid 65534",
                copy.display()
            )
        ),
        "{r:?}"
    );
    assert_eq!(w.edge_state(), before, "the planted copy was applied");
    w.filters("a foreign copy");
    // A FIFO in its place: never opened (its open would block).
    fs::remove_file(&copy).expect("rm");
    sh(&["mkfifo", "-m", "0600", copy.to_str().expect("utf8")]);
    let r = w.other_converges("a FIFO", |e| e.kfd(&["apply"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        stderr_has(
            &r,
            &format!(
                "kfd: last-good store {}: not a regular file but a FIFO",
                copy.display()
            )
        ),
        "{r:?}"
    );
    assert_eq!(w.edge_state(), before);
    // With the file good again, the apply that finds the FIFO (and says so)
    // replaces it with a real copy; the next finds nothing wrong.
    w.env.write(EDGE, &w.edge(&["203.0.113.0/24"]));
    let r = w.env.kfd(&["apply"]);
    assert!(stderr_has(&r, "not a regular file but a FIFO"), "{r:?}");
    assert!(copy.is_file(), "the FIFO is still there");
    let r = w.env.kfd(&["apply"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_new_file_that_tips_a_chain_over_32_functions_is_the_one_refused() {
    let env = test_env!();
    let mut w = World::new(env);
    // 10-edge's two and 29 counters from 15-many.yaml: 31 live functions.
    let counters = |prefix: &str, n: usize, prio: u32| {
        let mut s = String::from("version: 1\nfunctions:\n");
        for i in 0..n {
            s += &format!(
                "  - {{name: {prefix}{i}, interface: {}, netns: {}, hook: xdp, priority: {prio}, program: {{builtin: counter}}}}\n",
                w.env.if_b, w.env.ns_b
            );
        }
        s
    };
    w.env.write("15-many.yaml", &counters("c", 29, 15));
    assert_eq!(w.env.kfd(&["apply"]).code, 0);
    let before = w.edge_state();
    // A valid new file with two more, sorting before everything else.
    w.env.write("05-new.yaml", &counters("n", 2, 1));
    let r = w.other_converges("33 functions", |e| e.kfd(&["apply"]));
    assert_eq!(r.code, 1, "{r:?}");
    let chain = format!("{} xdp (netns {})", w.env.if_b, w.env.ns_b);
    assert!(
        stderr_has(
            &r,
            &format!(
                "05-new.yaml:3:5: chain {chain} would hold 33 functions (2 from this file); at most 32 fit"
            )
        ),
        "{r:?}"
    );
    assert!(
        stderr_has(
            &r,
            "kfd: 05-new.yaml: invalid and never applied; it contributes nothing"
        ),
        "{r:?}"
    );
    assert!(!r.stderr.contains("15-many.yaml: invalid"), "{r:?}");
    assert_eq!(w.edge_state(), before, "live functions were removed");
    w.filters("33 functions");
    fs::remove_file(w.env.conf().join("05-new.yaml")).expect("rm");
    assert_eq!(w.env.kfd(&["apply"]).code, 0);
    assert_eq!(w.env.kfd(&["plan"]).code, 0);
}

/// Long enough for any kfd run here; a kfd still running then has hung.
const HANG: Duration = Duration::from_secs(30);

/// A config file name holding an escape sequence and a newline.
const BAD_FILE: &str = "bad\u{1b}[31m\nname.yaml";
/// [`BAD_FILE`] as kfd prints it.
const BAD_FILE_SHOWN: &str = "bad\\u{1b}[31m\\nname.yaml";

/// A function on `kt\x01x`, which Linux accepts as an interface name.
fn odd_interface_config(env: &Env) -> String {
    format!(
        "version: 1\nfunctions:\n  - name: edge\n    interface: \"kt\\x01x\"\n    netns: {ns}\n    hook: xdp\n    program: {{builtin: counter}}\n",
        ns = env.ns_b
    )
}

#[test]
fn control_characters_in_names_print_escaped() {
    let env = kfd_tests::test_env!();
    env.write("10-odd.yaml", &odd_interface_config(&env));
    env.write(BAD_FILE, "version: 2\n");
    let raw = |text: &str| text.contains(['\u{1b}', '\u{1}', '\r']) || text.contains("[31m\n");

    let r = env.kfd(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        !raw(&r.stdout) && !raw(&r.stderr),
        "a raw control character: {r:?}"
    );
    let stdout: Vec<&str> = r.stdout.lines().collect();
    for line in [
        format!("+++ b/{BAD_FILE_SHOWN}"),
        format!("chain kt\\u{{1}}x xdp (netns {}):", env.ns_b),
        format!(
            "  ! blocked: interface kt\\u{{1}}x does not exist in netns {}: chain not converged",
            env.ns_b
        ),
    ] {
        assert!(
            stdout.contains(&line.as_str()),
            "{line:?} not printed: {r:?}"
        );
    }
    assert_eq!(
        r.stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "{}:1:10: version: 1 was expected",
                env.conf().join(BAD_FILE_SHOWN).display()
            ),
            format!("kfd: {BAD_FILE_SHOWN}: invalid and never applied; it contributes nothing"),
        ]
    );

    // The daemon logs the same follow-up line, escaped.
    let d = env.daemon(&["--resync-interval", "0"]);
    d.expect_log(
        0,
        &format!(
            "{}: invalid and never applied; it contributes nothing",
            env.conf().join(BAD_FILE_SHOWN).display()
        ),
    );
    d.expect_log(0, "kt\\u{1}x xdp (netns ");
    assert!(
        !raw(&d.log()),
        "a raw control character in the log:\n{}",
        d.log()
    );
}

/// A second file placing a function in the namespace at `netns`.
fn function_in_netns(env: &Env, netns: &Path) -> String {
    format!(
        "version: 1\nfunctions:\n  - name: other\n    interface: {ifb}\n    netns: {ns}\n    hook: tc-ingress\n    program: {{builtin: counter}}\n",
        ifb = env.if_b,
        ns = netns.display()
    )
}

/// Datagrams from `src` that got through, after sending `n`.
fn delivered(env: &Env, src: &str, n: u32) -> usize {
    let rx = env.receiver();
    assert_eq!(env.send(src, n), n);
    // Returns as soon as all n arrived; drops never arrive, so those wait it out.
    rx.wait_for(src, n as usize, Duration::from_secs(1))
}

#[test]
fn a_namespace_path_that_is_no_namespace_fails_at_once_and_hangs_nothing() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge", &["203.0.113.0/24"]),
    );
    env.apply();
    let fifo = env.dir.join("ns.fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let file = env.dir.join("passwd");
    std::fs::write(&file, "root:x:0:0::/root:/bin/sh\n").expect("write");
    for (netns, what) in [(&fifo, "a FIFO"), (&file, "a regular file")] {
        env.write("20-other.yaml", &function_in_netns(&env, netns));
        let want = format!("{}: not a network namespace: {what}", netns.display());
        // Opening a FIFO used to block forever, holding the root's lock.
        for args in [&["apply"][..], &["plan"], &["status"]] {
            let r = env.kfd_within(HANG, args);
            if args != ["status"] {
                assert_eq!(r.code, 1, "{args:?}: {r:?}");
                // apply reports it as the chain's error, plan as why it is blocked.
                assert!(
                    r.stderr.contains(&want) || r.stdout.contains(&want),
                    "{args:?}: {want:?} not in {r:?}"
                );
            } else {
                assert_eq!(r.code, 0, "{args:?}: {r:?}");
            }
        }
        // The live chain is as it was, and filters.
        assert_eq!(
            env.deny_v4("edge"),
            Some(["203.0.113.0/24".to_owned()].into())
        );
        assert_eq!(delivered(&env, DENIED, 10), 0);
        assert_eq!(delivered(&env, A4, 10), 10);
    }
    // SIGTERM ends a daemon whose pass meets the FIFO.
    env.write("20-other.yaml", &function_in_netns(&env, &fifo));
    let mut d = env.daemon(&["--resync-interval", "0"]);
    d.expect_log(
        0,
        &format!("{}: not a network namespace: a FIFO", fifo.display()),
    );
    assert_eq!(d.stop(libc::SIGTERM), Some(0));
}

#[test]
fn a_namespace_path_others_can_change_is_refused_until_fixed() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge", &["203.0.113.0/24"]),
    );
    env.apply();
    // The receiver's namespace, through a symlink in a dir anyone can write
    // (and so point the symlink anywhere).
    let open = env.dir.join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let link = open.join("ns");
    std::os::unix::fs::symlink(env.ns_path(&env.ns_b), &link).expect("symlink");
    env.write("20-other.yaml", &function_in_netns(&env, &link));
    let r = env.kfd_within(HANG, &["apply"]);
    assert_eq!(r.code, 1, "{r:?}");
    let want = format!(
        "network namespace {}: its directory is writable by others (mode 0777, {}); \
         kfd enters only namespaces whose path nobody but root can change (fix the ownership/mode)",
        link.display(),
        open.display()
    );
    assert!(r.stderr.contains(&want), "{want:?} not in {r:?}");
    assert_eq!(delivered(&env, DENIED, 10), 0);
    // Fixed: the function is placed.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let r = env.kfd_within(HANG, &["apply"]);
    assert_eq!(r.code, 0, "{r:?}");
    let st = env.status();
    let placed = st["chains"].as_array().into_iter().flatten().any(|c| {
        c["hook"] == "tc-ingress"
            && c["netns"] == link.display().to_string()
            && c["attached"] == true
            && c["functions"][0]["name"] == "other"
    });
    assert!(placed, "{st}");
    assert_eq!(delivered(&env, DENIED, 10), 0);
}

/// TC chains beside the XDP one on the receiver: a clsact filter on
/// ingress, a TCX link on egress.
fn tc_counters_config(env: &Env) -> String {
    format!(
        "version: 1\nchains:\n  - {{interface: {ifb}, netns: {ns}, hook: tc-ingress, tc_attach: clsact, tc_priority: 7}}\n  - {{interface: {ifb}, netns: {ns}, hook: tc-egress, tc_attach: tcx}}\nfunctions:\n  - {{name: count-in, interface: {ifb}, netns: {ns}, hook: tc-ingress, program: {{builtin: counter}}}}\n  - {{name: count-out, interface: {ifb}, netns: {ns}, hook: tc-egress, program: {{builtin: counter}}}}\n",
        ifb = env.if_b,
        ns = env.ns_b
    )
}

/// The ifindex and XDP program ids of interface `name` in the receiver's namespace.
fn link_of(env: &Env, name: &str) -> (u64, Vec<u64>) {
    let out = kfd_tests::sh(&["ip", "-n", &env.ns_b, "-j", "-d", "link", "show", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    let mut ids: Vec<u64> = v[0]["xdp"]["attached"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["prog"]["id"].as_u64())
        .chain(v[0]["xdp"]["prog"]["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    (v[0]["ifindex"].as_u64().expect("ifindex"), ids)
}

/// Packets `count-in` counted so far.
fn counted(env: &Env) -> u64 {
    env.verdicts("count-in").values().sum()
}

#[test]
fn a_renamed_interface_keeps_its_chains_and_status_says_so() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge", &["203.0.113.0/24"]),
    );
    env.write("20-tc.yaml", &tc_counters_config(&env));
    env.apply();
    let pins = kfd_tests::pins_under(&env.bpffs);
    let (ifindex, xdp) = link_of(&env, &env.if_b);
    assert_eq!(xdp.len(), 1, "{xdp:?}");

    let renamed = format!("{}r", env.if_b);
    let rename = |from: &str, to: &str| {
        kfd_tests::sh(&[
            "ip", "-n", &env.ns_b, "link", "set", "dev", from, "name", to,
        ]);
    };
    rename(&env.if_b, &renamed);
    // Every chain still runs on the interface, under its new name.
    let before = counted(&env);
    assert_eq!(delivered(&env, DENIED, 10), 0);
    assert_eq!(delivered(&env, A4, 10), 10);
    // TC ingress sees what XDP passed: the 10 allowed datagrams.
    assert!(counted(&env) >= before + 10, "count-in stopped counting");
    assert_eq!(link_of(&env, &renamed), (ifindex, xdp.clone()));

    // Status tells the truth: attached, to that ifindex, renamed.
    let st = env.status();
    let chains = st["chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 3, "{st}");
    for c in chains {
        assert_eq!(
            (
                &c["attached"],
                &c["ifindex"],
                &c["renamed_to"],
                &c["interface"]
            ),
            (
                &serde_json::json!(true),
                &serde_json::json!(ifindex),
                &serde_json::json!(renamed),
                &serde_json::json!(env.if_b)
            ),
            "{c}"
        );
    }
    let text = env.kfd(&["status"]).stdout;
    let tail = format!(
        "to ifindex {ifindex}, now named {renamed} (the config names {}; nothing changes until that name is back)",
        env.if_b
    );
    for head in [
        format!("{} xdp (netns {}): attached (generic) ", env.if_b, env.ns_b),
        format!(
            "{} tc-ingress (netns {}): attached (clsact, priority 7) ",
            env.if_b, env.ns_b
        ),
        format!(
            "{} tc-egress (netns {}): attached (tcx) ",
            env.if_b, env.ns_b
        ),
    ] {
        let line = format!("{head}{tail}");
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "{line:?} not in:\n{text}"
        );
    }

    // Nothing is removed or re-attached while the configured name is missing.
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let blocked = format!(
        "  ! blocked: interface {} does not exist in netns {}: chain not converged",
        env.if_b, env.ns_b
    );
    assert_eq!(plan.stdout.matches(&blocked).count(), 3, "{plan:?}");
    assert!(
        !plan.stdout.contains("  - ") && !plan.stdout.contains("  + "),
        "{plan:?}"
    );
    let apply = env.kfd(&["apply"]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert_eq!(kfd_tests::pins_under(&env.bpffs), pins);
    assert_eq!(link_of(&env, &renamed), (ifindex, xdp.clone()));

    // The metric agrees (the daemon's listener in the sender's namespace).
    let d = env.daemon_in_sender_netns(&["--resync-interval", "0"]);
    for hook in ["xdp", "tc-ingress", "tc-egress"] {
        let series = format!(
            "kfd_chain_attached{{netns=\"{}\",interface=\"{}\",hook=\"{hook}\"}}",
            env.ns_b, env.if_b
        );
        assert_eq!(d.metric(&series), Some(1.0), "{series}: {}", d.scrape());
    }
    assert_eq!(kfd_tests::pins_under(&env.bpffs), pins);

    // The name comes back: in sync, nothing to do, still filtering.
    let mark = d.mark();
    rename(&renamed, &env.if_b);
    d.expect_log(mark, "link event");
    drop(d);
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.ends_with("in sync: nothing to do\n"),
        "{plan:?}"
    );
    assert_eq!(kfd_tests::pins_under(&env.bpffs), pins);
    assert_eq!(link_of(&env, &env.if_b), (ifindex, xdp));
    assert_eq!(delivered(&env, DENIED, 10), 0);
    let st = env.status();
    for c in st["chains"].as_array().expect("chains") {
        assert_eq!(c["renamed_to"], serde_json::Value::Null, "{c}");
    }
}

#[test]
fn a_chain_whose_pins_cannot_be_read_is_left_alone_and_the_others_converge() {
    let env = test_env!();
    let mut w = World::new(env);
    // The TC chain's control map is swapped for a pin of a program.
    let tc = w.env.chain_dir_of("tc-ingress", &w.env.if_b, &w.env.ns_b);
    let ctl = tc.join("kf_ctl");
    fs::remove_file(&ctl).expect("rm kf_ctl");
    sh(&[
        "bpftool",
        "prog",
        "pin",
        "pinned",
        tc.join("root").to_str().expect("utf8"),
        ctl.to_str().expect("utf8"),
    ]);
    let tc_pins = kfd_tests::pins_under(&tc);
    // The XDP chain still converges a change.
    w.env
        .write(EDGE, &w.edge(&["203.0.113.0/24", "192.0.2.9/32"]));
    w.env.write(OTHER, &w.other(5));
    let r = w.env.kfd(&["apply"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("its pins cannot be read (reading ")
            && r.stderr.contains("the chain is left as it is"),
        "{r:?}"
    );
    assert_eq!(w.env.deny_v4("bl").map(|d| d.len()), Some(2), "{r:?}");
    w.filters("one chain unreadable");
    // Nothing of the unreadable chain was touched, and status says why.
    assert_eq!(kfd_tests::pins_under(&tc), tc_pins);
    let st = w.env.kfd(&["status"]);
    assert!(
        st.stdout.contains("tc-ingress") && st.stdout.contains("cannot be read ("),
        "{st:?}"
    );
    assert_eq!(w.env.kfd(&["plan"]).code, 1);
    // Its bad pin removed, the chain is rebuilt.
    fs::remove_file(&ctl).expect("rm");
    let r = w.env.kfd(&["apply"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(w.other_entries(), 6);
    assert_eq!(w.env.kfd(&["plan"]).code, 0);
}
