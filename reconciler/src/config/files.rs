//! Which files of the config dir are config, and reading them safely.
//!
//! Config tools write files in many ways (see KERNEL-NOTES.md): temp names
//! next to the target, hidden staging files, backups. Only `*.yaml`/`*.yml`
//! files that are not temporaries count.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::{
    FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before calling it a loop (the
/// kernel's own limit, `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

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
    /// A config path is a directory, a FIFO, a device...
    #[error("not a regular file but {kind}")]
    NotAFile {
        /// "a directory", "a FIFO", ...
        kind: &'static str,
    },
    /// Following symlinks never ends.
    #[error(
        "symlink loop: more than {MAX_SYMLINKS} symlinks to follow (the last one: {} -> {})",
        link.display(),
        target.display()
    )]
    SymlinkLoop {
        /// The last symlink followed.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A symlink leads nowhere.
    #[error("symlink {} points to {}, which does not exist", link.display(), target.display())]
    Dangling {
        /// The symlink.
        link: PathBuf,
        /// Where it points (as written in the link).
        target: PathBuf,
    },
    /// The file or a dir on its path may be changed by someone other than root.
    #[error(
        "{what} is {detail}; kfd runs as root and refuses config that others can change \
         (fix the ownership/mode, or pass --insecure-permissions)"
    )]
    Insecure {
        /// "the file" / "its directory" / "a directory on its path".
        what: &'static str,
        /// What is wrong, e.g. "writable by group (mode 0664)".
        detail: String,
    },
    /// The file was replaced between checking it and opening it.
    #[error("changed while being read (a writer at work?); it is read again on the next pass")]
    Replaced,
}

impl From<io::Error> for FileError {
    fn from(source: io::Error) -> Self {
        Self::Io { source }
    }
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

/// What a non-regular file is, for messages.
pub fn kind_of(t: fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// Where `path` really leads, with its metadata: symlinks are resolved one
/// component at a time, the way the kernel does. With `strict`, every
/// directory passed through must be trusted ([`check_trusted`]): the ones on
/// the path as written, the ones holding each symlink followed, and the ones
/// on the path of each target. A symlink can then only lead where root put
/// it, and nobody else can swap a file or a dir on the way.
pub fn resolve(path: &Path, strict: bool) -> Result<(PathBuf, fs::Metadata), FileError> {
    resolve_noting_links(path, strict, &mut Vec::new())
}

/// [`resolve`], noting in `links` every symlink followed (where it lives),
/// also when resolving fails after following some.
pub fn resolve_noting_links(
    path: &Path,
    strict: bool,
    links: &mut Vec<PathBuf>,
) -> Result<(PathBuf, fs::Metadata), FileError> {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    };
    // Components still to walk, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, &absolute);
    let mut real = PathBuf::from("/");
    if strict {
        let meta = fs::metadata(&real)?;
        check_trusted(&real, &meta, "a directory on its path")?;
    }
    let mut followed: Option<(PathBuf, PathBuf)> = None;
    let mut hops = 0;
    let mut last = None;
    while let Some(c) = todo.pop() {
        if c == "/" {
            real = PathBuf::from("/");
            continue;
        }
        if c == "." {
            continue;
        }
        if c == ".." {
            real.pop();
            last = None;
            continue;
        }
        let next = real.join(&c);
        let meta = match fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(match followed {
                    Some((link, target)) => FileError::Dangling { link, target },
                    None => e.into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&next)?;
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(FileError::SymlinkLoop { link: next, target });
            }
            push_components(&mut todo, &target);
            links.push(next.clone());
            followed = Some((next, target));
            continue;
        }
        real = next;
        if !todo.is_empty() && !todo.iter().all(|c| c == ".") {
            if !meta.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR).into());
            }
            if strict {
                let what = if todo.len() == 1 {
                    "its directory"
                } else {
                    "a directory on its path"
                };
                check_trusted(&real, &meta, what)?;
            }
        }
        last = Some(meta);
    }
    let meta = match last {
        Some(m) => m,
        None => fs::metadata(&real)?,
    };
    Ok((real, meta))
}

