//! Real config clients against a running `kfd run`: `ansible-playbook`,
//! `puppet apply`, `salt-call --local`, and every way a shell tool writes a file (see
//! KERNEL-NOTES.md, "How real tools write a file"). After each write the
//! kernel's maps and slots are checked, and a bad or half-written file is
//! shown to never remove what is in force.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kfd_tests::{Daemon, Env, REQUIRE_ENV, kfd_bin, sh, wait_until};

const FN: &str = "edge";
const FILE: &str = "10-edge.yaml";

fn set(items: &[&str]) -> Option<BTreeSet<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

/// Waits until FN's deny_v4 holds exactly `want` (None: FN is not pinned).
fn wait_deny(env: &Env, d: &Daemon, want: Option<&[&str]>) {
    let want = want.and_then(set);
    assert!(
        wait_until(Duration::from_secs(20), || env.deny_v4(FN) == want),
        "deny_v4 is {:?}, want {want:?}; log:\n{}",
        env.deny_v4(FN),
        d.log()
    );
}

/// The program id in FN's slot: unchanged means FN was never removed and reloaded.
fn prog_id(env: &Env, function: &str) -> Option<u64> {
    env.status()["chains"][0]["functions"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == function)
        .and_then(|f| f["program"][0].as_u64())
}

fn counter_config(env: &Env, name: &str) -> String {
    format!(
        "version: 1\nfunctions:\n  - {{name: {name}, interface: {}, netns: {}, hook: xdp, priority: 500, program: {{builtin: counter}}}}\n",
        env.if_b, env.ns_b
    )
}

/// Whether a client tool is installed; a missing one fails under
/// KFD_REQUIRE_KERNEL_TESTS=1 (CI installs them) and skips otherwise.
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1"),
            "{tool} (Debian package {package}) is required with {REQUIRE_ENV}=1"
        );
        eprintln!("{tool} is not installed: skipped");
    }
    found
}

/// A started daemon with FN denying 203.0.113.0/24 in force.
fn started(env: &Env, args: &[&str]) -> Daemon {
    env.write(FILE, &env.blocklist_config(FN, &["203.0.113.0/24"]));
    let d = env.daemon(args);
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]), "{}", d.log());
    d
}

// ---------------------------------------------------------------------------
// Ansible
// ---------------------------------------------------------------------------

