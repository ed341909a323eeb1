//! kfd benchmarks (run as root, release build):
//!
//! ```text
//! cargo run --release -p kfd-tests --bin kfd-bench -- [datapath|control|strategies|all] [--entries N]
//! ```
//!
//! - `datapath`: ns/packet under BPF_PROG_TEST_RUN of chains applied by kfd
//!   (the example XDP chain root + blocklist + ratelimit + counter, the same
//!   on TC ingress, and the example TC egress chain root + mark + counter)
//!   against one monolithic program doing the same work on the same map
//!   contents, alternating in the same run; reports medians, the cost per
//!   hop, and the floor (empty KFs) for XDP and TC.
//! - `control`: `kfd apply` of a generated config with N (default 1,000,000)
//!   deny_v4 entries: time per stage, peak RSS, the kernel phase against a
//!   raw BPF_MAP_UPDATE_BATCH of the same entries in the same run, and a
//!   re-apply of the unchanged config.
//!
//! - `strategies`: on an N-entry deny list, the time for one changed entry
//!   (file → kernel), a full map swap, a program swap with N-entry config
//!   maps and a chain reorder, against rewriting every entry in the same run.
//!
//! Figures drift with the machine; compare the ratios.

use std::fmt::Write as _;
use std::os::fd::AsFd as _;
use std::time::Instant;

use kfd_tests::{Env, reconciler};
use reconciler::builtin::{ObjectKind, object};
use reconciler::entries::EntrySet;
use reconciler::kernel::loader::{self, LoadRequest, ProgKind};
use reconciler::kernel::map::ByteMap;
use reconciler::kernel::sys::{self, MapCreate};
use reconciler::model::map_type;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("all");
    let entries = args
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(1_000_000usize);
    if matches!(what, "datapath" | "all") {
        datapath();
    }
    if matches!(what, "control" | "all") {
        control(entries);
    }
    if matches!(what, "strategies" | "all") {
        strategies(entries);
    }
}

/// (median, minimum): the minimum is the steadiest estimate on a noisy machine.
fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// Ethernet + IPv4 + UDP from `src` to 10.200.0.2, 64 bytes.
fn packet(src: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    p[14] = 0x45;
    p[16..18].copy_from_slice(&50u16.to_be_bytes());
    p[22] = 64;
    p[23] = 17;
    p[26..30].copy_from_slice(&src);
    p[30..34].copy_from_slice(&[10, 200, 0, 2]);
    p[34..36].copy_from_slice(&4242u16.to_be_bytes());
    p[36..38].copy_from_slice(&9999u16.to_be_bytes());
    p[38..40].copy_from_slice(&30u16.to_be_bytes());
    p
}

fn deny_entries(n: usize) -> EntrySet {
    let mut keys = Vec::with_capacity(n * 8);
    for i in 0..n as u32 {
        keys.extend_from_slice(&32u32.to_ne_bytes());
        keys.extend_from_slice(&(0x0a00_0000 + i).to_be_bytes());
    }
    EntrySet::from_unsorted(8, 1, keys, vec![1; n]).expect("unique keys")
}

/// The example XDP chain's functions (blocklist with `DENY` entries,
/// ratelimit, counter) on `hook` of the receiver.
fn three_kf_chain(env: &Env, hook: &str) -> String {
    const DENY: usize = 10_000;
    let head = |name: &str, prio: u32, builtin: &str| {
        format!(
            "  - name: {name}\n    interface: {i}\n    netns: {n}\n    hook: {hook}\n    priority: {prio}\n    program: {{builtin: {builtin}}}\n",
            i = env.if_b,
            n = env.ns_b
        )
    };
    let mut cfg = String::from("version: 1\nfunctions:\n");
    cfg += &head("bl", 10, "blocklist");
    cfg += "    maps:\n      deny_v4:\n        entries:\n";
    for i in 0..DENY as u32 {
        let a = (0x0a00_0000 + i).to_be_bytes();
        let _ = writeln!(
            cfg,
            "          - {{key: {}.{}.{}.{}, value: 1}}",
            a[0], a[1], a[2], a[3]
        );
    }
    cfg += &head("rl", 20, "ratelimit");
    cfg += "    maps:\n      rl_config:\n        entries:\n          - {key: 0, value: {rate_pps: 1000000000, burst: 1000000000}}\n";
    cfg += &head("ctr", 30, "counter");
    cfg
}

