//! TC ingress and egress chains with real packets: drops, skb->mark and DSCP
//! tagging in both directions, TCX and the clsact fallback, and other tools'
//! TCX programs and clsact filters working on through kfd's apply, reorder
//! and down.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::Path;
use std::time::Duration;

use kfd_tests::{A4, Env, reconciler, sh};
use reconciler::kernel::loader::{self, LoadRequest, Loaded, ProgKind};
use reconciler::kernel::map::ByteMap;
use reconciler::kernel::{netns, sys, tc};

const DENIED: &str = "203.0.113.7";

/// One function of a chain: (name, priority, program, maps YAML).
type Func<'a> = (&'a str, u32, String, &'a str);

fn chain(
    env: &Env,
    ns: &str,
    iface: &str,
    hook: &str,
    setting: &str,
    funcs: &[Func<'_>],
) -> String {
    let mut s = String::from("version: 1\n");
    if !setting.is_empty() {
        let _ = writeln!(
            s,
            "chains:\n  - {{interface: {iface}, netns: {ns}, hook: {hook}, {setting}}}"
        );
    }
    s += "functions:\n";
    for (name, prio, program, maps) in funcs {
        let _ = write!(
            s,
            "  - name: {name}\n    interface: {iface}\n    netns: {ns}\n    hook: {hook}\n    priority: {prio}\n    program: {program}\n{maps}"
        );
    }
    let _ = env;
    s
}

const DENY: &str =
    "    maps:\n      deny_v4:\n        entries:\n          - {key: 203.0.113.0/24, value: 1}\n";
/// mark: 10.200.0.0/24 gets skb->mark 0x41, but its UDP to port 9999 gets
/// 0x42: same prefix, more fields constrained, so it wins from index 1.
const MARK_42: &str = "    maps:\n      rules:\n        entries:\n          - key: 0\n            value: {set: MARK_SET_MARK, mark: 0x41, src4: 10.200.0.0/24}\n          - key: 1\n            value: {set: MARK_SET_MARK, mark: 0x42, proto: 17, dport_min: 9999, dport_max: 9999, src4: 10.200.0.0/24}\n";
/// mark: anything from 10.200.0.0/16 gets DSCP 10 (AF11), but UDP to port
/// 9999 from 10.200.0.0/24 gets 46 (EF): the more specific rule wins even
/// though it comes second.
const DSCP_EF: &str = "    maps:\n      rules:\n        entries:\n          - key: 0\n            value: {set: MARK_SET_DSCP, dscp: 10, src4: 10.200.0.0/16}\n          - key: 1\n            value: {set: MARK_SET_DSCP, dscp: 46, proto: 17, dport_max: 9999, dport_min: 9999, src4: 10.200.0.0/24}\n";
/// In 10.200.0.0/16 but not in 10.200.0.0/24.
const WIDER: &str = "10.200.7.1";

/// tagcount's `tags` map: (mark, dscp) → packets.
fn tags(map: &ByteMap) -> BTreeMap<(u32, u32), u64> {
    map.read_all()
        .expect("tags")
        .iter()
        .map(|(k, v)| {
            let w = |b: &[u8]| u32::from_ne_bytes(b.try_into().unwrap());
            (
                (w(&k[..4]), w(&k[4..8])),
                u64::from_ne_bytes(v.try_into().unwrap()),
            )
        })
        .collect()
}

#[test]
fn tc_ingress_drops_and_marks() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    let tagcount = format!("{{object: {}}}", env.test_object("tagcount").display());
    env.write(
        "10.yaml",
        &chain(
            &env,
            &env.ns_b,
            &env.if_b,
            "tc-ingress",
            "",
            &[
                ("bl", 10, "{builtin: blocklist}".into(), DENY),
                ("mk", 20, "{builtin: mark}".into(), MARK_42),
                ("tc", 30, tagcount, ""),
            ],
        ),
    );
    env.apply();
    let st = env.status();
    assert_eq!(st["chains"][0]["hook"], "tc-ingress");
    assert_eq!(st["chains"][0]["mode"], "tcx", "TCX on this kernel: {st}");
    let rx = env.receiver();
    assert_eq!(env.send(DENIED, 10), 10);
    assert_eq!(env.send(A4, 12), 12);
    assert_eq!(
        rx.wait_for(A4, 12, Duration::from_secs(3)),
        12,
        "allowed packets pass"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.count(DENIED), 0, "denied packets are shot");
    assert_eq!(env.verdicts("bl").get("shot"), Some(&10));
    let dir = env.chain_dir_of("tc-ingress", &env.if_b, &env.ns_b);
    let seen = tags(&env.map_in(&dir, "tc", "state", "tags"));
    assert_eq!(
        seen.get(&(0x42, 0)),
        Some(&12),
        "marked by mk before tc saw them: {seen:?}"
    );

    // Status and metrics show the TC chain as they show XDP ones.
    let text = env.kfd(&["status"]).stdout;
    assert!(
        text.contains(&format!("{} tc-ingress", env.if_b)) && text.contains("attached (tcx)"),
        "{text}"
    );
    let d = env.daemon(&[]);
    let chain = format!(
        "netns=\"{}\",interface=\"{}\",hook=\"tc-ingress\"",
        env.ns_b, env.if_b
    );
    assert_eq!(
        d.metric(&format!("kfd_chain_attached{{{chain}}}")),
        Some(1.0)
    );
    assert_eq!(
        d.metric(&format!(
            "kfd_function_packets_total{{{chain},function=\"bl\",verdict=\"shot\"}}"
        )),
        Some(10.0),
        "{}",
        d.scrape()
    );
}

