//! Kernel end-to-end tests: real programs on a veth in test-made namespaces,
//! real packets, the real `kfd` binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kfd_tests::{A4, A6, Env, reconciler};
use reconciler::entries::EntrySet;

const DENIED4: &str = "203.0.113.7";
const ALLOWED_OVERRIDE4: &str = "203.0.113.9";
const OTHER4: &str = "198.51.100.20";
const DENIED6: &str = "2001:db8::7";

/// The example chain (blocklist → ratelimit → counter) on the receiver.
fn chain_config(env: &Env, deny: &[&str], rate: Option<(u64, u64)>, with_counter: bool) -> String {
    let mut s = format!(
        "version: 1\nchains:\n  - {{interface: {ifb}, netns: {ns}, hook: xdp, xdp_mode: generic}}\nfunctions:\n",
        ifb = env.if_b,
        ns = env.ns_b
    );
    let head = |name: &str, prio: u32, builtin: &str| {
        format!(
            "  - name: {name}\n    interface: {ifb}\n    netns: {ns}\n    hook: xdp\n    priority: {prio}\n    program: {{builtin: {builtin}}}\n",
            ifb = env.if_b,
            ns = env.ns_b
        )
    };
    s += &head("edge-blocklist", 10, "blocklist");
    let list = |v6: bool| {
        let items: Vec<String> = deny
            .iter()
            .filter(|d| d.contains(':') == v6)
            .map(|d| format!("\n          - {{key: \"{d}\", value: 1}}"))
            .collect();
        if items.is_empty() {
            " []".to_owned()
        } else {
            items.concat()
        }
    };
    s += &format!(
        "    maps:\n      deny_v4:\n        entries:{}\n",
        list(false)
    );
    s += &format!("      deny_v6:\n        entries:{}\n", list(true));
    s += &format!(
        "      allow_v4:\n        entries:\n          - {{key: {ALLOWED_OVERRIDE4}/32, value: 1}}\n"
    );
    if let Some((rate, burst)) = rate {
        s += &head("edge-ratelimit", 20, "ratelimit");
        s += &format!(
            "    maps:\n      rl_config:\n        entries:\n          - key: 0\n            value: {{rate_pps: {rate}, burst: {burst}}}\n"
        );
    }
    if with_counter {
        s += &head("edge-counter", 30, "counter");
    }
    s
}

#[test]
fn blocklist_drops_denied_sources_and_the_allow_list_overrides() {
    let env = kfd_tests::test_env!();
    for a in [DENIED4, ALLOWED_OVERRIDE4, OTHER4, DENIED6] {
        env.add_source(a);
    }
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24", "2001:db8::/32"], None, true),
    );
    env.apply();
    let rx = env.receiver();
    for src in [A4, DENIED4, ALLOWED_OVERRIDE4, OTHER4, A6, DENIED6] {
        assert_eq!(env.send(src, 20), 20, "sending from {src}");
    }
    for passes in [A4, ALLOWED_OVERRIDE4, OTHER4, A6] {
        assert_eq!(
            rx.wait_for(passes, 20, Duration::from_secs(3)),
            20,
            "{passes} must pass"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.count(DENIED4), 0, "denied IPv4 source got through");
    assert_eq!(rx.count(DENIED6), 0, "denied IPv6 source got through");
    let v = env.verdicts("edge-blocklist");
    assert_eq!(v.get("drop"), Some(&40), "20 v4 + 20 v6 drops: {v:?}");
    assert!(v.get("pass").copied().unwrap_or(0) >= 80, "{v:?}");
    // The map holds exactly the configured entries.
    let deny = env
        .map("edge-blocklist", "maps", "deny_v4")
        .read_all()
        .expect("read deny_v4");
    let mut want = EntrySet::new(8, 1);
    want.insert(
        &[&24u32.to_ne_bytes()[..], &[203, 0, 113, 0]].concat(),
        &[1],
    );
    assert_eq!(deny, want);
}

#[test]
fn ratelimit_drops_above_the_configured_rate() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &[], Some((10, 5)), false),
    );
    env.apply();
    let rx = env.receiver();
    let t = std::time::Instant::now();
    assert_eq!(env.send(A4, 200), 200);
    let elapsed = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let got = rx.count(A4);
    // A burst of 5 plus 10/s refill over the sending time (generously).
    let bound = 5 + (elapsed * 10.0).ceil() as usize + 2;
    assert!(
        got >= 5 && got <= bound,
        "received {got} of 200 (bound {bound})"
    );
    let v = env.verdicts("edge-ratelimit");
    assert_eq!(
        v.get("drop").copied().unwrap_or(0) as usize,
        200 - got,
        "{v:?}"
    );
}