/// examples/config.d/40-tc-egress.yaml (mark, counter), moved onto the
/// receiver's interface.
fn example_tc_chain(env: &Env) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/config.d/40-tc-egress.yaml"
    );
    std::fs::read_to_string(path)
        .expect("examples/config.d/40-tc-egress.yaml")
        .replace("interface: edge0", &format!("interface: {}", env.if_b))
        .replace("netns: kfd-demo-edge", &format!("netns: {}", env.ns_b))
}

/// A chain applied by kfd against its work done in one program.
struct Case {
    title: &'static str,
    hook: &'static str,
    monolithic: &'static str,
    kind: ProgKind,
    /// Tail calls per packet: root → first KF, then one per further KF.
    hops: f64,
}

fn datapath() {
    let Some(env) = Env::new("bench-datapath") else {
        return;
    };
    env.write("10-xdp.yaml", &three_kf_chain(&env, "xdp"));
    env.write("20-tc-ingress.yaml", &three_kf_chain(&env, "tc-ingress"));
    env.write("30-tc-egress.yaml", &example_tc_chain(&env));
    env.apply();
    let pkt = packet([198, 51, 100, 20]);
    println!(
        "datapath (BPF_PROG_TEST_RUN, {REPEAT} runs x {ROUNDS} paired rounds; 10,000 deny entries; medians):"
    );
    for case in [
        Case {
            title: "xdp: root + blocklist + ratelimit + counter (the example XDP chain)",
            hook: "xdp",
            monolithic: "monolithic_xdp",
            kind: ProgKind::Xdp,
            hops: 3.0,
        },
        Case {
            title: "tc-ingress: root + blocklist + ratelimit + counter",
            hook: "tc-ingress",
            monolithic: "monolithic_tc",
            kind: ProgKind::Classifier,
            hops: 3.0,
        },
        Case {
            title: "tc-egress: root + mark + counter (the example TC chain)",
            hook: "tc-egress",
            monolithic: "monolithic_tc_mark",
            kind: ProgKind::Classifier,
            hops: 2.0,
        },
    ] {
        compare(&env, &case, &pkt);
    }
    for kind in [ProgKind::Xdp, ProgKind::Classifier] {
        floor(&pkt, kind, Floor::KfNext);
        floor(&pkt, kind, Floor::TailCallOnly);
    }
}

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 41;

/// Loads `case.monolithic` on maps filled like the chain's config maps,
/// then runs both alternately.
fn compare(env: &Env, case: &Case, pkt: &[u8]) {
    let dir = env.chain_dir_of(case.hook, &env.if_b, &env.ns_b);
    let root = sys::obj_get(&dir.join("root")).expect("root pinned");
    let mono = loader::load(&LoadRequest {
        object: object(ObjectKind::Bench, "monolithic").expect("bench object"),
        program: case.monolithic,
        kind: case.kind,
        pinned: Vec::new(),
        globals: Vec::new(),
        frags: false,
        sizes: Vec::new(),
        mode: loader::Mode::Pin,
    })
    .expect("load monolithic");
    // The same entries as the chain's config maps.
    for f in std::fs::read_dir(dir.join("fn")).expect("fn dir").flatten() {
        for m in std::fs::read_dir(f.path().join("maps"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = m.file_name().to_string_lossy().into_owned();
            if let Some(to) = mono.maps.get(&name) {
                let from = ByteMap::from_pin(&m.path()).expect("chain map");
                to.update_batch(&from.read_all().expect("read chain map"))
                    .expect("fill monolithic map");
            }
        }
    }
    let (mut chain, mut monolithic) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let c = sys::prog_test_run(root.as_fd(), pkt, REPEAT).expect("test_run chain");
        let m = sys::prog_test_run(mono.prog.as_fd(), pkt, REPEAT).expect("test_run monolithic");
        assert_eq!(
            c.retval, m.retval,
            "{}: both must give the same verdict",
            case.title
        );
        chain.push(f64::from(c.duration_ns));
        monolithic.push(f64::from(m.duration_ns));
    }
    // Paired: each round measures both back to back, so drifts of this
    // (virtual) machine cancel out in the per-round difference.
    let diffs: Vec<f64> = chain.iter().zip(&monolithic).map(|(c, m)| c - m).collect();
    let ((c, cmin), (m, mmin), (d, _)) = (stats(chain), stats(monolithic), stats(diffs));
    println!("  {}:", case.title);
    println!(
        "    chain {c:.1} ns/packet (min {cmin:.1}), one program doing the same {m:.1} (min {mmin:.1}); ratio {:.2}x",
        c / m
    );
    println!(
        "    chaining cost (median of paired differences): {d:.1} ns, {:.2} ns per hop ({} tail calls)",
        d / case.hops,
        case.hops
    );
}

