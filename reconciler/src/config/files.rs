//! Which files of the config dir are config, and reading them safely.
//!
//! Config tools write files in many ways (see KERNEL-NOTES.md): temp names
//! next to the target, hidden staging files, backups. Only `*.yaml`/`*.yml`
//! files that are not temporaries count.

use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Reading errors. Each names the path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file or dir could not be read.
    #[error("{source}")]
    Io {
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The file is bigger than the limit.
    #[error("file is {size} bytes, over the {limit}-byte limit (--max-file-size)")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A config path is a directory (or other non-file).
    #[error("not a regular file")]
    NotAFile,
    /// The file or dir may be changed by someone other than root.
    #[error(
        "{what} is {detail}; kfd runs as root and refuses config that others can change \
         (fix the ownership/mode, or pass --insecure-permissions)"
    )]
    Insecure {
        /// "the file" / "its directory".
        what: &'static str,
        /// What is wrong, e.g. "writable by group (mode 0664)".
        detail: String,
    },
}

/// Names of editor and tool temporaries that must never be read as config.
pub fn is_candidate(name: &str) -> bool {
    if name.starts_with('.') {
        return false; // hidden: .swp, rsync's .NAME.XXXXXX, .ansible_tmp*
    }
    let Some(stem) = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
    else {
        return false;
    };
    !stem.is_empty()
        && !stem.contains(".dpkg-")
        && !stem.ends_with(".rpmnew")
        && !stem.ends_with(".rpmsave")
}

/// The config files of `dir`, sorted by name (lexical order is merge order).
pub fn list(dir: &Path) -> Result<Vec<String>, FileError> {
    let rd = fs::read_dir(dir).map_err(|source| FileError::Io { source })?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| FileError::Io { source })?;
        if let Some(name) = entry.file_name().to_str()
            && is_candidate(name)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// How careful to be when reading.
#[derive(Debug, Clone, Copy)]
pub struct ReadRules {
    /// Largest file accepted.
    pub max_size: u64,
    /// Refuse files (and their dirs) that non-root users could change.
    pub strict_permissions: bool,
}

/// Reads a config file (following symlinks) after checking size and trust.
pub fn read(path: &Path, rules: &ReadRules) -> Result<Vec<u8>, FileError> {
    let meta = fs::metadata(path).map_err(|source| FileError::Io { source })?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    if rules.strict_permissions {
        check_trusted(path, &meta, "the file")?;
        let real = fs::canonicalize(path).map_err(|source| FileError::Io { source })?;
        if let Some(parent) = real.parent() {
            let pmeta = fs::metadata(parent).map_err(|source| FileError::Io { source })?;
            check_trusted(parent, &pmeta, "its directory")?;
        }
    }
    if meta.len() > rules.max_size {
        return Err(FileError::TooLarge {
            size: meta.len(),
            limit: rules.max_size,
        });
    }
    let mut f = fs::File::open(path).map_err(|source| FileError::Io { source })?;
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // The file may grow between stat and read (a writer at work): cap the read.
    (&mut f)
        .take(rules.max_size + 1)
        .read_to_end(&mut buf)
        .map_err(|source| FileError::Io { source })?;
    if buf.len() as u64 > rules.max_size {
        return Err(FileError::TooLarge {
            size: buf.len() as u64,
            limit: rules.max_size,
        });
    }
    Ok(buf)
}

/// Like sshd's StrictModes: owned by root (or by the user kfd runs as), and
/// writable by nobody else. Directories with the sticky bit (like /tmp) are
/// fine for others to write: they cannot replace root's files there.
pub fn check_trusted(
    path: &Path,
    meta: &fs::Metadata,
    what: &'static str,
) -> Result<(), FileError> {
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    let mode = meta.permissions().mode();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(FileError::Insecure {
            what,
            detail: format!("owned by uid {} ({})", meta.uid(), path.display()),
        });
    }
    let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        let who = if mode & 0o002 != 0 {
            "others"
        } else {
            "its group"
        };
        return Err(FileError::Insecure {
            what,
            detail: format!(
                "writable by {who} (mode {:04o}, {})",
                mode & 0o7777,
                path.display()
            ),
        });
    }
    Ok(())
}

/// The path of `name` in `dir`.
pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_are_not_config() {
        for ok in ["10-edge.yaml", "a.yml", "x.y.yaml"] {
            assert!(is_candidate(ok), "{ok}");
        }
        for tmp in [
            ".10-edge.yaml.swp",
            ".ansible_tmpab12cd10-edge.yaml",
            ".10-edge.yaml.Xa81Zq",
            "10-edge.yaml~",
            "10-edge.yaml.12345.2026-01-01@10:00:00~",
            "10-edge.yaml.dpkg-dist",
            "10-edge.dpkg-new.yaml",
            "10-edge.yaml.rpmnew",
            "10-edge20261122-4242-1x9z3k",
            "10-edge20261122-4242-1x9z3k.lock",
            "10-edge.yamlq8x1z0ab",
            "sedAb12Cd",
            ".yaml",
            "README",
        ] {
            assert!(!is_candidate(tmp), "{tmp}");
        }
    }
}
