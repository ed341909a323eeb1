//! The rule of issue #9 as a property (proptest): over random histories of
//! config files (valid, half-written, clashing, deleted) and faults of the
//! state dir (lost, a write that fails, a kill before it), each pass read
//! from real files, merged against the live state, planned and applied to
//! a model of the kernel, **nothing live is removed or rolled back except
//! what a valid config dropped or changed**:
//!
//! - a function that stops being live was dropped by its own file, which is
//!   valid now (or gone), and no valid file defines it;
//! - a function whose entries change now has exactly the entries a valid
//!   file asks for.
//!
//! `KFD_PROPS_DEBUG=1` prints each pass (file statuses, errors, actions).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, prop, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy as Gen;

use super::*;
use crate::entries::EntrySet;
use crate::model::{ChainKey, Hook};
use crate::plan::{self, Plan, PlanOptions};
use crate::state::model::{InterfaceState, ObservedState};

const FILES: [&str; 3] = ["10-a.yaml", "20-b.yaml", "30-c.yaml"];
const FUNCTIONS: [&str; 3] = ["f", "g", "h"];

/// What one step does.
#[derive(Debug, Clone)]
enum Op {
    /// File `file` defines these functions (name index, deny bitmask).
    Write(usize, Vec<(usize, u8)>),
    /// File `file` is half-written.
    Break(usize),
    /// File `file` is deleted.
    Delete(usize),
    /// The state dir is lost.
    LoseStore,
    /// The next store write fails (disk full, read-only, a kill before it).
    FailStoreWrite,
}

fn op() -> impl Gen<Value = Op> {
    let functions = prop::collection::vec((0..FUNCTIONS.len(), 0u8..16), 0..3);
    prop_oneof![
        5 => (0..FILES.len(), functions).prop_map(|(f, fns)| Op::Write(f, fns)),
        3 => (0..FILES.len()).prop_map(Op::Break),
        1 => (0..FILES.len()).prop_map(Op::Delete),
        1 => Just(Op::LoseStore),
        1 => Just(Op::FailStoreWrite),
    ]
}

fn eth0() -> ChainKey {
    ChainKey {
        netns: None,
        interface: "eth0".into(),
        hook: Hook::Xdp,
    }
}

fn content(functions: &[(usize, u8)]) -> String {
    let mut s = String::from("version: 1\nfunctions:\n");
    if functions.is_empty() {
        s = "version: 1\n".into();
    }
    for (i, (f, mask)) in functions.iter().enumerate() {
        let entries: Vec<String> = (0..4)
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| format!("{{key: 10.0.0.{b}/32, value: 1}}"))
            .collect();
        s += &format!(
            "  - {{name: {}, interface: eth0, hook: xdp, priority: {}, program: {{builtin: blocklist}}, maps: {{deny_v4: {{entries: [{}]}}}}}}\n",
            FUNCTIONS[*f],
            10 + i,
            entries.join(", ")
        );
    }
    s
}

struct World {
    dir: PathBuf,
    store: Snapshot,
    kernel: ObservedState,
    fail_store_write: bool,
}