#[test]
fn tc_egress_sets_the_dscp_the_receiver_sees() {
    let env = kfd_tests::test_env!();
    env.add_source(WIDER);
    let tagcount = format!("{{object: {}}}", env.test_object("tagcount").display());
    // The sender's egress marks; the receiver's ingress counts what arrives.
    let mut cfg = chain(
        &env,
        &env.ns_a,
        &env.if_a,
        "tc-egress",
        "",
        &[("ef", 10, "{builtin: mark}".into(), DSCP_EF)],
    );
    let rx_chain = chain(
        &env,
        &env.ns_b,
        &env.if_b,
        "tc-ingress",
        "",
        &[("tc", 10, tagcount, "")],
    );
    cfg += &rx_chain[rx_chain.find("  - name").unwrap()..];
    env.write("10.yaml", &cfg);
    env.apply();
    let rx = env.receiver();
    assert_eq!(env.send(A4, 15), 15);
    assert_eq!(env.send(WIDER, 7), 7);
    assert_eq!(rx.wait_for(A4, 15, Duration::from_secs(3)), 15);
    assert_eq!(rx.wait_for(WIDER, 7, Duration::from_secs(3)), 7);
    let dir = env.chain_dir_of("tc-ingress", &env.if_b, &env.ns_b);
    let mut seen = tags(&env.map_in(&dir, "tc", "state", "tags"));
    seen.remove(&(0, 0)); // the kernel's own IPv6 chatter, untagged
    assert_eq!(
        seen,
        BTreeMap::from([((0, 46), 15), ((0, 10), 7)]),
        "EF from the /24, AF11 from the rest of the /16, checksums intact (they arrived)"
    );
}

/// Another tool's TCX program, attached last on the receiver's ingress.
struct ForeignTcx {
    loaded: Loaded,
    _link: OwnedFd,
}

impl ForeignTcx {
    fn attach(env: &Env, object: &Path) -> Self {
        let bytes = std::fs::read(object).unwrap();
        let loaded = loader::load(&LoadRequest {
            object: &bytes,
            program: "foreign_tc",
            kind: ProgKind::Classifier,
            pinned: Vec::new(),
            globals: Vec::new(),
            frags: false,
            sizes: Vec::new(),
            mode: loader::Mode::Pin,
        })
        .expect("load foreign program");
        let ns = netns::netns_path(&env.ns_b);
        let link = netns::run_in(Some(&ns), || {
            let ifindex = netns::ifindex(&env.if_b).expect("interface");
            sys::link_create(loaded.prog.as_fd(), ifindex, tc::BPF_TCX_INGRESS, 0)
                .expect("foreign TCX link")
        })
        .unwrap();
        ForeignTcx {
            loaded,
            _link: link,
        }
    }

