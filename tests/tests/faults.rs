//! Faults outside the config file (issue #12): an object replaced under a
//! live chain, a state dir that is lost, full, read-only or tampered with,
//! a kill between the kernel write and the store write, a file that tips a
//! chain over its limit. For each, against real chains and real packets:
//!
//! - what is live is unchanged: the census of pins, programs, maps and
//!   links, the deny entries, and a denied source is still dropped while
//!   the others pass;
//! - the error names its cause (the object, the store path, the file);
//! - the other chain keeps converging while the fault lasts;
//! - and once the fault is cleared, kfd converges again.

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
