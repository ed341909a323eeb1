//! Coexistence and concurrency.
//!
//! - Programs attached by other tools and other kfd instances (other
//!   `--bpffs` roots) are never touched: not by `kfd apply`, not by `kfd
//!   down`, not by `kfd down --interface`, and not when a config names their
//!   interface. Their traffic keeps flowing, or being dropped, as they say.
//! - Runs on one bpffs root serialise through the flock on the root: two
//!   `kfd apply` at once both succeed, the second says it waited, and the
//!   result is the config of the one that ran last; a run that finds the
//!   lock taken says so and waits; `kfd apply` and `kfd run` take turns.

use std::fs;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kfd_tests::{A4, Env, kfd_bin, reconciler, sh};

const DENIED_A: &str = "203.0.113.7";
const DENIED_B: &str = "198.51.100.7";
const WAITING: &str = "; waiting for it to finish";

/// A blocklist chain on `env`'s receiver denying `deny`, optionally with a
/// second function on another interface (`iface`, `netns`).
fn config(env: &Env, deny: &str, also_on: Option<(&str, &str)>) -> String {
    let mut s = env.blocklist_config("edge-bl", &[deny]);
    if let Some((iface, netns)) = also_on {
        s.push_str(&format!(
            "  - name: intruder\n    interface: {iface}\n    netns: {netns}\n    hook: xdp\n    program: {{builtin: counter}}\n"
        ));
    }
    s
}

/// Attaches the bench `xdp_pass` program to `env`'s receiver with `ip`, as
/// another tool would; returns its program id.
fn attach_foreign(env: &Env) -> u32 {
    let obj = env.dir.join("foreign-pass.bpf.o");
    let bytes = reconciler::builtin::object(reconciler::builtin::ObjectKind::Bench, "xdp_pass")
        .expect("bench object xdp_pass");
    fs::write(&obj, bytes).expect("write object");
    sh(&[
        "ip",
        "-n",
        &env.ns_b,
        "link",
        "set",
        "dev",
        &env.if_b,
        "xdpgeneric",
        "obj",
        obj.to_str().expect("UTF-8"),
        "sec",
        "xdp",
    ]);
    let ids = env.xdp_prog_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0]
}

