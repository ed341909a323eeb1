//! Harness for kfd's kernel end-to-end tests.
//!
//! Every test gets its own pair of network namespaces joined by a veth
//! (sender `a`, receiver `b`, where kfd attaches), its own bpffs root and
//! its own config and state dirs; everything is removed on drop. Traffic
//! stays inside the pair. Tests run the real `kfd` binary.
//!
//! Without root or bpffs the tests skip, unless `KFD_REQUIRE_KERNEL_TESTS=1`
//! (CI sets it), which turns a skip into a failure.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use reconciler;
use reconciler::kernel::map::ByteMap;
use reconciler::kernel::netns;

pub mod census;

/// `let env = test_env!();` in a kernel test: the test's [`Env`], named after
/// the test's module path, or return from the test when kernel tests are
/// skipped (not root, no bpffs; [`Env::new`] panics instead when
/// `KFD_REQUIRE_KERNEL_TESTS=1`).
#[macro_export]
macro_rules! test_env {
    () => {
        match $crate::Env::new(module_path!()) {
            Some(env) => env,
            None => return,
        }
    };
}

/// Every path under `root` (pins and dirs), sorted: for before/after comparisons.
pub fn pins_under(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

include!(concat!(env!("OUT_DIR"), "/test_objects.rs"));

/// Set to 1 to make skipped kernel tests fail.
pub const REQUIRE_ENV: &str = "KFD_REQUIRE_KERNEL_TESTS";

/// The receiver's IPv4 address.
pub const B4: &str = "10.200.0.2";
/// The sender's main IPv4 address.
pub const A4: &str = "10.200.0.1";
/// The receiver's IPv6 address.
pub const B6: &str = "fd00:200::2";
/// The sender's main IPv6 address.
pub const A6: &str = "fd00:200::1";
/// UDP port the receiver listens on.
pub const PORT: u16 = 9999;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why kernel tests cannot run here, if they cannot.
fn missing_requirement() -> Option<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if let Err(e) = reconciler::kernel::bpffs::ensure_mounted() {
        return Some(format!("no bpffs: {e}"));
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` (iproute2)".into());
    }
    None
}

/// Runs every pending RCU callback now (`rcu_barrier()` through rcutree's
/// `do_rcu_barrier`), so objects the kernel frees after a grace period go
/// without waiting for lazy RCU's batching (up to 10 s). Harmless where
/// the knob is missing.
pub fn flush_rcu() {
    let _ = fs::write("/sys/module/rcutree/parameters/do_rcu_barrier", "1");
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kfd binary built alongside this program, if it exists.
fn find_kfd_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("KFD_BIN") {
        return Some(PathBuf::from(p));
    }
    // Test binaries live in target/<profile>/deps/, tools in target/<profile>/.
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("kfd"), dir.parent()?.join("kfd")]
        .into_iter()
        .find(|p| p.exists())
}

/// The kfd binary built alongside this program.
pub fn kfd_bin() -> PathBuf {
    find_kfd_bin().unwrap_or_else(|| panic!("the kfd binary was not found: build it first (`cargo build --workspace`), or set KFD_BIN"))
}

/// One test's world.
pub struct Env {
    /// Unique id.
    pub id: String,
    /// Sender namespace name.
    pub ns_a: String,
    /// Receiver namespace name (kfd attaches here).
    pub ns_b: String,
    /// Sender interface.
    pub if_a: String,
    /// Receiver interface.
    pub if_b: String,
    /// Scratch dir (config dir `conf/`, state dir `state/`).
    pub dir: PathBuf,
    /// kfd's bpffs root.
    pub bpffs: PathBuf,
    /// The hook of the receiver's chain that `chain_dir`, `map` and `pass`
    /// refer to: `xdp` unless a test picked another with `on_hook`.
    pub hook: &'static str,
}

/// A finished kfd run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if a signal ended it).
    pub code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("kfd output is not JSON ({e}): {self:?}"))
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        Self {
            code: o.status.code().unwrap_or(-1),
            signal: o.status.signal(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Env {
    /// A fresh world, or None (the test skips) without root/bpffs.
    pub fn new(test: &str) -> Option<Env> {
        if let Some(why) = missing_requirement() {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("kernel test {test} cannot run ({why}) but {REQUIRE_ENV}=1");
            }
            eprintln!("skipped {test}: {why}");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("kfdt-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("conf")).expect("temp dir");
        let env = Env {
            ns_a: format!("kfdt-{id}-a"),
            ns_b: format!("kfdt-{id}-b"),
            if_a: format!("kt{id}a"),
            if_b: format!("kt{id}b"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/kfdt-{id}")),
            dir,
            id,
            hook: "xdp",
        };
        env.setup_network();
        Some(env)
    }

    fn setup_network(&self) {
        sh(&["ip", "netns", "add", &self.ns_a]);
        sh(&["ip", "netns", "add", &self.ns_b]);
        self.create_link();
    }

    /// Deletes the veth pair (as an interface vanishing would).
    pub fn delete_link(&self) {
        sh(&["ip", "-n", &self.ns_b, "link", "del", &self.if_b]);
    }

    /// Creates the veth pair with its addresses, routes and neighbours
    /// (again, after `delete_link`: same names, new ifindexes).
    pub fn create_link(&self) {
        let (a, b, ia, ib) = (&self.ns_a, &self.ns_b, &self.if_a, &self.if_b);
        sh(&[
            "ip", "link", "add", ia, "netns", a, "type", "veth", "peer", "name", ib, "netns", b,
        ]);
        for (ns, ifn, v4, v6) in [(a, ia, A4, A6), (b, ib, B4, B6)] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                ifn,
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifn,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", ifn, "up"]);
        }
        // Replies are never needed, but the receiver must accept any source.
        sh(&["ip", "-n", b, "route", "add", "default", "dev", ib]);
        sh(&["ip", "-n", b, "-6", "route", "add", "default", "dev", ib]);
        // Static neighbours: no ARP/ND, so a drop is always the chain's doing.
        let mac_b = self.mac(b, ib);
        sh(&[
            "ip",
            "-n",
            a,
            "neigh",
            "replace",
            B4,
            "lladdr",
            &mac_b,
            "dev",
            ia,
            "nud",
            "permanent",
        ]);
        sh(&[
            "ip",
            "-n",
            a,
            "neigh",
            "replace",
            B6,
            "lladdr",
            &mac_b,
            "dev",
            ia,
            "nud",
            "permanent",
        ]);
        // A queue on the sender's veth. Without one, a full receiver ring
        // (its NAPI not scheduled in time on a busy machine) makes the veth
        // drop; with one, the veth holds packets back in it (backpressure,
        // Linux >= 6.16), and a full queue fails the sender's sendto, which
        // is not counted as sent. Either way a lost packet is the chain's.
        sh(&[
            "tc", "-n", a, "qdisc", "replace", "dev", ia, "root", "pfifo", "limit", "10000",
        ]);
    }

    fn mac(&self, ns: &str, ifn: &str) -> String {
        let out = sh(&["ip", "-n", ns, "-j", "link", "show", ifn]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
        v[0]["address"].as_str().expect("mac").to_owned()
    }

    /// Adds a source address to the sender (e.g. a documentation address to deny).
    pub fn add_source(&self, addr: &str) {
        let plen = if addr.contains(':') { "128" } else { "32" };
        let mut args = vec!["ip", "-n", &self.ns_a, "addr", "add"];
        let a = format!("{addr}/{plen}");
        args.push(&a);
        args.extend(["dev", &self.if_a]);
        if addr.contains(':') {
            args.push("nodad");
        }
        sh(&args);
    }

    /// The config dir.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// Writes a config file (atomically, as config tools do).
    pub fn write(&self, name: &str, content: &str) {
        let tmp = self.conf().join(format!(".{name}.tmp"));
        fs::write(&tmp, content).expect("write config");
        fs::rename(&tmp, self.conf().join(name)).expect("rename config");
    }

    /// Removes a config file.
    pub fn remove(&self, name: &str) {
        fs::remove_file(self.conf().join(name)).expect("remove config");
    }

    /// Runs kfd with this world's dirs.
    pub fn kfd(&self, args: &[&str]) -> Run {
        self.kfd_with_env(args, &[])
    }

    /// [`Env::kfd`] with extra environment variables.
    pub fn kfd_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        Command::new(kfd_bin())
            .arg("--config-dir")
            .arg(self.conf())
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(args)
            .envs(vars.iter().copied())
            .output()
            .expect("running kfd")
            .into()
    }

    /// [`Env::kfd`], but a kfd that has not exited after `limit` is killed
    /// and the test fails: for faults that used to hang kfd.
    pub fn kfd_within(&self, limit: Duration, args: &[&str]) -> Run {
        let n = DAEMONS.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.join(format!("kfd-{n}.stdout"));
        let err_path = self.dir.join(format!("kfd-{n}.stderr"));
        let mut child = Command::new(kfd_bin())
            .arg("--config-dir")
            .arg(self.conf())
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(&out_path).expect("stdout file"))
            .stderr(fs::File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("running kfd");
        let mut status = None;
        let exited = wait_until(limit, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kfd {args:?} still running after {limit:?} (killed); stdout: {} stderr: {}",
                read(&out_path),
                read(&err_path)
            );
        }
        use std::os::unix::process::ExitStatusExt as _;
        let status = status.expect("exited");
        Run {
            code: status.code().unwrap_or(-1),
            signal: status.signal(),
            stdout: read(&out_path),
            stderr: read(&err_path),
        }
    }

    /// `kfd apply`, asserting success.
    pub fn apply(&self) -> Run {
        let r = self.kfd(&["apply", "--output", "json"]);
        assert_eq!(r.code, 0, "kfd apply failed: {r:?}");
        r
    }

    /// `kfd status --output json`.
    pub fn status(&self) -> serde_json::Value {
        let r = self.kfd(&["status", "--output", "json"]);
        assert_eq!(r.code, 0, "kfd status failed: {r:?}");
        r.json()
    }

    /// Verdict counters of a function on the receiver's XDP chain.
    pub fn verdicts(&self, function: &str) -> std::collections::BTreeMap<String, u64> {
        let st = self.status();
        let f = st["chains"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["functions"].as_array().cloned().unwrap_or_default())
            .find(|f| f["name"] == function)
            .unwrap_or_else(|| panic!("function {function} not in status: {st}"));
        serde_json::from_value(f["verdicts"].clone()).expect("verdict map")
    }

    /// Function names in the chain, in slot order.
    pub fn slots(&self) -> Vec<String> {
        let st = self.status();
        st["chains"][0]["functions"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| f["name"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Points `chain_dir`, `map` and `pass` at the receiver's chain on `hook`.
    pub fn on_hook(mut self, hook: &'static str) -> Self {
        self.hook = hook;
        self
    }

    /// The verdict name under which the receiver chain counts "go on":
    /// `pass` (XDP_PASS) on XDP, `unspec` (TC_ACT_UNSPEC) on TC.
    pub fn pass(&self) -> &'static str {
        if self.hook == "xdp" { "pass" } else { "unspec" }
    }

    /// The receiver chain's bpffs dir.
    pub fn chain_dir(&self) -> PathBuf {
        self.chain_dir_of(self.hook, &self.if_b, &self.ns_b)
    }

    /// The bpffs dir of a chain on `hook` of `interface` in `netns`.
    pub fn chain_dir_of(&self, hook: &str, interface: &str, netns: &str) -> PathBuf {
        self.bpffs.join(format!("{hook}@{interface}@{netns}"))
    }

    /// Opens a pinned map of a function on any chain (`maps/` or `state/`).
    pub fn map_in(&self, chain_dir: &Path, function: &str, role: &str, map: &str) -> ByteMap {
        let p = chain_dir.join("fn").join(function).join(role).join(map);
        ByteMap::from_pin(&p).unwrap_or_else(|e| panic!("opening {}: {e}", p.display()))
    }

    /// Opens a pinned map of a function (`maps/` or `state/`).
    pub fn map(&self, function: &str, role: &str, map: &str) -> ByteMap {
        let p = self
            .chain_dir()
            .join("fn")
            .join(function)
            .join(role)
            .join(map);
        ByteMap::from_pin(&p).unwrap_or_else(|e| panic!("opening {}: {e}", p.display()))
    }

    /// The sender's namespace file.
    pub fn ns_path(&self, ns: &str) -> PathBuf {
        netns::netns_path(ns)
    }

    /// Sends `count` UDP datagrams from `src` to the receiver; returns how many the kernel took.
    pub fn send(&self, src: &str, count: u32) -> u32 {
        let src: IpAddr = src.parse().expect("source address");
        let dst: IpAddr = if src.is_ipv6() {
            B6.parse().expect("v6")
        } else {
            B4.parse().expect("v4")
        };
        send(&self.ns_path(&self.ns_a), src, dst, count)
    }

    /// Starts a receiver on the receiver side counting datagrams per source.
    pub fn receiver(&self) -> Receiver {
        Receiver::start(self.ns_path(&self.ns_b))
    }

    /// Starts a paced, sequence-numbered UDP flow from `src`.
    pub fn flow(&self, src: &str, pps: u32) -> Flow {
        Flow::start(self.ns_path(&self.ns_a), src.parse().expect("source"), pps)
    }

    /// Counters of every place outside the chain where the kernel drops a
    /// datagram between the flow's socket and the receiver's: the sending
    /// veth (a full peer ring), the receiving veth, and the receiver's UDP
    /// layer (a full socket buffer). A loss the chain did not cause shows up
    /// here.
    pub fn drop_counters(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (ns, dev, side) in [
            (&self.ns_a, &self.if_a, "sender"),
            (&self.ns_b, &self.if_b, "receiver"),
        ] {
            let json = sh(&["ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev]);
            let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j link");
            for dir in ["tx", "rx"] {
                let n = v[0]["stats64"][dir]["dropped"].as_u64().unwrap_or(0);
                out.insert(format!("{side} veth {dev} {dir}_dropped"), n);
            }
        }
        let snmp = sh(&["ip", "netns", "exec", &self.ns_b, "cat", "/proc/net/snmp"]);
        let udp: Vec<Vec<&str>> = snmp
            .lines()
            .filter(|l| l.starts_with("Udp: "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        if let [names, values] = &udp[..] {
            for (n, v) in names.iter().zip(values).skip(1) {
                if n.ends_with("Errors") {
                    out.insert(format!("receiver Udp {n}"), v.parse().unwrap_or(0));
                }
            }
        }
        // The per-CPU backlog (generic XDP and the stack queue there); machine-wide.
        let softnet = fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
        let backlog: u64 = softnet
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|h| u64::from_str_radix(h, 16).ok())
            .sum();
        out.insert("machine backlog (softnet_stat) dropped".into(), backlog);
        out
    }

    /// Writes a test-only object (from `tests/bpf/`) into the scratch dir and
    /// returns its path, as a config's `object:` would name it.
    pub fn test_object(&self, name: &str) -> PathBuf {
        let bytes = TEST_OBJECTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .unwrap_or_else(|| panic!("no test object {name}"));
        let path = self.dir.join(format!("{name}.bpf.o"));
        fs::write(&path, bytes).expect("write test object");
        path
    }

    /// Attaches a foreign XDP program to the receiver's interface with `ip`
    /// (as another tool would), from the bench baseline object.
    pub fn attach_foreign_xdp(&self) -> PathBuf {
        let obj = self.dir.join("foreign.bpf.o");
        let bytes =
            reconciler::builtin::object(reconciler::builtin::ObjectKind::Bench, "monolithic")
                .expect("bench object");
        fs::write(&obj, bytes).expect("write object");
        sh(&[
            "ip",
            "-n",
            &self.ns_b,
            "link",
            "set",
            "dev",
            &self.if_b,
            "xdpgeneric",
            "obj",
            obj.to_str().expect("utf8"),
            "sec",
            "xdp",
        ]);
        obj
    }

    /// Ids of the XDP programs attached to the receiver's interface.
    pub fn xdp_prog_ids(&self) -> Vec<u32> {
        let out = sh(&[
            "ip", "-n", &self.ns_b, "-j", "-d", "link", "show", &self.if_b,
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
        let xdp = &v[0]["xdp"];
        let mut ids = Vec::new();
        if let Some(id) = xdp["prog"]["id"].as_u64() {
            ids.push(id as u32);
        }
        for a in xdp["attached"].as_array().into_iter().flatten() {
            if let Some(id) = a["prog"]["id"].as_u64() {
                ids.push(id as u32);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort and never panicking (this may run while unwinding), in
        // an order that cannot leave pins behind.
        if let Some(bin) = find_kfd_bin() {
            let _ = Command::new(bin)
                .arg("--config-dir")
                .arg(self.conf())
                .arg("--bpffs")
                .arg(&self.bpffs)
                .arg("--state-dir")
                .arg(self.dir.join("state"))
                .arg("down")
                .output();
        }
        let _ = fs::remove_dir_all(&self.bpffs);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_a])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_b])
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends `count` sequence-numbered UDP datagrams from `src` to `dst` inside
/// namespace `ns`; returns how many the kernel accepted.
pub fn send(ns: &Path, src: IpAddr, dst: IpAddr, count: u32) -> u32 {
    netns::run_in(Some(ns), || {
        let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind sender");
        let mut sent = 0;
        for i in 0..count {
            if sock
                .send_to(&(i as u64).to_be_bytes(), SocketAddr::new(dst, PORT))
                .is_ok()
            {
                sent += 1;
            }
        }
        sent
    })
    .expect("netns")
}

/// A UDP receiver in a namespace, counting datagrams per source address and
/// tracking sequence numbers.
pub struct Receiver {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<std::collections::BTreeMap<IpAddr, Vec<u64>>>>,
    handle: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts receiving on port [`PORT`] (v4 and v6) inside namespace `ns`.
    pub fn start(ns: PathBuf) -> Receiver {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || {
                let _ = netns::run_in(Some(&ns), || {
                    let v4 = UdpSocket::bind(("0.0.0.0", PORT)).expect("bind v4");
                    let v6 = socket2_v6only();
                    for s in [&v4, &v6] {
                        s.set_nonblocking(true).expect("nonblocking");
                        // A drop in our own socket must never look like kfd's.
                        big_receive_buffer(s);
                    }
                    let _ = ready_tx.send(());
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        wait_readable(&[&v4, &v6], 20);
                        for s in [&v4, &v6] {
                            while let Ok((n, from)) = s.recv_from(&mut buf) {
                                let seq = if n >= 8 {
                                    u64::from_be_bytes(buf[..8].try_into().expect("8"))
                                } else {
                                    0
                                };
                                counts
                                    .lock()
                                    .expect("lock")
                                    .entry(from.ip())
                                    .or_insert_with(Vec::new)
                                    .push(seq);
                            }
                        }
                    }
                });
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("receiver ready");
        Receiver {
            stop,
            counts,
            handle: Some(handle),
        }
    }

    /// Datagrams received from `src` so far.
    pub fn count(&self, src: &str) -> usize {
        let ip: IpAddr = src.parse().expect("address");
        self.counts
            .lock()
            .expect("lock")
            .get(&ip)
            .map_or(0, Vec::len)
    }

    /// Waits until `n` datagrams from `src` arrived (or the timeout passed), returns the count.
    pub fn wait_for(&self, src: &str, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.count(src) < n {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.count(src)
    }

    /// Sequence numbers received from `src`.
    pub fn sequences(&self, src: &str) -> Vec<u64> {
        let ip: IpAddr = src.parse().expect("address");
        self.counts
            .lock()
            .expect("lock")
            .get(&ip)
            .cloned()
            .unwrap_or_default()
    }
}

/// 16 MiB of receive buffer (SO_RCVBUFFORCE: root may exceed rmem_max).
fn big_receive_buffer(s: &UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on a valid socket with a valid int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Waits until one of the sockets is readable, or `ms` passed.
fn wait_readable(socks: &[&UdpSocket], ms: i32) {
    use std::os::fd::AsRawFd as _;
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: fds is a valid array of pollfd for its length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

fn socket2_v6only() -> UdpSocket {
    // std binds [::] dual-stack by default; v4 is already taken by the v4
    // socket, so bind v6-only through libc.
    // SAFETY: plain socket calls on a fresh fd, checked below.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
        addr.sin6_family = libc::AF_INET6 as u16;
        addr.sin6_port = PORT.to_be();
        let rc = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        );
        assert_eq!(rc, 0, "bind v6: {}", std::io::Error::last_os_error());
        std::os::fd::FromRawFd::from_raw_fd(fd)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The most datagrams a flow sends back to back.
const MAX_BURST: u64 = 32;

/// A paced UDP flow with sequence numbers, from one source.
pub struct Flow {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// When each sequence number left the socket.
    times: Arc<Mutex<Vec<Instant>>>,
    handle: Option<JoinHandle<()>>,
}

impl Flow {
    fn start(ns: PathBuf, src: IpAddr, pps: u32) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let times = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, sent, times) = (stop.clone(), sent.clone(), times.clone());
            std::thread::spawn(move || {
                let _ = netns::run_in(Some(&ns), || {
                    let dst: IpAddr = if src.is_ipv6() {
                        B6.parse().expect("v6")
                    } else {
                        B4.parse().expect("v4")
                    };
                    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind flow");
                    let start = Instant::now();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Pace: keep seq at pps × elapsed, but after this
                        // thread was starved catch up in bursts of at most
                        // MAX_BURST: one burst larger than a veth's ring (256)
                        // would be dropped by the veth, not by the chain.
                        let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
                        let due = due.min(seq + MAX_BURST);
                        while seq < due {
                            if sock
                                .send_to(&seq.to_be_bytes(), SocketAddr::new(dst, PORT))
                                .is_ok()
                            {
                                times.lock().expect("lock").push(Instant::now());
                                seq += 1;
                                sent.store(seq, Ordering::Relaxed);
                            } else {
                                break;
                            }
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                });
            })
        };
        Flow {
            stop,
            sent,
            times,
            handle: Some(handle),
        }
    }

    /// Stops the flow and returns the send time of every sequence number.
    pub fn stop_with_times(mut self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        std::mem::take(&mut *self.times.lock().expect("lock"))
    }

    /// Stops the flow and returns how many datagrams it sent (seq 0..n).
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// `kfd run`: the daemon as a child of a test.
// ---------------------------------------------------------------------------

static DAEMONS: AtomicU32 = AtomicU32::new(0);

/// Polls `f` every 10 ms until it holds or `timeout` passed; returns whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `kfd run` with this world's dirs; stopped (SIGTERM, then
/// SIGKILL) on drop. Its stdout and stderr go to a log file in the scratch dir.
pub struct Daemon {
    child: std::process::Child,
    log: PathBuf,
    /// The namespace kfd runs in, when not the test's own.
    netns: Option<PathBuf>,
}

impl Env {
    /// Starts `kfd run` (metrics on a free loopback port, logs to stderr,
    /// a 100 ms quiet window unless `args` say otherwise) and waits for its
    /// first pass.
    pub fn daemon(&self, args: &[&str]) -> Daemon {
        self.daemon_with_env(args, &[])
    }

    /// [`Env::daemon`] with extra environment variables.
    pub fn daemon_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Daemon {
        self.spawn_daemon(args, vars, None)
    }

    /// [`Env::daemon`] with kfd itself in the sender's namespace, so its
    /// metrics listener (on that namespace's loopback) sees only this
    /// test's clients. [`Daemon::connect_metrics`] connects there.
    pub fn daemon_in_sender_netns(&self, args: &[&str]) -> Daemon {
        self.spawn_daemon(args, &[], Some(self.ns_path(&self.ns_a)))
    }

    fn spawn_daemon(&self, args: &[&str], vars: &[(&str, &str)], netns: Option<PathBuf>) -> Daemon {
        let n = DAEMONS.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.join(format!("kfd-run-{n}.log"));
        let out = fs::File::create(&log).expect("daemon log");
        let err = out.try_clone().expect("daemon log");
        let mut cmd = Command::new(kfd_bin());
        cmd.arg("--config-dir")
            .arg(self.conf())
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("run");
        for (flag, default) in [
            ("--metrics-address", "127.0.0.1:0"),
            ("--log-target", "stderr"),
            ("--debounce", "100ms"),
        ] {
            if !args.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        cmd.args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .envs(vars.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        // Opened here, entered in the child between fork and exec (the fd
        // is close-on-exec, so kfd does not inherit it).
        let ns_file = netns
            .as_ref()
            .map(|p| fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        if let Some(f) = &ns_file {
            use std::os::fd::AsRawFd as _;
            use std::os::unix::process::CommandExt as _;
            let fd = f.as_raw_fd();
            // SAFETY: setns is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let d = Daemon {
            child: cmd.spawn().expect("starting kfd run"),
            log,
            netns,
        };
        d.expect_log(0, "reconcile #1 ");
        d
    }

    /// The entries of a blocklist function's `deny_v4` map as CIDRs, or
    /// None when the function (or its map) is not pinned.
    pub fn deny_v4(&self, function: &str) -> Option<std::collections::BTreeSet<String>> {
        let p = self
            .chain_dir()
            .join("fn")
            .join(function)
            .join("maps")
            .join("deny_v4");
        let map = ByteMap::from_pin(&p).ok()?;
        let set = map.read_all().ok()?;
        Some(
            set.iter()
                .map(|(k, _)| {
                    let len = u32::from_ne_bytes(k[..4].try_into().expect("prefixlen"));
                    format!("{}.{}.{}.{}/{len}", k[4], k[5], k[6], k[7])
                })
                .collect(),
        )
    }

    /// A config with one blocklist function `name` on the receiver, denying `deny`.
    pub fn blocklist_config(&self, name: &str, deny: &[&str]) -> String {
        let mut s = format!(
            "version: 1\nchains:\n  - {{interface: {ifb}, netns: {ns}, hook: xdp, xdp_mode: generic}}\nfunctions:\n  - name: {name}\n    interface: {ifb}\n    netns: {ns}\n    hook: xdp\n    program: {{builtin: blocklist}}\n    maps:\n      deny_v4:\n        entries:",
            ifb = self.if_b,
            ns = self.ns_b
        );
        if deny.is_empty() {
            s.push_str(" []");
        }
        for d in deny {
            s.push_str(&format!("\n          - {{key: \"{d}\", value: 1}}"));
        }
        s.push('\n');
        s
    }
}

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's length now: pass it to [`Daemon::wait_log`] to look only
    /// at what is logged after this point.
    pub fn mark(&self) -> usize {
        self.log().len()
    }

    /// Waits (up to 20 s) for `needle` in the log after byte `from`.
    pub fn wait_log(&self, from: usize, needle: &str) -> bool {
        wait_until(Duration::from_secs(20), || {
            self.log().get(from..).is_some_and(|l| l.contains(needle))
        })
    }

    /// [`Daemon::wait_log`], panicking with the log if it never came.
    pub fn expect_log(&self, from: usize, needle: &str) {
        assert!(
            self.wait_log(from, needle),
            "{needle:?} not logged by kfd run; log:\n{}",
            self.log()
        );
    }

    /// Waits for the next pass that starts after `from` and ends, returning its summary line.
    pub fn next_pass(&self, from: usize) -> String {
        self.expect_log(from, "reconcile #");
        let log = self.log();
        let tail = &log[from..];
        let start = tail.find("reconcile #").unwrap_or(0);
        tail[start..].lines().next().unwrap_or_default().to_owned()
    }

    /// The metrics address, as logged at startup.
    pub fn metrics_address(&self) -> String {
        let log = self.log();
        let start = log
            .find("serving metrics on http://")
            .map(|i| i + "serving metrics on http://".len())
            .unwrap_or_else(|| panic!("no metrics address logged:\n{log}"));
        log[start..].split('/').next().expect("address").to_owned()
    }

    /// A connection to the metrics listener, made in kfd's namespace.
    pub fn connect_metrics(&self) -> std::net::TcpStream {
        let address = self.metrics_address();
        let connect = || std::net::TcpStream::connect(&address);
        let s = match &self.netns {
            Some(ns) => netns::run_in(Some(ns), connect).expect("entering kfd's namespace"),
            None => connect(),
        };
        s.unwrap_or_else(|e| panic!("connecting to metrics at {address}: {e}"))
    }

    /// GET /metrics.
    pub fn scrape(&self) -> String {
        use std::io::{Read as _, Write as _};
        let mut s = self.connect_metrics();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: kfd\r\n\r\n")
            .expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    }

    /// The value of one series (`name{labels}` exactly as exposed), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.scrape()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Sends `sig` (SIGTERM, SIGINT) and waits for the exit; returns the exit code.
    pub fn stop(&mut self, sig: i32) -> Option<i32> {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => panic!("kfd run did not exit on signal {sig}:\n{}", self.log()),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let exited = wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
