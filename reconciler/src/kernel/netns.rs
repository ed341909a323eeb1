//! Running kernel calls inside a network namespace.
//!
//! Interface names, ifindexes, netlink sockets and XDP/TC attachment are
//! per network namespace. kfd enters a namespace with setns(CLONE_NEWNET) on
//! a thread of its own that ends right after, so no other thread ever runs
//! in the wrong namespace. (`ip netns exec` is no substitute: it remounts
//! /sys and hides bpffs.)

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use crate::config::error::Escaped;

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

/// Runs `f` in the namespace at `netns` (None: the current one, on this thread).
pub fn run_in<T: Send>(
    netns: Option<&Path>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    let Some(path) = netns else {
        return Ok(f());
    };
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
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
