//! Crash consistency: kfd is killed with SIGKILL at each failpoint of the
//! apply path, and at 200 random points, while a sequence-numbered flow
//! runs through the chain. After every kill:
//!
//! - the next `kfd apply` converges (and `kfd plan` is clean after it);
//! - nothing leaked: the census of pins, programs, maps and links reachable
//!   from the test's bpffs root and hooks equals that of a clean apply of
//!   the same config;
//! - and, over the whole test, not one packet of the flow was lost.
//!
//! The change killed is A → B (and back): entries written, a map swap, a
//! program swap, a function removed and one added (a revision flip), and a
//! new TC chain (create, attach) that B → A destroys.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use kfd_tests::census::Census;
use kfd_tests::{A4, Env, Receiver, reconciler};
use reconciler::apply::failpoint;

fn head(env: &Env, hook: &str, name: &str, prio: u32, builtin: &str) -> String {
    format!(
        "  - name: {name}\n    interface: {i}\n    netns: {n}\n    hook: {hook}\n    priority: {prio}\n    program: {{builtin: {builtin}}}\n",
        i = env.if_b,
        n = env.ns_b
    )
}

/// Config A (`b == false`) or B.
fn config(env: &Env, b: bool) -> String {
    let mut s = String::from("version: 1\nfunctions:\n");
    s += &head(env, "xdp", "bl", 10, "blocklist-swap");
    let _ = write!(
        s,
        "    maps:\n      deny_v4:\n        entries:\n          - {{key: 203.0.113.0/24, value: 1}}\n{}      allow_v4:\n        update: swap\n        entries:{}\n",
        if b {
            "          - {key: 198.51.100.0/24, value: 1}\n"
        } else {
            ""
        },
        if b {
            "\n          - {key: 203.0.113.7/32, value: 1}"
        } else {
            " []"
        }
    );
    s += &head(env, "xdp", "rl", 20, "ratelimit");
    let _ = write!(
        s,
        "    maps:\n      rl_config:\n        update: swap\n        entries:\n          - {{key: 0, value: {{rate_pps: {}, burst: 1000000000}}}}\n",
        if b { 999_999_999 } else { 1_000_000_000 }
    );
    s += &head(env, "xdp", if b { "ctr2" } else { "ctr" }, 30, "counter");
    if b {
        s += &head(env, "tc-ingress", "tctr", 10, "counter");
    }
    s
}

/// Converged censuses of A and B, taken after B → A and A → B so the
/// world ends at A.
struct World {
    env: Env,
    configs: [String; 2],
    clean: [Census; 2],
}

impl World {
    fn new(env: Env) -> World {
        let configs = [config(&env, false), config(&env, true)];
        let mut clean = [Census::default(), Census::default()];
        for i in [0, 1, 0] {
            env.write("10.yaml", &configs[i]);
            env.apply();
            clean[i] = env.census();
        }
        World {
            env,
            configs,
            clean,
        }
    }

    /// Applies config `to` with `vars`, expecting SIGKILL; then recovers
    /// and checks. Returns whether kfd was killed.
    fn kill_and_recover(&self, to: usize, vars: &[(&str, &str)], what: &str) -> bool {
        let env = &self.env;
        env.write("10.yaml", &self.configs[to]);
        let run = env.kfd_with_env(&["apply"], vars);
        let killed = run.signal == Some(libc::SIGKILL);
        assert!(
            killed || run.code == 0,
            "{what}: apply neither died nor converged: {run:?}"
        );
        let plan = env.kfd(&["plan"]);
        let recovery = env.apply();
        let after = env.kfd(&["plan"]);
        assert_eq!(
            after.code, 0,
            "{what}: not converged after the recovery apply\nplan after the kill:\n{}\nrecovery: {}\nplan now: {}",
            plan.stdout, recovery.stdout, after.stdout
        );
        let now = env.census();
        let clean = &self.clean[to];
        assert!(
            now.pins == clean.pins && now.counts() == clean.counts(),
            "{what}: leaked or lost objects\n after the kill: {now}\n clean apply:    {clean}\n extra pins: {:?}\n missing pins: {:?}\nplan after the kill:\n{}",
            now.pins.difference(&clean.pins).collect::<Vec<_>>(),
            clean.pins.difference(&now.pins).collect::<Vec<_>>(),
            plan.stdout
        );
        killed
    }
}

/// A flow from A4 that must lose nothing.
struct Flow {
    rx: Receiver,
    flow: kfd_tests::Flow,
}

impl Flow {
    fn start(env: &Env) -> Flow {
        let rx = env.receiver();
        let flow = env.flow(A4, 20_000);
        std::thread::sleep(Duration::from_millis(100));
        Flow { rx, flow }
    }