fn ansible(env: &Env, name: &str, tasks: &str) -> std::process::Output {
    let play = env.dir.join(format!("{name}.yml"));
    fs::write(
        &play,
        format!(
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n{tasks}"
        ),
    )
    .expect("playbook");
    let d = env.dir.display();
    Command::new("ansible-playbook")
        .args(["-i", "localhost,"])
        .arg(&play)
        .env("ANSIBLE_HOME", format!("{d}/ansible-home"))
        // Staged in another directory, then renamed into the config dir.
        .env("ANSIBLE_REMOTE_TMP", format!("{d}/ansible-tmp"))
        .env("ANSIBLE_LOCAL_TEMP", format!("{d}/ansible-local"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
        .env("ANSIBLE_LOCALHOST_WARNING", "False")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
        .output()
        .expect("running ansible-playbook")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn ansible_template_copy_validate_and_absent() {
    let env = kfd_tests::test_env!();
    if !have("ansible-playbook", "ansible-core") {
        return;
    }
    let d = env.daemon(&[]);
    let conf = env.conf();
    let conf = conf.display();
    let kfd = kfd_bin();
    let kfd = kfd.display();
    // The blocklist from a Jinja2 template fed by a variable, like a fleet's
    // group_vars; the counter by copy.
    let template = env.blocklist_config(FN, &[]).replace(
        "entries: []",
        "entries:\n{% for net in deny %}\n          - {key: \"{{ net }}\", value: 1}\n{% endfor %}",
    );
    fs::write(env.dir.join("edge.yaml.j2"), template).expect("template");
    let tasks = |deny: &[&str], counter: &str| {
        format!(
            "    - name: blocklist\n      vars:\n        deny: {deny:?}\n      ansible.builtin.template:\n        src: {dir}/edge.yaml.j2\n        dest: {conf}/{FILE}\n        mode: \"0644\"\n        validate: {kfd} validate %s\n    - name: counter\n      ansible.builtin.copy:\n        content: {content:?}\n        dest: {conf}/20-counter.yaml\n        mode: \"0644\"\n        validate: {kfd} validate %s\n",
            dir = env.dir.display(),
            content = counter,
        )
    };
    let counter = counter_config(&env, "count");

    let out = ansible(
        &env,
        "first",
        &tasks(&["203.0.113.0/24", "192.0.2.0/24"], &counter),
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_deny(&env, &d, Some(&["192.0.2.0/24", "203.0.113.0/24"]));
    assert!(
        wait_until(Duration::from_secs(20), || env.slots() == [FN, "count"]),
        "{:?}\n{}",
        env.slots(),
        d.log()
    );

    // A bad value: the validate hook refuses it, the file is never written.
    let before = fs::read_to_string(env.conf().join(FILE)).expect("config");
    let out = ansible(&env, "bad", &tasks(&["203.0.113.0/33"], &counter));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("failed to validate") && text(&out).contains("prefix length 33"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read_to_string(env.conf().join(FILE)).expect("config"),
        before
    );
    assert_eq!(env.deny_v4(FN), set(&["192.0.2.0/24", "203.0.113.0/24"]));

    // A change, then the counter's file removed with state: absent.
    let out = ansible(
        &env,
        "change",
        &format!(
            "{}    - name: counter gone\n      ansible.builtin.file:\n        path: {conf}/20-counter.yaml\n        state: absent\n",
            tasks(&["198.51.100.0/24"], &counter)
                .split("    - name: counter\n")
                .next()
                .expect("blocklist task"),
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_deny(&env, &d, Some(&["198.51.100.0/24"]));
    assert!(
        wait_until(Duration::from_secs(20), || env.slots() == [FN]),
        "{:?}\n{}",
        env.slots(),
        d.log()
    );
    assert!(
        !env.chain_dir().join("fn/count").exists(),
        "counter unpinned"
    );
}

// ---------------------------------------------------------------------------
// Puppet
// ---------------------------------------------------------------------------

fn puppet(env: &Env, manifest: &str) -> (i32, String) {
    let path = env.dir.join("site.pp");
    fs::write(&path, manifest).expect("manifest");
    let p = env.dir.join("puppet");
    let dir = |d: &str| p.join(d).display().to_string();
    let out = Command::new("puppet")
        .args(["apply", "--detailed-exitcodes", "--color=false"])
        .args(["--confdir", &dir("etc"), "--vardir", &dir("var")])
        .args(["--codedir", &dir("code"), "--logdir", &dir("log")])
        .args(["--rundir", &dir("run")])
        .arg(&path)
        .output()
        .expect("running puppet");
    (out.status.code().unwrap_or(-1), text(&out))
}

fn puppet_file(path: &Path, ensure: &str, content: &str, kfd: &Path) -> String {
    assert!(!content.contains('\'') && !content.contains('\\'));
    format!(
        "file {{ '{}':\n  ensure       => {ensure},\n  content      => '{content}',\n  mode         => '0644',\n  validate_cmd => '{} validate %',\n}}\n",
        path.display(),
        kfd.display()
    )
}

#[test]
fn puppet_file_resources_with_validate_cmd() {
    let env = kfd_tests::test_env!();
    if !have("puppet", "puppet-agent") {
        return;
    }
    let d = started(&env, &[]);
    let kfd = kfd_bin();
    let path = env.conf().join(FILE);
    // --detailed-exitcodes: 2 = changes applied, 4/6 = failures.
    let (code, out) = puppet(
        &env,
        &puppet_file(
            &path,
            "file",
            &env.blocklist_config(FN, &["198.51.100.0/24", "192.0.2.0/24"]),
            &kfd,
        ),
    );
    assert_eq!(code, 2, "{out}");
    wait_deny(&env, &d, Some(&["192.0.2.0/24", "198.51.100.0/24"]));

    let (code, out) = puppet(
        &env,
        &puppet_file(
            &path,
            "file",
            &env.blocklist_config(FN, &["198.51.100.0/33"]),
            &kfd,
        ),
    );
    assert_eq!(code & 4, 4, "validate_cmd must fail the resource: {out}");
    assert!(out.contains("prefix length 33"), "{out}");
    assert_eq!(env.deny_v4(FN), set(&["192.0.2.0/24", "198.51.100.0/24"]));

    let (code, out) = puppet(&env, &puppet_file(&path, "absent", "", &kfd));
    assert_eq!(code, 2, "{out}");
    wait_deny(&env, &d, None);
    assert!(!env.chain_dir().join("fn").join(FN).exists(), "{}", d.log());
}

// ---------------------------------------------------------------------------
// Salt
// ---------------------------------------------------------------------------

/// Runs `salt-call --local state.apply kfd` with `sls` as the state, in a
/// minion of its own under the scratch dir. Returns the exit code
/// (`--retcode-passthrough`: 0 applied, 2 a state failed) and the output.
fn salt(env: &Env, sls: &str) -> (i32, String) {
    let root = env.dir.join("salt");
    let (etc, srv) = (root.join("etc"), root.join("srv"));
    fs::create_dir_all(&etc).expect("salt config dir");
    fs::create_dir_all(&srv).expect("salt file root");
    // root_dir prefixes every path the minion writes (cache, pki, logs).
    fs::write(
        etc.join("minion"),
        format!(
            "file_client: local\nroot_dir: {}\nfile_roots:\n  base:\n    - {}\n",
            root.display(),
            srv.display()
        ),
    )
    .expect("minion config");
    fs::write(srv.join("kfd.sls"), sls).expect("state file");
    let out = Command::new("salt-call")
        .args(["--local", "--retcode-passthrough", "--no-color"])
        .arg("--config-dir")
        .arg(&etc)
        .args(["--log-level", "warning", "state.apply", "kfd"])
        .output()
        .expect("running salt-call");
    (out.status.code().unwrap_or(-1), text(&out))
}

/// A `file.managed` state with `check_cmd: kfd validate`: Salt runs it on
/// its temp file and writes the target only if it passes.
fn salt_file(path: &Path, content: &str, kfd: &Path) -> String {
    let indented: String = content.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "{}:\n  file.managed:\n    - mode: \"0644\"\n    - check_cmd: {} validate\n    - contents: |\n{indented}",
        path.display(),
        kfd.display()
    )
}

#[test]
fn salt_file_managed_with_check_cmd() {
    let env = kfd_tests::test_env!();
    if !have("salt-call", "salt, from PyPI") {
        return;
    }
    let d = started(&env, &[]);
    let kfd = kfd_bin();
    let path = env.conf().join(FILE);
    let (code, out) = salt(
        &env,
        &salt_file(
            &path,
            &env.blocklist_config(FN, &["198.51.100.0/24", "192.0.2.0/24"]),
            &kfd,
        ),
    );
    assert_eq!(code, 0, "{out}");
    wait_deny(&env, &d, Some(&["192.0.2.0/24", "198.51.100.0/24"]));

    // A new file: Salt creates it empty, then renames its temp over it.
    let (code, out) = salt(
        &env,
        &salt_file(
            &env.conf().join("20-salt.yaml"),
            &counter_config(&env, "salted"),
            &kfd,
        ),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(20), || env.slots() == [FN, "salted"]),
        "{:?}\n{}",
        env.slots(),
        d.log()
    );
    assert_eq!(env.deny_v4(FN), set(&["192.0.2.0/24", "198.51.100.0/24"]));

    // A bad value: check_cmd refuses it, and the file never changes.
    let before = fs::read_to_string(&path).expect("config");
    let (code, out) = salt(
        &env,
        &salt_file(&path, &env.blocklist_config(FN, &["198.51.100.0/33"]), &kfd),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("prefix length 33"), "{out}");
    assert_eq!(fs::read_to_string(&path).expect("config"), before);
    assert_eq!(env.deny_v4(FN), set(&["192.0.2.0/24", "198.51.100.0/24"]));
}

// ---------------------------------------------------------------------------
// Shell write patterns
// ---------------------------------------------------------------------------

#[test]
fn rename_from_another_directory() {
    let env = kfd_tests::test_env!();
    let d = started(&env, &[]);
    let staged = env.dir.join("staging.yaml");
    fs::write(&staged, env.blocklist_config(FN, &["198.51.100.0/24"])).expect("stage");
    fs::rename(&staged, env.conf().join(FILE)).expect("rename");
    wait_deny(&env, &d, Some(&["198.51.100.0/24"]));
}

#[test]
fn temp_file_and_rename_in_the_same_directory() {
    let env = kfd_tests::test_env!();
    let d = started(&env, &[]);
    let id = prog_id(&env, FN);
    // Puppet's NAMEYYYYMMDD-pid-rand, consul-template's and rsync's .NAME.XXXXXX.
    for (tmp, deny) in [
        ("10-edge20261122-4242-1x9z3k", "198.51.100.0/24"),
        (".10-edge.yaml.Xa81Zq", "192.0.2.0/24"),
    ] {
        let tmp = env.conf().join(tmp);
        fs::write(&tmp, env.blocklist_config(FN, &[deny])).expect("temp");
        fs::rename(&tmp, env.conf().join(FILE)).expect("rename");
        wait_deny(&env, &d, Some(&[deny]));
    }
    // The real sed -i: sedXXXXXX, then a rename.
    sh(&[
        "sed",
        "-i",
        "s#192.0.2.0/24#203.0.113.128/25#",
        env.conf().join(FILE).to_str().expect("utf8"),
    ]);
    wait_deny(&env, &d, Some(&["203.0.113.128/25"]));
    assert_eq!(prog_id(&env, FN), id, "entries changed in place, no reload");
}

#[test]
fn in_place_truncate_and_write_by_cp_tee_and_redirection() {
    let env = kfd_tests::test_env!();
    let d = started(&env, &[]);
    let target = env.conf().join(FILE);
    let t = target.to_str().expect("utf8");
    let src = env.dir.join("src.yaml");
    let s = src.to_str().expect("utf8");

    fs::write(&src, env.blocklist_config(FN, &["198.51.100.0/24"])).expect("src");
    sh(&["cp", s, t]);
    wait_deny(&env, &d, Some(&["198.51.100.0/24"]));

    fs::write(&src, env.blocklist_config(FN, &["192.0.2.0/24"])).expect("src");
    sh(&["sh", "-c", &format!("tee {t} < {s} > /dev/null")]);
    wait_deny(&env, &d, Some(&["192.0.2.0/24"]));

    fs::write(&src, env.blocklist_config(FN, &["203.0.113.0/24"])).expect("src");
    sh(&["sh", "-c", &format!("cat {s} > {t}")]);
    wait_deny(&env, &d, Some(&["203.0.113.0/24"]));
}

#[test]
fn vim_writes_in_place_and_its_empty_window_removes_nothing() {
    let env = kfd_tests::test_env!();
    let d = started(&env, &[]);
    let target = env.conf().join(FILE);
    let id = prog_id(&env, FN);

    // The empty window, held open until kfd has looked at it: vim's
    // truncate, with its swap file beside.
    let swap = env.conf().join(format!(".{FILE}.swp"));
    fs::write(&swap, b"b0VIM 9.0").expect("swap file");
    let mark = d.mark();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&target)
        .expect("truncate");
    d.expect_log(
        mark,
        &format!("{FILE}: invalid; its last good version stays in force"),
    );
    assert_eq!(
        env.deny_v4(FN),
        set(&["203.0.113.0/24"]),
        "emptied file removed entries"
    );
    assert_eq!(prog_id(&env, FN), id);
    f.write_all(env.blocklist_config(FN, &["198.51.100.0/24"]).as_bytes())
        .expect("write");
    drop(f);
    fs::remove_file(&swap).expect("swap file");
    wait_deny(&env, &d, Some(&["198.51.100.0/24"]));

    // And the real vim, writing in place (backupcopy=yes) with a swap file.
    sh(&[
        "vim",
        "-Es",
        "-N",
        "-u",
        "NONE",
        "-i",
        "NONE",
        "-c",
        "set backupcopy=yes",
        "-c",
        "%s#198.51.100.0/24#192.0.2.0/24#",
        "-c",
        "wq",
        target.to_str().expect("utf8"),
    ]);
    wait_deny(&env, &d, Some(&["192.0.2.0/24"]));
    assert_eq!(prog_id(&env, FN), id, "never removed and reloaded");
}

#[test]
fn delete_then_create_by_install_and_mv_across_filesystems() {
    let env = kfd_tests::test_env!();
    // A long quiet window, so the instant between delete and create is
    // always inside one.
    let d = started(&env, &["--debounce", "400ms"]);
    let id = prog_id(&env, FN);
    let target = env.conf().join(FILE);
    let t = target.to_str().expect("utf8");

    let src = env.dir.join("src.yaml");
    fs::write(&src, env.blocklist_config(FN, &["198.51.100.0/24"])).expect("src");
    sh(&["install", "-m", "0644", src.to_str().expect("utf8"), t]);
    wait_deny(&env, &d, Some(&["198.51.100.0/24"]));

    // /dev/shm is another filesystem: mv copies, it cannot rename.
    let shm = Path::new("/dev/shm").join(format!("kfdt-{}.yaml", env.id));
    fs::write(&shm, env.blocklist_config(FN, &["192.0.2.0/24"])).expect("shm");
    let r = Command::new("mv").arg(&shm).arg(&target).output();
    let _ = fs::remove_file(&shm);
    assert!(r.is_ok_and(|o| o.status.success()), "mv");
    wait_deny(&env, &d, Some(&["192.0.2.0/24"]));
    assert_eq!(
        prog_id(&env, FN),
        id,
        "the function was removed while its file was briefly gone:\n{}",
        d.log()
    );
}

#[test]
fn salt_creates_empty_then_renames_the_content_in() {
    let env = kfd_tests::test_env!();
    let d = started(&env, &[]);
    let target = env.conf().join("20-salt.yaml");
    let mark = d.mark();
    fs::write(&target, b"").expect("empty target");
    d.expect_log(
        mark,
        "20-salt.yaml: invalid and never applied; it contributes nothing",
    );
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
    // Salt's temp: NAME + 8 random characters, in the same dir.
    let tmp = env.conf().join("20-salt.yamlq8x1z0ab");
    fs::write(&tmp, counter_config(&env, "salted")).expect("temp");
    fs::rename(&tmp, &target).expect("rename");
    assert!(
        wait_until(Duration::from_secs(20), || env.slots() == [FN, "salted"]),
        "{:?}\n{}",
        env.slots(),
        d.log()
    );
    // (A new function relinks the chain, so FN's program id changes here by design.)
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
}

#[test]
fn a_bad_file_never_removes_anything_and_a_deleted_one_does() {
    let env = kfd_tests::test_env!();
    let d = started(&env, &[]);
    let target = env.conf().join(FILE);
    for (bad, error) in [
        // Half-written.
        (
            "version: 1\nfunctions:\n  - name: edge\n    interface: [",
            "while parsing",
        ),
        // Complete, but a value does not encode.
        (
            &env.blocklist_config(FN, &["203.0.113.0/33"]) as &str,
            "prefix length 33",
        ),
        // Empty.
        ("", "file is empty"),
    ] {
        let mark = d.mark();
        fs::write(&target, bad).expect("write in place");
        let pass = d.next_pass(mark);
        assert!(d.log()[mark..].contains(error), "{}", d.log());
        assert!(pass.contains("in sync; 1 file invalid"), "{pass}");
        assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
    }
    // Back, then deleted: its functions go.
    let mark = d.mark();
    env.write(FILE, &env.blocklist_config(FN, &["203.0.113.0/24"]));
    let pass = d.next_pass(mark);
    assert!(pass.contains("in sync"), "{pass}");
    let mark = d.mark();
    env.remove(FILE);
    wait_deny(&env, &d, None);
    d.expect_log(mark, &format!("(file change: {FILE}): converged 1 chain"));
}

#[test]
fn temporaries_and_backups_are_ignored() {
    let env = kfd_tests::test_env!();
    let d = started(&env, &[]);
    let garbage = "this: [is not config";
    for name in [
        ".10-edge.yaml.swp",
        "10-edge.yaml~",
        "10-edge.yaml.12345.2026-01-01@10:00:00~",
        "10-edge20261122-4242-1x9z3k",
        "sedAb12Cd",
        ".ansible_tmpab12cd10-edge.yaml",
        "10-edge.yaml.dpkg-dist",
        "README",
    ] {
        fs::write(env.conf().join(name), garbage).expect("temporary");
    }
    // A real change right after: its pass names only the real file.
    let mark = d.mark();
    env.write("20-count.yaml", &counter_config(&env, "count"));
    let pass = d.next_pass(mark);
    assert!(
        pass.contains("(file change: 20-count.yaml): converged 1 chain"),
        "{pass}"
    );
    assert!(!d.log()[mark..].contains("WARN"), "{}", d.log());
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]));
}