/// Program ids in a chain's slots, from `kfd status`.
fn programs(env: &Env) -> Vec<serde_json::Value> {
    env.status()["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["functions"].as_array().cloned().unwrap_or_default())
        .map(|f| f["program"].clone())
        .collect()
}

/// What another instance must find unchanged.
#[derive(Debug, PartialEq)]
struct Untouched {
    pins: Vec<String>,
    programs: Vec<serde_json::Value>,
    attached: Vec<u32>,
}

fn snapshot(env: &Env) -> Untouched {
    Untouched {
        pins: kfd_tests::pins_under(&env.bpffs),
        programs: programs(env),
        attached: env.xdp_prog_ids(),
    }
}

/// Sends from `denied` and from A4: the first must be dropped, the second arrive.
fn filters(env: &Env, rx: &kfd_tests::Receiver, denied: &str, allowed_so_far: &mut usize) {
    let dropped_before = rx.count(denied);
    env.send(denied, 3);
    env.send(A4, 3);
    *allowed_so_far += 3;
    assert_eq!(
        rx.wait_for(A4, *allowed_so_far, Duration::from_secs(3)),
        *allowed_so_far,
        "allowed traffic on {} must pass",
        env.if_b
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        rx.count(denied),
        dropped_before,
        "{denied} must be dropped on {}",
        env.if_b
    );
}

#[test]
fn other_instances_and_other_tools_programs_are_never_touched() {
    // Instance A and instance B: separate bpffs roots, config and state dirs,
    // each with a chain on its own veth; a third veth runs another tool's program.
    let (a, b, other) = (
        kfd_tests::test_env!(),
        kfd_tests::test_env!(),
        kfd_tests::test_env!(),
    );
    a.add_source(DENIED_A);
    b.add_source(DENIED_B);
    a.write("10-edge.yaml", &config(&a, "203.0.113.0/24", None));
    b.write("10-edge.yaml", &config(&b, "198.51.100.0/24", None));
    a.apply();
    b.apply();
    let foreign = attach_foreign(&other);
    let (rx_a, rx_b, rx_other) = (a.receiver(), b.receiver(), other.receiver());
    let (mut sent_a, mut sent_b, mut sent_other) = (0, 0, 0);
    let check_all = |stage: &str,
                     a_up: bool,
                     sent_a: &mut usize,
                     sent_b: &mut usize,
                     sent_other: &mut usize| {
        eprintln!("checking traffic: {stage}");
        if a_up {
            filters(&a, &rx_a, DENIED_A, sent_a);
        }
        filters(&b, &rx_b, DENIED_B, sent_b);
        other.send(A4, 3);
        *sent_other += 3;
        assert_eq!(
            rx_other.wait_for(A4, *sent_other, Duration::from_secs(3)),
            *sent_other,
            "{stage}: the foreign program passes traffic"
        );
        assert_eq!(
            other.xdp_prog_ids(),
            [foreign],
            "{stage}: the foreign program stays"
        );
    };
    check_all("start", true, &mut sent_a, &mut sent_b, &mut sent_other);
    let b_before = snapshot(&b);

    // A's config names B's interface and the foreign program's: A refuses
    // both chains, converges its own, and touches neither.
    for (target, owner) in [(&b, "instance B's root"), (&other, "the foreign program")] {
        a.write(
            "10-edge.yaml",
            &config(&a, "203.0.113.0/24", Some((&target.if_b, &target.ns_b))),
        );
        let r = a.kfd(&["apply"]);
        assert_eq!(r.code, 1, "{owner}: {r:?}");
        assert!(
            r.stderr
                .contains(&format!("{} xdp (netns {})", target.if_b, target.ns_b))
                && r.stderr
                    .contains("which kfd does not own: kfd will not replace it"),
            "{owner}: {}",
            r.stderr
        );
        assert!(
            !a.bpffs
                .join(format!("xdp@{}@{}", target.if_b, target.ns_b))
                .exists(),
            "{owner}: A pinned nothing for that chain"
        );
        assert_eq!(snapshot(&b), b_before, "{owner}: B untouched");
        check_all(owner, true, &mut sent_a, &mut sent_b, &mut sent_other);
    }
    a.write("10-edge.yaml", &config(&a, "203.0.113.0/24", None));
    a.apply();

    // A's `down` for an interface it has no chain on removes nothing.
    for iface in [b.if_b.as_str(), other.if_b.as_str()] {
        let r = a.kfd(&["down", "--interface", iface]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("down: 0 chains removed"), "{r:?}");
    }
    assert_eq!(
        snapshot(&b),
        b_before,
        "B untouched by A's down --interface"
    );
    check_all(
        "down --interface elsewhere",
        true,
        &mut sent_a,
        &mut sent_b,
        &mut sent_other,
    );

    // A's `down --interface` for its own: only A's chain goes.
    let r = a.kfd(&["down", "--interface", &a.if_b]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("down: 1 chain removed"), "{r:?}");
    assert!(a.xdp_prog_ids().is_empty(), "A's root detached");
    assert_eq!(
        snapshot(&b),
        b_before,
        "B untouched by A's down --interface"
    );
    check_all(
        "A down --interface",
        false,
        &mut sent_a,
        &mut sent_b,
        &mut sent_other,
    );

    // A comes back, then goes entirely.
    a.apply();
    check_all(
        "A re-applied",
        true,
        &mut sent_a,
        &mut sent_b,
        &mut sent_other,
    );
    let r = a.kfd(&["down"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!a.bpffs.exists(), "A's root removed");
    assert_eq!(snapshot(&b), b_before, "B untouched by A's down");
    check_all("A down", false, &mut sent_a, &mut sent_b, &mut sent_other);

    // B goes too; the foreign program stays.
    let r = b.kfd(&["down"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(b.xdp_prog_ids().is_empty());
    other.send(A4, 3);
    sent_other += 3;
    assert_eq!(
        rx_other.wait_for(A4, sent_other, Duration::from_secs(3)),
        sent_other
    );
    assert_eq!(other.xdp_prog_ids(), [foreign]);
    // kfd down with no chains at all, next to the foreign program.
    let r = other.kfd(&["down"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(other.xdp_prog_ids(), [foreign]);
}

/// `kfd` with `env`'s bpffs root and state dir but another config dir.
fn kfd_with_config(env: &Env, conf: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(kfd_bin());
    c.arg("--config-dir")
        .arg(conf)
        .arg("--bpffs")
        .arg(&env.bpffs)
        .arg("--state-dir")
        .arg(env.dir.join("state"))
        .args(args);
    c
}

/// A second config dir next to the Env's.
fn other_conf(env: &Env, name: &str) -> PathBuf {
    let p = env.dir.join(name);
    fs::create_dir_all(&p).expect("config dir");
    p
}

/// A blocklist config with `n` deny entries 10.x.y.z/32 from `from`, plus 203.0.113.0/24.
fn big_config(env: &Env, from: u32, n: u32) -> String {
    let mut s = env.blocklist_config("edge-bl", &["203.0.113.0/24"]);
    for i in from..from + n {
        let a = (0x0a00_0000 + i).to_be_bytes();
        s.push_str(&format!(
            "          - {{key: {}.{}.{}.{}/32, value: 1}}\n",
            a[0], a[1], a[2], a[3]
        ));
    }
    s
}

/// `kfd apply` with `conf`, stderr to `err` so it can be read while it runs.
fn spawn_apply(env: &Env, conf: &Path, err: &Path) -> Child {
    spawn_apply_with(env, conf, err, &[])
}

/// [`spawn_apply`] with extra environment variables.
fn spawn_apply_with(env: &Env, conf: &Path, err: &Path, vars: &[(&str, &str)]) -> Child {
    kfd_with_config(env, conf, &["apply"])
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(fs::File::create(err).expect("stderr file"))
        .spawn()
        .expect("kfd apply")
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn stopped(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
        .unwrap_or(false)
}

/// Waits for `child`; its exit code and the stderr it wrote to `err`.
fn finish_to(mut child: Child, err: &Path) -> (i32, String) {
    let status = child.wait().expect("kfd");
    let stderr = fs::read_to_string(err).expect("stderr file");
    (status.code().unwrap_or(-1), stderr)
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill on our own child, which has not been waited for.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {sig}");
}

/// Whether process `pid` holds an flock, per /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 1234 00:1f:1 0 EOF`).
fn holds_flock(pid: u32) -> bool {
    let locks = fs::read_to_string("/proc/locks").expect("/proc/locks");
    let pid = pid.to_string();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"FLOCK") && f.get(4) == Some(&pid.as_str())
    })
}

#[test]
fn two_applies_at_once_serialise_and_the_last_one_wins() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED_A);
    let (one, two) = (other_conf(&env, "conf-one"), other_conf(&env, "conf-two"));
    // Big enough that each apply is real work (a swap of 30k entries).
    fs::write(one.join("10-edge.yaml"), big_config(&env, 0, 30_000)).expect("write");
    fs::write(two.join("10-edge.yaml"), big_config(&env, 200_000, 30_000)).expect("write");
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge-bl", &["203.0.113.0/24"]),
    );
    env.apply();
    let rx = env.receiver();
    let mut allowed = 0;
    for round in 0..4 {
        let (first, second) = if round % 2 == 0 {
            (&one, &two)
        } else {
            (&two, &one)
        };
        // The overlap is forced, not left to timing: the first stops itself
        // at a failpoint it reaches while holding the lock (even when it has
        // nothing to do), and is resumed only after the second has said it
        // is waiting.
        let err_a = env.dir.join(format!("apply-{round}-a.err"));
        let err_b = env.dir.join(format!("apply-{round}-b.err"));
        let a = spawn_apply_with(
            &env,
            first,
            &err_a,
            &[("KFD_FAILPOINT", "before-store:stop")],
        );
        assert!(
            kfd_tests::wait_until(Duration::from_secs(10), || stopped(a.id())),
            "round {round}: the first apply never stopped at its failpoint"
        );
        assert!(
            holds_flock(a.id()),
            "round {round}: stopped without the lock"
        );
        let b = spawn_apply(&env, second, &err_b);
        let b_waits = kfd_tests::wait_until(Duration::from_secs(10), || {
            fs::read_to_string(&err_b).is_ok_and(|e| e.contains(WAITING))
        });
        signal(&a, libc::SIGCONT);
        assert!(b_waits, "round {round}: the second apply never waited");
        let (ca, ea) = finish_to(a, &err_a);
        let (cb, eb) = finish_to(b, &err_b);
        assert_eq!((ca, cb), (0, 0), "round {round}: both succeed:\n{ea}\n{eb}");
        assert!(!ea.contains(WAITING), "round {round}: {ea}");
        assert!(
            eb.contains(&format!(
                "kfd: another kfd holds {}; waiting for it to finish",
                env.bpffs.display()
            )),
            "{eb}"
        );
        // The state is the last one's config, exactly.
        let plan_last = kfd_with_config(&env, second, &["plan"])
            .output()
            .expect("plan");
        assert_eq!(
            plan_last.status.code(),
            Some(0),
            "round {round}: in sync with the config applied last: {}",
            String::from_utf8_lossy(&plan_last.stdout)
        );
        let plan_first = kfd_with_config(&env, first, &["plan"])
            .output()
            .expect("plan");
        assert_eq!(plan_first.status.code(), Some(2), "round {round}");
        let deny = env.deny_v4("edge-bl").expect("deny_v4 pinned");
        assert_eq!(deny.len(), 30_001, "round {round}");
        let want_last = if second == &one {
            "10.0.0.0/32"
        } else {
            "10.3.13.64/32"
        };
        assert!(deny.contains(want_last), "round {round}: {want_last}");
        // Still filtering.
        filters(&env, &rx, DENIED_A, &mut allowed);
    }
}

/// Holds an flock on `dir` until dropped.
struct Held {
    _file: fs::File,
}

impl Held {
    fn take(dir: &Path, op: libc::c_int) -> Held {
        let f = fs::File::open(dir).expect("open bpffs root");
        // SAFETY: flock on a valid fd.
        let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        Held { _file: f }
    }
}

/// Starts `kfd args`, waits until it says it is waiting, checks it is still
/// waiting a moment later, and returns it.
fn started_waiting(env: &Env, args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = kfd_with_config(env, &env.conf(), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kfd");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut all = String::new();
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(all.clone());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while !seen.contains(WAITING) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => seen = s,
            Err(_) => panic!("kfd {args:?} never said it was waiting: {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        format!(
            "kfd: another kfd holds {}; waiting for it to finish\n",
            env.bpffs.display()
        )
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "kfd {args:?} must wait while the lock is held"
    );
    (child, rx)
}

#[test]
fn a_run_that_finds_the_lock_taken_says_so_and_waits() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge-bl", &["203.0.113.0/24"]),
    );
    env.apply();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge-bl", &["203.0.113.0/24", "198.51.100.0/24"]),
    );
    // An exclusive holder (another apply) blocks apply, plan and down.
    for args in [&["apply"][..], &["plan"][..], &["status"][..]] {
        let held = Held::take(&env.bpffs, libc::LOCK_EX);
        let (child, _rx) = started_waiting(&env, args);
        drop(held);
        let out = child.wait_with_output().expect("kfd");
        assert!(
            matches!(out.status.code(), Some(0) | Some(2)),
            "{args:?} runs once the lock is free: {out:?}"
        );
    }
    let deny = env.deny_v4("edge-bl").expect("deny_v4");
    assert_eq!(deny.len(), 2, "the apply that waited converged: {deny:?}");
    // A shared holder (a plan, a status) lets plan and status through, but not apply.
    let shared = Held::take(&env.bpffs, libc::LOCK_SH);
    for args in [&["plan"][..], &["status"][..]] {
        let out = kfd_with_config(&env, &env.conf(), args)
            .output()
            .expect("kfd");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(WAITING));
    }
    let (child, _rx) = started_waiting(&env, &["down"]);
    drop(shared);
    let out = child.wait_with_output().expect("kfd down");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!env.bpffs.exists(), "down ran once the lock was free");
}

