//! Files as read → the desired state, with the kernel as the judge of what
//! was last applied.
//!
//! The rule: only a valid config removes or rolls back anything live. So
//! every file whose content cannot be used (invalid, or the loser of a
//! clash) stands in by what it last applied:
//! - its last-good copy, when every live function the file defined was
//!   converged from exactly that copy (each instance's load record names
//!   its file and content), so the copy asks for what is live;
//! - otherwise (the store lost it, lags behind, or runs ahead of the
//!   kernel) its live functions are **held**: kept exactly as they are.
//!
//! A function whose object cannot be used is held too, and a function
//! whose record names no file (an older kfd) is held while any file's
//! content is unknown, since it may be that file's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::error::ConfigError;
use super::merge::{self, Conflict};
use super::resolve::{FileDesired, Unusable};
use super::{FileStatus, Loaded, Objects, ReadDir, ReadRules, Snapshot, Timings, process};
use crate::desired::{DesiredChain, Hold};
use crate::model::{ChainKey, ContentId, FileId, Origin, Source};
use std::ops::Not as _;

/// What is live, as config loading needs it: every function instance kfd
/// runs, by chain and name, with the origin its load record carries.
pub type Live = BTreeMap<(ChainKey, String), Option<Origin>>;

fn hash16(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The id of a config file name.
pub fn file_id(name: &str) -> FileId {
    FileId(hash16(&[b"kfd file\0", name.as_bytes()]))
}

/// The id of a config file's content.
pub fn content_id(bytes: &[u8]) -> ContentId {
    ContentId(hash16(&[b"kfd content\0", bytes]))
}

/// The origin of functions read from `bytes` of file `name`.
pub fn origin_of(name: &str, bytes: &[u8]) -> Origin {
    Origin {
        file: file_id(name),
        content: content_id(bytes),
    }
}

/// A file as a merge candidate.
struct Candidate {
    bytes: Arc<[u8]>,
    resolved: FileDesired,
    /// A last-good copy standing in for the current content.
    from_store: bool,
}

/// What the kernel says about each file: the contents its live functions
/// were converged from.
struct Applied<'a> {
    by_file: BTreeMap<FileId, Vec<(&'a ChainKey, &'a str, ContentId)>>,
    unknown_origin: Vec<(&'a ChainKey, &'a str)>,
}

impl<'a> Applied<'a> {
    fn new(live: &'a Live) -> Self {
        let mut by_file: BTreeMap<FileId, Vec<_>> = BTreeMap::new();
        let mut unknown_origin = Vec::new();
        for ((key, name), origin) in live {
            match origin {
                Some(o) => by_file
                    .entry(o.file)
                    .or_default()
                    .push((key, name.as_str(), o.content)),
                None => unknown_origin.push((key, name.as_str())),
            }
        }
        Self {
            by_file,
            unknown_origin,
        }
    }

    fn live_of(&self, name: &str) -> &[(&'a ChainKey, &'a str, ContentId)] {
        self.by_file
            .get(&file_id(name))
            .map_or(&[][..], Vec::as_slice)
    }

    /// Whether every live function of `name` was converged from `bytes`.
    fn matches(&self, name: &str, bytes: &[u8]) -> bool {
        let id = content_id(bytes);
        self.live_of(name).iter().all(|(_, _, c)| *c == id)
    }

    /// Whether `bytes` of `name` is what the kernel runs (so it did not
    /// change since it was applied). A file with nothing live is new.
    fn unchanged(&self, name: &str, bytes: &[u8]) -> bool {
        !self.live_of(name).is_empty() && self.matches(name, bytes)
    }
}

struct Assembly<'a> {
    dir_display: String,
    snapshot: &'a Snapshot,
    applied: Applied<'a>,
    rules: &'a ReadRules,
    objects: Objects,
    candidates: BTreeMap<String, Candidate>,
    /// Files whose content is unknown: their live functions are held.
    unknown: BTreeSet<String>,
    status: BTreeMap<String, FileStatus>,
    errors: Vec<ConfigError>,
    object_errors: usize,
}

