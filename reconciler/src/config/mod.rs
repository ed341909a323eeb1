//! Files → desired state: read, parse with marks, schema, resolve against
//! the programs' BTF, merge, and fall back to the last good version of any
//! file that fails.

pub mod error;
pub mod files;
pub mod lastgood;
mod merge;
mod resolve;
pub mod schema;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

pub use error::{ConfigError, ErrorKind};
pub use files::ReadRules;
pub use lastgood::Snapshot;
pub use resolve::DEFAULT_PRIORITY;
pub use resolve::{FileDesired, Objects};

use crate::desired::DesiredState;
use yaml::Mark;

/// The default largest config file: room for a few million map entries.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 << 20;

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Valid and in force.
    Valid,
    /// Invalid; its last good version is in force instead.
    KeptLastGood,
    /// Invalid, and there is no last good version: it contributes nothing.
    Rejected,
}

/// Time spent per stage of reading config.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    /// Reading files.
    pub read: std::time::Duration,
    /// YAML parsing.
    pub parse: std::time::Duration,
    /// JSON Schema validation.
    pub validate: std::time::Duration,
    /// Resolving programs and encoding keys, values and globals from BTF.
    pub encode: std::time::Duration,
}

/// The outcome of reading a config dir.
#[derive(Debug)]
pub struct Loaded {
    /// Time per stage.
    pub timings: Timings,
    /// The merged desired state (with last-good substitutes).
    pub desired: DesiredState,
    /// Every problem found.
    pub errors: Vec<ConfigError>,
    /// Per file name (current files only), what happened to it.
    pub files: BTreeMap<String, FileStatus>,
    /// The content in force per file: what the last-good store should hold
    /// once this desired state is applied.
    pub effective: BTreeMap<String, Arc<[u8]>>,
    /// The current content of every file read (for diffs against the store).
    pub current: BTreeMap<String, Arc<[u8]>>,
}

/// The config dir could not be read at all (nothing is applied then).
#[derive(Debug, thiserror::Error)]
#[error("config dir {dir}: {source}")]
pub struct DirError {
    /// The dir.
    pub dir: String,
    /// The failure.
    #[source]
    pub source: files::FileError,
}

/// Parses, validates and resolves one file's content.
pub fn process(
    display: &str,
    bytes: &[u8],
    objects: &mut Objects,
    rules: &ReadRules,
    timings: &mut Timings,
) -> Result<FileDesired, Vec<ConfigError>> {
    let t = std::time::Instant::now();
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![ConfigError::at(
            display,
            mark_of_offset(bytes, e.valid_up_to()),
            ErrorKind::NotUtf8,
        )]
    })?;
    let parsed = yaml::parse(text);
    timings.parse += t.elapsed();
    let root = parsed
        .map_err(|e| vec![ConfigError::at(display, e.mark(), ErrorKind::Yaml(e))])?
        .ok_or_else(|| vec![ConfigError::file(display, ErrorKind::Empty)])?;
    let t = std::time::Instant::now();
    let schema_errors = schema::check(display, &root);
    timings.validate += t.elapsed();
    if !schema_errors.is_empty() {
        return Err(schema_errors);
    }
    let t = std::time::Instant::now();
    let resolved = resolve::resolve(display, &root, objects, rules);
    timings.encode += t.elapsed();
    // Dropping a million-node tree is not free; count it with parsing.
    let t = std::time::Instant::now();
    drop(root);
    timings.parse += t.elapsed();
    resolved
}

/// Line and column of a byte offset (for errors before there is a YAML tree).
fn mark_of_offset(bytes: &[u8], offset: usize) -> Mark {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() as u32 + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count() as u32
        + 1;
    Mark::new(line, col)
}

/// A file as a merge candidate.
struct Candidate {
    bytes: Arc<[u8]>,
    resolved: FileDesired,
    from_snapshot: bool,
}

