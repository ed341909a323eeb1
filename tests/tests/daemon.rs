//! `kfd run` end to end: the real binary as a daemon against a test-made
//! namespace pair. Signals, systemd notifications, drift repair, link and
//! namespace events, retries, metrics, and a `kfd apply` run beside it.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use kfd_tests::{A4, Env, REQUIRE_ENV, sh, wait_until};

const DENIED: &str = "203.0.113.7";
const FN: &str = "edge";

fn set(items: &[&str]) -> Option<BTreeSet<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

/// The key of `a.b.c.d/len` in an LPM deny map.
fn lpm_key(cidr: &str) -> Vec<u8> {
    let (addr, len) = cidr.split_once('/').expect("cidr");
    let addr: std::net::Ipv4Addr = addr.parse().expect("address");
    let len: u32 = len.parse().expect("prefix length");
    [&len.to_ne_bytes()[..], &addr.octets()].concat()
}

fn chain_attached(env: &Env, interface: &str) -> bool {
    env.status()["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["interface"] == interface && c["attached"] == true)
}

/// Datagrams from `src` that got through, after sending `n`.
fn delivered(env: &Env, src: &str, n: u32) -> usize {
    let rx = env.receiver();
    assert_eq!(env.send(src, n), n);
    // Returns as soon as all n arrived; drops never arrive, so those wait it out.
    rx.wait_for(src, n as usize, Duration::from_secs(1))
}

#[test]
fn ready_follows_the_first_convergence_and_reload_and_stop_are_announced() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    let sock_path = env.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification from kfd run");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let d = env.daemon_with_env(
        &["--resync-interval", "0"],
        &[("NOTIFY_SOCKET", sock_path.to_str().expect("utf8"))],
    );
    let ready = recv();
    assert!(
        ready.starts_with("READY=1\nSTATUS=converged: 1 chain; reconcile #1 (startup)"),
        "{ready:?}"
    );
    // READY came after the pass: the kernel already has the config.
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));

    d.signal(libc::SIGHUP);
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let ready = recv();
    assert!(
        ready.starts_with("READY=1\nSTATUS=converged: 1 chain; reconcile #2 (SIGHUP)"),
        "{ready:?}"
    );

    // A plain change only updates the status.
    let mark = d.mark();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["198.51.100.0/24"]),
    );
    d.expect_log(mark, "reconcile #3 (file change: 10-edge.yaml)");
    let status = recv();
    assert!(
        status.starts_with("STATUS=converged: 1 chain; reconcile #3 (file change: 10-edge.yaml)"),
        "{status:?}"
    );
    let mut d = d;
    assert_eq!(d.stop(libc::SIGTERM), Some(0));
    assert_eq!(recv(), "STOPPING=1\n");
}

#[test]
fn a_first_pass_that_cannot_work_is_no_start() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    // A root that is not on bpffs: no pass can ever work there.
    let root = env.dir.join("not-bpffs");
    let sock_path = env.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_nonblocking(true).expect("nonblocking");
    let out = Command::new(kfd_tests::kfd_bin())
        .arg("--config-dir")
        .arg(env.conf())
        .arg("--bpffs")
        .arg(&root)
        .arg("--state-dir")
        .arg(env.dir.join("state"))
        .args(["run", "--metrics-address", "off", "--log-target", "stderr"])
        .env("NOTIFY_SOCKET", &sock_path)
        .output()
        .expect("kfd run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "kfd: kfd run: the startup reconcile failed before changing anything: {} is not on a bpf filesystem",
            root.display()
        )),
        "{stderr}"
    );
    // systemd hears why, and never READY=1: `systemctl start` fails.
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification");
    let status = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        status.starts_with("STATUS=failed: reconcile #1 (startup): "),
        "{status:?}"
    );
    assert!(sock.recv(&mut buf).is_err(), "more than one notification");
}

#[test]
fn sighup_repairs_drift_at_once() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24", "192.0.2.0/24"]),
    );
    let d = env.daemon(&["--resync-interval", "0"]);
    // An operator deletes an entry by hand.
    let deny = env.map(FN, "maps", "deny_v4");
    assert!(deny.delete(&lpm_key("192.0.2.0/24")).expect("delete"));
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
    let mark = d.mark();
    d.signal(libc::SIGHUP);
    let pass = d.next_pass(mark);
    assert!(
        pass.contains("(SIGHUP): converged 1 chain (1 action, 1 entry written)"),
        "{pass}"
    );
    assert_eq!(env.deny_v4(FN), set(&["192.0.2.0/24", "203.0.113.0/24"]));
}

