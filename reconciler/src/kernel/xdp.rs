//! Attaching a chain's root to an interface's XDP hook through a bpf_link.
//!
//! kfd never uses the netlink attach path (which aya falls back to): a link
//! cannot replace a program it does not own, so another tool's program is
//! refused by the kernel as well as by kfd's own check.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use aya_obj::generated::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};

use super::netlink::{self, NetlinkError, XdpAttachment};
use super::netns::{self, NetnsError};
use super::sys::{self, SysError};
use crate::config::error::Escaped;
pub use crate::model::XdpMode;

/// XDP attach errors, naming the interface.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The interface does not exist (in that namespace).
    #[error("interface {} does not exist{}", Escaped(.interface), in_ns(.netns))]
    NoInterface {
        /// Interface name.
        interface: String,
        /// Namespace, if any.
        netns: Option<String>,
    },
    /// Another program holds the interface's XDP hook.
    #[error(
        "interface {}{} already runs XDP program id {prog_id} ({name}) that kfd does not own; \
         kfd will not replace it (detach it first, e.g. `ip link set dev {} xdp off`)",
        Escaped(.interface),
        in_ns(.netns),
        Escaped(.interface)
    )]
    Foreign {
        /// Interface name.
        interface: String,
        /// Namespace, if any.
        netns: Option<String>,
        /// The foreign program.
        prog_id: u32,
        /// Its name, if readable.
        name: String,
    },
    /// Netlink failed.
    #[error("querying interface {}: {source}", Escaped(.interface))]
    Netlink {
        /// Interface name.
        interface: String,
        /// The failure.
        #[source]
        source: NetlinkError,
    },
    /// BPF_LINK_CREATE failed.
    #[error("attaching to {}{} in {mode} mode: {source}", Escaped(.interface), in_ns(.netns))]
    Attach {
        /// Interface name.
        interface: String,
        /// Namespace, if any.
        netns: Option<String>,
        /// Mode tried last.
        mode: &'static str,
        /// The failure.
        #[source]
        source: SysError,
    },
}

fn in_ns(netns: &Option<String>) -> String {
    netns
        .as_ref()
        .map(|n| format!(" (netns {})", Escaped(n)))
        .unwrap_or_default()
}

/// An interface as seen from its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceXdp {
    /// Its index.
    pub ifindex: u32,
    /// Programs attached to its XDP hook.
    pub attached: XdpAttachment,
}

/// Looks an interface up: None if it does not exist.
pub fn query(netns: Option<&Path>, interface: &str) -> Result<Option<InterfaceXdp>, XdpError> {
    netns::run_in(netns, || {
        let Some(ifindex) = netns::ifindex(interface) else {
            return Ok(None);
        };
        let attached = netlink::xdp_attachment(ifindex).map_err(|source| XdpError::Netlink {
            interface: interface.to_owned(),
            source,
        })?;
        Ok(Some(InterfaceXdp { ifindex, attached }))
    })?
}

/// The name and XDP programs of the interface with index `ifindex`, if it
/// exists: where a chain's link points when its interface was renamed.
pub fn query_index(
    netns: Option<&Path>,
    ifindex: u32,
) -> Result<Option<(String, XdpAttachment)>, XdpError> {
    netns::run_in(netns, || {
        let Some(name) = netns::ifname(ifindex) else {
            return Ok(None);
        };
        let attached = netlink::xdp_attachment(ifindex).map_err(|source| XdpError::Netlink {
            interface: name.clone(),
            source,
        })?;
        Ok(Some((name, attached)))
    })?
}

/// Attaches `prog` to `interface` through a new link. `owned` is the id of a
/// program kfd already has there (which the kernel would refuse anyway).
/// Returns the link and the mode used.
pub fn attach(
    netns: Option<&Path>,
    netns_label: Option<&str>,
    interface: &str,
    prog: BorrowedFd<'_>,
    mode: XdpMode,
) -> Result<(OwnedFd, XdpMode), XdpError> {
    let label = netns_label.map(str::to_owned);
    netns::run_in(netns, || {
        let Some(ifindex) = netns::ifindex(interface) else {
            return Err(XdpError::NoInterface {
                interface: interface.to_owned(),
                netns: label.clone(),
            });
        };
        let attached = netlink::xdp_attachment(ifindex).map_err(|source| XdpError::Netlink {
            interface: interface.to_owned(),
            source,
        })?;
        if let Some(prog_id) = attached.prog_ids().next() {
            return Err(XdpError::Foreign {
                interface: interface.to_owned(),
                netns: label.clone(),
                prog_id,
                name: prog_name(prog_id),
            });
        }
        let tries: &[(XdpMode, u32)] = match mode {
            XdpMode::Auto => &[
                (XdpMode::Native, XDP_FLAGS_DRV_MODE),
                (XdpMode::Generic, XDP_FLAGS_SKB_MODE),
            ],
            XdpMode::Native => &[(XdpMode::Native, XDP_FLAGS_DRV_MODE)],
            XdpMode::Generic => &[(XdpMode::Generic, XDP_FLAGS_SKB_MODE)],
        };
        let mut last = None;
        for (m, flags) in tries {
            match sys::link_create(prog, ifindex, sys::BPF_XDP, *flags) {
                Ok(link) => return Ok((link, *m)),
                Err(e) => last = Some((*m, e)),
            }
        }
        let (m, source) = last.expect("at least one mode is tried");
        Err(XdpError::Attach {
            interface: interface.to_owned(),
            netns: label.clone(),
            mode: m.as_str(),
            source,
        })
    })?
}

/// A program's name by id, for messages ("?" if it vanished).
pub fn prog_name(id: u32) -> String {
    sys::prog_fd_by_id(id)
        .and_then(|fd| sys::prog_info(std::os::fd::AsFd::as_fd(&fd)))
        .map(|i| i.name)
        .unwrap_or_else(|_| "?".to_owned())
}