/// Pushes `path`'s components onto a stack so the first is popped first.
fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .map(|c| match c {
            Component::RootDir | Component::Prefix(_) => OsString::from("/"),
            Component::CurDir => OsString::from("."),
            Component::ParentDir => OsString::from(".."),
            Component::Normal(n) => n.to_owned(),
        })
        .collect();
    todo.extend(parts.into_iter().rev());
}

/// Checks a directory and every directory above it (the config dir: a dir
/// that others can rename or replace would let them swap the config).
pub fn check_dir_trusted(dir: &Path) -> Result<(), FileError> {
    let (real, meta) = resolve(dir, true)?;
    if !meta.is_dir() {
        return Err(FileError::NotAFile {
            kind: kind_of(meta.file_type()),
        });
    }
    check_trusted(&real, &meta, "the config dir")
}

/// Reads a config file or an object after checking size and trust.
/// Symlinks are followed ([`resolve`]), and what is read is what was
/// checked: the file is opened without following symlinks and must still be
/// the one inspected. Only regular files are opened (never a FIFO or a
/// device, whose open alone can block or act).
pub fn read(path: &Path, rules: &ReadRules) -> Result<Vec<u8>, FileError> {
    let (real, meta) = resolve(path, rules.strict_permissions)?;
    if !meta.is_file() {
        return Err(FileError::NotAFile {
            kind: kind_of(meta.file_type()),
        });
    }
    if rules.strict_permissions {
        check_trusted(&real, &meta, "the file")?;
    }
    if meta.len() > rules.max_size {
        return Err(FileError::TooLarge {
            size: meta.len(),
            limit: rules.max_size,
        });
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&real)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOENT) => FileError::Replaced,
            _ => e.into(),
        })?;
    let opened = f.metadata()?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(FileError::Replaced);
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // The file may grow between stat and read (a writer at work): cap the read.
    f.take(rules.max_size + 1).read_to_end(&mut buf)?;
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

    /// A scratch dir under the temp dir (sticky, so trusted), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "kfd-files-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            Scratch(p)
        }

        fn dir(&self, name: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            fs::create_dir_all(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }

        fn file(&self, name: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, b"version: 1\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn strict() -> ReadRules {
        ReadRules {
            max_size: 1 << 20,
            strict_permissions: true,
        }
    }

    fn relaxed() -> ReadRules {
        ReadRules {
            strict_permissions: false,
            ..strict()
        }
    }

    fn err(r: Result<Vec<u8>, FileError>) -> String {
        r.expect_err("refused").to_string()
    }

    #[test]
    fn a_trusted_file_is_read_through_relative_symlinks_and_dot_dot() {
        let s = Scratch::new("ok");
        s.dir("a/b", 0o755);
        s.file("a/real.yaml", 0o644);
        std::os::unix::fs::symlink("../real.yaml", s.0.join("a/b/link.yaml")).unwrap();
        std::os::unix::fs::symlink("b/link.yaml", s.0.join("a/link2.yaml")).unwrap();
        assert_eq!(
            read(&s.0.join("a/link2.yaml"), &strict()).unwrap(),
            b"version: 1\n"
        );
        let (real, _) = resolve(&s.0.join("a/b/../b/./link.yaml"), true).unwrap();
        assert_eq!(real, s.0.join("a/real.yaml"));
    }

    #[test]
    fn a_symlink_loop_is_named() {
        let s = Scratch::new("loop");
        let a = s.0.join("a.yaml");
        std::os::unix::fs::symlink("b.yaml", &a).unwrap();
        std::os::unix::fs::symlink("a.yaml", s.0.join("b.yaml")).unwrap();
        for rules in [strict(), relaxed()] {
            assert_eq!(
                err(read(&a, &rules)),
                format!(
                    "symlink loop: more than 40 symlinks to follow (the last one: {} -> b.yaml)",
                    a.display()
                )
            );
        }
    }

    #[test]
    fn a_dangling_symlink_names_its_target() {
        let s = Scratch::new("dangling");
        let a = s.0.join("a.yaml");
        std::os::unix::fs::symlink("/nonexistent/x.yaml", &a).unwrap();
        assert_eq!(
            err(read(&a, &strict())),
            format!(
                "symlink {} points to /nonexistent/x.yaml, which does not exist",
                a.display()
            )
        );
        // Not through a symlink: the plain error.
        assert_eq!(
            err(read(&s.0.join("nope.yaml"), &strict())),
            "No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_dir_others_can_write_anywhere_on_the_path_is_refused() {
        let s = Scratch::new("dirs");
        let open = s.dir("open", 0o777);
        s.dir("open/inner", 0o755);
        let f = s.file("open/inner/x.yaml", 0o644);
        let e = err(read(&f, &strict()));
        assert!(
            e.starts_with(&format!(
                "a directory on its path is writable by others (mode 0777, {})",
                open.display()
            )),
            "{e}"
        );
        assert!(read(&f, &relaxed()).is_ok());
        // Sticky (like /tmp): others cannot replace root's entries there.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(read(&f, &strict()).is_ok());
        // The file's own dir.
        let inner = s.dir("open/inner", 0o775);
        let e = err(read(&f, &strict()));
        assert!(
            e.starts_with(&format!(
                "its directory is writable by its group (mode 0775, {})",
                inner.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn symlinks_are_checked_where_they_live_and_where_they_lead() {
        let s = Scratch::new("links");
        s.dir("safe", 0o755);
        let open = s.dir("open", 0o777);
        // A safe link to a file in an open dir: the target's dir is checked.
        s.file("open/target.yaml", 0o644);
        let link = s.0.join("safe/link.yaml");
        std::os::unix::fs::symlink(s.0.join("open/target.yaml"), &link).unwrap();
        let e = err(read(&link, &strict()));
        assert!(
            e.starts_with(&format!(
                "its directory is writable by others (mode 0777, {})",
                open.display()
            )),
            "{e}"
        );
        // A link in an open dir to a safe file: whoever can write the open
        // dir can point the link elsewhere.
        let safe_file = s.file("safe/real.yaml", 0o644);
        let bad_link = s.0.join("open/link.yaml");
        std::os::unix::fs::symlink(&safe_file, &bad_link).unwrap();
        let e = err(read(&bad_link, &strict()));
        assert!(
            e.starts_with(&format!(
                "its directory is writable by others (mode 0777, {})",
                open.display()
            )),
            "{e}"
        );
        // A link to a group-writable file: the file itself is checked.
        let gw = s.file("safe/gw.yaml", 0o664);
        let to_gw = s.0.join("safe/to-gw.yaml");
        std::os::unix::fs::symlink(&gw, &to_gw).unwrap();
        let e = err(read(&to_gw, &strict()));
        assert!(
            e.starts_with(&format!(
                "the file is writable by its group (mode 0664, {})",
                gw.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn only_regular_files_are_opened() {
        let s = Scratch::new("kinds");
        let d = s.dir("d.yaml", 0o755);
        assert_eq!(
            err(read(&d, &strict())),
            "not a regular file but a directory"
        );
        let fifo = s.0.join("p.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Opening a FIFO would block until a writer came: it is never opened.
        assert_eq!(err(read(&fifo, &strict())), "not a regular file but a FIFO");
        assert_eq!(
            err(read(Path::new("/dev/null"), &relaxed())),
            "not a regular file but a character device"
        );
    }

    #[test]
    fn the_size_limit_is_exact() {
        let s = Scratch::new("size");
        let f = s.0.join("x.yaml");
        fs::write(&f, vec![b'#'; 100]).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let at = |max_size| {
            read(
                &f,
                &ReadRules {
                    max_size,
                    ..strict()
                },
            )
        };
        assert_eq!(at(100).unwrap().len(), 100);
        assert_eq!(
            err(at(99)),
            "file is 100 bytes, over the 99-byte limit (--max-file-size)"
        );
    }
}
