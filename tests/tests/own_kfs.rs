//! KFs written the way libbpf users write them (`tests/bpf/{byname,
//! sections,seeded,flowpair}.bpf.c`: no kfd header, libbpf section names,
//! pin-by-name and legacy maps, maps the program writes, a map the loader
//! sizes, a map two programs share), run unchanged under kfd with real
//! packets.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use kfd_tests::{A4, Env, pins_under, reconciler, sh};
use reconciler::kernel::map::ByteMap;
use reconciler::kernel::sys;

const DENIED: &str = "203.0.113.7";
const DENIED_OUT: &str = "198.51.100.9";

/// BPF_PROG_TYPE_SCHED_CLS and BPF_PROG_TYPE_XDP.
const SCHED_CLS: u32 = 3;
const XDP: u32 = 6;

/// An IPv4 address as a `__u32` map key holding it in packet order, written
/// as the integer the map stores (host order).
fn addr_key(a: &str) -> u32 {
    u32::from_ne_bytes(a.parse::<Ipv4Addr>().expect("IPv4").octets())
}

/// One function in YAML: name, (interface, netns, hook), program, then
/// whatever follows (maps).
fn function(name: &str, at: (&str, &str, &str), program: &str, rest: &str) -> String {
    let (iface, ns, hook) = at;
    format!(
        "  - name: {name}\n    interface: {iface}\n    netns: {ns}\n    hook: {hook}\n    program: {program}\n{rest}"
    )
}

fn config(functions: &[String]) -> String {
    let mut s = String::from("version: 1\nfunctions:\n");
    for f in functions {
        s += f;
    }
    s
}

fn object(env: &Env, name: &str, pick: &str) -> String {
    let path = env.test_object(name);
    if pick.is_empty() {
        format!("{{object: {}}}", path.display())
    } else {
        format!("{{object: {}, {pick}}}", path.display())
    }
}

/// A map's entries as (u32 key, value bytes).
fn entries(map: &ByteMap) -> BTreeMap<u32, Vec<u8>> {
    map.read_all()
        .expect("reading map")
        .iter()
        .map(|(k, v)| {
            (
                u32::from_ne_bytes(k.try_into().expect("4-byte key")),
                v.to_vec(),
            )
        })
        .collect()
}

fn u64_at(v: &[u8], i: usize) -> u64 {
    u64::from_ne_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

/// The non-zero u64 elements of an array map, by index.
fn counters(map: &ByteMap) -> BTreeMap<u32, u64> {
    entries(map)
        .into_iter()
        .map(|(k, v)| (k, u64_at(&v, 0)))
        .collect()
}

/// `kfd plan`'s exit code, with its output for the message.
fn plan(env: &Env) -> (i32, String) {
    let r = env.kfd(&["plan"]);
    (r.code, format!("{}{}", r.stdout, r.stderr))
}

/// The program type of each function on each chain, from status.
fn prog_types(env: &Env) -> BTreeMap<(String, String), u32> {
    let st = env.status();
    let mut out = BTreeMap::new();
    for c in st["chains"].as_array().into_iter().flatten() {
        for f in c["functions"].as_array().into_iter().flatten() {
            let id = f["program"][0].as_u64().expect("prog id") as u32;
            let fd = sys::prog_fd_by_id(id).expect("program loaded");
            let info = sys::prog_info(std::os::fd::AsFd::as_fd(&fd)).expect("prog info");
            out.insert(
                (
                    c["hook"].as_str().unwrap_or("?").to_owned(),
                    f["name"].as_str().unwrap_or("?").to_owned(),
                ),
                info.prog_type,
            );
        }
    }
    out
}

/// A map another tool pinned directly under /sys/fs/bpf, removed on drop.
struct ForeignPin(PathBuf);

impl ForeignPin {
    fn create(name: &str) -> ForeignPin {
        let p = PathBuf::from("/sys/fs/bpf").join(name);
        let _ = std::fs::remove_file(&p);
        let path = p.to_str().expect("utf8");
        sh(&[
            "bpftool", "map", "create", path, "type", "hash", "key", "4", "value", "4", "entries",
            "64", "name", name,
        ]);
        sh(&[
            "bpftool", "map", "update", "pinned", path, "key", "1", "2", "3", "4", "value", "9",
            "0", "0", "0",
        ]);
        ForeignPin(p)
    }

    fn id(&self) -> u32 {
        ByteMap::from_pin(&self.0).expect("foreign pin").info().id
    }

    fn contents(&self) -> BTreeMap<u32, Vec<u8>> {
        entries(&ByteMap::from_pin(&self.0).expect("foreign pin"))
    }
}

impl Drop for ForeignPin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Top-level names under /sys/fs/bpf that are not a test's bpffs root.
fn outside_roots() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("kfdt-"))
        .collect();
    v.sort();
    v
}