/// What the KFs of a floor chain do.
#[derive(Clone, Copy)]
enum Floor {
    /// `kf_next` only: the kfd ABI (verdict counter, proceed_on, tail call).
    KfNext,
    /// The tail call only: the machine's own cost of a hop.
    TailCallOnly,
}

/// The cost of a bare hop on this machine: root + 3 KFs that do nothing
/// but `kf_next` (or only its tail call), against the empty program, paired
/// the same way.
fn floor(pkt: &[u8], kind: ProgKind, what: Floor) {
    use reconciler::kernel::bpffs;
    use reconciler::kernel::loader::PinnedMap;
    use reconciler::model::Hook;
    let (hook, empty, label) = match kind {
        ProgKind::Xdp => (Hook::Xdp, "xdp_pass", "xdp"),
        ProgKind::Classifier => (Hook::TcIngress, "tc_pass", "tc"),
    };
    let (kf, does) = match (what, kind) {
        (Floor::KfNext, ProgKind::Xdp) => ("kf_pass", "only kf_next"),
        (Floor::KfNext, ProgKind::Classifier) => ("kf_pass_tc", "only kf_next"),
        (Floor::TailCallOnly, ProgKind::Xdp) => ("kf_tail_only", "only the tail call"),
        (Floor::TailCallOnly, ProgKind::Classifier) => ("kf_tail_only_tc", "only the tail call"),
    };
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/kfd-bench-{}-{label}",
        std::process::id()
    ));
    bpffs::ensure_root(&dir).expect("bpffs");
    let root_img = reconciler::builtin::root(hook).expect("root object");
    let pins: Vec<PinnedMap<'_>> = root_img
        .chain_maps
        .iter()
        .map(|(n, shape)| PinnedMap {
            name: n.as_str(),
            path: dir.join(n),
            shape: *shape,
        })
        .collect();
    let load =
        |object: &[u8], program: &str, pinned: Vec<PinnedMap<'_>>, globals: Vec<(&str, &[u8])>| {
            loader::load(&LoadRequest {
                object,
                program,
                kind,
                pinned,
                globals,
                frags: false,
                sizes: Vec::new(),
                mode: loader::Mode::Pin,
            })
            .expect("load")
        };
    let root = load(root_img.bytes, root_img.symbol, pins.clone(), Vec::new());
    let kf_pass = object(ObjectKind::Bench, "kf_pass").expect("kf_pass object");
    // "Go on" after the pass verdict of the hook (its bit in proceed_on).
    let go_on = hook
        .verdict_bit("pass")
        .or(hook.verdict_bit("unspec"))
        .expect("a pass verdict");
    let mut kfs = Vec::new();
    for slot in 0..3u32 {
        let (idx, pass) = (slot.to_le_bytes(), (1u32 << go_on).to_le_bytes());
        let l = load(
            kf_pass,
            kf,
            pins.clone(),
            vec![
                ("kf_slot_idx", &idx[..]),
                ("kf_fn_id", &idx[..]),
                ("kf_proceed_on", &pass[..]),
            ],
        );
        root.maps["kf_progs"]
            .update_fd(slot, l.prog.as_fd())
            .expect("slot");
        kfs.push(l);
    }
    let empty = load(
        object(ObjectKind::Bench, "xdp_pass").expect("xdp_pass object"),
        empty,
        Vec::new(),
        Vec::new(),
    );
    let diffs: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let c = sys::prog_test_run(root.prog.as_fd(), pkt, REPEAT).expect("run");
            let e = sys::prog_test_run(empty.prog.as_fd(), pkt, REPEAT).expect("run");
            assert_eq!(c.retval, e.retval, "the floor chain must pass the packet");
            f64::from(c.duration_ns) - f64::from(e.duration_ns)
        })
        .collect();
    let (d, _) = stats(diffs);
    println!(
        "  floor ({label}): root + 3 KFs doing {does} cost {d:.1} ns over an empty program, {:.2} ns per hop",
        d / 3.0
    );
    drop(kfs);
    let _ = bpffs::remove_tree(&dir);
}