#[test]
fn the_periodic_resync_repairs_drift() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    let d = env.daemon(&["--resync-interval", "1s"]);
    let mark = d.mark();
    let deny = env.map(FN, "maps", "deny_v4");
    assert!(deny.delete(&lpm_key("203.0.113.0/24")).expect("delete"));
    deny.update(&lpm_key("198.18.0.0/15"), &[1])
        .expect("insert by hand");
    d.expect_log(mark, "(resync): converged 1 chain");
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
}

#[test]
fn sigterm_and_sigint_leave_the_data_plane_attached_and_a_restart_adopts_it() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut d = env.daemon(&[]);
        assert_eq!(d.stop(sig), Some(0), "exit code after signal {sig}");
        assert!(
            d.log().contains("exiting; the data plane stays attached"),
            "{}",
            d.log()
        );
        assert!(chain_attached(&env, &env.if_b), "chain detached by exit");
        assert_eq!(delivered(&env, DENIED, 10), 0, "deny lifted by exit");
        assert_eq!(delivered(&env, A4, 10), 10);
    }
    // A new daemon adopts what is pinned: nothing to do.
    let d = env.daemon(&[]);
    assert!(
        d.log().contains("reconcile #1 (startup): in sync"),
        "{}",
        d.log()
    );
}

#[test]
fn a_recreated_interface_is_attached_again_by_link_events() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    // No resync: only link events can bring the chain back.
    let d = env.daemon(&["--resync-interval", "0"]);
    let mark = d.mark();
    env.delete_link();
    d.expect_log(mark, "the interface does not exist");
    let mark = d.mark();
    env.create_link();
    env.add_source(DENIED);
    d.expect_log(mark, "(link event: ");
    assert!(
        wait_until(Duration::from_secs(20), || chain_attached(&env, &env.if_b)),
        "not attached again:\n{}",
        d.log()
    );
    assert_eq!(
        env.xdp_prog_ids().len(),
        1,
        "root attached to the new interface"
    );
    assert_eq!(delivered(&env, DENIED, 10), 0, "the new interface filters");
    assert_eq!(delivered(&env, A4, 10), 10);
}

#[test]
fn an_interface_that_appears_later_is_attached() {
    let env = kfd_tests::test_env!();
    let late = format!("{}l", env.if_b);
    let peer = format!("{}m", env.if_a);
    env.write(
        "10-late.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]).replace(
            &format!("interface: {}", env.if_b),
            &format!("interface: {late}"),
        ),
    );
    let d = env.daemon(&["--resync-interval", "0"]);
    assert!(
        d.log().contains("1 chain waiting for its interface"),
        "{}",
        d.log()
    );
    let mark = d.mark();
    sh(&[
        "ip", "link", "add", &late, "netns", &env.ns_b, "type", "veth", "peer", "name", &peer,
        "netns", &env.ns_a,
    ]);
    d.expect_log(mark, &format!("(link event: {late} (netns {})", env.ns_b));
    assert!(
        wait_until(Duration::from_secs(20), || chain_attached(&env, &late)),
        "{}",
        d.log()
    );
}

/// Deletes a namespace on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn a_namespace_that_appears_later_is_used_and_a_deleted_one_is_let_go() {
    let env = kfd_tests::test_env!();
    let ns = Netns(format!("{}-c", env.ns_b));
    let ifc = format!("{}c", env.if_b);
    env.write(
        "10-late.yaml",
        &format!(
            "version: 1\nfunctions:\n  - {{name: {FN}, interface: {ifc}, netns: {}, hook: xdp, program: {{builtin: counter}}}}\n",
            ns.0
        ),
    );
    let d = env.daemon(&["--resync-interval", "0"]);
    assert!(d.log().contains("waiting for its interface"), "{}", d.log());
    let mark = d.mark();
    sh(&["ip", "netns", "add", &ns.0]);
    sh(&[
        "ip",
        "link",
        "add",
        &ifc,
        "netns",
        &ns.0,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{}d", env.if_a),
        "netns",
        &env.ns_a,
    ]);
    d.expect_log(mark, "converged 1 chain");
    assert!(
        wait_until(Duration::from_secs(20), || chain_attached(&env, &ifc)),
        "{}",
        d.log()
    );
    // Deleting the namespace must free it (kfd's netlink socket in it would
    // keep it alive): its veth peer in ns_a goes with it.
    let mark = d.mark();
    sh(&["ip", "netns", "del", &ns.0]);
    d.expect_log(mark, "netns change");
    let peer_gone = wait_until(Duration::from_secs(20), || {
        !Command::new("ip")
            .args(["-n", &env.ns_a, "link", "show", &format!("{}d", env.if_a)])
            .output()
            .expect("ip")
            .status
            .success()
    });
    assert!(peer_gone, "the deleted namespace is still alive");
}