    fn seen(&self) -> u64 {
        let v = self.loaded.maps["seen"]
            .lookup_raw(&0u32.to_ne_bytes())
            .unwrap()
            .unwrap();
        u64::from_ne_bytes(v[..8].try_into().unwrap())
    }
}

/// Another tool's cls_bpf filter at priority 10, added with `tc`.
fn add_foreign_filter(env: &Env, object: &Path) {
    let _ = std::process::Command::new("ip")
        .args([
            "netns", "exec", &env.ns_b, "tc", "qdisc", "add", "dev", &env.if_b, "clsact",
        ])
        .output();
    sh(&[
        "ip",
        "netns",
        "exec",
        &env.ns_b,
        "tc",
        "filter",
        "add",
        "dev",
        &env.if_b,
        "ingress",
        "prio",
        "10",
        "bpf",
        "da",
        "obj",
        object.to_str().unwrap(),
        "sec",
        "classifier",
    ]);
}

/// The ids of the programs of the filters on the receiver's clsact ingress.
fn filters(env: &Env) -> Vec<(u64, u64)> {
    let out = sh(&[
        "ip", "netns", "exec", &env.ns_b, "tc", "-j", "filter", "show", "dev", &env.if_b, "ingress",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["pref"].as_u64()?, f["options"]["prog"]["id"].as_u64()?)))
        .collect()
}

fn foreign_filter_seen(env: &Env) -> u64 {
    let (_, id) = filters(env)
        .into_iter()
        .find(|(p, _)| *p == 10)
        .expect("the foreign filter is there");
    let prog = sys::prog_fd_by_id(id as u32).unwrap();
    for map_id in sys::prog_info(prog.as_fd()).unwrap().map_ids {
        let map = ByteMap::from_fd(sys::map_fd_by_id(map_id).unwrap()).unwrap();
        if map.info().name == "seen" {
            let v = map.lookup_raw(&0u32.to_ne_bytes()).unwrap().unwrap();
            return u64::from_ne_bytes(v[..8].try_into().unwrap());
        }
    }
    panic!("no `seen` map on the foreign filter");
}

#[test]
fn other_tools_programs_keep_working_through_apply_reorder_and_down() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    let object = env.test_object("foreign_tc");
    let tcx = ForeignTcx::attach(&env, &object);
    add_foreign_filter(&env, &object);
    let counter_first = |first: bool| {
        chain(
            &env,
            &env.ns_b,
            &env.if_b,
            "tc-ingress",
            "",
            &[
                ("bl", 10, "{builtin: blocklist}".into(), DENY),
                (
                    "ctr",
                    if first { 5 } else { 20 },
                    "{builtin: counter}".into(),
                    "",
                ),
            ],
        )
    };
    let rx = env.receiver();
    let mut sent = 0;
    // While kfd runs (first), the denied source never reaches the others.
    let mut round = |what: &str| {
        env.send(DENIED, 5);
        env.send(A4, 10);
        sent += 10;
        assert_eq!(
            rx.wait_for(A4, sent, Duration::from_secs(3)),
            sent,
            "{what}: traffic flows"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            tcx.seen(),
            sent as u64,
            "{what}: the foreign TCX program sees every allowed packet"
        );
        assert_eq!(
            foreign_filter_seen(&env),
            sent as u64,
            "{what}: so does the foreign clsact filter"
        );
    };
    env.write("10.yaml", &counter_first(false));
    env.apply();
    round("after apply");
    assert_eq!(
        env.verdicts("bl").get("shot"),
        Some(&5),
        "kfd runs first: it dropped the denied ones"
    );
    env.write("10.yaml", &counter_first(true));
    env.apply();
    assert_eq!(env.slots(), ["ctr", "bl"]);
    round("after a reorder");
    assert_eq!(env.kfd(&["down"]).code, 0);
    // Both foreign programs are still attached and counting; without kfd,
    // the denied source's packets reach them too.
    let (tcx_before, filter_before) = (tcx.seen(), foreign_filter_seen(&env));
    env.send(DENIED, 5);
    env.send(A4, 10);
    assert_eq!(
        rx.wait_for(A4, sent + 10, Duration::from_secs(3)),
        sent + 10,
        "after down: traffic flows"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        tcx.seen(),
        tcx_before + 15,
        "after down: the foreign TCX program sees everything"
    );
    assert_eq!(
        foreign_filter_seen(&env),
        filter_before + 15,
        "after down: so does the foreign filter"
    );
    assert_eq!(
        filters(&env).len(),
        1,
        "only the foreign filter is left: {:?}",
        filters(&env)
    );
}

