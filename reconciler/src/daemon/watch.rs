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
//!
//! A config dir reached through symlinks (`/etc/kf.d -> releases/current`,
//! swapped with `ln -sfn` at each release) changes without an event in the
//! dir watched: the old target stays as it was. So the dir holding each
//! symlink on the way is watched too, and a change to that symlink means
//! "re-read everything" (after which `ensure` watches the new target).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use super::debounce::Change;
use crate::config::files::{self, is_candidate};

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
    /// The symlinks on the way to the config dir, shared with the event
    /// thread: replacing one of them changes what the config dir is.
    links: Arc<Mutex<BTreeSet<PathBuf>>>,
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
        let links = Arc::new(Mutex::new(BTreeSet::new()));
        let shared = links.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
            let links = shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for change in classify(&dir, &links, res) {
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
            links,
        })
    }

    /// Watches the config dir and `netns_dirs` (dropping others). A dir
    /// that does not exist is skipped and tried again next time. Returns
    /// whether the config dir got a new watch (so events may have been
    /// missed: the caller re-reads it), and the failures.
    pub fn ensure(&mut self, netns_dirs: &BTreeSet<PathBuf>) -> (bool, Vec<WatchError>) {
        // Where the config dir's path leads may have changed: the symlinks
        // on it now, and the dirs holding them.
        let mut links = Vec::new();
        let _ = files::resolve_noting_links(&self.config_dir, false, &mut links);
        let link_dirs: BTreeSet<PathBuf> = links
            .iter()
            .filter_map(|l| l.parent().map(Path::to_owned))
            .collect();
        *self.links.lock().unwrap_or_else(PoisonError::into_inner) = links.into_iter().collect();
        let mut wanted: BTreeSet<&Path> = netns_dirs.iter().map(PathBuf::as_path).collect();
        wanted.extend(link_dirs.iter().map(PathBuf::as_path));
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

/// What an inotify event means for kfd. `links` are the symlinks on the
/// way to the config dir (their dirs are watched for them alone).
fn classify(
    config_dir: &Path,
    links: &BTreeSet<PathBuf>,
    res: notify::Result<Event>,
) -> Vec<Change> {
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
        if links.contains(path) {
            // A release switch (`ln -sfn`): the config dir is another dir now.
            out.push(Change::Rescan("a symlink on the config dir's path changed"));
            continue;
        }
        if path == config_dir {
            // The dir itself was deleted or moved: its watch is gone.
            out.push(Change::Rescan("the config dir was moved or deleted"));
            continue;
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        if links.iter().any(|l| l.parent() == Some(parent)) && parent != config_dir {
            continue; // another entry beside a symlink on the way
        }
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
        classify(Path::new(DIR), &BTreeSet::new(), ev(kind, paths))
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
            classify(Path::new(DIR), &BTreeSet::new(), Ok(overflow)),
            [Change::Rescan("inotify queue overflow")]
        );
    }

    #[test]
    fn a_swapped_symlink_on_the_way_to_the_config_dir_is_a_rescan() {
        // /etc/kf.d -> /srv/app/current/kf.d, /srv/app/current -> releases/7
        let links: BTreeSet<PathBuf> = ["/etc/kf.d", "/srv/app/current"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let c = |kind, path: &str| classify(Path::new(DIR), &links, ev(kind, &[path]));
        let swapped = [Change::Rescan("a symlink on the config dir's path changed")];
        // `ln -sfn` renames a new symlink over the old one.
        let moved_to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(c(moved_to, "/etc/kf.d"), swapped);
        assert_eq!(c(moved_to, "/srv/app/current"), swapped);
        assert_eq!(
            c(EventKind::Create(CreateKind::File), "/srv/app/current"),
            swapped
        );
        assert_eq!(
            c(EventKind::Remove(RemoveKind::File), "/srv/app/current"),
            swapped
        );
        // The rest of those dirs is not kfd's business.
        assert!(c(EventKind::Create(CreateKind::File), "/etc/passwd").is_empty());
        assert!(c(moved_to, "/srv/app/releases").is_empty());
        // Files in the config dir still count.
        assert_eq!(
            c(moved_to, "/etc/kf.d/10-a.yaml"),
            [Change::File("10-a.yaml".into())]
        );
    }
}