#[test]
fn failures_back_off_and_are_retried_until_they_clear() {
    let env = kfd_tests::test_env!();
    env.attach_foreign_xdp();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    let d = env.daemon(&["--resync-interval", "0"]);
    assert!(d.log().contains("kfd does not own"), "{}", d.log());
    d.expect_log(0, "retrying in 100ms");
    d.expect_log(0, "retrying in 200ms");
    d.expect_log(0, "reconcile #3 (retry #2)");
    // One vocabulary: the reason is the metric's label, the attempt its own field.
    let log = d.log();
    let retry = log
        .lines()
        .find(|l| l.contains("reconcile #3 (retry #2)"))
        .unwrap_or_default();
    assert!(retry.contains(r#" reason="retry" attempt=2 "#), "{retry}");
    // The foreign program goes away; no file changes, no resync: the retry converges.
    sh(&[
        "ip",
        "-n",
        &env.ns_b,
        "link",
        "set",
        "dev",
        &env.if_b,
        "xdpgeneric",
        "off",
    ]);
    assert!(
        wait_until(Duration::from_secs(30), || chain_attached(&env, &env.if_b)),
        "{}",
        d.log()
    );
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
}

#[test]
fn a_kfd_apply_beside_the_daemon_waits_and_both_converge() {
    let env = kfd_tests::test_env!();
    env.write("10-edge.yaml", &env.blocklist_config(FN, &["10.0.0.0/8"]));
    let d = env.daemon(&["--debounce", "1ms"]);
    let mut last = Vec::new();
    for i in 0..15u8 {
        last = vec![format!("10.{i}.0.0/16"), format!("192.0.2.{i}/32")];
        let refs: Vec<&str> = last.iter().map(String::as_str).collect();
        env.write("10-edge.yaml", &env.blocklist_config(FN, &refs));
        let r = env.kfd(&["apply"]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let want: BTreeSet<String> = last.into_iter().collect();
    assert!(
        wait_until(Duration::from_secs(20), || env.deny_v4(FN)
            == Some(want.clone())),
        "{:?}\n{}",
        env.deny_v4(FN),
        d.log()
    );
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 0, "not in sync: {plan:?}");
    assert!(!d.log().contains("ERROR"), "{}", d.log());
}

#[test]
fn metrics_count_packets_and_maps_and_pass_promtool() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    let d = env.daemon(&[]);
    assert_eq!(delivered(&env, DENIED, 20), 0);
    let labels = format!(
        "netns=\"{}\",interface=\"{}\",hook=\"xdp\",function=\"{FN}\"",
        env.ns_b, env.if_b
    );
    let drops = format!("kfd_function_packets_total{{{labels},verdict=\"drop\"}}");
    assert!(
        wait_until(Duration::from_secs(10), || d.metric(&drops) == Some(20.0)),
        "{}",
        d.scrape()
    );
    let deny = env.map(FN, "maps", "deny_v4");
    let map = format!("{labels},map=\"deny_v4\",role=\"config\"");
    assert_eq!(d.metric(&format!("kfd_map_entries{{{map}}}")), Some(1.0));
    assert_eq!(
        d.metric(&format!("kfd_map_max_entries{{{map}}}")),
        Some(f64::from(deny.info().max_entries))
    );
    assert_eq!(
        d.metric("kfd_reconciles_total{result=\"success\",reason=\"startup\"}"),
        Some(1.0)
    );
    assert_eq!(d.metric("kfd_config_files{state=\"valid\"}"), Some(1.0));
    assert!(
        d.metric("kfd_last_successful_reconcile_timestamp_seconds")
            .is_some_and(|t| t > 1.6e9)
    );
    let text = d.scrape();
    for family in [
        "kfd_actions_total{action=\"attach\",strategy=\"attach\"} 1",
        "kfd_reconcile_duration_seconds_bucket{result=\"success\",le=\"+Inf\"} 1",
        "kfd_chain_attached{",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }

    // promtool's own check: no lint findings.
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            !std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1"),
            "promtool (Debian package prometheus) is required with {REQUIRE_ENV}=1"
        );
        eprintln!("promtool not installed: not checked");
        return;
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_config_dir_switched_by_symlink_is_picked_up_at_once() {
    let env = kfd_tests::test_env!();
    // The release pattern: conf -> current/kf.d, current -> releases/N, and
    // a release is switched with `ln -sfn` (a new link renamed over the old).
    let release = |n: u32, deny: &str| {
        let dir = env.dir.join(format!("releases/{n}/kf.d"));
        std::fs::create_dir_all(&dir).expect("release dir");
        std::fs::write(dir.join("10-edge.yaml"), env.blocklist_config(FN, &[deny]))
            .expect("release config");
    };
    release(1, "203.0.113.0/24");
    release(2, "198.51.100.0/24");
    release(3, "192.0.2.0/24");
    std::fs::remove_dir(env.conf()).expect("the harness's plain conf dir");
    let current = env.dir.join("current");
    sh(&["ln", "-sfn", "releases/1", current.to_str().expect("utf8")]);
    std::os::unix::fs::symlink("current/kf.d", env.conf()).expect("conf link");
    // No resync: only the watch can notice a switch.
    let d = env.daemon(&["--resync-interval", "0"]);
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
    let switched =
        |deny: &str| wait_until(Duration::from_secs(10), || env.deny_v4(FN) == set(&[deny]));

    // The link in the middle of the path is switched.
    let mark = d.mark();
    sh(&["ln", "-sfn", "releases/2", current.to_str().expect("utf8")]);
    assert!(
        switched("198.51.100.0/24"),
        "release 2 not applied:\n{}",
        d.log()
    );
    d.expect_log(mark, "rescan: a symlink on the config dir's path changed");
    // The new release's dir is watched: a write there lands too.
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["198.18.0.0/15"]),
    );
    assert!(
        switched("198.18.0.0/15"),
        "a write in release 2 not applied:\n{}",
        d.log()
    );

    // The config dir's own link is switched.
    let kfd3 = env.dir.join("releases/3/kf.d");
    sh(&[
        "ln",
        "-sfn",
        kfd3.to_str().expect("utf8"),
        env.conf().to_str().expect("utf8"),
    ]);
    assert!(
        switched("192.0.2.0/24"),
        "release 3 not applied:\n{}",
        d.log()
    );
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.128/25"]),
    );
    assert!(
        switched("203.0.113.128/25"),
        "a write in release 3 not applied:\n{}",
        d.log()
    );
}