#[test]
fn a_kubernetes_configmap_update_swaps_the_data_link() {
    let env = kfd_tests::test_env!();
    let conf = env.conf();
    // kubelet's atomic writer: files are symlinks through `..data`, which
    // points at a timestamped dir and is replaced by a rename.
    let publish = |version: u32, deny: &str| {
        let dir = format!("..2026_11_22_00_00_0{version}.000000000");
        fs::create_dir(conf.join(&dir)).expect("data dir");
        fs::write(
            conf.join(&dir).join(FILE),
            env.blocklist_config(FN, &[deny]),
        )
        .expect("data file");
        std::os::unix::fs::symlink(&dir, conf.join("..data_tmp")).expect("symlink");
        fs::rename(conf.join("..data_tmp"), conf.join("..data")).expect("swap ..data");
    };
    publish(1, "203.0.113.0/24");
    std::os::unix::fs::symlink(format!("..data/{FILE}"), conf.join(FILE)).expect("file link");
    let d = env.daemon(&[]);
    assert_eq!(env.deny_v4(FN), set(&["203.0.113.0/24"]), "{}", d.log());
    let mark = d.mark();
    publish(2, "198.51.100.0/24");
    wait_deny(&env, &d, Some(&["198.51.100.0/24"]));
    d.expect_log(mark, "(rescan: the config dir's ..data link changed)");
}
