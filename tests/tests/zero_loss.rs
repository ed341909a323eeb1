//! The zero-loss proof: continuous sequence-numbered UDP through the chain
//! while kfd performs 100 entry updates, 100 map swaps, 100 program swaps and
//! 100 chain reorders on XDP, and 25 of each on TC ingress.
//!
//! - Flow A is always allowed: every one of its packets must arrive.
//! - Flow D is in a denied range and toggles an allow-list entry on and off.
//!   A D packet sent while the allow entry is in force (after the apply that
//!   added it returned, before the apply removing it started) must arrive; one
//!   sent while it is not (after the removal returned, before the next add
//!   started) must not. Packets sent while an apply runs may go either way.
//!   Sends within `GUARD` of an apply's start are not judged: a packet reaches
//!   the hook a little after `sendto()` returns.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kfd_tests::{A4, Env};

const D: &str = "203.0.113.7";
const GUARD: Duration = Duration::from_millis(20);

struct Layout {
    /// Whether D's allow entry is in force.
    allow_d: bool,
    /// Lists land entry by entry (false) or by map swap (true).
    swap_lists: bool,
    /// Changes to force a program swap of the ratelimiter.
    rl_generation: u64,
    /// ratelimit before counter (false) or after (true).
    reordered: bool,
}

fn config(env: &Env, l: &Layout) -> String {
    let head = |name: &str, prio: u32, builtin: &str| {
        format!(
            "  - name: {name}\n    interface: {i}\n    netns: {n}\n    hook: {h}\n    priority: {prio}\n    program: {{builtin: {builtin}}}\n",
            h = env.hook,
            i = env.if_b,
            n = env.ns_b
        )
    };
    let update = if l.swap_lists { "swap" } else { "entries" };
    let mut s = String::from("version: 1\nfunctions:\n");
    s += &head("bl", 10, "blocklist-swap");
    let _ = write!(
        s,
        "    maps:\n      deny_v4:\n        update: {update}\n        entries:\n          - {{key: 203.0.113.0/24, value: 1}}\n      allow_v4:\n        update: {update}\n        entries:{}\n",
        if l.allow_d {
            format!("\n          - {{key: {D}/32, value: 1}}")
        } else {
            " []".into()
        }
    );
    let (rl_prio, ctr_prio) = if l.reordered { (30, 20) } else { (20, 30) };
    s += &head("rl", rl_prio, "ratelimit");
    let _ = write!(
        s,
        "    maps:\n      rl_config:\n        update: swap\n        entries:\n          - {{key: 0, value: {{rate_pps: {}, burst: 10000000}}}}\n",
        1_000_000_000 - l.rl_generation
    );
    s += &head("ctr", ctr_prio, "counter");
    s
}

/// One apply: when it started and returned, and D's allow state after it.
struct Change {
    kind: &'static str,
    start: Instant,
    end: Instant,
    allow_d: bool,
}

#[test]
fn no_packet_is_lost_or_misjudged_across_400_changes_on_xdp() {
    if let Some(env) = Env::new("zero_loss_xdp") {
        no_packet_is_lost_or_misjudged(&env, 100);
    }
}

#[test]
fn no_packet_is_lost_or_misjudged_across_100_changes_on_tc_ingress() {
    if let Some(env) = Env::new("zero_loss_tc") {
        no_packet_is_lost_or_misjudged(&env.on_hook("tc-ingress"), 25);
    }
}