#[test]
fn counter_counts_packets_and_bytes_per_protocol() {
    let env = kfd_tests::test_env!();
    env.write("10-edge.yaml", &chain_config(&env, &[], None, true));
    env.apply();
    let rx = env.receiver();
    assert_eq!(env.send(A4, 30), 30);
    assert_eq!(env.send(A6, 12), 12);
    rx.wait_for(A4, 30, Duration::from_secs(3));
    rx.wait_for(A6, 12, Duration::from_secs(3));
    let counts = env
        .map("edge-counter", "state", "counts")
        .read_summed_u64()
        .expect("counts");
    let by_proto: BTreeMap<u32, Vec<u64>> = counts
        .into_iter()
        .map(|e| (u32::from_ne_bytes(e.key[..4].try_into().unwrap()), e.sums))
        .filter(|(_, v)| v[0] > 0)
        .collect();
    // 42 UDP datagrams of 8 bytes: v4 frames 14+20+8+8 = 50, v6 14+40+8+8 = 70 bytes.
    // Exactly our UDP; the kernel's own IPv6 chatter may be counted too:
    // router solicitations under 58 (ICMPv6), MLD reports under 0 (they sit
    // behind a hop-by-hop header, and the key is the first next header).
    assert_eq!(
        by_proto.get(&17),
        Some(&vec![42, 30 * 50 + 12 * 70]),
        "{by_proto:?}"
    );
    assert!(
        by_proto.keys().all(|p| [17, 58, 0].contains(p)),
        "{by_proto:?}"
    );
}

#[test]
fn reapply_is_a_no_op() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24"], Some((1000, 100)), true),
    );
    let first = env.apply().json();
    assert_eq!(first["in_sync_before"], false);
    let link = std::fs::metadata(env.chain_dir().join("link")).expect("link pinned");
    let before = env.status();
    let second = env.kfd(&["apply", "--output", "json"]);
    assert_eq!(second.code, 0, "{second:?}");
    let v = second.json();
    assert_eq!(v["in_sync_before"], true, "{v}");
    assert_eq!(v["entries_written"], 0, "{v}");
    assert_eq!(
        v["chains"].as_array().map(Vec::len),
        Some(0),
        "no chain touched: {v}"
    );
    let text = env.kfd(&["apply"]);
    assert!(text.stdout.contains("in sync"), "{text:?}");
    // Same programs in the same slots, same link. (Counters may move: the
    // kernel's own ICMPv6 traffic runs through the chain too.)
    let programs = |st: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        st["chains"][0]["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .map(|f| (f["name"].to_string(), f["program"].clone()))
            .collect()
    };
    assert_eq!(programs(&env.status()), programs(&before));
    let link_after = std::fs::metadata(env.chain_dir().join("link")).expect("link pinned");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&link),
        std::os::unix::fs::MetadataExt::ino(&link_after)
    );
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 0, "plan must say in sync: {plan:?}");
}

#[test]
fn removing_a_function_keeps_traffic_flowing() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24"], Some((100_000, 100_000)), true),
    );
    env.apply();
    assert_eq!(
        env.slots(),
        ["edge-blocklist", "edge-ratelimit", "edge-counter"]
    );
    let rx = env.receiver();
    let flow = env.flow(A4, 5_000);
    std::thread::sleep(Duration::from_millis(300));
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24"], None, true),
    );
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stdout.contains("unload edge-ratelimit"),
        "{}",
        plan.stdout
    );
    env.apply();
    std::thread::sleep(Duration::from_millis(300));
    let sent = flow.stop();
    let got = rx.wait_for(A4, sent as usize, Duration::from_secs(3));
    assert_eq!(env.slots(), ["edge-blocklist", "edge-counter"]);
    assert!(
        !env.chain_dir().join("fn/edge-ratelimit").exists(),
        "function unpinned"
    );
    let mut seqs = rx.sequences(A4);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        got as u64,
        sent,
        "lost {} of {sent} packets during the change",
        sent - got as u64
    );
    assert_eq!(
        seqs,
        (0..sent).collect::<Vec<_>>(),
        "every sequence number arrived"
    );
}

