//! A minimal rtnetlink client: just what kfd needs to see who holds an
//! interface's hooks. Runs in the calling thread's network namespace (see
//! `netns::run_in`). A full netlink crate would pull in an async runtime for
//! two requests.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Netlink errors.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A socket call failed.
    #[error("netlink {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The kernel answered with an error (e.g. ENODEV).
    #[error("netlink request for ifindex {ifindex}: {source}")]
    Kernel {
        /// The interface asked about.
        ifindex: u32,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The answer could not be parsed.
    #[error("malformed netlink answer: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
}

/// How XDP programs are attached to an interface, as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdpAttachment {
    /// Native (driver) mode program id.
    pub driver: Option<u32>,
    /// Generic (skb) mode program id.
    pub generic: Option<u32>,
    /// Offloaded program id.
    pub offload: Option<u32>,
}

impl XdpAttachment {
    /// Every attached program id.
    pub fn prog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        [self.driver, self.generic, self.offload]
            .into_iter()
            .flatten()
    }
}

fn socket() -> Result<OwnedFd, NetlinkError> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(NetlinkError::Io {
            op: "socket",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Asks the kernel which XDP programs are attached to `ifindex`.
pub fn xdp_attachment(ifindex: u32) -> Result<XdpAttachment, NetlinkError> {
    let sock = socket()?;
    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes).
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    req[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: sockaddr_nl is plain data; zero means "the kernel".
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: req and addr are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(NetlinkError::Io {
            op: "sendto",
            source: io::Error::last_os_error(),
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(NetlinkError::Io {
            op: "recv",
            source: io::Error::last_os_error(),
        });
    }
    parse_link_answer(&buf[..n as usize], ifindex)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks netlink attributes: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = b.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
        Some((ty, payload))
    })
}

fn parse_link_answer(msg: &[u8], ifindex: u32) -> Result<XdpAttachment, NetlinkError> {
    let malformed = |what| NetlinkError::Malformed { what };
    let len = u32_at(msg, 0).ok_or(malformed("short header"))? as usize;
    let ty = u16_at(msg, 4).ok_or(malformed("short header"))?;
    let body = msg
        .get(16..len.min(msg.len()))
        .ok_or(malformed("short message"))?;
    match ty {
        NLMSG_ERROR => {
            let code = u32_at(body, 0).ok_or(malformed("short error"))? as i32;
            Err(NetlinkError::Kernel {
                ifindex,
                source: io::Error::from_raw_os_error(-code),
            })
        }
        NLMSG_DONE => Err(malformed("no link in answer")),
        RTM_NEWLINK => {
            let mut out = XdpAttachment::default();
            let Some(rest) = body.get(16..) else {
                return Err(malformed("short ifinfomsg"));
            };
            for (ty, payload) in attrs(rest) {
                if ty != IFLA_XDP {
                    continue;
                }
                let mut single = None;
                for (xty, xp) in attrs(payload) {
                    let id = u32_at(xp, 0).filter(|id| *id != 0);
                    match xty {
                        IFLA_XDP_ATTACHED => {}
                        IFLA_XDP_PROG_ID => single = id,
                        IFLA_XDP_DRV_PROG_ID => out.driver = id,
                        IFLA_XDP_SKB_PROG_ID => out.generic = id,
                        IFLA_XDP_HW_PROG_ID => out.offload = id,
                        _ => {}
                    }
                }
                // With one program the kernel reports only PROG_ID plus the
                // mode in ATTACHED; mode-specific ids come with several.
                if out.prog_ids().next().is_none()
                    && let Some(id) = single
                {
                    let mode = attrs(payload)
                        .find(|(t, _)| *t == IFLA_XDP_ATTACHED)
                        .and_then(|(_, p)| p.first().copied());
                    match mode {
                        Some(2) => out.generic = Some(id),
                        Some(3) => out.offload = Some(id),
                        _ => out.driver = Some(id),
                    }
                }
            }
            Ok(out)
        }
        _ => Err(malformed("unexpected message type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_xdp() {
        // Loopback is index 1 in every namespace. This only reads.
        let att = xdp_attachment(1).expect("netlink works");
        assert_eq!(att.prog_ids().count(), 0, "{att:?}");
    }

    #[test]
    fn unknown_interface_is_a_kernel_error() {
        let err = xdp_attachment(0x7fff_fff0).unwrap_err();
        assert!(matches!(err, NetlinkError::Kernel { .. }), "{err}");
    }

    #[test]
    fn malformed_answers_do_not_panic() {
        for len in 0..40 {
            let _ = parse_link_answer(&vec![0xffu8; len], 1);
        }
    }
}