/// `per_kind` changes of each kind under two flows, then the judgement.
fn no_packet_is_lost_or_misjudged(env: &Env, per_kind: usize) {
    env.add_source(D);
    let mut layout = Layout {
        allow_d: true,
        swap_lists: false,
        rl_generation: 0,
        reordered: false,
    };
    env.write("10.yaml", &config(env, &layout));
    let t = Instant::now();
    env.apply();
    let mut changes = vec![Change {
        kind: "first apply",
        start: t,
        end: Instant::now(),
        allow_d: true,
    }];
    let rx = env.receiver();
    let drops_before = env.drop_counters();
    let flow_a = env.flow(A4, 20_000);
    let flow_d = env.flow(D, 5_000);
    std::thread::sleep(Duration::from_millis(100));

    let mut strategies = BTreeSet::new();
    for kind in ["entries", "map swap", "program swap", "reorder"] {
        for _ in 0..per_kind {
            match kind {
                "entries" => {
                    layout.swap_lists = false;
                    layout.allow_d = !layout.allow_d;
                }
                "map swap" => {
                    layout.swap_lists = true;
                    layout.allow_d = !layout.allow_d;
                }
                "program swap" => layout.rl_generation += 1,
                _ => layout.reordered = !layout.reordered,
            }
            env.write("10.yaml", &config(env, &layout));
            let start = Instant::now();
            let run = env.apply().json();
            let end = Instant::now();
            assert!(
                run["chains"].as_array().is_some_and(|c| !c.is_empty()),
                "{kind}: nothing was done: {run}"
            );
            strategies.insert(kind);
            changes.push(Change {
                kind,
                start,
                end,
                allow_d: layout.allow_d,
            });
            // Let some packets through under each state.
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let sent_a_at = flow_a.stop_with_times();
    let sent_a = sent_a_at.len() as u64;
    let sent_d = flow_d.stop_with_times();
    rx.wait_for(A4, sent_a as usize, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let drops_after = env.drop_counters();

    // A: nothing lost.
    let got_a: BTreeSet<u64> = rx.sequences(A4).into_iter().collect();
    let lost: Vec<u64> = (0..sent_a).filter(|s| !got_a.contains(s)).collect();
    assert!(
        sent_a > 100_000,
        "the flow ran at tens of thousands of pps: {sent_a}"
    );
    assert!(
        lost.is_empty(),
        "{} of {sent_a} packets of the always-allowed flow were lost: {:?}…\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        where_lost(&lost, &sent_a_at, &changes, &drops_before, &drops_after)
    );

    // D: judged against the allow state in force when each packet was sent.
    let got_d: BTreeSet<u64> = rx.sequences(D).into_iter().collect();
    let (mut judged_pass, mut judged_drop) = (0, 0);
    let mut wrong = Vec::new();
    for (seq, sent) in sent_d.iter().enumerate() {
        // The last change that returned before this send, and the next start.
        let Some(i) = changes.iter().rposition(|c| c.end <= *sent) else {
            continue;
        };
        let next_start = changes.get(i + 1).map(|c| c.start);
        if next_start.is_some_and(|s| *sent + GUARD >= s) {
            continue; // an apply was about to start or running
        }
        let arrived = got_d.contains(&(seq as u64));
        if changes[i].allow_d {
            judged_pass += 1;
            if !arrived {
                wrong.push(format!("seq {seq}: allowed, but dropped"));
            }
        } else {
            judged_drop += 1;
            if arrived {
                wrong.push(format!("seq {seq}: denied, but passed"));
            }
        }
    }
    assert!(
        judged_pass > 1000 && judged_drop > 1000,
        "too few judged packets: {judged_pass} allowed, {judged_drop} denied"
    );
    assert!(
        wrong.is_empty(),
        "{} misjudged D packets: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(strategies.len(), 4);
}

/// What a test failure needs to tell a chain's loss from the harness's: when
/// the lost packets were sent relative to the changes, and what the kernel
/// dropped outside the chain meanwhile.
fn where_lost(
    lost: &[u64],
    sent_at: &[Instant],
    changes: &[Change],
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> String {
    let mut out = String::new();
    let t0 = changes[0].start;
    for seq in [lost[0], lost[lost.len() - 1]] {
        let at = sent_at[seq as usize];
        let during = changes.iter().position(|c| c.start <= at && at <= c.end);
        let last = changes.iter().rposition(|c| c.end <= at);
        let _ = writeln!(
            out,
            "seq {seq} sent at +{} ms: {}",
            at.duration_since(t0).as_millis(),
            match (during, last) {
                (Some(i), _) => format!("during change #{i} ({})", changes[i].kind),
                (None, Some(i)) => format!(
                    "{} ms after change #{i} ({}) returned",
                    at.duration_since(changes[i].end).as_millis(),
                    changes[i].kind
                ),
                (None, None) => "before any change".into(),
            }
        );
    }
    for (k, v) in after {
        let d = v - before.get(k).copied().unwrap_or(0);
        if d > 0 {
            let _ = writeln!(out, "kernel drops outside the chain meanwhile: {k} +{d}");
        }
    }
    out
}
