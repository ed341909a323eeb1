//! Benchmark of `kfd run` (as root, release build):
//!
//! ```text
//! cargo build --release --workspace && ./target/release/kfd-bench-daemon [--changes N] [--debounce 200ms]
//! ```
//!
//! With the daemon running on the example configuration
//! (`examples/config.d`, moved onto a test-made veth in a namespace):
//!
//! - **idle**: CPU time (utime + stime from /proc/PID/stat) over 10 s with
//!   nothing happening, and resident memory;
//! - **latency**: from the `rename()` of a file that changes one map entry
//!   to the entry being visible in the pinned kernel map (polled), over N
//!   changes (default 200): p50, p99, max;
//! - **storm**: 1,000 writes in 1 s (renames and in-place writes
//!   alternating) to one file: the time until the map holds the final
//!   content, and how many passes the daemon ran (from its metrics).
//!
//! Figures drift with the machine.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kfd_tests::{Daemon, Env, reconciler, wait_until};
use reconciler::kernel::map::ByteMap;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/config.d");
const BLOCKLIST: &str = "10-blocklist.yaml";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let changes: usize = arg("--changes").and_then(|n| n.parse().ok()).unwrap_or(200);
    let debounce = arg("--debounce").unwrap_or_else(|| "200ms".into());
    let debounce_ms = reconciler::daemon::parse_duration(&debounce)
        .expect("--debounce")
        .as_secs_f64()
        * 1e3;

    let Some(env) = Env::new("bench-daemon") else {
        eprintln!("kfd-bench-daemon needs root and bpffs");
        std::process::exit(1);
    };
    // The example configuration, on this Env's receiver.
    for entry in fs::read_dir(EXAMPLES).expect("examples/config.d") {
        let entry = entry.expect("examples/config.d");
        let text = fs::read_to_string(entry.path()).expect("example file");
        let text = text
            .replace("kfd-demo-edge", &env.ns_b)
            .replace("edge0", &env.if_b);
        fs::write(env.conf().join(entry.file_name()), text).expect("config file");
    }
    let base = fs::read_to_string(env.conf().join(BLOCKLIST)).expect("blocklist example");
    assert!(
        base.contains("192.0.2.66"),
        "the example's single-host entry"
    );

    let d = env.daemon(&["--debounce", &debounce]);
    println!("kfd run on examples/config.d, debounce {debounce}");
    idle(&d);
    latency(&env, &d, &base, changes, debounce_ms);
    storm(&env, &d, &base);
    // The Env's drop runs `kfd down`; stop the daemon first.
    drop(d);
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which ends with ')'.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn status_kib(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/PID/status")
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn idle(d: &Daemon) {
    // SAFETY: sysconf has no failure mode for _SC_CLK_TCK.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    std::thread::sleep(Duration::from_secs(1));
    let (t0, c0) = (Instant::now(), cpu_ticks(d.pid()));
    std::thread::sleep(Duration::from_secs(10));
    let (secs, ticks) = (t0.elapsed().as_secs_f64(), cpu_ticks(d.pid()) - c0);
    println!(
        "idle: {:.2}% CPU over {secs:.1} s ({ticks} ticks at {hz} Hz); RSS {:.1} MiB (peak {:.1} MiB during the first pass); {} threads",
        ticks as f64 / hz / secs * 100.0,
        status_kib(d.pid(), "VmRSS:") as f64 / 1024.0,
        status_kib(d.pid(), "VmHWM:") as f64 / 1024.0,
        threads(d.pid()),
    );
}

fn threads(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The example blocklist with its single-host entry replaced by `host`.
fn with_host(base: &str, host: [u8; 4]) -> String {
    base.replace(
        "192.0.2.66",
        &format!("{}.{}.{}.{}", host[0], host[1], host[2], host[3]),
    )
}

fn key(host: [u8; 4]) -> Vec<u8> {
    [&32u32.to_ne_bytes()[..], &host].concat()
}

/// Writes the blocklist file the Ansible/Puppet way: a temp file, then a rename.
fn write_renamed(conf: &Path, text: &str) -> Instant {
    let tmp = conf.join(format!(".{BLOCKLIST}.tmp"));
    fs::write(&tmp, text).expect("temp file");
    let t = Instant::now();
    fs::rename(&tmp, conf.join(BLOCKLIST)).expect("rename");
    t
}

fn deny_map(env: &Env) -> ByteMap {
    env.map("edge-blocklist", "maps", "deny_v4")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn latency(env: &Env, d: &Daemon, base: &str, n: usize, debounce_ms: f64) {
    let map = deny_map(env);
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let host = [198, 18, (i / 250) as u8, (i % 250 + 1) as u8];
        let mark = d.mark();
        let t = write_renamed(&env.conf(), &with_host(base, host));
        let k = key(host);
        let seen = loop {
            if map.lookup_raw(&k).expect("lookup").is_some() {
                break t.elapsed();
            }
            if t.elapsed() > Duration::from_secs(10) {
                panic!("change {i} not visible after 10 s:\n{}", d.log());
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        ms.push(seen.as_secs_f64() * 1e3);
        // Let the pass finish before the next change.
        d.next_pass(mark);
    }
    ms.sort_by(f64::total_cmp);
    let p99 = percentile(&ms, 0.99);
    println!(
        "latency (rename -> entry in the kernel map), {n} changes: p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms; target p99 <= debounce + 20 = {:.0} ms: {}",
        percentile(&ms, 0.5),
        ms[ms.len() - 1],
        debounce_ms + 20.0,
        if p99 <= debounce_ms + 20.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn reconciles(d: &Daemon) -> f64 {
    d.scrape()
        .lines()
        .filter(|l| l.starts_with("kfd_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn storm(env: &Env, d: &Daemon, base: &str) {
    let map = deny_map(env);
    let before = reconciles(d);
    let target = env.conf().join(BLOCKLIST);
    let start = Instant::now();
    let writes = 1000;
    let mut last = start;
    for i in 0..writes {
        // Paced: write i at i ms.
        let due = start + Duration::from_millis(i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let host = [198, 19, (i / 250) as u8, (i % 250 + 1) as u8];
        let text = with_host(base, host);
        last = if i % 2 == 0 {
            write_renamed(&env.conf(), &text)
        } else {
            // In place: truncate, then write (cp, tee, vim).
            fs::write(&target, &text).expect("in-place write");
            Instant::now()
        };
    }
    let spent = start.elapsed();
    let final_key = key([
        198,
        19,
        ((writes - 1) / 250) as u8,
        ((writes - 1) % 250 + 1) as u8,
    ]);
    let converged = wait_until(Duration::from_secs(30), || {
        map.lookup_raw(&final_key).expect("lookup").is_some()
    });
    assert!(converged, "storm never converged:\n{}", d.log());
    let after_last = last.elapsed();
    // Let any trailing pass finish, then count.
    std::thread::sleep(Duration::from_secs(2));
    let entries = map.read_all().expect("read deny_v4");
    let stray = entries
        .iter()
        .filter(|(k, _)| k[4..6] == [198, 19] && *k != &final_key[..])
        .count();
    assert_eq!(stray, 0, "storm entries left behind");
    println!(
        "storm: {writes} writes in {:.2} s (renames and in-place writes alternating) -> final content in the kernel {:.0} ms after the last write, in {} reconcile passes",
        spent.as_secs_f64(),
        after_last.as_secs_f64() * 1e3,
        reconciles(d) - before
    );
}