impl Assembly<'_> {
    /// `name` cannot be used as it is now (`current`, if it could be read):
    /// its last-good copy stands in if the kernel runs exactly that copy,
    /// else its live functions are held.
    fn fall_back(&mut self, name: &str, current: Option<&[u8]>) {
        let copy = self
            .snapshot
            .get(name)
            .filter(|bytes| self.applied.matches(name, bytes))
            .cloned();
        if let Some(bytes) = copy {
            let shown = format!("{}/{name} (last good)", self.dir_display);
            let processed = process(
                &shown,
                name,
                &bytes,
                &mut self.objects,
                self.rules,
                &mut Timings::default(),
            );
            // The copy was valid when applied; it fails now only if what it
            // refers to changed (then its functions are held instead).
            if let Ok(mut resolved) = processed {
                // The same content's object errors are reported already.
                if current != Some(&bytes[..]) {
                    self.object_errors += resolved.object_errors.len();
                    self.errors.append(&mut resolved.object_errors);
                }
                self.candidates.insert(
                    name.to_owned(),
                    Candidate {
                        bytes,
                        resolved,
                        from_store: true,
                    },
                );
                self.status
                    .insert(name.to_owned(), FileStatus::KeptLastGood);
                return;
            }
        }
        let live = self.applied.live_of(name).len();
        self.unknown.insert(name.to_owned());
        self.status.insert(
            name.to_owned(),
            if live > 0 {
                FileStatus::HeldLive { functions: live }
            } else {
                FileStatus::Rejected
            },
        );
    }

    /// The file a clash is blamed on: the one that changed since it was
    /// applied (the later one if several did), else the later file; never
    /// a file that only stands for what is live.
    fn culprit(&self, c: &Conflict) -> Option<String> {
        let in_use = || c.files().filter(|f| self.candidates.contains_key(*f));
        let changed = in_use().filter(|f| {
            self.candidates[*f].from_store.not()
                && !self.applied.unchanged(f, &self.candidates[*f].bytes)
        });
        changed.max().or_else(|| in_use().max()).map(str::to_owned)
    }

    /// A file whose content is unknown, as the definitions of its live
    /// functions (for clashes only; they are held, never built).
    fn as_live(&self, name: &str) -> FileDesired {
        let source = Source {
            file: format!("{}/{name} (as live)", self.dir_display),
            line: 1,
            col: 1,
        };
        FileDesired {
            unusable: self
                .applied
                .live_of(name)
                .iter()
                .map(|(key, function, _)| {
                    (
                        (*key).clone(),
                        Unusable {
                            name: (*function).to_owned(),
                            source: source.clone(),
                            priority: u32::MAX,
                            error: String::new(),
                        },
                    )
                })
                .collect(),
            ..FileDesired::default()
        }
    }
}

