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
