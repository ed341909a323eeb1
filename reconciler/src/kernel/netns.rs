//! Running kernel calls inside a network namespace.
//!
//! Interface names, ifindexes, netlink sockets and XDP/TC attachment are
//! per network namespace. kfd enters a namespace with setns(CLONE_NEWNET) on
//! a thread of its own that ends right after, so no other thread ever runs
//! in the wrong namespace. (`ip netns exec` is no substitute: it remounts
//! /sys and hides bpffs.)
//!
//! A namespace path comes from config, so it is opened the way config files
//! are read ([`open`]): its directories must be root's (StrictModes, as
//! `config::files::resolve` checks them), its type is checked before it is
//! opened and the open never blocks (a FIFO there would hang every pass
//! under the root lock), and what was opened must be a network namespace.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::error::Escaped;
use crate::config::files::{self, FileError};

/// `NSFS_MAGIC` (linux/magic.h): the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `NS_GET_NSTYPE` (linux/nsfs.h, `_IO(0xb7, 0x3)`): the `CLONE_NEW*` type
/// of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Netns errors, naming the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened (the namespace does not exist).
    #[error("network namespace {}: {source}", shown(.path))]
    Open {
        /// Its path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// setns failed.
    #[error("entering network namespace {}: {source}", shown(.path))]
    Enter {
        /// Its path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The path names something that is not a network namespace.
    #[error("{}: not a network namespace: {what}", shown(.path))]
    NotANamespace {
        /// Its path.
        path: PathBuf,
        /// What it is: "a regular file", "a FIFO", "a mount namespace", ...
        what: String,
    },
    /// A directory on the path may be changed by someone other than root.
    #[error(
        "network namespace {}: {what} is {detail}; kfd enters only namespaces whose path nobody but root can change (fix the ownership/mode)",
        shown(.path)
    )]
    Untrusted {
        /// Its path.
        path: PathBuf,
        /// "its directory" / "a directory on its path".
        what: &'static str,
        /// What is wrong, e.g. "writable by others (mode 0777, /tmp/ns)".
        detail: String,
    },
    /// The path could not be followed (a symlink loop, a dangling link...).
    #[error("network namespace {}: {source}", shown(.path))]
    Path {
        /// Its path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: FileError,
    },
    /// The file changed between its check and its open.
    #[error("network namespace {}: replaced while being opened; tried again on the next pass", shown(.path))]
    Replaced {
        /// Its path.
        path: PathBuf,
    },
    /// The worker thread panicked.
    #[error("the thread working in network namespace {} panicked", shown(.path))]
    Panicked {
        /// Its path.
        path: PathBuf,
    },
}

/// A path for a message: on one line whatever it holds.
fn shown(path: &Path) -> String {
    Escaped(&path.to_string_lossy()).to_string()
}

/// Why a `netns:` value can name no namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetnsNameError {
    /// An empty value.
    #[error("it is empty")]
    Empty,
    /// `.` or `..` as a name: the dir /run/netns or its parent.
    #[error("{0:?} is not a name under {NETNS_RUN_DIR} (it names a directory)")]
    DotName(String),
    /// A relative path with `/`.
    #[error("a relative path: give a name under {NETNS_RUN_DIR} (no `/`) or an absolute path")]
    Relative,
    /// `..` in an absolute path: through a symlink it may lead elsewhere
    /// than it reads, so it is not rewritten.
    #[error("`..` in a path: write the path without it")]
    DotDot,
}

