//! Files → desired state: read, parse with marks, schema, resolve against
//! the programs' BTF, merge, and fall back to the last good version of any
//! file that fails.

mod assemble;
pub mod error;
pub mod files;
pub mod lastgood;
mod merge;
mod resolve;
pub mod schema;
pub mod yaml;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

pub use assemble::{Live, content_id, file_id, origin_of};
pub use error::{ConfigError, ErrorKind};
pub use files::ReadRules;
pub use lastgood::Snapshot;
pub use resolve::DEFAULT_PRIORITY;
pub use resolve::{FileDesired, Objects, Unusable};

use crate::desired::DesiredState;
use yaml::Mark;

/// The default largest config file: room for a few million map entries.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 << 20;

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Valid and in force.
    Valid,
    /// Invalid; its last good version (the copy the kernel runs) is in force instead.
    KeptLastGood,
    /// Invalid, and no copy of it matches the kernel: its live functions
    /// are kept exactly as they are.
    HeldLive {
        /// How many function instances are held.
        functions: usize,
    },
    /// Invalid, and nothing of it is live: it contributes nothing.
    Rejected,
}

impl FileStatus {
    /// What became of an invalid file, as the end of a sentence that
    /// starts with its name (None for a valid one).
    pub fn describe(&self) -> Option<String> {
        match self {
            FileStatus::Valid => None,
            FileStatus::KeptLastGood => {
                Some("invalid; its last good version stays in force".into())
            }
            FileStatus::HeldLive { functions } => Some(format!(
                "invalid, and no last good copy of it matches the kernel: its {functions} live \
                 function instance{} kept exactly as {}",
                if *functions == 1 { " is" } else { "s are" },
                if *functions == 1 { "it is" } else { "they are" }
            )),
            FileStatus::Rejected => {
                Some("invalid and never applied; it contributes nothing".into())
            }
        }
    }
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
    /// How many of them are objects that cannot be used now (they may come
    /// right without any config change, so they are retried).
    pub object_errors: usize,
    /// Per file name (current files only), what happened to it.
    pub files: BTreeMap<String, FileStatus>,
    /// The content in force per file: what the last-good store should hold
    /// once this desired state is applied.
    pub effective: BTreeMap<String, Arc<[u8]>>,
    /// Files whose content is unknown (invalid, with no last-good copy the
    /// kernel runs): the store keeps what it has for them.
    pub unknown: BTreeSet<String>,
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

/// Parses, validates and resolves one file's content. `display` names it
/// in errors; `name` is its name in the config dir (recorded as the origin
/// of its functions).
pub fn process(
    display: &str,
    name: &str,
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
    let resolved = resolve::resolve(display, origin_of(name, bytes), &root, objects, rules);
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

/// One config file, read and processed.
#[derive(Debug)]
pub struct FileRead {
    /// Its name in the config dir.
    pub name: String,
    /// Its content, when it could be read.
    pub current: Option<Arc<[u8]>>,
    /// What it defines, or why it is invalid.
    pub result: Result<FileDesired, Vec<ConfigError>>,
}

/// Every config file of a dir, read and processed; [`assemble`] merges them.
pub struct ReadDir {
    /// The dir, for messages.
    pub dir_display: String,
    /// The files, in merge (lexical) order.
    pub files: Vec<FileRead>,
    /// Time per stage.
    pub timings: Timings,
    /// Objects read so far (last-good copies may name them too).
    pub objects: Objects,
}

impl std::fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadDir")
            .field("dir", &self.dir_display)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Reads and processes every config file of `dir`, on its own content.
/// Nothing is merged yet: that needs to know what is live ([`assemble`]).
pub fn read_dir(dir: &Path, rules: &ReadRules) -> Result<ReadDir, DirError> {
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
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let shown = dir.join(&name).display().to_string();
        let t = std::time::Instant::now();
        let read = files::read(&dir.join(&name), rules);
        timings.read += t.elapsed();
        let (current, result) = match read {
            Ok(bytes) => {
                let bytes: Arc<[u8]> = Arc::from(bytes);
                let result = process(&shown, &name, &bytes, &mut objects, rules, &mut timings);
                (Some(bytes), result)
            }
            Err(e) => (
                None,
                Err(vec![ConfigError::file(&shown, ErrorKind::Read(e))]),
            ),
        };
        out.push(FileRead {
            name,
            current,
            result,
        });
    }
    Ok(ReadDir {
        dir_display: dir.display().to_string(),
        files: out,
        timings,
        objects,
    })
}

/// Reads `dir` and merges it against what is live: the last good version
/// of any file that fails stands in for it when the kernel runs that
/// version, and otherwise its live functions are held.
pub fn load(
    dir: &Path,
    snapshot: &Snapshot,
    live: &Live,
    rules: &ReadRules,
) -> Result<Loaded, DirError> {
    Ok(assemble(read_dir(dir, rules)?, snapshot, live, rules))
}

/// Merges what [`read_dir`] read (see `assemble.rs`).
pub fn assemble(read: ReadDir, snapshot: &Snapshot, live: &Live, rules: &ReadRules) -> Loaded {
    assemble::assemble(read, snapshot, live, rules)
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
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    match process(
                        &shown,
                        &name,
                        &bytes,
                        &mut objects,
                        rules,
                        &mut Timings::default(),
                    ) {
                        Ok(mut r) => {
                            errors.append(&mut r.object_errors);
                            resolved.push((shown, r));
                        }
                        Err(e) => errors.extend(e),
                    }
                }
                Err(e) => errors.push(ConfigError::file(&shown, ErrorKind::Read(e))),
            }
        }
    }
    let inputs: Vec<(&str, &FileDesired)> = resolved.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let (desired, conflicts) = merge::merge(&inputs);
    // Nothing is live here: the later file of a clash is named.
    errors.extend(conflicts.into_iter().map(|c| {
        let last = c.files().last().unwrap_or_default().to_owned();
        c.error_for(&last)
    }));
    if errors.is_empty() {
        Ok(desired.function_count())
    } else {
        Err(errors)
    }
}