#[test]
fn down_leaves_no_pin_link_or_program() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24"], Some((1000, 10)), true),
    );
    env.apply();
    let st = env.status();
    let prog_ids: Vec<u32> = st["chains"][0]["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| f["program"][0].as_u64().expect("prog id") as u32)
        .collect();
    assert_eq!(prog_ids.len(), 3);
    let attached = env.xdp_prog_ids();
    assert_eq!(attached.len(), 1, "root attached");
    // Every map our programs use: the chain maps, config and state maps, .rodata.
    use reconciler::kernel::sys;
    let mut map_ids: Vec<u32> = prog_ids
        .iter()
        .chain(&attached)
        .flat_map(|id| {
            let fd = sys::prog_fd_by_id(*id).expect("program loaded");
            sys::prog_info(std::os::fd::AsFd::as_fd(&fd))
                .expect("prog info")
                .map_ids
        })
        .collect();
    map_ids.sort_unstable();
    map_ids.dedup();
    assert!(
        map_ids.len() >= 10,
        "chain, config, state and .rodata maps: {map_ids:?}"
    );
    let down = env.kfd(&["down"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(!env.bpffs.exists(), "bpffs root removed");
    assert!(env.xdp_prog_ids().is_empty(), "root detached");
    // The kernel frees objects once unreferenced in steps (work to empty
    // the prog array, then an RCU grace period per program, then work to
    // drop the maps they used); with lazy RCU (CONFIG_RCU_LAZY, this
    // kernel's default) each grace period may wait up to 10 s, so each
    // look flushes them (rcu_barrier) first.
    let gone = |ids: &[u32], live: &[u32]| ids.iter().all(|id| !live.contains(id));
    // Under a load of other tests freeing programs (the kernel's workqueue
    // runs those frees in turn) this has been seen to take over 10 s.
    let started = std::time::Instant::now();
    let all_gone = (0..600).any(|_| {
        kfd_tests::flush_rcu();
        std::thread::sleep(Duration::from_millis(100));
        gone(&prog_ids, &sys::prog_ids().expect("prog ids"))
            && gone(&attached, &sys::prog_ids().expect("prog ids"))
            && gone(&map_ids, &sys::map_ids().expect("map ids"))
    });
    eprintln!("freed {:?} after down", started.elapsed());
    assert!(
        all_gone,
        "still loaded: programs {:?}, maps {:?}",
        prog_ids
            .iter()
            .chain(&attached)
            .filter(|id| sys::prog_ids().unwrap().contains(id))
            .collect::<Vec<_>>(),
        map_ids
            .iter()
            .filter(|id| sys::map_ids().unwrap().contains(id))
            .map(|id| (
                id,
                sys::map_fd_by_id(*id)
                    .and_then(|fd| sys::map_info(std::os::fd::AsFd::as_fd(&fd)))
                    .map(|i| (i.name, i.map_type)),
                // Who still uses it.
                sys::prog_ids()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| {
                        let fd = sys::prog_fd_by_id(p).ok()?;
                        let info = sys::prog_info(std::os::fd::AsFd::as_fd(&fd)).ok()?;
                        info.map_ids.contains(id).then_some((p, info.name))
                    })
                    .collect::<Vec<_>>(),
            ))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_foreign_xdp_program_is_never_replaced() {
    let env = kfd_tests::test_env!();
    env.attach_foreign_xdp();
    let foreign = env.xdp_prog_ids();
    assert_eq!(foreign.len(), 1);
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24"], None, false),
    );
    // Nothing kfd can do about it: an error, not a pending change.
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stdout.contains("blocked"), "{}", plan.stdout);
    let r = env.kfd(&["apply"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("already runs program id {}", foreign[0]))
            && r.stderr.contains("kfd does not own"),
        "{}",
        r.stderr
    );
    assert_eq!(env.xdp_prog_ids(), foreign, "foreign program untouched");
    assert!(
        !env.chain_dir().exists(),
        "nothing pinned for the refused chain"
    );
}

#[test]
fn instances_with_different_bpffs_roots_do_not_disturb_each_other() {
    let env = kfd_tests::test_env!();
    // A second receiver interface in the same namespace for the second instance.
    let (ifc, ifd) = (format!("{}c", env.if_a), format!("{}d", env.if_b));
    kfd_tests::sh(&[
        "ip", "link", "add", &ifc, "netns", &env.ns_a, "type", "veth", "peer", "name", &ifd,
        "netns", &env.ns_b,
    ]);
    kfd_tests::sh(&["ip", "-n", &env.ns_b, "link", "set", &ifd, "up"]);
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24"], None, false),
    );
    env.apply();
    let other_root = format!("{}-2", env.bpffs.display());
    let other_conf = env.dir.join("conf2");
    std::fs::create_dir_all(&other_conf).unwrap();
    std::fs::write(
        other_conf.join("a.yaml"),
        format!(
            "version: 1\nfunctions:\n  - {{name: c, interface: {ifd}, netns: {ns}, hook: xdp, program: {{builtin: counter}}}}\n",
            ns = env.ns_b
        ),
    )
    .unwrap();
    let other = |cmd: &str| {
        let out = std::process::Command::new(kfd_tests::kfd_bin())
            .args([
                "--config-dir",
                other_conf.to_str().unwrap(),
                "--bpffs",
                &other_root,
            ])
            .args(["--state-dir", env.dir.join("state2").to_str().unwrap(), cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    other("apply");
    assert!(
        other("status").contains("0. c"),
        "second instance has its chain"
    );
    // The first instance sees only its own chain, and `down` on it spares the other.
    let st = env.status();
    assert_eq!(st["chains"].as_array().map(Vec::len), Some(1), "{st}");
    assert_eq!(env.kfd(&["down"]).code, 0);
    assert!(
        other("status").contains("0. c"),
        "second instance untouched by the first's down"
    );
    assert!(other("plan").contains("in sync"));
    other("down");
    assert!(!Path::new(&other_root).exists());
}

#[test]
fn a_bad_file_is_reported_and_the_last_good_version_stays_in_force() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED4);
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24"], None, false),
    );
    env.apply();
    // A half-written file, then an invalid value: neither may lift the deny.
    for (bad, expect) in [
        (
            "version: 1\nfunctions:\n  - name: edge-blocklist\n    interface: [",
            "10-edge.yaml:4:17: while parsing a node",
        ),
        (
            &chain_config(&env, &["203.0.113.0/33"], None, false) as &str,
            "10-edge.yaml:14:19: map deny_v4: key: prefix length 33 is longer than the 32 bits of the address in 203.0.113.0/33",
        ),
        ("", "10-edge.yaml: file is empty"),
    ] {
        env.write("10-edge.yaml", bad);
        let r = env.kfd(&["apply"]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains(expect),
            "expected {expect:?} in:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("last good version stays in force"),
            "{}",
            r.stderr
        );
        assert!(
            r.stdout.contains("in sync"),
            "the last good config is what is live: {r:?}"
        );
        let rx = env.receiver();
        env.send(DENIED4, 10);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(rx.count(DENIED4), 0, "deny lifted by a bad file");
        let v = env.kfd(&[
            "validate",
            env.conf().join("10-edge.yaml").to_str().unwrap(),
        ]);
        assert_eq!(v.code, 1);
    }
}