/// The one spelling of a namespace, so that `blue`, `/run/netns/blue`,
/// `/run/netns/./blue` and `/run/netns//blue` are one chain, not several
/// (on XDP a second chain on the same interface would remove the first).
/// Lexical only, nothing is opened: a path under /run/netns that names an
/// entry of it becomes the bare name; other absolute paths lose `.`
/// components and repeated or trailing `/`.
pub fn normalise(netns: &str) -> Result<String, NetnsNameError> {
    if netns.is_empty() {
        return Err(NetnsNameError::Empty);
    }
    let Some(path) = netns.strip_prefix('/') else {
        if netns.contains('/') {
            return Err(NetnsNameError::Relative);
        }
        if netns == "." || netns == ".." {
            return Err(NetnsNameError::DotName(netns.to_owned()));
        }
        return Ok(netns.to_owned());
    };
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(NetnsNameError::DotDot),
            p => parts.push(p),
        }
    }
    let run_dir: Vec<&str> = NETNS_RUN_DIR.split('/').filter(|p| !p.is_empty()).collect();
    if let Some((name, dir)) = parts.split_last()
        && dir == run_dir.as_slice()
    {
        return Ok((*name).to_owned());
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The file of a namespace given as a name (under /run/netns) or an absolute path.
pub fn netns_path(netns: &str) -> PathBuf {
    if netns.starts_with('/') {
        PathBuf::from(netns)
    } else {
        Path::new(NETNS_RUN_DIR).join(netns)
    }
}

/// Whether a symlink target is one of the kernel's magic names
/// (`net:[4026531840]`, as /proc/PID/ns/* links read): such a link leads
/// to the object itself, not to a path.
fn is_magic_target(target: &Path) -> bool {
    let Some(t) = target.to_str() else {
        return false;
    };
    let Some((kind, rest)) = t.split_once(":[") else {
        return false;
    };
    let Some(number) = rest.strip_suffix(']') else {
        return false;
    };
    !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_lowercase())
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// What a file that is not a network namespace is, for messages.
fn describe(meta: &fs::Metadata) -> String {
    if meta.is_file() {
        "a regular file".into()
    } else {
        files::kind_of(meta.file_type()).into()
    }
}

/// A `CLONE_NEW*` namespace type, for messages.
fn ns_kind(t: libc::c_int) -> String {
    match t {
        libc::CLONE_NEWNS => "a mount namespace".into(),
        libc::CLONE_NEWUTS => "a UTS namespace".into(),
        libc::CLONE_NEWIPC => "an IPC namespace".into(),
        libc::CLONE_NEWUSER => "a user namespace".into(),
        libc::CLONE_NEWPID => "a PID namespace".into(),
        libc::CLONE_NEWCGROUP => "a cgroup namespace".into(),
        libc::CLONE_NEWTIME => "a time namespace".into(),
        other => format!("a namespace of type {other:#x}"),
    }
}

/// Opens the network namespace file at `path`, never blocking: the dirs on
/// the path must be trusted (as config files' are), only a file of the type
/// a namespace file has is opened (O_NONBLOCK, O_NOFOLLOW after resolving
/// symlinks: never a FIFO or a device, whose open can block or act), and it
/// must be an nsfs file of a network namespace. /proc/PID/ns/net links are
/// followed into the namespace they name.
pub fn open(path: &Path) -> Result<File, NetnsError> {
    let err_path = || path.to_owned();
    let (real, meta, magic) = match files::resolve(path, true) {
        Ok((real, meta)) => (real, meta, false),
        Err(FileError::Dangling { link, target }) if is_magic_target(&target) => {
            // stat follows the magic link without opening anything.
            let meta = fs::metadata(&link).map_err(|source| NetnsError::Open {
                path: err_path(),
                source,
            })?;
            (link, meta, true)
        }
        Err(FileError::Io { source }) => {
            return Err(NetnsError::Open {
                path: err_path(),
                source,
            });
        }
        Err(FileError::Insecure { what, detail }) => {
            return Err(NetnsError::Untrusted {
                path: err_path(),
                what,
                detail,
            });
        }
        Err(source) => {
            return Err(NetnsError::Path {
                path: err_path(),
                source,
            });
        }
    };
    // Namespace files are regular files (of nsfs); anything else is refused
    // unopened.
    if !meta.is_file() {
        return Err(NetnsError::NotANamespace {
            path: err_path(),
            what: describe(&meta),
        });
    }
    let nofollow = if magic { 0 } else { libc::O_NOFOLLOW };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | nofollow)
        .open(&real)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOENT) => NetnsError::Replaced { path: err_path() },
            _ => NetnsError::Open {
                path: err_path(),
                source,
            },
        })?;
    let opened = file.metadata().map_err(|source| NetnsError::Open {
        path: err_path(),
        source,
    })?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(NetnsError::Replaced { path: err_path() });
    }
    // SAFETY: statfs is plain data; fstatfs fills it for an open fd.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: file is open; st is a valid out-pointer.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(NetnsError::Open {
            path: err_path(),
            source: io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs across libc targets
    if st.f_type as i64 != NSFS_MAGIC {
        return Err(NetnsError::NotANamespace {
            path: err_path(),
            what: describe(&opened),
        });
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind < 0 {
        return Err(NetnsError::Open {
            path: err_path(),
            source: io::Error::last_os_error(),
        });
    }
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsError::NotANamespace {
            path: err_path(),
            what: ns_kind(kind),
        });
    }
    Ok(file)
}

/// Runs `f` in the namespace at `netns` (None: the current one, on this
/// thread). The namespace file is opened with [`open`].
pub fn run_in<T: Send>(
    netns: Option<&Path>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    let Some(path) = netns else {
        return Ok(f());
    };
    let file = open(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: file is an open namespace fd; setns affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Enter {
                        path: path.to_owned(),
                        source: io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .join()
            .map_err(|_| NetnsError::Panicked {
                path: path.to_owned(),
            })?
    })
}

