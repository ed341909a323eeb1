//! Convergence strategies with real kernels and packets: entries vs map swap
//! vs program swap, state that survives swaps and reorders, rollback on every
//! kind of failure, and drift repair.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kfd_tests::{A4, Env, reconciler, sh};
use reconciler::entries::EntrySet;
use reconciler::kernel::map::ByteMap;

const DENIED: &str = "203.0.113.7";

/// The strategies behave the same on every hook: each of these tests runs
/// on the receiver's XDP chain and on its TC ingress chain.
macro_rules! on_every_hook {
    ($($test:ident),* $(,)?) => {
        mod xdp {
            $(#[test]
            fn $test() {
                if let Some(env) = kfd_tests::Env::new(module_path!()) {
                    super::$test(env);
                }
            })*
        }
        mod tc_ingress {
            $(#[test]
            fn $test() {
                if let Some(env) = kfd_tests::Env::new(module_path!()) {
                    super::$test(env.on_hook("tc-ingress"));
                }
            })*
        }
    };
}

on_every_hook!(
    small_changes_go_entry_by_entry_and_large_ones_swap_the_list,
    a_program_swap_keeps_the_ratelimit_buckets,
    a_reorder_keeps_the_counts_and_the_verdict_counters,
);

fn head(env: &Env, name: &str, priority: u32, program: &str) -> String {
    format!(
        "  - name: {name}\n    interface: {i}\n    netns: {n}\n    hook: {h}\n    priority: {priority}\n    program: {program}\n",
        h = env.hook,
        i = env.if_b,
        n = env.ns_b
    )
}

/// blocklist-swap with `n` deny entries 10.0.x.y/32 starting at `from`, plus `extra`.
fn swap_blocklist(env: &Env, from: u32, n: u32, extra: &[&str]) -> String {
    let mut s = String::from("version: 1\nfunctions:\n");
    s += &head(env, "bl", 10, "{builtin: blocklist-swap}");
    s += "    maps:\n      deny_v4:\n        entries:\n";
    for i in from..from + n {
        let a = (0x0a00_0000 + i).to_be_bytes();
        let _ = writeln!(
            s,
            "          - {{key: {}.{}.{}.{}/32, value: 1}}",
            a[0], a[1], a[2], a[3]
        );
    }
    for e in extra {
        let _ = writeln!(s, "          - {{key: {e}, value: 1}}");
    }
    s
}

