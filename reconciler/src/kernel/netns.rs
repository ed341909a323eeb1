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