#[test]
fn the_clsact_fallback_attaches_drops_and_cleans_up_after_itself() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10.yaml",
        &chain(
            &env,
            &env.ns_b,
            &env.if_b,
            "tc-ingress",
            "tc_attach: clsact, tc_priority: 3",
            &[("bl", 10, "{builtin: blocklist}".into(), DENY)],
        ),
    );
    env.apply();
    let st = env.status();
    assert_eq!(
        (
            st["chains"][0]["mode"].as_str(),
            st["chains"][0]["priority"].as_u64()
        ),
        (Some("clsact"), Some(3)),
        "{st}"
    );
    assert_eq!(
        filters(&env).iter().map(|f| f.0).collect::<Vec<_>>(),
        [3],
        "kfd's filter at priority 3"
    );
    assert!(
        !env.chain_dir_of("tc-ingress", &env.if_b, &env.ns_b)
            .join("link")
            .exists(),
        "no TCX link"
    );
    let rx = env.receiver();
    env.send(DENIED, 5);
    env.send(A4, 5);
    assert_eq!(rx.wait_for(A4, 5, Duration::from_secs(3)), 5);
    assert_eq!(rx.count(DENIED), 0);
    assert_eq!(env.kfd(&["plan"]).code, 0, "re-apply is a no-op");

    // Drift: someone points kfd's filter at another program. plan shows it,
    // apply switches the filter back in place (no second filter, no gap).
    let root_id = filters(&env)[0].1;
    sh(&[
        "ip",
        "netns",
        "exec",
        &env.ns_b,
        "tc",
        "filter",
        "replace",
        "dev",
        &env.if_b,
        "ingress",
        "prio",
        "3",
        "handle",
        "0x6b6664",
        "bpf",
        "da",
        "obj",
        env.test_object("foreign_tc").to_str().unwrap(),
        "sec",
        "classifier",
    ]);
    assert_ne!(filters(&env)[0].1, root_id);
    env.send(DENIED, 5);
    assert_eq!(
        rx.wait_for(DENIED, 5, Duration::from_secs(3)),
        5,
        "the chain was bypassed"
    );
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    env.apply();
    assert_eq!(
        filters(&env),
        [(3, root_id)],
        "kfd's root is back, in place"
    );
    env.send(DENIED, 5);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rx.count(DENIED), 5, "dropped again");

    // Dropping the setting means auto again, which is TCX on this kernel:
    // the move adds the link before removing the filter.
    env.write(
        "10.yaml",
        &chain(
            &env,
            &env.ns_b,
            &env.if_b,
            "tc-ingress",
            "",
            &[("bl", 10, "{builtin: blocklist}".into(), DENY)],
        ),
    );
    assert_eq!(
        env.kfd(&["plan"]).code,
        2,
        "back to auto is a pending move to TCX"
    );
    env.apply();
    assert_eq!(env.status()["chains"][0]["mode"], "tcx");
    assert!(filters(&env).is_empty(), "kfd's filter is gone");
    let qdiscs = sh(&[
        "ip", "netns", "exec", &env.ns_b, "tc", "qdisc", "show", "dev", &env.if_b,
    ]);
    assert!(
        !qdiscs.contains("clsact"),
        "kfd removed the clsact qdisc it added: {qdiscs}"
    );
    env.send(DENIED, 5);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rx.count(DENIED), 5, "still dropped on TCX");
}
