//! A minimal rtnetlink client: who holds an interface's XDP hook, and the
//! clsact qdisc and cls_bpf filters kfd needs where TCX is not available.
//! Runs in the calling thread's network namespace (see `netns::run_in`). A
//! full netlink crate would pull in an async runtime for a handful of requests.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
/// The clsact qdisc's parent and handle.
const TC_H_CLSACT: u32 = 0xffff_fff1;
const CLSACT_HANDLE: u32 = 0xffff_0000;
const ETH_P_ALL: u16 = 0x0003;

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

impl NetlinkError {
    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
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

/// One netlink request under construction: header, fixed part, attributes.
struct Request {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Request {
    fn new(ty: u16, flags: u16, fixed: &[u8]) -> Self {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf[8..12].copy_from_slice(&1u32.to_ne_bytes());
        buf.extend_from_slice(fixed);
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.buf.len().div_ceil(4) * 4, 0);
        self
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
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

/// Sends one request and collects the answers: the messages of a dump, the
/// single answer of a get, or nothing for an acknowledged change. A kernel
/// error becomes `NetlinkError::Kernel`.
fn transact(req: Vec<u8>, ifindex: u32) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
    let sock = socket()?;
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
    let malformed = |what| NetlinkError::Malformed { what };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(NetlinkError::Io {
                op: "recv",
                source: io::Error::last_os_error(),
            });
        }
        let mut rest = &buf[..n as usize];
        let mut multi = false;
        while rest.len() >= 16 {
            let len = u32_at(rest, 0).ok_or(malformed("short header"))? as usize;
            let ty = u16_at(rest, 4).ok_or(malformed("short header"))?;
            let flags = u16_at(rest, 6).ok_or(malformed("short header"))?;
            if len < 16 || len > rest.len() {
                return Err(malformed("bad message length"));
            }
            let body = &rest[16..len];
            multi |= flags & NLM_F_MULTI != 0;
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = u32_at(body, 0).ok_or(malformed("short error"))? as i32;
                    if code != 0 {
                        return Err(NetlinkError::Kernel {
                            ifindex,
                            source: io::Error::from_raw_os_error(-code),
                        });
                    }
                    return Ok(out); // the ACK
                }
                _ => out.push((ty, body.to_vec())),
            }
            rest = rest.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
        }
        if !multi {
            return Ok(out);
        }
    }
}

