//! Attaching a chain's root to an interface's TC ingress or egress hook:
//! a pinned TCX link on kernels that have TCX (6.6+), else a cls_bpf
//! filter on a clsact qdisc.
//!
//! TCX programs and clsact filters of other tools stay where they are: kfd
//! adds its own link (first among TCX programs by default, or last) or its
//! own filter, recognised by its handle and priority, and removes only that.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use super::netlink::{self, BpfFilter, ClsactSide, NetlinkError};
use super::netns::{self, NetnsError};
use super::sys::{self, SysError};
use crate::config::error::Escaped;

/// The handle of kfd's clsact filter ("kfd" in ASCII): how kfd knows its own.
pub const FILTER_HANDLE: u32 = 0x006b_6664;

/// `BPF_TCX_INGRESS`.
pub const BPF_TCX_INGRESS: u32 = 46;
/// `BPF_TCX_EGRESS`.
pub const BPF_TCX_EGRESS: u32 = 47;

/// TC attach errors, naming the interface.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The interface does not exist (in that namespace).
    #[error("interface {} does not exist", Escaped(.interface))]
    NoInterface {
        /// Interface name.
        interface: String,
    },
    /// BPF_LINK_CREATE (TCX) failed.
    #[error("attaching a TCX link to {}: {source}", Escaped(.interface))]
    Tcx {
        /// Interface name.
        interface: String,
        /// The failure.
        #[source]
        source: SysError,
    },
    /// A netlink request (clsact) failed.
    #[error("{op} on {}: {source}", Escaped(.interface))]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// Interface name.
        interface: String,
        /// The failure.
        #[source]
        source: NetlinkError,
    },
}

/// Which side of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ingress.
    Ingress,
    /// Egress.
    Egress,
}

impl Direction {
    fn attach_type(self) -> u32 {
        match self {
            Self::Ingress => BPF_TCX_INGRESS,
            Self::Egress => BPF_TCX_EGRESS,
        }
    }

    fn side(self) -> ClsactSide {
        match self {
            Self::Ingress => ClsactSide::Ingress,
            Self::Egress => ClsactSide::Egress,
        }
    }
}

fn ifindex(interface: &str) -> Result<u32, TcError> {
    netns::ifindex(interface).ok_or_else(|| TcError::NoInterface {
        interface: interface.to_owned(),
    })
}

fn nl<'a>(op: &'static str, interface: &'a str) -> impl FnOnce(NetlinkError) -> TcError + 'a {
    move |source| TcError::Netlink {
        op,
        interface: interface.to_owned(),
        source,
    }
}

/// Whether the kernel refused TCX because it does not know it (pre-6.6).
pub fn tcx_unsupported(e: &TcError) -> bool {
    matches!(e, TcError::Tcx { source, .. } if matches!(source.errno(), Some(libc::EINVAL | libc::EOPNOTSUPP | sys::ENOTSUPP)))
}

/// Attaches `prog` through a new TCX link, first among the interface's TCX
/// programs (or last).
pub fn attach_tcx(
    netns: Option<&Path>,
    interface: &str,
    dir: Direction,
    prog: BorrowedFd<'_>,
    first: bool,
) -> Result<OwnedFd, TcError> {
    netns::run_in(netns, || {
        let ifindex = ifindex(interface)?;
        // With no relative program, BEFORE means first and AFTER last.
        let flags = if first {
            aya_obj::generated::BPF_F_BEFORE
        } else {
            aya_obj::generated::BPF_F_AFTER
        };
        sys::link_create(prog, ifindex, dir.attach_type(), flags).map_err(|source| TcError::Tcx {
            interface: interface.to_owned(),
            source,
        })
    })?
}

/// Attaches `prog` as kfd's cls_bpf filter (direct action) at `priority`,
/// adding a clsact qdisc if there is none. With `replace`, kfd's filter at
/// that priority, if there, switches to `prog` atomically. Returns whether
/// kfd added the qdisc.
pub fn attach_clsact(
    netns: Option<&Path>,
    interface: &str,
    dir: Direction,
    prog: BorrowedFd<'_>,
    priority: u16,
    replace: bool,
) -> Result<bool, TcError> {
    netns::run_in(netns, || {
        let ifindex = ifindex(interface)?;
        let created =
            netlink::add_clsact(ifindex).map_err(nl("adding a clsact qdisc", interface))?;
        let added = netlink::add_bpf_filter(
            ifindex,
            dir.side(),
            priority,
            FILTER_HANDLE,
            prog,
            "kfd_root",
            replace,
        );
        if let Err(e) = added {
            if created {
                let _ = netlink::del_clsact(ifindex);
            }
            return Err(nl("adding kfd's cls_bpf filter", interface)(e));
        }
        Ok(created)
    })?
}

/// kfd's filter on a side, if it is there.
pub fn our_filter(
    netns: Option<&Path>,
    interface: &str,
    dir: Direction,
) -> Result<Option<BpfFilter>, TcError> {
    netns::run_in(netns, || {
        let Some(ifindex) = netns::ifindex(interface) else {
            return Ok(None);
        };
        let filters =
            netlink::list_filters(ifindex, dir.side()).map_err(nl("listing filters", interface))?;
        Ok(filters
            .into_iter()
            .find(|f| f.handle == FILTER_HANDLE && f.kind == "bpf"))
    })?
}

/// kfd's filter running `prog_id` on a side of any interface of the
/// namespace, with that interface's index and name: where a chain's
/// clsact root is when its interface was renamed.
pub fn find_our_filter(
    netns: Option<&Path>,
    dir: Direction,
    prog_id: u32,
) -> Result<Option<(u32, String, BpfFilter)>, TcError> {
    netns::run_in(netns, || {
        for (ifindex, name) in netns::interfaces() {
            let filters =
                netlink::list_filters(ifindex, dir.side()).map_err(nl("listing filters", &name))?;
            if let Some(f) = filters.into_iter().find(|f| {
                f.handle == FILTER_HANDLE && f.kind == "bpf" && f.prog_id == Some(prog_id)
            }) {
                return Ok(Some((ifindex, name, f)));
            }
        }
        Ok(None)
    })?
}

/// Removes kfd's filter at `priority`; with `drop_qdisc`, also the clsact
/// qdisc when no filter at all is left on it (kfd added it).
pub fn detach_clsact(
    netns: Option<&Path>,
    interface: &str,
    dir: Direction,
    priority: u16,
    drop_qdisc: bool,
) -> Result<(), TcError> {
    netns::run_in(netns, || {
        let Some(ifindex) = netns::ifindex(interface) else {
            return Ok(()); // the interface took its filters with it
        };
        netlink::del_bpf_filter(ifindex, dir.side(), priority, FILTER_HANDLE)
            .map_err(nl("removing kfd's cls_bpf filter", interface))?;
        if drop_qdisc {
            let left = netlink::list_filters(ifindex, ClsactSide::Ingress)
                .and_then(|i| {
                    Ok(i.len() + netlink::list_filters(ifindex, ClsactSide::Egress)?.len())
                })
                .map_err(nl("listing filters", interface))?;
            if left == 0 {
                netlink::del_clsact(ifindex).map_err(nl("removing the clsact qdisc", interface))?;
            }
        }
        Ok(())
    })?
}
