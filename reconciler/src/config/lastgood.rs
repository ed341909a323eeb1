//! The last-good store: a copy of every file as it was when it was last
//! applied, in kfd's state dir (so it survives restarts). `kfd plan` diffs
//! against it, and a file that turns bad is replaced by its copy here.
//!
//! The store is never trusted over the kernel: each live function's load
//! record names the file content it was converged from, and a copy stands
//! in for a bad file only when it is that content (`assemble.rs`). A store
//! that is lost, full, read-only, behind or ahead of the kernel therefore
//! never removes or rolls back anything; the worst it can do is make kfd
//! hold a bad file's live functions as they are.
//!
//! The store is root's alone: its dir and every file in it are checked like
//! config files (owner, mode, regular files only), and what fails the check
//! is left out and reported.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{self, FileError, ReadRules};
use crate::model::FileId;

/// A problem with the store, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("last-good store {}: {source}", path.display())]
pub struct SnapshotError {
    /// The store dir or one of its files.
    pub path: PathBuf,
    /// The failure.
    #[source]
    pub source: FileError,
}

/// The files in force at the last apply that converged them, by name.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    files: BTreeMap<String, Arc<[u8]>>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError {
        path: path.to_owned(),
        source: source.into(),
    }
}

impl Snapshot {
    /// Reads the store. A missing store is empty (first run, or lost).
    /// Whatever cannot be read or trusted is left out and reported: kfd then
    /// falls back on the kernel for those files.
    pub fn load(dir: &Path, rules: &ReadRules) -> (Self, Vec<SnapshotError>) {
        let mut files = BTreeMap::new();
        let mut problems = Vec::new();
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (Self::default(), problems),
            Err(e) => {
                problems.push(io_err(dir)(e));
                return (Self::default(), problems);
            }
            Ok(_) => {}
        }
        if rules.strict_permissions
            && let Err(source) = files::check_dir_trusted(dir)
        {
            problems.push(SnapshotError {
                path: dir.to_owned(),
                source,
            });
            return (Self::default(), problems);
        }
        let names = match files::list(dir) {
            Ok(n) => n,
            Err(source) => {
                problems.push(SnapshotError {
                    path: dir.to_owned(),
                    source,
                });
                return (Self::default(), problems);
            }
        };
        for name in names {
            let path = dir.join(&name);
            match files::read(&path, rules) {
                Ok(bytes) => {
                    files.insert(name, Arc::from(bytes));
                }
                Err(source) => problems.push(SnapshotError { path, source }),
            }
        }
        (Self { files }, problems)
    }

    /// A file's last good content.
    pub fn get(&self, name: &str) -> Option<&Arc<[u8]>> {
        self.files.get(name)
    }

    /// Every file name in the store.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The store with `name` set to `bytes`, or removed (None).
    pub fn with(mut self, name: &str, bytes: Option<Arc<[u8]>>) -> Self {
        match bytes {
            Some(b) => self.files.insert(name.to_owned(), b),
            None => self.files.remove(name),
        };
        self
    }

    /// The files that chains `failed` touch: those of the functions the
    /// config puts on them, and of the functions live there. Their copies
    /// stay as they are when those chains do not converge.
    pub fn files_on<'k>(
        desired: &crate::desired::DesiredState,
        live: &super::Live,
        failed: impl IntoIterator<Item = &'k crate::model::ChainKey>,
    ) -> BTreeSet<FileId> {
        let mut out = BTreeSet::new();
        for key in failed {
            if let Some(d) = desired.chains.get(key) {
                out.extend(d.functions.iter().map(|f| f.origin.file));
            }
            out.extend(
                live.range((key.clone(), String::new())..)
                    .take_while(|((k, _), _)| k == key)
                    .filter_map(|(_, o)| o.map(|o| o.file)),
            );
        }
        out
    }

    /// The store once `loaded` is in force: a file's copy becomes its content
    /// in force, except that files whose chains did not all converge
    /// (`failed`) and files whose content is unknown keep their old copy;
    /// files gone from the config dir lose theirs.
    pub fn after(&self, loaded: &super::Loaded, failed: &BTreeSet<FileId>) -> Snapshot {
        let mut next = self.clone();
        let names: BTreeSet<&str> = self
            .names()
            .chain(loaded.files.keys().map(String::as_str))
            .collect();
        for name in names {
            if loaded.unknown.contains(name) || failed.contains(&super::file_id(name)) {
                continue;
            }
            next = next.with(name, loaded.effective.get(name).cloned());
        }
        next
    }

    /// Makes the store on disk hold exactly `self`, given that it held
    /// `before`. Each file is written to a temporary and renamed into place
    /// (atomic per file); unchanged files are not rewritten, so re-applying a
    /// large config costs a comparison. The dir is fsynced once at the end.
    pub fn save(&self, dir: &Path, before: &Snapshot) -> Result<(), SnapshotError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let changed: Vec<(&String, &Arc<[u8]>)> = self
            .files
            .iter()
            .filter(|(n, b)| before.get(n).is_none_or(|old| old[..] != b[..]))
            .collect();
        let gone: Vec<&str> = before
            .names()
            .filter(|n| !self.files.contains_key(*n))
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        for (name, bytes) in changed {
            let tmp = dir.join(format!(".{name}.tmp"));
            // A leftover temporary (or something planted there) goes first:
            // O_EXCL then guarantees a fresh regular file of ours.
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
                _ => {}
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            let written = f.write_all(bytes).and_then(|()| f.sync_all());
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp); // a full disk: leave no half copy
                return Err(io_err(&tmp)(e));
            }
            fs::rename(&tmp, dir.join(name)).map_err(io_err(&tmp))?;
        }
        for name in gone {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                _ => {}
            }
        }
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn rules() -> ReadRules {
        ReadRules {
            max_size: 1 << 20,
            strict_permissions: true,
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kfd-snap-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn save_replaces_and_load_reads_back() {
        let dir = scratch("rw");
        let (empty, problems) = Snapshot::load(&dir, &rules());
        assert!(empty.is_empty() && problems.is_empty());
        let one = Snapshot::default()
            .with("a.yaml", Some(Arc::from(&b"one"[..])))
            .with("b.yaml", Some(Arc::from(&b"two"[..])));
        one.save(&dir, &empty).unwrap();
        let two = one
            .clone()
            .with("a.yaml", None)
            .with("b.yaml", Some(Arc::from(&b"three"[..])));
        two.save(&dir, &one).unwrap();
        let (back, problems) = Snapshot::load(&dir, &rules());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(back.names().collect::<Vec<_>>(), ["b.yaml"]);
        assert_eq!(&back.get("b.yaml").unwrap()[..], b"three");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entries_that_cannot_be_trusted_are_left_out_and_named() {
        let dir = scratch("trust");
        let good = Snapshot::default()
            .with("a.yaml", Some(Arc::from(&b"one"[..])))
            .with("b.yaml", Some(Arc::from(&b"two"[..])));
        good.save(&dir, &Snapshot::default()).unwrap();
        // Another user's copy, and a FIFO (whose open would block).
        fs::set_permissions(dir.join("a.yaml"), fs::Permissions::from_mode(0o666)).unwrap();
        let fifo = std::ffi::CString::new(dir.join("c.yaml").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (back, problems) = Snapshot::load(&dir, &rules());
        assert_eq!(back.names().collect::<Vec<_>>(), ["b.yaml"]);
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].starts_with(&format!(
                "last-good store {}: the file is writable by others (mode 0666",
                dir.join("a.yaml").display()
            )),
            "{shown:?}"
        );
        assert_eq!(
            shown[1],
            format!(
                "last-good store {}: not a regular file but a FIFO",
                dir.join("c.yaml").display()
            )
        );
        // A dir others can write is not read at all.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let (back, problems) = Snapshot::load(&dir, &rules());
        assert!(back.is_empty());
        assert_eq!(problems.len(), 1, "{problems:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