/// Reads `dir`: every config file, with the last good version standing in
/// for any file that fails (alone, or by clashing with another file).
pub fn load(dir: &Path, snapshot: &Snapshot, rules: &ReadRules) -> Result<Loaded, DirError> {
    let dir_err = |source| DirError {
        dir: dir.display().to_string(),
        source,
    };
    if rules.strict_permissions {
        files::check_dir_trusted(dir).map_err(dir_err)?;
    }
    let names = files::list(dir).map_err(dir_err)?;
    let mut objects = Objects::default();
    let mut timings = Timings::default();
    let mut errors = Vec::new();
    let mut status = BTreeMap::new();
    let mut current = BTreeMap::new();
    let mut candidates: BTreeMap<String, Candidate> = BTreeMap::new();
    let display = |name: &str| dir.join(name).display().to_string();

    for name in &names {
        let shown = display(name);
        let t = std::time::Instant::now();
        let read = files::read(&dir.join(name), rules);
        timings.read += t.elapsed();
        let result = match read {
            Ok(bytes) => {
                let bytes: Arc<[u8]> = Arc::from(bytes);
                current.insert(name.clone(), bytes.clone());
                process(&shown, &bytes, &mut objects, rules, &mut timings).map(|r| (bytes, r))
            }
            Err(e) => Err(vec![ConfigError::file(&shown, ErrorKind::Read(e))]),
        };
        match result {
            Ok((bytes, resolved)) => {
                status.insert(name.clone(), FileStatus::Valid);
                candidates.insert(
                    name.clone(),
                    Candidate {
                        bytes,
                        resolved,
                        from_snapshot: false,
                    },
                );
            }
            Err(errs) => {
                errors.extend(errs);
                let fallback = fall_back(name, &shown, snapshot, &mut objects, rules);
                status.insert(
                    name.clone(),
                    if fallback.is_some() {
                        FileStatus::KeptLastGood
                    } else {
                        FileStatus::Rejected
                    },
                );
                if let Some(c) = fallback {
                    candidates.insert(name.clone(), c);
                }
            }
        }
    }

    // Merge; a clash rejects the newer side (its last good version stands in).
    let desired = loop {
        let inputs: Vec<(&str, &FileDesired)> = candidates
            .iter()
            .map(|(n, c)| (n.as_str(), &c.resolved))
            .collect();
        let (desired, conflicts) = merge::merge(&inputs);
        if conflicts.is_empty() {
            break desired;
        }
        let mut culprits = BTreeSet::new();
        for c in conflicts {
            let changed: Vec<&String> = c
                .files
                .iter()
                .filter(|f| candidates.get(*f).is_some_and(|c| !c.from_snapshot))
                .filter(|f| {
                    snapshot
                        .get(f)
                        .is_none_or(|s| candidates.get(*f).is_some_and(|c| c.bytes[..] != s[..]))
                })
                .collect();
            // Blame what changed since the last apply (the later file if
            // several did); if nothing changed, the later file.
            let culprit = changed
                .iter()
                .max()
                .map(|s| (*s).clone())
                .or_else(|| c.files.iter().max().cloned());
            culprits.extend(culprit);
            errors.push(c.error);
        }
        for name in culprits {
            let Some(c) = candidates.remove(&name) else {
                continue;
            };
            let replacement = if c.from_snapshot {
                None
            } else {
                fall_back(&name, &display(&name), snapshot, &mut objects, rules)
            };
            let has = replacement.is_some();
            if let Some(r) = replacement {
                candidates.insert(name.clone(), r);
            }
            if let Some(s) = status.get_mut(&name) {
                *s = if has {
                    FileStatus::KeptLastGood
                } else {
                    FileStatus::Rejected
                };
            }
        }
    };
    let effective = candidates.into_iter().map(|(n, c)| (n, c.bytes)).collect();
    Ok(Loaded {
        timings,
        desired,
        errors,
        files: status,
        effective,
        current,
    })
}

fn fall_back(
    name: &str,
    shown: &str,
    snapshot: &Snapshot,
    objects: &mut Objects,
    rules: &ReadRules,
) -> Option<Candidate> {
    let bytes = snapshot.get(name)?.clone();
    // The store is kfd's own: its content was valid when applied. It can only
    // fail now if an object it names changed, in which case it is dropped.
    let resolved = process(
        &format!("{shown} (last good)"),
        &bytes,
        objects,
        rules,
        &mut Timings::default(),
    )
    .ok()?;
    Some(Candidate {
        bytes,
        resolved,
        from_snapshot: true,
    })
}

/// `kfd validate`: checks files and dirs on their own content. Every file
/// named directly is checked whatever its name (tools validate temp files);
/// dirs contribute their config files. Everything given is merged, so
/// clashes between the given files are found too.
pub fn validate(paths: &[&Path], rules: &ReadRules) -> Result<usize, Vec<ConfigError>> {
    let mut objects = Objects::default();
    let mut errors = Vec::new();
    let mut resolved = Vec::new();
    for path in paths {
        let list: Vec<std::path::PathBuf> = if path.is_dir() {
            match files::list(path) {
                Ok(names) => names.iter().map(|n| path.join(n)).collect(),
                Err(e) => {
                    errors.push(ConfigError::file(
                        &path.display().to_string(),
                        ErrorKind::Read(e),
                    ));
                    continue;
                }
            }
        } else {
            vec![path.to_path_buf()]
        };
        for p in list {
            let shown = p.display().to_string();
            match files::read(&p, rules) {
                Ok(bytes) => {
                    match process(&shown, &bytes, &mut objects, rules, &mut Timings::default()) {
                        Ok(r) => resolved.push((shown, r)),
                        Err(e) => errors.extend(e),
                    }
                }
                Err(e) => errors.push(ConfigError::file(&shown, ErrorKind::Read(e))),
            }
        }
    }
    let inputs: Vec<(&str, &FileDesired)> = resolved.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let (desired, conflicts) = merge::merge(&inputs);
    errors.extend(conflicts.into_iter().map(|c| c.error));
    if errors.is_empty() {
        Ok(desired.function_count())
    } else {
        Err(errors)
    }
}