fn lpm_key(cidr: &str) -> Vec<u8> {
    let (addr, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let ip: std::net::Ipv4Addr = addr.parse().unwrap();
    [
        &len.parse::<u32>().unwrap().to_ne_bytes()[..],
        &ip.octets()[..],
    ]
    .concat()
}

fn inner_id(env: &Env) -> u32 {
    let outer = env.map("bl", "maps", "deny_v4");
    outer.inner(0).unwrap().expect("slot filled").info().id
}

fn plan_text(env: &Env) -> String {
    let p = env.kfd(&["plan"]);
    assert_eq!(p.code, 2, "changes expected: {p:?}");
    p.stdout
}

fn small_changes_go_entry_by_entry_and_large_ones_swap_the_list(env: Env) {
    env.add_source(DENIED);
    env.write(
        "10.yaml",
        &swap_blocklist(&env, 0, 2000, &["203.0.113.0/24"]),
    );
    env.apply();
    let first = inner_id(&env);
    let rx = env.receiver();
    env.send(DENIED, 10);
    env.send(A4, 10);
    assert_eq!(rx.wait_for(A4, 10, Duration::from_secs(3)), 10);
    assert_eq!(rx.count(DENIED), 0);

    // One entry of 2,001: written into the live list.
    env.write(
        "10.yaml",
        &swap_blocklist(&env, 1, 2000, &["203.0.113.0/24"]),
    );
    let plan = plan_text(&env);
    assert!(
        plan.contains("bl deny_v4: entries: 2 of 2,002 changed (+1 ~0 -1)"),
        "{plan}"
    );
    env.apply();
    assert_eq!(inner_id(&env), first, "entries land in the same list");

    // All of it replaced, and the deny lifted: one swap of the whole list.
    env.write("10.yaml", &swap_blocklist(&env, 5000, 2000, &[]));
    let plan = plan_text(&env);
    assert!(
        plan.contains("bl deny_v4: map swap: 4,001 of 4,001 changed"),
        "{plan}"
    );
    env.apply();
    assert_ne!(inner_id(&env), first, "a new list was swapped in");
    let live = env
        .map("bl", "maps", "deny_v4")
        .inner(0)
        .unwrap()
        .unwrap()
        .read_all()
        .unwrap();
    let mut want = EntrySet::new(8, 1);
    for i in 5000..7000u32 {
        want.insert(
            &[
                &32u32.to_ne_bytes()[..],
                &(0x0a00_0000 + i).to_be_bytes()[..],
            ]
            .concat(),
            &[1],
        );
    }
    assert_eq!(live, want, "the list holds exactly the config");
    env.send(DENIED, 10);
    assert_eq!(
        rx.wait_for(DENIED, 10, Duration::from_secs(3)),
        10,
        "deny lifted by the swap"
    );
    // update: swap forces a swap for a single entry.
    let forced = swap_blocklist(&env, 5000, 2000, &[])
        .replace("      deny_v4:\n", "      deny_v4:\n        update: swap\n");
    env.write(
        "10.yaml",
        &forced.replace("10.0.19.136/32", "203.0.113.0/24"),
    );
    assert!(plan_text(&env).contains("map swap: 2 of 2,001 changed (update: swap)"));
}

fn ratelimit(env: &Env, rate: u64, burst: u64) -> String {
    let mut s = String::from("version: 1\nfunctions:\n");
    s += &head(env, "rl", 10, "{builtin: ratelimit}");
    let _ = write!(
        s,
        "    maps:\n      rl_config:\n        update: swap\n        entries:\n          - {{key: 0, value: {{rate_pps: {rate}, burst: {burst}}}}}\n"
    );
    s
}

fn a_program_swap_keeps_the_ratelimit_buckets(env: Env) {
    env.write("10.yaml", &ratelimit(&env, 1, 5));
    env.apply();
    let rx = env.receiver();
    env.send(A4, 20);
    assert_eq!(
        rx.wait_for(A4, 5, Duration::from_secs(3)),
        5,
        "a burst of 5"
    );
    let prog_before = env.status()["chains"][0]["functions"][0]["program"][0].clone();
    let buckets_before = env.map("rl", "state", "rl_buckets").info().id;

    env.write("10.yaml", &ratelimit(&env, 2, 5));
    let plan = plan_text(&env);
    assert!(
        plan.contains("load rl [program swap: rl_config: 1 of 1 changed (update: swap)]"),
        "{plan}"
    );
    env.apply();
    assert_ne!(
        env.status()["chains"][0]["functions"][0]["program"][0],
        prog_before,
        "a new program"
    );
    assert_eq!(
        env.map("rl", "state", "rl_buckets").info().id,
        buckets_before,
        "the same bucket map"
    );
    // The source's bucket is still empty: a fresh one would pass a burst of 5.
    env.send(A4, 5);
    std::thread::sleep(Duration::from_millis(300));
    let got = rx.count(A4) - 5;
    assert!(
        got <= 1,
        "{got} passed right after the swap: the buckets were lost"
    );
}

fn counted_chain(env: &Env, counter_first: bool) -> String {
    let mut s = String::from("version: 1\nfunctions:\n");
    s += &head(env, "bl", 10, "{builtin: blocklist}");
    s += &head(
        env,
        "ctr",
        if counter_first { 5 } else { 20 },
        "{builtin: counter}",
    );
    s
}

fn a_reorder_keeps_the_counts_and_the_verdict_counters(env: Env) {
    env.write("10.yaml", &counted_chain(&env, false));
    env.apply();
    let rx = env.receiver();
    env.send(A4, 10);
    rx.wait_for(A4, 10, Duration::from_secs(3));
    let udp = |env: &Env| {
        env.map("ctr", "state", "counts")
            .read_summed_u64()
            .unwrap()
            .into_iter()
            .find(|e| e.key[..4] == 17u32.to_ne_bytes())
            .map_or(0, |e| e.sums[0])
    };
    assert_eq!(udp(&env), 10);
    let pass = |env: &Env, f: &str| env.verdicts(f).get(env.pass()).copied().unwrap_or(0);
    let (bl0, ctr0) = (pass(&env, "bl"), pass(&env, "ctr"));
    assert!(bl0 >= 10 && ctr0 >= 10);

    env.write("10.yaml", &counted_chain(&env, true));
    let plan = plan_text(&env);
    assert!(
        plan.contains("chain order: ctr → bl (fill revision 0, then flip)"),
        "{plan}"
    );
    env.apply();
    assert_eq!(env.slots(), ["ctr", "bl"]);
    env.send(A4, 10);
    rx.wait_for(A4, 20, Duration::from_secs(3));
    assert_eq!(udp(&env), 20, "counts went on from 10");
    assert!(
        pass(&env, "bl") >= bl0 + 10 && pass(&env, "ctr") >= ctr0 + 10,
        "verdict counters went on"
    );
}

/// Every pin under the bpffs root, for before/after comparisons.
fn pins(env: &Env) -> Vec<String> {
    kfd_tests::pins_under(&env.bpffs)
}

fn prog_ids(env: &Env) -> Vec<serde_json::Value> {
    env.status()["chains"][0]["functions"]
        .as_array()
        .map(|fs| fs.iter().map(|f| f["program"][0].clone()).collect())
        .unwrap_or_default()
}

/// Applies `bad` and checks the failure names the function and file, and that
/// the previous chain still serves with exactly the same objects.
fn assert_rolled_back(env: &Env, bad: &str, function: &str, expect: &str) {
    let (pins_before, progs_before) = (pins(env), prog_ids(env));
    env.write("10.yaml", bad);
    let r = env.kfd(&["apply"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(function) && r.stderr.contains("10.yaml") && r.stderr.contains(expect),
        "{}",
        r.stderr
    );
    assert_eq!(pins(env), pins_before, "pins changed or leaked");
    assert_eq!(prog_ids(env), progs_before, "the live programs changed");
}

#[test]
fn a_verifier_rejection_leaves_the_chain_serving() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    let (good, bad) = (env.test_object("pass_v2"), env.test_object("rejected"));
    let chain = |obj: &std::path::Path| {
        let mut s = String::from("version: 1\nfunctions:\n");
        s += &head(&env, "bl", 10, "{builtin: blocklist}");
        s += "    maps:\n      deny_v4:\n        entries:\n          - {key: 203.0.113.0/24, value: 1}\n";
        s += &head(&env, "extra", 20, &format!("{{object: {}}}", obj.display()));
        s
    };
    env.write("10.yaml", &chain(&good));
    env.apply();
    assert_rolled_back(
        &env,
        &chain(&bad),
        "function extra",
        "the kernel refused program `rejected`",
    );
    let rx = env.receiver();
    env.send(DENIED, 5);
    env.send(A4, 5);
    assert_eq!(
        rx.wait_for(A4, 5, Duration::from_secs(3)),
        5,
        "the previous chain passes"
    );
    assert_eq!(rx.count(DENIED), 0, "...and still drops");
}

#[test]
fn a_config_that_overfills_a_map_is_refused_before_anything_changes() {
    let env = kfd_tests::test_env!();
    let mut s = String::from("version: 1\nfunctions:\n");
    s += &head(&env, "bl", 10, "{builtin: blocklist}");
    s += "    maps:\n      allow_v4:\n        entries:\n";
    let good = format!("{s}          - {{key: 10.0.0.0/8, value: 1}}\n");
    env.write("10.yaml", &good);
    env.apply();
    let mut bad = s.clone();
    for i in 0..65_537u32 {
        let a = (0x0a00_0000 + i).to_be_bytes();
        let _ = writeln!(
            bad,
            "          - {{key: {}.{}.{}.{}, value: 1}}",
            a[0], a[1], a[2], a[3]
        );
    }
    assert_rolled_back(
        &env,
        &bad,
        "function bl: map allow_v4: 65537 entries, but it holds at most 65536",
        "10.yaml:10:7",
    );
    let live = env.map("bl", "maps", "allow_v4").read_all().unwrap();
    assert_eq!(live.len(), 1, "the last good entries stay");
}

#[test]
fn an_incompatible_state_map_is_refused_without_leaks() {
    let env = kfd_tests::test_env!();
    env.write("10.yaml", &ratelimit(&env, 100, 10));
    env.apply();
    let pin = env.chain_dir().join("fn/rl/state/rl_buckets");
    std::fs::remove_file(&pin).unwrap();
    let wrong = ByteMap::create(
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
    assert_rolled_back(
        &env,
        &ratelimit(&env, 100, 10),
        "function rl",
        "value size 8 (pinned) vs 16 (object)",
    );
}

#[test]
fn an_interface_that_vanished_keeps_its_chain_until_it_returns() {
    let env = kfd_tests::test_env!();
    env.write("10.yaml", &counted_chain(&env, false));
    env.apply();
    let rx = env.receiver();
    env.send(A4, 7);
    rx.wait_for(A4, 7, Duration::from_secs(3));
    drop(rx);
    env.delete_link();
    let before = pins(&env);
    env.write("10.yaml", &counted_chain(&env, true));
    let r = env.kfd(&["apply"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("interface {} does not exist", env.if_b))
            && r.stderr.contains("bl (")
            && r.stderr.contains("10.yaml"),
        "{}",
        r.stderr
    );
    assert_eq!(
        pins(&env),
        before,
        "nothing touched while the interface is gone"
    );
    // It comes back (new ifindex): re-attached, reordered, counts kept.
    env.create_link();
    env.apply();
    assert_eq!(env.slots(), ["ctr", "bl"]);
    let rx = env.receiver();
    env.send(A4, 3);
    assert_eq!(
        rx.wait_for(A4, 3, Duration::from_secs(3)),
        3,
        "traffic flows again"
    );
    let udp = env
        .map("ctr", "state", "counts")
        .read_summed_u64()
        .unwrap()
        .into_iter()
        .find(|e| e.key[..4] == 17u32.to_ne_bytes())
        .map_or(0, |e| e.sums[0]);
    assert_eq!(
        udp, 10,
        "the counts from before the interface vanished are kept"
    );
}

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bpftool(args: &[&str]) {
    let mut all = vec!["bpftool"];
    all.extend_from_slice(args);
    sh(&all);
}

#[test]
fn drift_is_shown_by_plan_and_repaired_by_apply() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    let mut cfg = String::from("version: 1\nfunctions:\n");
    cfg += &head(&env, "bl", 10, "{builtin: blocklist}");
    cfg += "    maps:\n      deny_v4:\n        entries:\n          - {key: 203.0.113.0/24, value: 1}\n          - {key: 192.0.2.0/24, value: 1}\n";
    cfg += &head(&env, "ctr", 20, "{builtin: counter}");
    env.write("10.yaml", &cfg);
    env.apply();
    let deny_pin = env.chain_dir().join("fn/bl/maps/deny_v4");
    let want = env.map("bl", "maps", "deny_v4").read_all().unwrap();
    let in_sync = |env: &Env| assert_eq!(env.kfd(&["plan"]).code, 0, "in sync after repair");

    // 1. Entries added and deleted by hand.
    let mut args = vec![
        "map",
        "update",
        "pinned",
        deny_pin.to_str().unwrap(),
        "key",
        "hex",
    ];
    let k = hex(&lpm_key("198.51.100.0/24"));
    args.extend(k.iter().map(String::as_str));
    args.extend(["value", "hex", "01"]);
    bpftool(&args);
    let mut args = vec![
        "map",
        "delete",
        "pinned",
        deny_pin.to_str().unwrap(),
        "key",
        "hex",
    ];
    let k = hex(&lpm_key("203.0.113.0/24"));
    args.extend(k.iter().map(String::as_str));
    bpftool(&args);
    let plan = plan_text(&env);
    assert!(
        plan.contains("bl deny_v4: entries: 2 of 3 changed (+1 ~0 -1)"),
        "{plan}"
    );
    assert!(
        plan.contains("+ 203.0.113.0/24 = 1") && plan.contains("- 198.51.100.0/24"),
        "{plan}"
    );
    env.apply();
    assert_eq!(env.map("bl", "maps", "deny_v4").read_all().unwrap(), want);
    in_sync(&env);

    // 2. A slot cleared by hand (the chain now stops after bl).
    let progs = env.chain_dir().join("kf_progs");
    let slot = |pos: u32| {
        let rev = env.status()["chains"][0]["revision"].as_u64().unwrap() as u32;
        hex(&(rev * 32 + pos).to_ne_bytes())
    };
    let k = slot(1);
    let mut args = vec![
        "map",
        "delete",
        "pinned",
        progs.to_str().unwrap(),
        "key",
        "hex",
    ];
    args.extend(k.iter().map(String::as_str));
    bpftool(&args);
    assert!(plan_text(&env).contains("[repair: live slots differ]"));
    env.apply();
    assert_eq!(env.slots(), ["bl", "ctr"]);
    in_sync(&env);

    // 3. A program replaced by hand in a slot.
    let foreign_pin = std::path::PathBuf::from(format!("{}-foreign", env.bpffs.display()));
    let obj = env.test_object("pass_v2");
    bpftool(&[
        "prog",
        "load",
        obj.to_str().unwrap(),
        foreign_pin.to_str().unwrap(),
        "type",
        "xdp",
    ]);
    let k = slot(0);
    let mut args = vec![
        "map",
        "update",
        "pinned",
        progs.to_str().unwrap(),
        "key",
        "hex",
    ];
    args.extend(k.iter().map(String::as_str));
    args.extend(["value", "pinned", foreign_pin.to_str().unwrap()]);
    bpftool(&args);
    let _ = std::fs::remove_file(&foreign_pin);
    assert_eq!(env.slots()[0], "?", "status shows the foreign program");
    assert!(plan_text(&env).contains("[repair: live slots differ]"));
    env.apply();
    assert_eq!(env.slots(), ["bl", "ctr"]);
    in_sync(&env);

    // 4. A pinned config map removed by hand.
    std::fs::remove_file(&deny_pin).unwrap();
    assert!(plan_text(&env).contains("load bl [repair: map deny_v4 is no longer pinned]"));
    env.apply();
    assert_eq!(env.map("bl", "maps", "deny_v4").read_all().unwrap(), want);
    in_sync(&env);

    // The repaired chain drops and passes as configured.
    let rx = env.receiver();
    env.send(DENIED, 5);
    env.send(A4, 5);
    assert_eq!(rx.wait_for(A4, 5, Duration::from_secs(3)), 5);
    assert_eq!(rx.count(DENIED), 0);
    let counts: BTreeMap<String, u64> = env.verdicts("bl");
    assert!(counts.get("drop").copied().unwrap_or(0) >= 5, "{counts:?}");
}