#[test]
fn pin_by_name_maps_stay_per_function_inside_the_root() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.add_source(DENIED_OUT);
    // Another tool's map where libbpf would pin `blocked_src`.
    let foreign = ForeignPin::create("blocked_src");
    let (foreign_id, foreign_entries) = (foreign.id(), foreign.contents());
    let outside = outside_roots();

    let filter = object(&env, "byname", "");
    let deny = |a: &str| {
        format!(
            "    maps:\n      blocked_src:\n        entries:\n          - {{key: {}, value: 1}}\n",
            addr_key(a)
        )
    };
    // The same object on two chains: the receiver's XDP (the xdp_* section)
    // and the sender's TC egress (SEC("tc")), each with its own list.
    env.write(
        "10.yaml",
        &config(&[
            function(
                "filter",
                (&env.if_b, &env.ns_b, "xdp"),
                &filter,
                &deny(DENIED),
            ),
            function(
                "filter",
                (&env.if_a, &env.ns_a, "tc-egress"),
                &filter,
                &deny(DENIED_OUT),
            ),
        ]),
    );
    env.apply();
    assert_eq!(plan(&env).0, 0, "in sync after apply: {}", plan(&env).1);

    let types = prog_types(&env);
    assert_eq!(
        types,
        BTreeMap::from([
            (("tc-egress".into(), "filter".into()), SCHED_CLS),
            (("xdp".into(), "filter".into()), XDP),
        ]),
        "the hook decides the program type"
    );

    let rx = env.receiver();
    assert_eq!(env.send(DENIED, 10), 10);
    assert_eq!(env.send(DENIED_OUT, 10), 10);
    assert_eq!(env.send(A4, 10), 10);
    assert_eq!(
        rx.wait_for(A4, 10, Duration::from_secs(3)),
        10,
        "others pass"
    );

    let xdp = env.chain_dir_of("xdp", &env.if_b, &env.ns_b);
    let egress = env.chain_dir_of("tc-egress", &env.if_a, &env.ns_a);
    let one = 1u32.to_ne_bytes().to_vec();
    assert_eq!(
        entries(&env.map_in(&xdp, "filter", "maps", "blocked_src")),
        BTreeMap::from([(addr_key(DENIED), one.clone())]),
        "the XDP chain's list is its own"
    );
    assert_eq!(
        entries(&env.map_in(&egress, "filter", "maps", "blocked_src")),
        BTreeMap::from([(addr_key(DENIED_OUT), one)]),
        "the egress chain's list is its own"
    );
    // The legacy `maps` section map is a state map of each instance:
    // [dropped, passed].
    let xdp_verdicts = counters(&env.map_in(&xdp, "filter", "state", "verdicts"));
    let out_verdicts = counters(&env.map_in(&egress, "filter", "state", "verdicts"));
    assert_eq!(
        xdp_verdicts[&0], 10,
        "XDP dropped {DENIED}: {xdp_verdicts:?}"
    );
    assert!(xdp_verdicts[&1] >= 10, "{xdp_verdicts:?}");
    assert_eq!(
        out_verdicts[&0], 10,
        "egress dropped {DENIED_OUT}: {out_verdicts:?}"
    );
    assert!(out_verdicts[&1] >= 20, "{out_verdicts:?}");
    assert_eq!(rx.count(DENIED), 0);
    assert_eq!(rx.count(DENIED_OUT), 0);

    // Nothing was created, reused or changed outside the root.
    assert_eq!(outside_roots(), outside, "nothing new under /sys/fs/bpf");
    assert_eq!(foreign.id(), foreign_id, "the foreign pin is the same map");
    assert_eq!(foreign.contents(), foreign_entries, "...with its contents");

    let down = env.kfd(&["down"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(pins_under(&env.bpffs).is_empty(), "nothing left after down");
    assert_eq!(outside_roots(), outside, "nothing removed outside the root");
    assert_eq!(foreign.id(), foreign_id, "the foreign pin survives down");
    assert_eq!(foreign.contents(), foreign_entries);
}

/// `seen` slots of `sections.bpf.c`'s programs.
const SLOT_XDP: u32 = 0;
const SLOT_TC: u32 = 1;
const SLOT_TCX_IN: u32 = 2;
const SLOT_TCX_OUT: u32 = 3;
const SLOT_ACTION: u32 = 4;

#[test]
fn libbpf_section_names_load_on_every_hook() {
    let env = kfd_tests::test_env!();
    let at_b = |hook| (env.if_b.as_str(), env.ns_b.as_str(), hook);
    let at_a = |hook| (env.if_a.as_str(), env.ns_a.as_str(), hook);
    let write = |ingress: &str, egress: &str| {
        env.write(
            "10.yaml",
            &config(&[
                // The only XDP program (xdp_count) is found without help.
                function("count", at_b("xdp"), &object(&env, "sections", ""), ""),
                function(
                    "count",
                    at_b("tc-ingress"),
                    &object(&env, "sections", ingress),
                    "",
                ),
                function(
                    "count",
                    at_a("tc-egress"),
                    &object(&env, "sections", egress),
                    "",
                ),
            ]),
        );
    };
    write("section: tcx/ingress", "program: count_tcx_out");
    env.apply();
    let types = prog_types(&env);
    assert_eq!(
        types.values().copied().collect::<Vec<_>>(),
        [SCHED_CLS, SCHED_CLS, XDP],
        "{types:?}"
    );
    let seen = |dir: PathBuf| counters(&env.map_in(&dir, "count", "state", "seen"));
    let ingress = || seen(env.chain_dir_of("tc-ingress", &env.if_b, &env.ns_b));
    let egress = || seen(env.chain_dir_of("tc-egress", &env.if_a, &env.ns_a));
    let xdp = || seen(env.chain_dir_of("xdp", &env.if_b, &env.ns_b));
    let rx = env.receiver();
    assert_eq!(env.send(A4, 7), 7);
    assert_eq!(rx.wait_for(A4, 7, Duration::from_secs(3)), 7);
    // Exactly the picked program ran on each hook.
    assert_eq!(xdp(), BTreeMap::from([(SLOT_XDP, 7)]), "xdp_count on XDP");
    assert_eq!(ingress(), BTreeMap::from([(SLOT_TCX_IN, 7)]), "tcx/ingress");
    assert_eq!(egress(), BTreeMap::from([(SLOT_TCX_OUT, 7)]), "tcx/egress");

    // Other picks are program swaps; the state map `seen` carries over.
    write("section: action", "section: tc");
    env.apply();
    assert_eq!(plan(&env).0, 0, "{}", plan(&env).1);
    assert_eq!(env.send(A4, 5), 5);
    assert_eq!(rx.wait_for(A4, 12, Duration::from_secs(3)), 12);
    assert_eq!(
        ingress(),
        BTreeMap::from([(SLOT_TCX_IN, 7), (SLOT_ACTION, 5)]),
        "SEC(\"action\") took over"
    );
    assert_eq!(
        egress(),
        BTreeMap::from([(SLOT_TCX_OUT, 7), (SLOT_TC, 5)]),
        "SEC(\"tc\") took over"
    );

    // With several TC programs and no pick, the error names the candidates.
    write("", "section: tc");
    let r = env.kfd(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("10.yaml:")
            && r.stderr.contains("count_tc")
            && r.stderr.contains("count_tcx_in"),
        "{}",
        r.stderr
    );
}

#[test]
fn counters_in_seeded_config_maps_converge_and_keep_counting() {
    let env = kfd_tests::test_env!();
    let quota = object(&env, "seeded", "");
    let at = (env.if_b.as_str(), env.ns_b.as_str(), "xdp");
    let maps = |budget: u64, rxq: &str| {
        format!(
            "    maps:\n      proto_quota:\n        seed:\n          - {{key: 17, value: {{budget: {budget}}}}}\n{rxq}"
        )
    };
    let sized = |n: u32| format!("      rxq_pkts:\n        max_entries: {n}\n");

    // The object leaves rxq_pkts unsized: plan says which map and how to fix it.
    env.write(
        "10.yaml",
        &config(&[function("quota", at, &quota, &maps(20, ""))]),
    );
    let r = env.kfd(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    // Line 7 is the function's `program:`.
    let expect = format!(
        "{}:7:14: map rxq_pkts has max_entries 0 in the object (its loader sizes it at run time): set maps.rxq_pkts.max_entries",
        env.conf().join("10.yaml").display()
    );
    assert!(r.stderr.contains(&expect), "{}", r.stderr);
    assert!(pins_under(&env.bpffs).is_empty(), "plan created nothing");

    env.write(
        "10.yaml",
        &config(&[function("quota", at, &quota, &maps(20, &sized(4)))]),
    );
    env.apply();
    let dir = env.chain_dir_of("xdp", &env.if_b, &env.ns_b);
    let used = || {
        let m = entries(&env.map_in(&dir, "quota", "state", "proto_quota"));
        m.get(&17).map(|v| (u64_at(v, 0), u64_at(v, 1)))
    };
    assert_eq!(used(), Some((20, 0)), "seeded");
    let rx = env.receiver();
    assert_eq!(env.send(A4, 8), 8);
    assert_eq!(rx.wait_for(A4, 8, Duration::from_secs(3)), 8);
    assert_eq!(
        used(),
        Some((20, 8)),
        "the program counts in the seeded value"
    );
    // The program's writes are not drift: plan converges and apply keeps them.
    let (code, out) = plan(&env);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 seeded entry the program changed from the seed"),
        "{out}"
    );
    env.apply();
    assert_eq!(used(), Some((20, 8)), "apply left the program's counts");
    let rxq: u64 = counters(&env.map_in(&dir, "quota", "state", "rxq_pkts"))
        .values()
        .sum();
    assert!(rxq >= 8, "the sized map works: {rxq}");

    // The budget is the program's to enforce: 20 pass, then drops.
    assert_eq!(env.send(A4, 20), 20);
    assert_eq!(rx.wait_for(A4, 20, Duration::from_secs(3)), 20);
    assert_eq!(used(), Some((20, 20)));
    assert_eq!(rx.count(A4), 20, "over budget: dropped");

    // A new seed value for a key the program has is information: the only
    // work is recording the file's new content.
    env.write(
        "10.yaml",
        &config(&[function("quota", at, &quota, &maps(1000, &sized(4)))]),
    );
    let (code, out) = plan(&env);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("e.g. 17: seed {budget: 1000, used: 0}, live {budget: 20, used: 20}")
            && out.contains("~ quota: record that it runs")
            && out.contains("plan: 1 action on 1 chain"),
        "{out}"
    );
    env.apply();
    assert_eq!(used(), Some((20, 20)), "a seed never overwrites");
    assert_eq!(plan(&env).0, 0);

    // A new size is a program swap whose map starts empty, and plan says so.
    let before: u64 = counters(&env.map_in(&dir, "quota", "state", "rxq_pkts"))
        .values()
        .sum();
    assert!(before >= 28, "{before}");
    env.write(
        "10.yaml",
        &config(&[function("quota", at, &quota, &maps(1000, &sized(8)))]),
    );
    let (code, out) = plan(&env);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "program swap: map rxq_pkts resized (4 → 8 entries); the new map starts empty"
        ),
        "{out}"
    );
    env.apply();
    let rxq = env.map_in(&dir, "quota", "state", "rxq_pkts");
    assert_eq!(rxq.info().max_entries, 8);
    // Empty at the swap; only stray packets (IPv6 ND) since.
    let after: u64 = counters(&rxq).values().sum();
    assert!(
        after < before,
        "the resized map started empty: {after} vs {before}"
    );
    assert_eq!(used(), Some((20, 20)), "the other state map carried over");
    assert_eq!(plan(&env).0, 0);
}