/// Asks the kernel which XDP programs are attached to `ifindex`.
pub fn xdp_attachment(ifindex: u32) -> Result<XdpAttachment, NetlinkError> {
    // ifinfomsg: family, pad, type, index, flags, change.
    let mut ifinfo = [0u8; 16];
    ifinfo[0] = libc::AF_UNSPEC as u8;
    ifinfo[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    let answers = transact(Request::new(RTM_GETLINK, 0, &ifinfo).finish(), ifindex)?;
    let (_, body) = answers
        .into_iter()
        .find(|(ty, _)| *ty == RTM_NEWLINK)
        .ok_or(NetlinkError::Malformed {
            what: "no link in answer",
        })?;
    parse_link(&body)
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

fn parse_link(body: &[u8]) -> Result<XdpAttachment, NetlinkError> {
    let mut out = XdpAttachment::default();
    let Some(rest) = body.get(16..) else {
        return Err(NetlinkError::Malformed {
            what: "short ifinfomsg",
        });
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
        // With one program the kernel reports only PROG_ID plus the mode in
        // ATTACHED; mode-specific ids come with several.
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

/// The clsact side a filter hangs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClsactSide {
    /// Ingress.
    Ingress,
    /// Egress.
    Egress,
}

impl ClsactSide {
    fn parent(self) -> u32 {
        match self {
            Self::Ingress => 0xffff_fff2,
            Self::Egress => 0xffff_fff3,
        }
    }
}

/// A cls_bpf filter on a clsact side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfFilter {
    /// Its handle.
    pub handle: u32,
    /// Its priority (lower runs first).
    pub priority: u16,
    /// The program it runs, if it is a bpf filter.
    pub prog_id: Option<u32>,
    /// Its kind (`bpf`, `u32`, ...).
    pub kind: String,
}

fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0] = libc::AF_UNSPEC as u8;
    m[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    m[8..12].copy_from_slice(&handle.to_ne_bytes());
    m[12..16].copy_from_slice(&parent.to_ne_bytes());
    m[16..20].copy_from_slice(&info.to_ne_bytes());
    m
}

fn filter_info(priority: u16) -> u32 {
    (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be())
}

/// Adds a clsact qdisc; Ok(false) when one is there already.
pub fn add_clsact(ifindex: u32) -> Result<bool, NetlinkError> {
    let mut req = Request::new(
        RTM_NEWQDISC,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        &tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0),
    );
    req.attr(TCA_KIND, b"clsact\0");
    match transact(req.finish(), ifindex) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the clsact qdisc (and every filter on it).
pub fn del_clsact(ifindex: u32) -> Result<(), NetlinkError> {
    let mut req = Request::new(
        RTM_DELQDISC,
        NLM_F_ACK,
        &tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0),
    );
    req.attr(TCA_KIND, b"clsact\0");
    match transact(req.finish(), ifindex) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Adds a direct-action cls_bpf filter running `prog`. Fails with EEXIST if
/// a filter with this handle and priority is there already.
pub fn add_bpf_filter(
    ifindex: u32,
    side: ClsactSide,
    priority: u16,
    handle: u32,
    prog: BorrowedFd<'_>,
    name: &str,
    replace: bool,
) -> Result<(), NetlinkError> {
    // Without NLM_F_EXCL an existing filter with this handle and priority
    // gets the new program in one RCU swap (`tc filter replace`).
    let exclusive = if replace { 0 } else { NLM_F_EXCL };
    let mut req = Request::new(
        RTM_NEWTFILTER,
        NLM_F_ACK | NLM_F_CREATE | exclusive,
        &tcmsg(ifindex, handle, side.parent(), filter_info(priority)),
    );
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    req.attr(TCA_KIND, b"bpf\0")
        .begin(TCA_OPTIONS)
        .attr(TCA_BPF_FD, &(prog.as_raw_fd() as u32).to_ne_bytes())
        .attr(TCA_BPF_NAME, &cname)
        .attr(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes())
        .end();
    transact(req.finish(), ifindex).map(drop)
}

/// Deletes the filter with this handle and priority; fine if it is gone.
pub fn del_bpf_filter(
    ifindex: u32,
    side: ClsactSide,
    priority: u16,
    handle: u32,
) -> Result<(), NetlinkError> {
    let mut req = Request::new(
        RTM_DELTFILTER,
        NLM_F_ACK,
        &tcmsg(ifindex, handle, side.parent(), filter_info(priority)),
    );
    req.attr(TCA_KIND, b"bpf\0");
    match transact(req.finish(), ifindex) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every filter on a clsact side (none when there is no clsact qdisc).
pub fn list_filters(ifindex: u32, side: ClsactSide) -> Result<Vec<BpfFilter>, NetlinkError> {
    let req = Request::new(
        RTM_GETTFILTER,
        NLM_F_DUMP,
        &tcmsg(ifindex, 0, side.parent(), 0),
    );
    let answers = match transact(req.finish(), ifindex) {
        Ok(a) => a,
        Err(e) if matches!(e.errno(), Some(libc::EINVAL | libc::ENOENT)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (ty, body) in answers {
        if ty != RTM_NEWTFILTER {
            continue;
        }
        let (Some(handle), Some(info)) = (u32_at(&body, 8), u32_at(&body, 16)) else {
            continue;
        };
        let mut f = BpfFilter {
            handle,
            priority: (info >> 16) as u16,
            prog_id: None,
            kind: String::new(),
        };
        for (aty, payload) in attrs(body.get(20..).unwrap_or(&[])) {
            match aty {
                TCA_KIND => {
                    f.kind = String::from_utf8_lossy(payload)
                        .trim_end_matches('\0')
                        .to_owned();
                }
                TCA_OPTIONS => {
                    f.prog_id = attrs(payload)
                        .find(|(t, _)| *t == TCA_BPF_ID)
                        .and_then(|(_, p)| u32_at(p, 0));
                }
                _ => {}
            }
        }
        // A dump also lists each priority's chain head, with handle 0.
        if f.handle != 0 {
            out.push(f);
        }
    }
    Ok(out)
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
            let _ = parse_link(&vec![0xffu8; len]);
        }
    }

    #[test]
    fn nested_attributes_carry_their_length() {
        let mut r = Request::new(RTM_NEWTFILTER, 0, &[0u8; 20]);
        r.begin(TCA_OPTIONS)
            .attr(TCA_BPF_FD, &7u32.to_ne_bytes())
            .end();
        let msg = r.finish();
        let opts: Vec<_> = attrs(&msg[36..]).collect();
        assert_eq!(opts.len(), 1);
        assert_eq!(opts[0].0, TCA_OPTIONS);
        assert_eq!(
            attrs(opts[0].1).next(),
            Some((TCA_BPF_FD, &7u32.to_ne_bytes()[..]))
        );
    }
}
