//! Faults outside the config file (issue 12): names that hold control
//! characters, namespace paths that are not namespaces (a FIFO, a regular
//! file), a bpffs root another user made, a config dir swapped as a
//! symlink, an interface renamed under a live chain. For each: the error
//! names its cause exactly, nothing hangs, and nothing live is removed.
//! Each case runs the real `kfd` binary against a test-made namespace pair.

use kfd_tests::Env;

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