#[test]
fn a_scrape_is_answered_behind_idle_and_dripping_clients() {
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    // kfd in the sender's namespace: these clients stay on its loopback.
    let d = env.daemon_in_sender_netns(&["--resync-interval", "0"]);
    // Clients that connect and never say a word...
    let idle: Vec<_> = (0..64).map(|_| d.connect_metrics()).collect();
    // ...and clients that drip a request head, a byte every 50 ms, never ending it.
    let stop = Arc::new(AtomicBool::new(false));
    let drips: Vec<_> = (0..4)
        .map(|_| {
            let mut s = d.connect_metrics();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let head = b"GET /metrics HTTP/1.1\r\nX-Slow: ";
                let bytes = head.iter().chain(std::iter::repeat(&b'z'));
                for b in bytes {
                    if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    // Each scrape gets a few seconds: a liveness bound (Prometheus waits
    // 10 s), not a performance figure. Before, the first 8 idle clients held
    // every slot for 10 s and a scrape waited in the backlog behind them.
    for round in 0..3 {
        let mut s = d.connect_metrics();
        let bound = Some(Duration::from_secs(3));
        s.set_read_timeout(bound).expect("timeout");
        s.set_write_timeout(bound).expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: kfd\r\n\r\n")
            .expect("request");
        let mut out = String::new();
        let read = s.read_to_string(&mut out);
        assert!(
            read.is_ok() && out.starts_with("HTTP/1.1 200 OK") && out.contains("kfd_build_info"),
            "scrape {round} behind 64 idle and 4 dripping clients: {read:?} {out:?}"
        );
    }
    // The idle clients are let go: each is answered (408) or closed.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut out = Vec::new();
        let read = s.read_to_end(&mut out);
        assert!(
            read.is_ok()
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "an idle client is still held: {read:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in drips {
        t.join().expect("drip thread");
    }
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
}

/// journald started for a test when none runs; stopped and its files
/// removed on drop.
struct Journald {
    child: Option<std::process::Child>,
    created: Vec<&'static str>,
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

impl Journald {
    /// Whatever journald this machine has, or one started by hand
    /// (volatile storage under /run/log/journal). None if there is none to start.
    fn ensure() -> Option<Journald> {
        if std::path::Path::new(JOURNAL_SOCKET).exists() {
            return Some(Journald {
                child: None,
                created: Vec::new(),
            });
        }
        let bin = "/lib/systemd/systemd-journald";
        if !std::path::Path::new(bin).exists() {
            return None;
        }
        let created = ["/run/systemd/journal", "/run/log/journal"]
            .into_iter()
            .filter(|p| !std::path::Path::new(p).exists())
            .collect();
        let child = Command::new(bin)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting systemd-journald");
        let j = Journald {
            child: Some(child),
            created,
        };
        assert!(
            wait_until(Duration::from_secs(10), || std::path::Path::new(
                JOURNAL_SOCKET
            )
            .exists()),
            "journald did not start"
        );
        Some(j)
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.created {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The journal entries of one process, as JSON objects.
fn journal(pid: u32) -> Vec<serde_json::Value> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-o", "json", &format!("_PID={pid}")])
        .output()
        .expect("journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn logs_go_to_journald_with_fields_under_systemd_and_to_stderr_without_it() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &env.blocklist_config(FN, &["203.0.113.0/24"]),
    );
    env.write("20-bad.yaml", "version: 1\nfunctions: [\n");
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");

    // Without journald, asking for it falls back to stderr.
    if !std::path::Path::new(JOURNAL_SOCKET).exists() {
        let d = env.daemon(&["--log-target", "journald"]);
        assert!(
            d.log().contains("journald is not reachable") && d.log().contains("logging to stderr"),
            "{}",
            d.log()
        );
    }

    let Some(_journald) = Journald::ensure() else {
        assert!(
            !required,
            "systemd-journald is required with {REQUIRE_ENV}=1"
        );
        eprintln!("no journald to start: journald logging not checked");
        return;
    };
    // Nothing live, so the startup pass below has actions to log.
    let down = env.kfd(&["down"]);
    assert_eq!(down.code, 0, "{down:?}");
    // As under systemd: stderr is a journal stream and $JOURNAL_STREAM
    // names it; systemd-cat execs the command on such a stream.
    let script = format!(
        "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec {} --config-dir {} --bpffs {} --state-dir {} run --metrics-address off --debounce 50ms --log-level debug",
        kfd_tests::kfd_bin().display(),
        env.conf().display(),
        env.bpffs.display(),
        env.dir.join("state").display()
    );
    let mut child = Command::new("systemd-cat")
        .args(["-t", "kfd-test", "sh", "-c", &script])
        .spawn()
        .expect("systemd-cat");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our child.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let guard = Kill(&mut child);
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or("").to_owned();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        let mut found = None;
        wait_until(Duration::from_secs(20), || {
            found = journal(pid).into_iter().find(|e| pred(e));
            found.is_some()
        });
        found
    };
    let summary = find(&|e| field(e, "MESSAGE").starts_with("reconcile #1 (startup)"))
        .unwrap_or_else(|| panic!("no pass in the journal: {:?}", journal(pid)));
    assert_eq!(field(&summary, "SYSLOG_IDENTIFIER"), "kfd");
    assert_eq!(field(&summary, "KFD_REASON"), "startup");
    assert_eq!(field(&summary, "KFD_RESULT"), "success");
    assert_eq!(field(&summary, "KFD_FILES_INVALID"), "1");
    assert!(!field(&summary, "KFD_DURATION_MS").is_empty(), "{summary}");
    let bad = env.conf().join("20-bad.yaml").display().to_string();
    let error = find(&|e| field(e, "KFD_FILE") == bad && !field(e, "KFD_LINE").is_empty())
        .unwrap_or_else(|| panic!("no config error in the journal: {:?}", journal(pid)));
    assert_eq!(field(&error, "PRIORITY"), "4", "a warning");
    assert_eq!(field(&error, "KFD_LINE"), "3");
    assert!(
        field(&error, "MESSAGE").starts_with(&format!("{bad}:3:1: ")),
        "{error}"
    );
    // Fields that do not apply are left out: a chain-level action names no
    // function or map, and no field is ever empty.
    let chain = find(&|e| field(e, "MESSAGE") == "create_chain (chain)")
        .unwrap_or_else(|| panic!("no chain action in the journal: {:?}", journal(pid)));
    assert_eq!(field(&chain, "KFD_INTERFACE"), env.if_b, "{chain}");
    assert!(
        chain.get("KFD_FUNCTION").is_none() && chain.get("KFD_MAP").is_none(),
        "{chain}"
    );
    let load = find(&|e| field(e, "MESSAGE") == "load_function (revision_flip)")
        .unwrap_or_else(|| panic!("no function action in the journal: {:?}", journal(pid)));
    assert_eq!(field(&load, "KFD_FUNCTION"), FN, "{load}");
    assert!(load.get("KFD_MAP").is_none(), "{load}");
    for e in journal(pid) {
        let empty: Vec<_> = e
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| k.starts_with("KFD_") && v.as_str() == Some(""))
            .collect();
        assert!(empty.is_empty(), "empty fields {empty:?} in {e}");
    }
    drop(guard);
}