impl World {
    fn new(tag: u64) -> Self {
        let dir =
            std::env::temp_dir().join(format!("kfd-config-props-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut kernel = ObservedState::default();
        kernel.interfaces.insert(
            (None, "eth0".into()),
            InterfaceState::Present {
                ifindex: plan::tests::IFINDEX,
                xdp: vec![],
            },
        );
        Self {
            dir,
            store: Snapshot::default(),
            kernel,
            fail_store_write: false,
        }
    }

    fn write(&self, file: usize, text: &str) {
        let p = self.dir.join(FILES[file]);
        fs::write(&p, text).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    fn rules() -> ReadRules {
        ReadRules {
            max_size: DEFAULT_MAX_FILE_SIZE,
            strict_permissions: true,
        }
    }

    /// Every valid file's functions on eth0 with their entries; and whether
    /// each present file is valid (on its own: parsed, resolved, and free
    /// of clashes within itself).
    fn valid_config(&self) -> (BTreeMap<String, Vec<EntrySet>>, BTreeMap<String, bool>) {
        let mut asked: BTreeMap<String, Vec<EntrySet>> = BTreeMap::new();
        let mut valid = BTreeMap::new();
        for name in FILES {
            let path = self.dir.join(name);
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            let ok = validate(&[path.as_path()], &Self::rules()).is_ok();
            valid.insert(name.to_owned(), ok);
            if !ok {
                continue;
            }
            let fd = process(
                name,
                name,
                &bytes,
                &mut Objects::default(),
                &Self::rules(),
                &mut Timings::default(),
            )
            .expect("valid");
            for (_, f) in fd.functions {
                asked
                    .entry(f.name.clone())
                    .or_default()
                    .push((*f.maps["deny_v4"].entries).clone());
            }
        }
        (asked, valid)
    }

    /// One pass, as `kfd apply` runs it, on the model kernel.
    fn pass(&mut self) -> Result<(), TestCaseError> {
        let live = crate::reconcile::live(&self.kernel);
        let loaded = load(&self.dir, &self.store, &live, &Self::rules()).expect("readable");
        let p = plan::plan(&loaded.desired, &self.kernel, &PlanOptions::default());
        // Blocked chains are left as they are, and count as failed, as apply
        // leaves and reports them.
        let (blocked, runnable): (Vec<_>, Vec<_>) =
            p.chains.into_iter().partition(|c| c.blocked.is_some());
        let failed = Snapshot::files_on(&loaded.desired, &live, blocked.iter().map(|c| &c.key));
        let runnable = Plan {
            chains: runnable,
            shared: vec![],
        };
        if std::env::var("KFD_PROPS_DEBUG").is_ok() {
            eprintln!(
                "pass: files {:?} unknown {:?} errors {:?}\n  plan {:?}\n  blocked {:?}",
                loaded.files,
                loaded.unknown,
                loaded
                    .errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>(),
                plan::tests::names(&runnable),
                blocked.iter().map(|c| &c.blocked).collect::<Vec<_>>()
            );
        }
        let before = self.kernel.clone();
        let after = plan::tests::simulate(&runnable, &loaded.desired, &before);
        self.check(&before, &after)?;
        self.kernel = after;
        if !std::mem::take(&mut self.fail_store_write) {
            self.store = self.store.after(&loaded, &failed);
        }
        Ok(())
    }

    fn check(&self, before: &ObservedState, after: &ObservedState) -> Result<(), TestCaseError> {
        let (asked, valid) = self.valid_config();
        let Some(was) = before.chains.get(&eth0()) else {
            return Ok(());
        };
        let now = after.chains.get(&eth0());
        for (name, f) in &was.functions {
            let origin = f.meta.and_then(|m| m.origin).map(|o| o.file);
            let own_file = FILES.iter().find(|n| Some(file_id(n)) == origin);
            let file_known = own_file.is_none_or(|n| valid.get(*n).copied().unwrap_or(true));
            match now.and_then(|c| c.functions.get(name)) {
                None => {
                    prop_assert!(
                        file_known && !asked.contains_key(name),
                        "{name} was removed, but its file {own_file:?} is invalid or a valid file asks for it ({asked:?})"
                    );
                }
                Some(g) => {
                    let old = f.maps.get("deny_v4").and_then(|m| m.entries.clone());
                    let new = g.maps.get("deny_v4").and_then(|m| m.entries.clone());
                    if old != new {
                        let new = new.unwrap_or_else(|| EntrySet::new(8, 1));
                        prop_assert!(
                            asked.get(name).is_some_and(|v| v.contains(&new)),
                            "{name}'s entries changed from {old:?} to {new:?}, which no valid file asks for ({asked:?}; files valid: {valid:?})"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("KFD_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        ..ProptestConfig::default()
    })]

    /// Through random histories of files and store faults, nothing live
    /// goes or rolls back but by a valid config; and once every file is
    /// valid again, the kernel converges to them.
    #[test]
    fn only_a_valid_config_removes_or_rolls_back_anything(
        ops in prop::collection::vec(op(), 1..12),
        tag in 0u64..u64::MAX,
    ) {
        let mut w = World::new(tag);
        for op in &ops {
            match op {
                Op::Write(file, fns) => w.write(*file, &content(fns)),
                Op::Break(file) => w.write(*file, "version: 1\nfunctions:\n  - name: f\n    interface: ["),
                Op::Delete(file) => {
                    let _ = fs::remove_file(w.dir.join(FILES[*file]));
                }
                Op::LoseStore => w.store = Snapshot::default(),
                Op::FailStoreWrite => w.fail_store_write = true,
            }
            w.pass()?;
        }
        // Everything fixed: distinct functions per file, all valid.
        for file in 0..FILES.len() {
            w.write(file, &content(&[(file, 1 << file)]));
        }
        w.pass()?;
        w.pass()?;
        let chain = &w.kernel.chains[&eth0()];
        let names: Vec<&String> = chain.functions.keys().collect();
        prop_assert_eq!(names, ["f", "g", "h"]);
    }
}