/// Merges what was read into the desired state (see the module docs).
pub fn assemble(read: ReadDir, snapshot: &Snapshot, live: &Live, rules: &ReadRules) -> Loaded {
    let ReadDir {
        dir_display,
        files,
        timings,
        objects,
    } = read;
    let mut a = Assembly {
        dir_display,
        snapshot,
        applied: Applied::new(live),
        rules,
        objects,
        candidates: BTreeMap::new(),
        unknown: BTreeSet::new(),
        status: BTreeMap::new(),
        errors: Vec::new(),
        object_errors: 0,
    };
    let mut current = BTreeMap::new();
    for f in files {
        if let Some(bytes) = &f.current {
            current.insert(f.name.clone(), bytes.clone());
        }
        match (f.current, f.result) {
            // A file with an error, if only in an object, is not used: what
            // it dropped must not go. Its last good version stands in, and
            // there the function whose object cannot be used is held.
            (Some(bytes), Ok(mut resolved)) if !resolved.object_errors.is_empty() => {
                a.object_errors += resolved.object_errors.len();
                a.errors.append(&mut resolved.object_errors);
                a.fall_back(&f.name, Some(&bytes));
            }
            (Some(bytes), Ok(resolved)) => {
                a.status.insert(f.name.clone(), FileStatus::Valid);
                a.candidates.insert(
                    f.name,
                    Candidate {
                        bytes,
                        resolved,
                        from_store: false,
                    },
                );
            }
            (current, Err(errs)) => {
                a.errors.extend(errs);
                a.fall_back(&f.name, current.as_deref());
            }
            (None, Ok(_)) => a.fall_back(&f.name, None),
        }
    }

    // Merge; a clash rejects one side, which falls back like a bad file.
    let mut refused: Vec<(String, Vec<(ChainKey, crate::desired::DesiredFunction)>)> = Vec::new();
    let mut desired = loop {
        // A file whose content is unknown still defines what it runs: its
        // live functions take part, so no other file takes them over.
        let as_live: Vec<(String, FileDesired)> = a
            .unknown
            .iter()
            .map(|name| (name.clone(), a.as_live(name)))
            .collect();
        let inputs: Vec<(&str, &FileDesired)> = a
            .candidates
            .iter()
            .map(|(n, c)| (n.as_str(), &c.resolved))
            .chain(as_live.iter().map(|(n, fd)| (n.as_str(), fd)))
            .collect();
        let (desired, conflicts) = merge::merge(&inputs);
        let mut culprits = BTreeSet::new();
        for c in conflicts {
            // Only a file in use can lose; what is live stays.
            let Some(culprit) = a.culprit(&c) else {
                continue;
            };
            a.errors.push(c.error_for(&culprit));
            culprits.insert(culprit);
        }
        if culprits.is_empty() {
            break desired;
        }
        for name in culprits {
            let Some(c) = a.candidates.remove(&name) else {
                continue;
            };
            // What it asks for is known, and refused: live functions it
            // names stay as they are (they may be moving to it).
            refused.push((name.clone(), c.resolved.functions.clone()));
            if c.from_store {
                // Even the copy clashes: what is live stays.
                a.unknown.insert(name.clone());
                let live = a.applied.live_of(&name).len();
                a.status.insert(
                    name,
                    if live > 0 {
                        FileStatus::HeldLive { functions: live }
                    } else {
                        FileStatus::Rejected
                    },
                );
            } else {
                a.fall_back(&name, Some(&c.bytes));
            }
        }
    };

    // Holds: what is live and no usable config speaks for.
    let defined: BTreeSet<(&ChainKey, &str)> = desired
        .chains
        .iter()
        .flat_map(|(k, c)| c.functions.iter().map(move |f| (k, f.name.as_str())))
        .collect();
    let mut held: Vec<(ChainKey, String, Hold)> = Vec::new();
    for c in a.candidates.values() {
        for (key, u) in &c.resolved.unusable {
            if live.contains_key(&(key.clone(), u.name.clone())) {
                held.push((
                    key.clone(),
                    u.name.clone(),
                    Hold::Object {
                        source: u.source.clone(),
                        priority: u.priority,
                        error: u.error.clone(),
                    },
                ));
            }
        }
    }
    for file in &a.unknown {
        for (key, name, _) in a.applied.live_of(file) {
            if !defined.contains(&(*key, *name)) {
                held.push((
                    (*key).clone(),
                    (*name).to_owned(),
                    Hold::FileInvalid { file: file.clone() },
                ));
            }
        }
    }
    for (file, functions) in &refused {
        for (key, f) in functions {
            if live.contains_key(&(key.clone(), f.name.clone()))
                && !defined.contains(&(key, f.name.as_str()))
            {
                held.push((
                    key.clone(),
                    f.name.clone(),
                    Hold::FileInvalid { file: file.clone() },
                ));
            }
        }
    }
    if !a.unknown.is_empty() {
        for (key, name) in &a.applied.unknown_origin {
            if !defined.contains(&(*key, *name)) {
                held.push(((*key).clone(), (*name).to_owned(), Hold::UnknownOrigin));
            }
        }
    }
    for (key, name, hold) in held {
        desired
            .chains
            .entry(key)
            .or_insert_with(DesiredChain::empty)
            .held
            .entry(name)
            .or_insert(hold);
    }
    // Chain settings an unknown file made are unknown too, when it made any
    // that are live: a file that runs nothing (never applied, or applied
    // with settings only and its copy lost since) is taken to have none.
    desired.incomplete = a
        .status
        .values()
        .any(|s| matches!(s, FileStatus::HeldLive { .. }));

    let effective = a
        .candidates
        .into_iter()
        .map(|(n, c)| (n, c.bytes))
        .collect();
    Loaded {
        timings,
        desired,
        errors: a.errors,
        object_errors: a.object_errors,
        files: a.status,
        effective,
        unknown: a.unknown,
        current,
    }
}