#[test]
fn an_ingress_and_an_egress_function_share_a_map() {
    let env = kfd_tests::test_env!();
    let pair = |pick| object(&env, "flowpair", pick);
    let shared = "    maps:\n      flows:\n        share: udp-flows\n";
    let out_fn = function(
        "flows-out",
        (&env.if_a, &env.ns_a, "tc-egress"),
        &pair("program: flow_out"),
        shared,
    );
    let in_fn = function(
        "flows-in",
        (&env.if_b, &env.ns_b, "tc-ingress"),
        &pair("program: flow_in"),
        shared,
    );
    env.write("10.yaml", &config(&[out_fn.clone(), in_fn]));
    let (code, out) = plan(&env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("shared map udp-flows (users: "), "{out}");
    env.apply();
    assert_eq!(plan(&env).0, 0, "{}", plan(&env).1);
    let egress_key = format!("{} tc-egress (netns {})", env.if_a, env.ns_a);
    let ingress_key = format!("{} tc-ingress (netns {})", env.if_b, env.ns_b);
    let users = |st: &serde_json::Value| {
        let mut u: Vec<String> = st["shared"][0]["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect();
        u.sort();
        u
    };
    let st = env.status();
    assert_eq!(st["shared"][0]["name"], "udp-flows", "{st}");
    assert_eq!(
        users(&st),
        [
            format!("flows-in on {ingress_key}"),
            format!("flows-out on {egress_key}")
        ],
        "status shows who shares it"
    );
    let pin = env.bpffs.join("shared").join("udp-flows");
    let flows = || {
        let m = ByteMap::from_pin(&pin).expect("shared map pinned under the root");
        entries(&m)
            .into_iter()
            .map(|(k, v)| (k, (u64_at(&v, 0), u64_at(&v, 1))))
            .collect::<BTreeMap<_, _>>()
    };
    let rx = env.receiver();
    assert_eq!(env.send(A4, 9), 9);
    assert_eq!(rx.wait_for(A4, 9, Duration::from_secs(3)), 9);
    assert_eq!(
        flows(),
        BTreeMap::from([(addr_key(A4), (9, 9))]),
        "egress and ingress wrote the one map"
    );
    assert!(
        !env.chain_dir_of("tc-egress", &env.if_a, &env.ns_a)
            .join("fn/flows-out/state/flows")
            .exists(),
        "no per-function copy"
    );

    // One user left: the map stays, with its contents.
    env.write("10.yaml", &config(&[out_fn]));
    env.apply();
    assert_eq!(env.send(A4, 1), 1);
    assert_eq!(rx.wait_for(A4, 10, Duration::from_secs(3)), 10);
    assert_eq!(flows(), BTreeMap::from([(addr_key(A4), (10, 9))]));
    assert_eq!(users(&env.status()), [format!("flows-out on {egress_key}")]);

    // No users: it goes.
    env.write("10.yaml", "version: 1\nfunctions: []\n");
    env.apply();
    assert!(!pin.exists(), "the last user took the shared map with it");
}

#[test]
fn plan_reports_a_verifier_rejection_and_an_unloadable_map() {
    let env = kfd_tests::test_env!();
    let at = (env.if_b.as_str(), env.ns_b.as_str(), "xdp");
    let file = env.conf().join("10.yaml");
    let chain = format!("{} xdp (netns {})", env.if_b, env.ns_b);
    let check = |config: String, expect: &[String]| {
        env.write("10.yaml", &config);
        let r = env.kfd(&["plan"]);
        assert_eq!(r.code, 1, "{r:?}");
        for e in expect {
            assert!(r.stderr.contains(e.as_str()), "no {e:?} in: {}", r.stderr);
        }
        assert!(pins_under(&env.bpffs).is_empty(), "plan pinned nothing");
        assert!(env.xdp_prog_ids().is_empty(), "plan attached nothing");
        // Without the loads plan cannot know, and says there is work.
        let r = env.kfd(&["plan", "--no-verify"]);
        assert_eq!(r.code, 2, "{r:?}");
    };

    let rejected = env.test_object("rejected");
    check(
        config(&[function(
            "bad",
            at,
            &format!("{{object: {}}}", rejected.display()),
            "",
        )]),
        &[
            format!(
                "kfd: {chain}: function bad ({}:3:5, object {}): the kernel refused program `rejected`: Permission denied (os error 13)",
                file.display(),
                rejected.display()
            ),
            // The verifier's reason, with the source line.
            "if (data[100] == 1) @ rejected.bpf.c:10".into(),
            "invalid access to packet, off=100 size=1".into(),
        ],
    );

    let seeded = env.test_object("seeded");
    check(
        config(&[function(
            "quota",
            at,
            &format!("{{object: {}}}", seeded.display()),
            // A hash of 2^32 buckets is past what the kernel allows
            // (E2BIG, whatever the machine's memory).
            "    maps:\n      rxq_pkts:\n        max_entries: 4\n      proto_quota:\n        max_entries: 4294967295\n",
        )]),
        &[format!(
            "kfd: {chain}: function quota ({}:3:5, object {}): creating map proto_quota (hash, key 4 B, value 16 B, max_entries 4294967295, flags 0x0): BPF_MAP_CREATE failed: Argument list too long (os error 7) (max_entries 4294967295 may be too large: set maps.proto_quota.max_entries)",
            file.display(),
            seeded.display()
        )],
    );
}
