//! Watching directories: the config dir, and the dirs that hold the
//! network namespaces chains name (`/run/netns`).
//!
//! The watch is on the directory, never on files: tools replace files by
//! renaming over them, and a watch on the old inode would go silent. One
//! inotify watch per directory (non-recursive) sees every pattern of
//! KERNEL-NOTES.md: `MOVED_TO` (Ansible, Puppet, sed, rsync), `MODIFY` and
//! `CLOSE_WRITE` (vim, cp, tee), `DELETE` + `CREATE` (install, mv across
//! filesystems). Events name the file, and temporaries are dropped here.
//!
//! A directory that is replaced (renamed over, or deleted and recreated)
//! takes its watch with it, so [`DirWatch::ensure`] re-watches it when its
//! inode changes.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use super::debounce::Change;
use crate::config::files::is_candidate;

/// Kubernetes' atomic writer swaps this symlink to update a mounted
/// ConfigMap; the config files are symlinks through it.
const K8S_DATA_LINK: &str = "..data";

/// Watching failed.
#[derive(Debug, thiserror::Error)]
#[error("watching {path}: {source}")]
pub struct WatchError {
    /// The directory.
    pub path: PathBuf,
    /// The failure.
    #[source]
    pub source: notify::Error,
}

/// The inotify watches on the config dir and the namespace dirs.
pub struct DirWatch {
    watcher: RecommendedWatcher,
    config_dir: PathBuf,
    /// Watched dirs and the (dev, inode) they had when watched.
    watched: BTreeMap<PathBuf, (u64, u64)>,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch")
            .field("config_dir", &self.config_dir)
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

impl DirWatch {
    /// An inotify instance whose events for `config_dir` and any other
    /// watched dir go to `tx`. Nothing is watched until [`Self::ensure`].
    pub fn new(config_dir: &Path, tx: UnboundedSender<Change>) -> Result<Self, WatchError> {
        let dir = config_dir.to_owned();
        let watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
            for change in classify(&dir, res) {
                // Fails only once the daemon is shutting down.
                let _ = tx.send(change);
            }
        })
        .map_err(|source| WatchError {
            path: config_dir.to_owned(),
            source,
        })?;
        Ok(Self {
            watcher,
            config_dir: config_dir.to_owned(),
            watched: BTreeMap::new(),
        })
    }

    /// Watches the config dir and `netns_dirs` (dropping others). A dir
    /// that does not exist is skipped and tried again next time. Returns
    /// whether the config dir got a new watch (so events may have been
    /// missed: the caller re-reads it), and the failures.
    pub fn ensure(&mut self, netns_dirs: &BTreeSet<PathBuf>) -> (bool, Vec<WatchError>) {
        let mut wanted: BTreeSet<&Path> = netns_dirs.iter().map(PathBuf::as_path).collect();
        wanted.insert(&self.config_dir);
        let mut errors = Vec::new();
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(p, id)| !wanted.contains(p.as_path()) || identity(p) != Some(**id))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            // The watch may be gone with its dir already; nothing to undo then.
            let _ = self.watcher.unwatch(&p);
            self.watched.remove(&p);
        }
        let mut rewatched_config = false;
        for dir in wanted {
            if self.watched.contains_key(dir) {
                continue;
            }
            let Some(id) = identity(dir) else {
                continue;
            };
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.to_owned(), id);
                    rewatched_config |= dir == self.config_dir;
                }
                Err(source) => errors.push(WatchError {
                    path: dir.to_owned(),
                    source,
                }),
            }
        }
        (rewatched_config, errors)
    }

    /// Whether the config dir is watched now.
    pub fn watching_config(&self) -> bool {
        self.watched.contains_key(&self.config_dir)
    }
}

/// What an inotify event means for kfd.
fn classify(config_dir: &Path, res: notify::Result<Event>) -> Vec<Change> {
    let event = match res {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "config watch error; re-reading everything");
            return vec![Change::Rescan("watch error")];
        }
    };
    if event.need_rescan() {
        return vec![Change::Rescan("inotify queue overflow")];
    }
    let removed = match event.kind {
        // kfd's own reads open the files: never a reason to reconcile.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => return Vec::new(),
        // The From and To halves were already reported on their own.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return Vec::new(),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => true,
        _ => false,
    };
    let mut out = Vec::new();
    for path in &event.paths {
        if path == config_dir {
            // The dir itself was deleted or moved: its watch is gone.
            out.push(Change::Rescan("the config dir was moved or deleted"));
            continue;
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        let Some(name) = name.to_str() else {
            continue; // not UTF-8: never a config file
        };
        if parent != config_dir {
            // A namespace dir: the caller keeps the namespaces it cares about.
            out.push(Change::Netns(path.display().to_string()));
        } else if name == K8S_DATA_LINK {
            out.push(Change::Rescan("the config dir's ..data link changed"));
        } else if is_candidate(name) {
            out.push(if removed {
                Change::FileRemoved(name.to_owned())
            } else {
                Change::File(name.to_owned())
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Result<Event> {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        Ok(e)
    }

    const DIR: &str = "/etc/kf.d";

    fn c(kind: EventKind, paths: &[&str]) -> Vec<Change> {
        classify(Path::new(DIR), ev(kind, paths))
    }

    #[test]
    fn writes_renames_and_deletions_of_config_files_count() {
        let f = |n: &str| Change::File(n.into());
        let gone = |n: &str| Change::FileRemoved(n.into());
        assert_eq!(
            c(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &["/etc/kf.d/10-a.yaml"]
            ),
            [f("10-a.yaml")]
        );
        assert_eq!(
            c(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &["/etc/kf.d/10-a.yaml"]
            ),
            [f("10-a.yaml")]
        );
        assert_eq!(
            c(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/etc/kf.d/10-a.yml"]
            ),
            [f("10-a.yml")]
        );
        assert_eq!(
            c(
                EventKind::Remove(RemoveKind::File),
                &["/etc/kf.d/10-a.yaml"]
            ),
            [gone("10-a.yaml")]
        );
        assert_eq!(
            c(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &["/etc/kf.d/10-a.yaml"]
            ),
            [gone("10-a.yaml")]
        );
    }

    #[test]
    fn temporaries_opens_and_paired_renames_do_not() {
        for name in [
            ".10-a.yaml.swp",
            "10-a.yaml~",
            ".ansible_tmpxyz10-a.yaml",
            "10-a20260101-42-abc",
            "sedAb12Cd",
            "README",
        ] {
            let p = format!("{DIR}/{name}");
            assert!(
                c(EventKind::Create(CreateKind::File), &[&p]).is_empty(),
                "{name}"
            );
        }
        assert!(
            c(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/etc/kf.d/10-a.yaml"]
            )
            .is_empty()
        );
        assert!(
            c(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/etc/kf.d/.x", "/etc/kf.d/10-a.yaml"]
            )
            .is_empty()
        );
    }

    #[test]
    fn the_dir_itself_namespaces_and_overflows() {
        assert_eq!(
            c(EventKind::Remove(RemoveKind::Folder), &[DIR]),
            [Change::Rescan("the config dir was moved or deleted")]
        );
        assert_eq!(
            c(EventKind::Create(CreateKind::File), &["/run/netns/blue"]),
            [Change::Netns("/run/netns/blue".into())]
        );
        assert_eq!(
            c(EventKind::Create(CreateKind::Folder), &["/etc/kf.d/..data"]),
            [Change::Rescan("the config dir's ..data link changed")]
        );
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(
            classify(Path::new(DIR), Ok(overflow)),
            [Change::Rescan("inotify queue overflow")]
        );
    }
}
