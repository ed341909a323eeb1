//! Faults outside the config file (issue 12): names that hold control
//! characters, namespace paths that are not namespaces (a FIFO, a regular
//! file), a bpffs root another user made, a config dir swapped as a
//! symlink, an interface renamed under a live chain. For each: the error
//! names its cause exactly, nothing hangs, and nothing live is removed.
//! Each case runs the real `kfd` binary against a test-made namespace pair.

use std::path::Path;
use std::time::Duration;

use kfd_tests::{A4, Env};

const DENIED: &str = "203.0.113.7";
/// Long enough for any kfd run here; a kfd still running then has hung.
const HANG: Duration = Duration::from_secs(30);

/// A config file name holding an escape sequence and a newline.
const BAD_FILE: &str = "bad\u{1b}[31m\nname.yaml";
/// [`BAD_FILE`] as kfd prints it.
const BAD_FILE_SHOWN: &str = "bad\\u{1b}[31m\\nname.yaml";

/// A function on `kt\x01x`, which Linux accepts as an interface name.
fn odd_interface_config(env: &Env) -> String {
    format!(
        "version: 1\nfunctions:\n  - name: edge\n    interface: \"kt\\x01x\"\n    netns: {ns}\n    hook: xdp\n    program: {{builtin: counter}}\n",
        ns = env.ns_b
    )
}

#[test]
fn control_characters_in_names_print_escaped() {
    let env = kfd_tests::test_env!();
    env.write("10-odd.yaml", &odd_interface_config(&env));
    env.write(BAD_FILE, "version: 2\n");
    let raw = |text: &str| text.contains(['\u{1b}', '\u{1}', '\r']) || text.contains("[31m\n");

    let r = env.kfd(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        !raw(&r.stdout) && !raw(&r.stderr),
        "a raw control character: {r:?}"
    );
    let stdout: Vec<&str> = r.stdout.lines().collect();
    for line in [
        format!("+++ b/{BAD_FILE_SHOWN}"),
        format!("chain kt\\u{{1}}x xdp (netns {}):", env.ns_b),
        format!(
            "  ! blocked: interface kt\\u{{1}}x does not exist in netns {}: chain not converged",
            env.ns_b
        ),
    ] {
        assert!(
            stdout.contains(&line.as_str()),
            "{line:?} not printed: {r:?}"
        );
    }
    assert_eq!(
        r.stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "{}:1:10: version: 1 was expected",
                env.conf().join(BAD_FILE_SHOWN).display()
            ),
            format!("kfd: {BAD_FILE_SHOWN}: invalid and never applied; it contributes nothing"),
        ]
    );

    // The daemon logs the same follow-up line, escaped.
    let d = env.daemon(&["--resync-interval", "0"]);
    d.expect_log(
        0,
        &format!(
            "{}: invalid and never applied; it contributes nothing",
            env.conf().join(BAD_FILE_SHOWN).display()
        ),
    );
    d.expect_log(0, "kt\\u{1}x xdp (netns ");
    assert!(
        !raw(&d.log()),
        "a raw control character in the log:\n{}",
        d.log()
    );
}

/// A second file placing a function in the namespace at `netns`.
fn function_in_netns(env: &Env, netns: &Path) -> String {
    format!(
        "version: 1\nfunctions:\n  - name: other\n    interface: {ifb}\n    netns: {ns}\n    hook: tc-ingress\n    program: {{builtin: counter}}\n",
        ifb = env.if_b,
        ns = netns.display()
    )
}

/// Datagrams from `src` that got through, after sending `n`.
fn delivered(env: &Env, src: &str, n: u32) -> usize {
    let rx = env.receiver();
    assert_eq!(env.send(src, n), n);
    // Returns as soon as all n arrived; drops never arrive, so those wait it out.
    rx.wait_for(src, n as usize, Duration::from_secs(1))
}

