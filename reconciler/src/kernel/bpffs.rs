//! bpffs: mounting it when missing, checking that kfd's root really is on it,
//! and creating/removing pin directories.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

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

/// Makes sure `root` exists on bpffs and kfd can write under it: mounts
/// bpffs at /sys/fs/bpf when `root` lives under it and nothing is mounted
/// there yet, then creates `root`.
pub fn ensure_root(root: &Path) -> Result<(), BpffsError> {
    let mount_point = Path::new(DEFAULT_MOUNT);
    if root.starts_with(mount_point) && !is_bpffs(mount_point) {
        mount_bpffs(mount_point)?;
    }
    create_dir_all(root)?;
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

fn mount_bpffs(at: &Path) -> Result<(), BpffsError> {
    let err = |source| BpffsError::Mount {
        path: at.to_owned(),
        source,
    };
    fs::create_dir_all(at).map_err(err)?;
    let target = CString::new(at.as_os_str().as_bytes())
        .map_err(|_| err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in path")))?;
    // SAFETY: all arguments are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
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