fn peak_rss_children_kib() -> i64 {
    // SAFETY: getrusage fills a plain struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss
}

fn control(n: usize) {
    let Some(env) = Env::new("bench-control") else {
        return;
    };
    let t = Instant::now();
    let mut cfg = String::with_capacity(n * 54 + 512);
    let _ = write!(
        cfg,
        "version: 1\nfunctions:\n  - name: edge\n    interface: {i}\n    netns: {ns}\n    hook: xdp\n    program: {{builtin: blocklist}}\n    maps:\n      deny_v4:\n        entries:\n",
        i = env.if_b,
        ns = env.ns_b
    );
    for i in 0..n as u32 {
        let a = (0x0a00_0000 + i).to_be_bytes();
        let _ = write!(
            cfg,
            "          - key: {}.{}.{}.{}/32\n            value: 1\n",
            a[0], a[1], a[2], a[3]
        );
    }
    env.write("10-big.yaml", &cfg);
    println!(
        "control path: generated {n} deny_v4 entries ({:.1} MB of YAML) in {:.2}s",
        cfg.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    drop(cfg);

    let t = Instant::now();
    let first = env.apply();
    let wall = t.elapsed();
    let rss = peak_rss_children_kib();
    let j = first.json();
    let tm = &j["timings"];
    let s = |k: &str| tm[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "  kfd apply (first):  {:.2}s wall, peak RSS {} MiB",
        wall.as_secs_f64(),
        rss / 1024
    );
    println!(
        "    read {:.3}s  parse {:.3}s  validate {:.3}s  encode {:.3}s  observe {:.3}s  diff {:.3}s  apply {:.3}s (kernel write {:.3}s)",
        s("read"),
        s("parse"),
        s("validate"),
        s("encode"),
        s("observe"),
        s("diff"),
        s("apply"),
        s("kernel_write")
    );
    assert_eq!(j["entries_written"].as_u64(), Some(n as u64), "{j}");

    // The same entries through one raw batch, into the same kind of map.
    let raw = ByteMap::create(
        &MapCreate {
            name: "bench_raw",
            map_type: map_type::LPM_TRIE,
            key_size: 8,
            value_size: 1,
            max_entries: 1 << 21,
            map_flags: 1,
        },
        None,
    )
    .expect("create raw map");
    let set = deny_entries(n);
    let t = Instant::now();
    raw.update_batch(&set).expect("raw batch");
    let raw_time = t.elapsed();
    drop(raw);
    println!(
        "  raw BPF_MAP_UPDATE_BATCH of the same {n} entries: {:.3}s; kfd's kernel write is {:.2}x of it",
        raw_time.as_secs_f64(),
        s("kernel_write") / raw_time.as_secs_f64()
    );

    let t = Instant::now();
    let again = env.apply();
    let rewall = t.elapsed();
    let j = again.json();
    let tm = &j["timings"];
    let s = |k: &str| tm[k].as_f64().unwrap_or(f64::NAN);
    assert_eq!(
        j["entries_written"].as_u64(),
        Some(0),
        "re-apply must write nothing: {j}"
    );
    assert_eq!(j["in_sync_before"], true);
    println!(
        "  kfd apply (unchanged): {:.2}s wall, 0 map writes; read {:.3}s parse {:.3}s validate {:.3}s encode {:.3}s observe {:.3}s diff {:.3}s",
        rewall.as_secs_f64(),
        s("read"),
        s("parse"),
        s("validate"),
        s("encode"),
        s("observe"),
        s("diff")
    );
}

/// A deny list of `n` entries (10.x.y.z/32 from `from`) for `program`, then a counter.
fn big_chain(
    env: &Env,
    program: &str,
    update: &str,
    from: u32,
    n: usize,
    counter_first: bool,
) -> String {
    let mut cfg = String::with_capacity(n * 40 + 1024);
    let _ = write!(
        cfg,
        "version: 1\nfunctions:\n  - name: bl\n    interface: {i}\n    netns: {ns}\n    hook: xdp\n    priority: 10\n    program: {{builtin: {program}}}\n    maps:\n      deny_v4:\n        update: {update}\n        entries:\n",
        i = env.if_b,
        ns = env.ns_b
    );
    for i in from..from + n as u32 {
        let a = (0x0a00_0000 + i).to_be_bytes();
        let _ = writeln!(
            cfg,
            "          - {{key: {}.{}.{}.{}/32, value: 1}}",
            a[0], a[1], a[2], a[3]
        );
    }
    let _ = write!(
        cfg,
        "  - name: ctr\n    interface: {i}\n    netns: {ns}\n    hook: xdp\n    priority: {p}\n    program: {{builtin: counter}}\n",
        i = env.if_b,
        ns = env.ns_b,
        p = if counter_first { 5 } else { 20 }
    );
    cfg
}

/// `kfd apply` of `cfg`: (wall seconds, kernel write seconds, entries written).
fn timed_apply(env: &Env, cfg: &str) -> (f64, f64, u64) {
    env.write("10-big.yaml", cfg);
    let t = Instant::now();
    let j = env.apply().json();
    (
        t.elapsed().as_secs_f64(),
        j["timings"]["kernel_write"].as_f64().unwrap_or(f64::NAN),
        j["entries_written"].as_u64().unwrap_or(0),
    )
}

fn strategies(n: usize) {
    let Some(env) = Env::new("bench-strategies") else {
        return;
    };
    println!("strategies on a {n}-entry deny list (kfd apply, file -> kernel):");
    let report = |what: &str, (wall, kernel, written): (f64, f64, u64)| {
        println!(
            "  {what:<44} {wall:>7.3}s end to end, kernel {kernel:>7.4}s, {written} entries written"
        );
        (wall, kernel)
    };
    timed_apply(
        &env,
        &big_chain(&env, "blocklist-swap", "auto", 0, n, false),
    );
    let one = report(
        "1 entry changed (entries)",
        timed_apply(
            &env,
            &big_chain(&env, "blocklist-swap", "auto", 1, n, false),
        ),
    );
    let swap = report(
        "all entries changed (map swap)",
        timed_apply(
            &env,
            &big_chain(&env, "blocklist-swap", "auto", n as u32, n, false),
        ),
    );
    let reorder = report(
        "chain reorder (relink + flip)",
        timed_apply(
            &env,
            &big_chain(&env, "blocklist-swap", "auto", n as u32, n, true),
        ),
    );
    // The naive alternative, in the same run: rewrite every entry of the live list.
    let live = env
        .map("bl", "maps", "deny_v4")
        .inner(0)
        .expect("read outer")
        .expect("slot filled");
    let all = live.read_all().expect("read list");
    let t = Instant::now();
    live.update_batch(&all).expect("rewrite");
    let naive = t.elapsed().as_secs_f64();
    println!(
        "  {:<44} {naive:>7.3}s (kernel only)",
        "naive: rewrite all entries of the live list"
    );
    // A program swap needs the plain blocklist, whose maps are not behind an outer map.
    timed_apply(
        &env,
        &big_chain(&env, "blocklist", "swap", n as u32, n, true),
    );
    let prog = report(
        "program swap with fresh config maps",
        timed_apply(
            &env,
            &big_chain(&env, "blocklist", "swap", n as u32 + 1, n, true),
        ),
    );
    println!(
        "  1-entry change vs rewriting every entry: {:.0}x faster in the kernel ({:.4}s vs {naive:.3}s), {:.1}x end to end ({:.3}s vs {:.3}s)",
        naive / one.1.max(1e-6),
        one.1,
        (one.0 - one.1 + naive) / one.0,
        one.0,
        one.0 - one.1 + naive
    );
    let _ = (swap, reorder, prog);
}