#[test]
fn an_incompatible_pinned_state_map_is_refused() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &[], Some((1000, 10)), false),
    );
    env.apply();
    // Replace the bucket map with one of another value size, then force a reload.
    let pin = env.chain_dir().join("fn/edge-ratelimit/state/rl_buckets");
    std::fs::remove_file(&pin).unwrap();
    let wrong = reconciler::kernel::map::ByteMap::create(
        &reconciler::kernel::sys::MapCreate {
            name: "rl_buckets",
            map_type: reconciler::model::map_type::LRU_HASH,
            key_size: 20,
            value_size: 8,
            max_entries: 65536,
            map_flags: 0,
        },
        None,
    )
    .unwrap();
    wrong.pin(&pin).unwrap();
    let r = env.kfd(&["apply"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("edge-ratelimit")
            && r.stderr.contains("incompatible")
            && r.stderr.contains("value size 8 (pinned) vs 16 (object)"),
        "{}",
        r.stderr
    );
    assert_eq!(
        env.slots(),
        ["edge-blocklist", "edge-ratelimit"],
        "previous chain still serving"
    );
}

#[test]
fn read_only_commands_and_a_metrics_scrape_create_nothing() {
    let env = kfd_tests::test_env!();
    env.write(
        "10-edge.yaml",
        &chain_config(&env, &["203.0.113.0/24"], None, false),
    );
    let state = env.dir.join("state");
    let nothing = |what: &str| {
        assert!(
            !env.bpffs.exists() && !state.exists(),
            "{what} created {:?}",
            [&env.bpffs, &state]
                .iter()
                .filter(|p| p.exists())
                .flat_map(
                    |p| std::iter::once(p.display().to_string()).chain(kfd_tests::pins_under(p))
                )
                .collect::<Vec<_>>()
        )
    };
    nothing("the test");
    // No root: nothing is live, which status and plan say.
    let status = env.kfd(&["status", "--output", "json"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(status.json()["chains"], serde_json::json!([]));
    assert_eq!(env.kfd(&["status"]).stdout, "no chains\n");
    nothing("kfd status");
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stdout
            .contains("  + create chain (root program, chain maps)\n"),
        "{plan:?}"
    );
    nothing("kfd plan");
    let down = env.kfd(&["down"]);
    assert_eq!(
        (down.code, down.stdout.as_str()),
        (0, "down: 0 chains removed\n"),
        "{down:?}"
    );
    nothing("kfd down");

    // A scrape of a daemon whose root is gone: no kernel series, no error,
    // and the root stays gone.
    env.remove("10-edge.yaml");
    let d = env.daemon(&["--resync-interval", "0"]);
    std::fs::remove_dir(&env.bpffs).expect("the daemon's (empty) root");
    let state_before = kfd_tests::pins_under(&state);
    let metrics = d.scrape();
    assert!(
        metrics.contains("\nkfd_scrape_errors_total 0\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("kfd_chain_attached{"), "{metrics}");
    assert!(!env.bpffs.exists(), "a scrape created the root");
    assert_eq!(
        kfd_tests::pins_under(&state),
        state_before,
        "a scrape wrote state"
    );
}