/// The name of the interface with index `ifindex` in the calling thread's
/// namespace, if it exists.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Every interface of the calling thread's namespace, as (index, name).
pub fn interfaces() -> Vec<(u32, String)> {
    // SAFETY: if_nameindex allocates a list ending with a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut p = list;
    // SAFETY: every entry up to the zero one is valid, with a C-string name.
    unsafe {
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name);
            out.push(((*p).if_index, name.to_string_lossy().into_owned()));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// The index of interface `name` in the calling thread's namespace, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A scratch dir under the temp dir (sticky, so trusted), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("kfd-netns-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).expect("scratch dir");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn refused(path: &Path) -> String {
        open(path).expect_err("refused").to_string()
    }

    #[test]
    fn only_network_namespaces_are_opened_and_a_fifo_never_blocks() {
        let s = Scratch::new("kinds");
        let fifo = s.0.join("ns.fifo");
        let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("path");
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // An open would block until a writer came: it is refused unopened.
        assert_eq!(
            refused(&fifo),
            format!("{}: not a network namespace: a FIFO", fifo.display())
        );
        let file = s.0.join("passwd");
        fs::write(&file, "root:x:0:0::/root:/bin/sh\n").expect("write");
        assert_eq!(
            refused(&file),
            format!(
                "{}: not a network namespace: a regular file",
                file.display()
            )
        );
        assert_eq!(
            refused(&s.0),
            format!("{}: not a network namespace: a directory", s.0.display())
        );
        let link = s.0.join("link");
        std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
        assert_eq!(
            refused(&link),
            format!("{}: not a network namespace: a FIFO", link.display())
        );
        assert_eq!(
            refused(Path::new("/dev/null")),
            "/dev/null: not a network namespace: a character device"
        );
        assert_eq!(
            refused(&s.0.join("nothing")),
            format!(
                "network namespace {}: No such file or directory (os error 2)",
                s.0.join("nothing").display()
            )
        );
        // The kernel's own namespace files, through /proc's magic links.
        assert!(open(Path::new("/proc/self/ns/net")).is_ok());
        assert_eq!(
            refused(Path::new("/proc/self/ns/mnt")),
            "/proc/self/ns/mnt: not a network namespace: a mount namespace"
        );
    }

    #[test]
    fn a_namespace_path_others_can_change_is_refused() {
        let s = Scratch::new("trust");
        let open_dir = s.0.join("open");
        fs::create_dir(&open_dir).expect("mkdir");
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let link = open_dir.join("net");
        std::os::unix::fs::symlink("/proc/self/ns/net", &link).expect("symlink");
        assert_eq!(
            refused(&link),
            format!(
                "network namespace {}: its directory is writable by others (mode 0777, {}); \
                 kfd enters only namespaces whose path nobody but root can change (fix the ownership/mode)",
                link.display(),
                open_dir.display()
            )
        );
    }

    #[test]
    fn a_namespace_from_ip_netns_add_is_opened_and_entered() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating a namespace needs root");
            return;
        }
        let name = format!("kfd-unit-{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ip(&["netns", "add", &name]) {
            eprintln!("skipped: `ip netns add` failed");
            return;
        }
        let path = netns_path(&name);
        let opened = open(&path).map(|_| ());
        // Inside it only its own loopback exists.
        let lo_only = run_in(Some(&path), || (ifindex("lo"), ifindex("kfd-nope")));
        let deleted = ip(&["netns", "del", &name]);
        assert!(opened.is_ok(), "{opened:?}");
        assert_eq!(lo_only.expect("entered"), (Some(1), None));
        assert!(deleted, "ip netns del {name}");
    }

    #[test]
    fn one_namespace_has_one_spelling() {
        for spelling in [
            "blue",
            "/run/netns/blue",
            "/run/netns/./blue",
            "/run/netns//blue",
            "//run/./netns/blue/",
        ] {
            assert_eq!(normalise(spelling).as_deref(), Ok("blue"), "{spelling}");
        }
        for (spelling, normal) in [
            ("/var/run/netns/blue", "/var/run/netns/blue"),
            ("/proc/1/ns/net", "/proc/1/ns/net"),
            ("/run/netns/sub/blue", "/run/netns/sub/blue"),
            ("//var//./lib/ns/", "/var/lib/ns"),
            ("/run/netns", "/run/netns"),
            ("/", "/"),
            ("...", "..."),
        ] {
            assert_eq!(normalise(spelling).as_deref(), Ok(normal), "{spelling}");
        }
        for (spelling, why) in [
            ("", "it is empty"),
            (
                ".",
                "\".\" is not a name under /run/netns (it names a directory)",
            ),
            (
                "..",
                "\"..\" is not a name under /run/netns (it names a directory)",
            ),
            (
                "netns/blue",
                "a relative path: give a name under /run/netns (no `/`) or an absolute path",
            ),
            (
                "./blue",
                "a relative path: give a name under /run/netns (no `/`) or an absolute path",
            ),
            (
                "/run/netns/../netns/blue",
                "`..` in a path: write the path without it",
            ),
        ] {
            assert_eq!(
                normalise(spelling).map_err(|e| e.to_string()),
                Err(why.to_owned()),
                "{spelling}"
            );
        }
    }
}