#[test]
fn a_namespace_path_that_is_no_namespace_fails_at_once_and_hangs_nothing() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge", &["203.0.113.0/24"]),
    );
    env.apply();
    let fifo = env.dir.join("ns.fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let file = env.dir.join("passwd");
    std::fs::write(&file, "root:x:0:0::/root:/bin/sh\n").expect("write");
    for (netns, what) in [(&fifo, "a FIFO"), (&file, "a regular file")] {
        env.write("20-other.yaml", &function_in_netns(&env, netns));
        let want = format!("{}: not a network namespace: {what}", netns.display());
        // Opening a FIFO used to block forever, holding the root's lock.
        for args in [&["apply"][..], &["plan"], &["status"]] {
            let r = env.kfd_within(HANG, args);
            if args != ["status"] {
                assert_eq!(r.code, 1, "{args:?}: {r:?}");
                assert!(r.stderr.contains(&want), "{args:?}: {want:?} not in {r:?}");
            } else {
                assert_eq!(r.code, 0, "{args:?}: {r:?}");
            }
        }
        // The live chain is as it was, and filters.
        assert_eq!(
            env.deny_v4("edge"),
            Some(["203.0.113.0/24".to_owned()].into())
        );
        assert_eq!(delivered(&env, DENIED, 10), 0);
        assert_eq!(delivered(&env, A4, 10), 10);
    }
    // SIGTERM ends a daemon whose pass meets the FIFO.
    env.write("20-other.yaml", &function_in_netns(&env, &fifo));
    let mut d = env.daemon(&["--resync-interval", "0"]);
    d.expect_log(
        0,
        &format!("{}: not a network namespace: a FIFO", fifo.display()),
    );
    assert_eq!(d.stop(libc::SIGTERM), Some(0));
}

#[test]
fn a_namespace_path_others_can_change_is_refused_until_fixed() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge", &["203.0.113.0/24"]),
    );
    env.apply();
    // The receiver's namespace, through a symlink in a dir anyone can write
    // (and so point the symlink anywhere).
    let open = env.dir.join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let link = open.join("ns");
    std::os::unix::fs::symlink(env.ns_path(&env.ns_b), &link).expect("symlink");
    env.write("20-other.yaml", &function_in_netns(&env, &link));
    let r = env.kfd_within(HANG, &["apply"]);
    assert_eq!(r.code, 1, "{r:?}");
    let want = format!(
        "network namespace {}: its directory is writable by others (mode 0777, {}); \
         kfd enters only namespaces whose path nobody but root can change (fix the ownership/mode)",
        link.display(),
        open.display()
    );
    assert!(r.stderr.contains(&want), "{want:?} not in {r:?}");
    assert_eq!(delivered(&env, DENIED, 10), 0);
    // Fixed: the function is placed.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let r = env.kfd_within(HANG, &["apply"]);
    assert_eq!(r.code, 0, "{r:?}");
    let st = env.status();
    let placed = st["chains"].as_array().into_iter().flatten().any(|c| {
        c["hook"] == "tc-ingress"
            && c["netns"] == link.display().to_string()
            && c["attached"] == true
            && c["functions"][0]["name"] == "other"
    });
    assert!(placed, "{st}");
    assert_eq!(delivered(&env, DENIED, 10), 0);
}

/// TC chains beside the XDP one on the receiver: a clsact filter on
/// ingress, a TCX link on egress.
fn tc_counters_config(env: &Env) -> String {
    format!(
        "version: 1\nchains:\n  - {{interface: {ifb}, netns: {ns}, hook: tc-ingress, tc_attach: clsact, tc_priority: 7}}\n  - {{interface: {ifb}, netns: {ns}, hook: tc-egress, tc_attach: tcx}}\nfunctions:\n  - {{name: count-in, interface: {ifb}, netns: {ns}, hook: tc-ingress, program: {{builtin: counter}}}}\n  - {{name: count-out, interface: {ifb}, netns: {ns}, hook: tc-egress, program: {{builtin: counter}}}}\n",
        ifb = env.if_b,
        ns = env.ns_b
    )
}