    fn assert_nothing_lost(self, what: &str) {
        std::thread::sleep(Duration::from_millis(100));
        let sent = self.flow.stop();
        self.rx.wait_for(A4, sent as usize, Duration::from_secs(5));
        let got: BTreeSet<u64> = self.rx.sequences(A4).into_iter().collect();
        let lost: Vec<u64> = (0..sent).filter(|s| !got.contains(s)).collect();
        assert!(sent > 1000, "{what}: the flow did not run: {sent}");
        assert!(
            lost.is_empty(),
            "{what}: {} of {sent} packets were blackholed: {:?}…",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
    }
}

fn killed_at(point: &str) {
    let Some(env) = Env::new(&format!("crash_{point}")) else {
        return;
    };
    let w = World::new(env);
    let flow = Flow::start(&w.env);
    let vars = [(failpoint::ENV, point)];
    let mut killed = 0;
    for to in [1, 0] {
        let what = format!("killed at {point} ({})", ["B → A", "A → B"][to]);
        killed += usize::from(w.kill_and_recover(to, &vars, &what));
    }
    // Attaching happens one way only (A → B creates the TC chain, B → A
    // destroys it); every other failpoint is reached both ways.
    let both = if point.ends_with("-attach") { 1 } else { 2 };
    assert_eq!(
        killed, both,
        "{point} was reached in {killed} of the 2 directions"
    );
    flow.assert_nothing_lost(&format!("killed at {point}"));
    eprintln!("killed at {point} in {killed} of 2 directions, recovered each time");
}

macro_rules! every_failpoint {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test]
        fn $test() {
            killed_at($name);
        })*

        #[test]
        fn every_failpoint_has_a_test() {
            assert_eq!([$($name),*].as_slice(), failpoint::NAMES);
        }
    };
}

every_failpoint!(
    killed_before_load => "before-load",
    killed_after_load => "after-load",
    killed_before_pin => "before-pin",
    killed_after_pin => "after-pin",
    killed_before_map_write => "before-map-write",
    killed_after_map_write => "after-map-write",
    killed_before_slot => "before-slot",
    killed_after_slot => "after-slot",
    killed_before_flip => "before-flip",
    killed_after_flip => "after-flip",
    killed_before_promote => "before-promote",
    killed_mid_promote => "mid-promote",
    killed_after_promote => "after-promote",
    killed_before_attach => "before-attach",
    killed_after_attach => "after-attach",
    killed_before_unpin => "before-unpin",
    killed_after_unpin => "after-unpin",
    killed_before_store => "before-store",
    killed_after_store => "after-store",
);

/// xorshift64*: enough randomness to pick kill points, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

#[test]
fn two_hundred_kills_at_random_points() {
    let Some(env) = Env::new("crash_random") else {
        return;
    };
    let w = World::new(env);
    // Which failpoints each direction reaches, in order, from clean runs.
    let log = w.env.dir.join("failpoints.log");
    let log_s = log.to_str().expect("utf-8 path").to_owned();
    let mut hits: [Vec<String>; 2] = Default::default();
    for to in [1, 0] {
        let _ = std::fs::remove_file(&log);
        w.env.write("10.yaml", &w.configs[to]);
        let run = w
            .env
            .kfd_with_env(&["apply"], &[(failpoint::LOG_ENV, log_s.as_str())]);
        assert_eq!(run.code, 0, "{run:?}");
        hits[to] = std::fs::read_to_string(&log)
            .expect("failpoint log")
            .lines()
            .map(str::to_owned)
            .collect();
        assert!(!hits[to].is_empty(), "no failpoint reached");
    }
    let seed = std::env::var("KFD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("random kill points from seed {seed} (rerun with KFD_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let flow = Flow::start(&w.env);
    let mut points = BTreeSet::new();
    for i in 0..200 {
        let to = 1 - i % 2; // A → B first
        let seq = &hits[to];
        let k = rng.below(seq.len());
        let name = &seq[k];
        let nth = seq[..=k].iter().filter(|n| *n == name).count();
        let point = format!("{name}#{nth}");
        let what = format!(
            "kill {i} (seed {seed}) at {point} of {}",
            ["B → A", "A → B"][to]
        );
        assert!(
            w.kill_and_recover(to, &[(failpoint::ENV, point.as_str())], &what),
            "{what}: not reached"
        );
        points.insert((to, point));
    }
    flow.assert_nothing_lost(&format!("200 random kills (seed {seed})"));
    eprintln!(
        "200 kills at {} distinct points of {} + {} survived",
        points.len(),
        hits[1].len(),
        hits[0].len()
    );
}