/// `kfd apply` while `kfd run` serves the same root and config dir. Each
/// round changes the config, starts an apply that stops itself (a failpoint)
/// while it holds the lock, so the daemon's pass for the same change, after its quiet
/// window, must find the lock taken and wait; the apply is resumed when the
/// daemon says so. The apply succeeds, the pass then finds the kernel in sync
/// (the apply did the work), and the kernel holds exactly that round's config.
#[test]
fn apply_during_run_takes_turns_with_the_daemon() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED_A);
    env.write("10-edge.yaml", &big_config(&env, 0, 20_000));
    // A quiet window long enough that the apply surely holds the lock first.
    let d = env.daemon(&["--resync-interval", "0", "--debounce", "1s"]);
    let rx = env.receiver();
    let mut allowed = 0;
    for round in 1..=5u32 {
        let mark = d.mark();
        env.write("10-edge.yaml", &big_config(&env, round * 100_000, 20_000));
        let err = env.dir.join(format!("apply-during-run-{round}.err"));
        // Stopped at a failpoint it reaches holding the lock: no race.
        let apply = spawn_apply_with(
            &env,
            &env.conf(),
            &err,
            &[("KFD_FAILPOINT", "before-store:stop")],
        );
        assert!(
            kfd_tests::wait_until(Duration::from_secs(10), || stopped(apply.id())),
            "round {round}: the apply never stopped at its failpoint"
        );
        assert!(
            holds_flock(apply.id()),
            "round {round}: stopped without the lock"
        );
        let daemon_waits = d.wait_log(mark, "waiting for it to finish");
        signal(&apply, libc::SIGCONT);
        assert!(
            daemon_waits,
            "round {round}: the daemon's pass never waited for the apply:\n{}",
            d.log()
        );
        let (code, stderr) = finish_to(apply, &err);
        assert_eq!(code, 0, "round {round}: apply:\n{stderr}");
        let pass = d.next_pass(mark);
        assert!(
            pass.contains("(file change: 10-edge.yaml): in sync"),
            "round {round}: the daemon's pass: {pass}\n{}",
            d.log()
        );
        let plan = kfd_with_config(&env, &env.conf(), &["plan"])
            .output()
            .expect("plan");
        assert_eq!(plan.status.code(), Some(0), "round {round}");
        let deny = env.deny_v4("edge-bl").expect("deny_v4 pinned");
        assert_eq!(deny.len(), 20_001, "round {round}");
        let first = (0x0a00_0000 + round * 100_000).to_be_bytes();
        let first = format!("{}.{}.{}.{}/32", first[0], first[1], first[2], first[3]);
        assert!(deny.contains(&first), "round {round}: {first}");
        filters(&env, &rx, DENIED_A, &mut allowed);
    }
    let log = d.log();
    assert!(
        !log.contains("failure") && !log.contains("failed"),
        "a pass failed:\n{log}"
    );
}
