//! bpffs: mounting it when missing, checking that kfd's root really is on it
//! and that only root can change it, and creating/removing pin directories.
//!
//! /sys/fs/bpf is usually mode 1777, so any local user can create kfd's root
//! before kfd does. Whoever owns it could then swap pins, or hold its flock
//! and stop every apply. So the root must be root's (or kfd's user's) and
//! writable by nobody else, and every directory above it must pass sshd's
//! StrictModes (sticky dirs such as /sys/fs/bpf itself are fine above it).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::config::files::{self, FileError};

/// statfs magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where bpffs is mounted when kfd has to mount it.
pub const DEFAULT_MOUNT: &str = "/sys/fs/bpf";

/// bpffs errors, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// The path is not on a bpffs mount.
    #[error(
        "{path} is not on a bpf filesystem (mount one with `mount -t bpf bpf {DEFAULT_MOUNT}`)"
    )]
    NotBpffs {
        /// The path checked.
        path: PathBuf,
    },
    /// The root, or a dir above it, may be changed by someone other than root.
    #[error(
        "bpffs root {}: {detail}; kfd keeps its pins and its lock there, so nobody but root may change it \
         (remove it and kfd creates it with mode 0700, or make it root's and writable only by root)",
        path.display()
    )]
    Untrusted {
        /// The root.
        path: PathBuf,
        /// What is wrong: "owned by uid 65534", "a directory on its path is ...".
        detail: String,
    },
    /// The root's path could not be followed.
    #[error("bpffs root {}: {source}", path.display())]
    Path {
        /// The root.
        path: PathBuf,
        /// The failure.
        #[source]
        source: FileError,
    },
    /// Mounting bpffs failed.
    #[error("mounting bpffs at {path}: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// kfd cannot write under its root (a read-only mount, as systemd's
    /// sandboxing makes /sys unless the unit says otherwise).
    #[error("{path} is not writable: {source}{hint}")]
    NotWritable {
        /// The root.
        path: PathBuf,
        /// What access(2) said.
        #[source]
        source: io::Error,
        /// What to do about it, when known.
        hint: &'static str,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn statfs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statfs is plain data; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; st is a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs across libc targets
    Ok(st.f_type as i64)
}

/// Whether `path` is on bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs_magic(path).is_ok_and(|m| m == BPF_FS_MAGIC)
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there (mode 0700:
/// kfd's mount is root's alone).
pub fn ensure_mounted() -> Result<(), BpffsError> {
    let mount_point = Path::new(DEFAULT_MOUNT);
    if !is_bpffs(mount_point) {
        mount_bpffs(mount_point)?;
    }
    Ok(())
}

/// Makes sure `root` exists on bpffs, only root can change it, and kfd can
/// write under it: mounts bpffs at /sys/fs/bpf when `root` lives under it
/// and nothing is mounted there yet, creates `root` (0700), then checks it
/// ([`check_root`]).
pub fn ensure_root(root: &Path) -> Result<(), BpffsError> {
    if root.starts_with(DEFAULT_MOUNT) {
        ensure_mounted()?;
    }
    // Nothing is created inside a directory others could swap.
    if let Some(existing) = root.ancestors().skip(1).find(|a| a.is_dir()) {
        check_above(root, existing)?;
    }
    create_dir_all(root)?;
    check_root(root)?;
    if !is_bpffs(root) {
        return Err(BpffsError::NotBpffs {
            path: root.to_owned(),
        });
    }
    // An existing root on a read-only mount would otherwise fail only at
    // the first pin, as a failure of every chain.
    if let Err(source) = access_writable(root) {
        let hint = if source.raw_os_error() == Some(libc::EROFS) {
            " (under systemd, the unit's ReadWritePaths= must name the bpffs root)"
        } else {
            ""
        };
        return Err(BpffsError::NotWritable {
            path: root.to_owned(),
            source,
            hint,
        });
    }
    Ok(())
}

fn access_writable(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a valid C string; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks `dir` (an existing ancestor of `root`) and the dirs above it as
/// StrictModes would.
fn check_above(root: &Path, dir: &Path) -> Result<(), BpffsError> {
    let trusted = files::resolve(dir, true)
        .and_then(|(real, meta)| files::check_trusted(&real, &meta, "a directory on its path"));
    trusted.map_err(|e| root_error(root, e))
}

fn root_error(root: &Path, e: FileError) -> BpffsError {
    match e {
        FileError::Insecure { what, detail } => BpffsError::Untrusted {
            path: root.to_owned(),
            detail: format!("{what} is {detail}"),
        },
        source => BpffsError::Path {
            path: root.to_owned(),
            source,
        },
    }
}

/// Checks an existing root: every directory on its path as StrictModes
/// would (`config::files::resolve`), and the root itself strictly: owned by
/// root (or the user kfd runs as) and writable by nobody else, sticky or not
/// (others could create chain dirs in a sticky one).
pub fn check_root(root: &Path) -> Result<(), BpffsError> {
    let untrusted = |detail: String| BpffsError::Untrusted {
        path: root.to_owned(),
        detail,
    };
    let (_, meta) = files::resolve(root, true).map_err(|e| root_error(root, e))?;
    if !meta.is_dir() {
        return Err(BpffsError::Path {
            path: root.to_owned(),
            source: FileError::NotAFile {
                kind: "not a directory",
            },
        });
    }
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(untrusted(format!("owned by uid {}", meta.uid())));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 {
            "others"
        } else {
            "its group"
        };
        return Err(untrusted(format!("writable by {who} (mode {mode:04o})")));
    }
    Ok(())
}

fn mount_bpffs(at: &Path) -> Result<(), BpffsError> {
    let err = |source| BpffsError::Mount {
        path: at.to_owned(),
        source,
    };
    fs::create_dir_all(at).map_err(err)?;
    let target = CString::new(at.as_os_str().as_bytes())
        .map_err(|_| err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in path")))?;
    // SAFETY: all arguments are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// `mkdir -p` with 0700 directories: pins are root's business.
pub fn create_dir_all(path: &Path) -> Result<(), BpffsError> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| BpffsError::Io {
            op: "creating",
            path: path.to_owned(),
            source,
        })
}

/// Removes a pin (file) if present. Unpinning drops only the pin's reference.
pub fn unpin(path: &Path) -> Result<(), BpffsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BpffsError::Io {
            op: "unpinning",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes a directory of pins recursively; missing is fine.
pub fn remove_tree(path: &Path) -> Result<(), BpffsError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BpffsError::Io {
            op: "removing",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes `path` if it is an empty directory; anything else is left alone.
pub fn remove_dir_if_empty(path: &Path) {
    // ENOTEMPTY/ENOENT are the expected "leave it" answers.
    let _ = fs::remove_dir(path);
}

/// Renames a pin or pin directory (bpffs supports rename within the mount).
pub fn rename(from: &Path, to: &Path) -> Result<(), BpffsError> {
    fs::rename(from, to).map_err(|source| BpffsError::Io {
        op: "renaming",
        path: from.to_owned(),
        source,
    })
}

/// Names of the entries of a directory, sorted; empty when it does not exist.
pub fn list(path: &Path) -> Result<Vec<String>, BpffsError> {
    let rd = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BpffsError::Io {
                op: "listing",
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}
