//! The last good configuration: a copy of every file as it was when it was
//! last applied. A file that fails to parse or validate is replaced by its
//! copy here, so a bad write never removes anything; `kfd plan` diffs
//! against it. It lives in kfd's state dir, so it survives restarts.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of the snapshot store, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("last-good store {path}: {source}")]
pub struct SnapshotError {
    /// The path.
    pub path: PathBuf,
    /// The failure.
    #[source]
    pub source: io::Error,
}

/// The files in force at the last successful apply, by name.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    files: BTreeMap<String, Arc<[u8]>>,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError {
        path: path.to_owned(),
        source,
    }
}

impl Snapshot {
    /// Reads the store; a missing store is empty (first run).
    pub fn load(dir: &Path) -> Result<Self, SnapshotError> {
        let mut files = BTreeMap::new();
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(err(dir)(e)),
        };
        for entry in rd {
            let entry = entry.map_err(err(dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !super::files::is_candidate(&name) {
                continue; // our own temporaries
            }
            let bytes = fs::read(entry.path()).map_err(err(&entry.path()))?;
            files.insert(name, Arc::from(bytes));
        }
        Ok(Self { files })
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

    /// Replaces the store with `files`. Each file is written to a temporary
    /// and renamed into place (atomic per file); unchanged files are not
    /// rewritten, so re-applying a large config costs a comparison.
    pub fn save(dir: &Path, files: &BTreeMap<String, Arc<[u8]>>) -> Result<Self, SnapshotError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(dir))?;
        let current = Self::load(dir)?;
        for (name, bytes) in files {
            if current.get(name).is_some_and(|b| b[..] == bytes[..]) {
                continue;
            }
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err(&tmp))?;
            f.write_all(bytes).map_err(err(&tmp))?;
            f.sync_all().map_err(err(&tmp))?;
            fs::rename(&tmp, dir.join(name)).map_err(err(&tmp))?;
        }
        for name in current.names() {
            if !files.contains_key(name) {
                let path = dir.join(name);
                fs::remove_file(&path).map_err(err(&path))?;
            }
        }
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err(dir))?;
        Ok(Self {
            files: files.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replaces_and_load_reads_back() {
        let dir = std::env::temp_dir().join(format!("kfd-snap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(Snapshot::load(&dir).unwrap().is_empty());
        let mut files = BTreeMap::new();
        files.insert("a.yaml".to_owned(), Arc::from(&b"one"[..]));
        files.insert("b.yaml".to_owned(), Arc::from(&b"two"[..]));
        Snapshot::save(&dir, &files).unwrap();
        files.remove("a.yaml");
        files.insert("b.yaml".to_owned(), Arc::from(&b"three"[..]));
        Snapshot::save(&dir, &files).unwrap();
        let back = Snapshot::load(&dir).unwrap();
        assert_eq!(back.names().collect::<Vec<_>>(), ["b.yaml"]);
        assert_eq!(&back.get("b.yaml").unwrap()[..], b"three");
        fs::remove_dir_all(&dir).unwrap();
    }
}