/// The ifindex and XDP program ids of interface `name` in the receiver's namespace.
fn link_of(env: &Env, name: &str) -> (u64, Vec<u64>) {
    let out = kfd_tests::sh(&["ip", "-n", &env.ns_b, "-j", "-d", "link", "show", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    let mut ids: Vec<u64> = v[0]["xdp"]["attached"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["prog"]["id"].as_u64())
        .chain(v[0]["xdp"]["prog"]["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    (v[0]["ifindex"].as_u64().expect("ifindex"), ids)
}

/// Packets `count-in` counted so far.
fn counted(env: &Env) -> u64 {
    env.verdicts("count-in").values().sum()
}

#[test]
fn a_renamed_interface_keeps_its_chains_and_status_says_so() {
    let env = kfd_tests::test_env!();
    env.add_source(DENIED);
    env.write(
        "10-edge.yaml",
        &env.blocklist_config("edge", &["203.0.113.0/24"]),
    );
    env.write("20-tc.yaml", &tc_counters_config(&env));
    env.apply();
    let pins = kfd_tests::pins_under(&env.bpffs);
    let (ifindex, xdp) = link_of(&env, &env.if_b);
    assert_eq!(xdp.len(), 1, "{xdp:?}");

    let renamed = format!("{}r", env.if_b);
    let rename = |from: &str, to: &str| {
        kfd_tests::sh(&[
            "ip", "-n", &env.ns_b, "link", "set", "dev", from, "name", to,
        ]);
    };
    rename(&env.if_b, &renamed);
    // Every chain still runs on the interface, under its new name.
    let before = counted(&env);
    assert_eq!(delivered(&env, DENIED, 10), 0);
    assert_eq!(delivered(&env, A4, 10), 10);
    // TC ingress sees what XDP passed: the 10 allowed datagrams.
    assert!(counted(&env) >= before + 10, "count-in stopped counting");
    assert_eq!(link_of(&env, &renamed), (ifindex, xdp.clone()));

    // Status tells the truth: attached, to that ifindex, renamed.
    let st = env.status();
    let chains = st["chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 3, "{st}");
    for c in chains {
        assert_eq!(
            (
                &c["attached"],
                &c["ifindex"],
                &c["renamed_to"],
                &c["interface"]
            ),
            (
                &serde_json::json!(true),
                &serde_json::json!(ifindex),
                &serde_json::json!(renamed),
                &serde_json::json!(env.if_b)
            ),
            "{c}"
        );
    }
    let text = env.kfd(&["status"]).stdout;
    let tail = format!(
        "to ifindex {ifindex}, now named {renamed} (the config names {}; nothing changes until that name is back)",
        env.if_b
    );
    for head in [
        format!("{} xdp (netns {}): attached (generic) ", env.if_b, env.ns_b),
        format!(
            "{} tc-ingress (netns {}): attached (clsact, priority 7) ",
            env.if_b, env.ns_b
        ),
        format!(
            "{} tc-egress (netns {}): attached (tcx) ",
            env.if_b, env.ns_b
        ),
    ] {
        let line = format!("{head}{tail}");
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "{line:?} not in:\n{text}"
        );
    }

    // Nothing is removed or re-attached while the configured name is missing.
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let blocked = format!(
        "  ! blocked: interface {} does not exist in netns {}: chain not converged",
        env.if_b, env.ns_b
    );
    assert_eq!(plan.stdout.matches(&blocked).count(), 3, "{plan:?}");
    assert!(
        !plan.stdout.contains("  - ") && !plan.stdout.contains("  + "),
        "{plan:?}"
    );
    let apply = env.kfd(&["apply"]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert_eq!(kfd_tests::pins_under(&env.bpffs), pins);
    assert_eq!(link_of(&env, &renamed), (ifindex, xdp.clone()));

    // The metric agrees (the daemon's listener in the sender's namespace).
    let d = env.daemon_in_sender_netns(&["--resync-interval", "0"]);
    for hook in ["xdp", "tc-ingress", "tc-egress"] {
        let series = format!(
            "kfd_chain_attached{{netns=\"{}\",interface=\"{}\",hook=\"{hook}\"}}",
            env.ns_b, env.if_b
        );
        assert_eq!(d.metric(&series), Some(1.0), "{series}: {}", d.scrape());
    }
    assert_eq!(kfd_tests::pins_under(&env.bpffs), pins);

    // The name comes back: in sync, nothing to do, still filtering.
    let mark = d.mark();
    rename(&renamed, &env.if_b);
    d.expect_log(mark, "link event");
    drop(d);
    let plan = env.kfd(&["plan"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.ends_with("in sync: nothing to do\n"),
        "{plan:?}"
    );
    assert_eq!(kfd_tests::pins_under(&env.bpffs), pins);
    assert_eq!(link_of(&env, &env.if_b), (ifindex, xdp));
    assert_eq!(delivered(&env, DENIED, 10), 0);
    let st = env.status();
    for c in st["chains"].as_array().expect("chains") {
        assert_eq!(c["renamed_to"], serde_json::Value::Null, "{c}");
    }
}
