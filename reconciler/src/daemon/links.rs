//! Interfaces that come and go: rtnetlink link notifications.
//!
//! A chain can name an interface that does not exist yet, that disappears
//! (a VM stops, a container dies) or that is recreated under the same name
//! with a new ifindex. Rather than poll, kfd subscribes to the kernel's
//! `RTNLGRP_LINK` multicast group in every namespace its chains live in,
//! and turns the changes that matter (a watched name appears, disappears or
//! gets a new ifindex) into reconcile events.
//!
//! A netlink socket belongs to the namespace it was created in, so each
//! subscription's socket is created on a thread that entered the namespace
//! (`kernel::netns::run_in`) and is then read from kfd's event loop. A
//! socket also keeps its namespace alive, so subscriptions are dropped as
//! soon as a namespace's file goes away (`ip netns del`), and replaced when
//! the file names a different namespace (deleted and re-added).
//!
//! The socket code is a few lines of raw netlink; it mirrors the request
//! side in `kernel::netlink`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::debounce::Change;
use crate::kernel::netns::{self, NetnsError};

const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_IFNAME: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// Subscribing failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkWatchError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A socket call failed.
    #[error("link notifications in {netns}: {op}: {source}")]
    Socket {
        /// The namespace (`host` for kfd's own).
        netns: String,
        /// What was being done.
        op: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// The interfaces kfd watches per namespace (None: its own), with the
/// ifindex each had when last seen (None: absent).
pub type Wanted = BTreeMap<Option<String>, BTreeMap<String, Option<u32>>>;

/// The live subscriptions.
#[derive(Debug)]
pub struct LinkWatch {
    subs: BTreeMap<Option<String>, Sub>,
    tx: UnboundedSender<Change>,
}

#[derive(Debug)]
struct Sub {
    /// Identity (dev, inode) of the namespace subscribed to.
    ns_id: (u64, u64),
    known: Arc<Mutex<BTreeMap<String, Option<u32>>>>,
    task: JoinHandle<()>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        // Ends the reader, which closes the socket and releases the namespace.
        self.task.abort();
    }
}

/// The file naming a namespace (kfd's own when None).
fn ns_file(netns: Option<&str>) -> PathBuf {
    netns.map_or_else(|| PathBuf::from("/proc/self/ns/net"), netns::netns_path)
}

fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl LinkWatch {
    /// No subscriptions yet; changes will be sent to `tx`.
    pub fn new(tx: UnboundedSender<Change>) -> Self {
        Self {
            subs: BTreeMap::new(),
            tx,
        }
    }

    /// Namespaces subscribed to.
    pub fn namespaces(&self) -> impl Iterator<Item = &Option<String>> {
        self.subs.keys()
    }

    /// Makes the subscriptions match `wanted`: subscribes to new or
    /// recreated namespaces, drops gone ones, and refreshes the interfaces
    /// each watches. Must run inside the tokio runtime. Returns the
    /// failures (the namespaces concerned are retried on the next update).
    pub fn update(&mut self, wanted: &Wanted) -> Vec<LinkWatchError> {
        let mut errors = Vec::new();
        self.subs.retain(|ns, sub| {
            wanted.contains_key(ns) && ns_identity(&ns_file(ns.as_deref())) == Some(sub.ns_id)
        });
        for (ns, ifaces) in wanted {
            if let Some(sub) = self.subs.get(ns) {
                *sub.known.lock().unwrap_or_else(PoisonError::into_inner) = ifaces.clone();
                continue;
            }
            let path = ns_file(ns.as_deref());
            let Some(ns_id) = ns_identity(&path) else {
                continue; // not there (yet): the netns dir watch says when it is
            };
            let names: Vec<&str> = ifaces.keys().map(String::as_str).collect();
            match subscribe(ns.as_deref(), &names) {
                Ok((fd, now)) => {
                    // Changes between the pass's look and the subscription
                    // would otherwise go unseen until the next pass.
                    let mut known = ifaces.clone();
                    for change in relevant(&mut known, &now) {
                        if let Change::Link { interface, .. } = change {
                            let _ = self.tx.send(Change::Link {
                                netns: ns.clone(),
                                interface,
                            });
                        }
                    }
                    let known = Arc::new(Mutex::new(known));
                    let task =
                        tokio::spawn(read_events(fd, ns.clone(), known.clone(), self.tx.clone()));
                    self.subs.insert(ns.clone(), Sub { ns_id, known, task });
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Drops subscriptions whose namespace file is gone or names another
    /// namespace now (cheap: one stat each).
    pub fn prune(&mut self) {
        self.subs
            .retain(|ns, sub| ns_identity(&ns_file(ns.as_deref())) == Some(sub.ns_id));
    }
}

/// A non-blocking NETLINK_ROUTE socket in `netns`, joined to RTNLGRP_LINK,
/// and the interfaces among `names` that exist once it listens (as link
/// events, so they compare with what a pass saw).
fn subscribe(
    netns: Option<&str>,
    names: &[&str],
) -> Result<(AsyncFd<OwnedFd>, Vec<LinkEvent>), LinkWatchError> {
    let shown = netns.unwrap_or("host").to_owned();
    let path = netns.map(netns::netns_path);
    let fd = netns::run_in(path.as_deref(), || {
        let err = |op| LinkWatchError::Socket {
            netns: shown.clone(),
            op,
            source: io::Error::last_os_error(),
        };
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(err("socket"));
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zero pid lets the kernel pick.
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: addr is valid for its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(err("bind"));
        }
        let present = names
            .iter()
            .filter_map(|n| {
                netns::ifindex(n).map(|ifindex| LinkEvent {
                    new: true,
                    ifindex,
                    name: Some((*n).to_owned()),
                })
            })
            .collect::<Vec<_>>();
        Ok((fd, present))
    })??;
    let present = fd.1;
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open (and the same
    // descriptor) until the AsyncFd is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(fd.0, Interest::READABLE) }.map_err(|e| {
        LinkWatchError::Socket {
            netns: netns.unwrap_or("host").to_owned(),
            op: "register",
            source: e.into_parts().1,
        }
    })?;
    Ok((fd, present))
}

async fn read_events(
    fd: AsyncFd<OwnedFd>,
    netns: Option<String>,
    known: Arc<Mutex<BTreeMap<String, Option<u32>>>>,
    tx: UnboundedSender<Change>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(netns = netns.as_deref().unwrap_or(""), error = %e, "link notifications stopped");
                return;
            }
        };
        let read = guard.try_io(|inner| {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    inner.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        let changes = match read {
            Err(_would_block) => continue,
            Ok(Ok(n)) => {
                let events = parse(&buf[..n]);
                let mut known = known.lock().unwrap_or_else(PoisonError::into_inner);
                relevant(&mut known, &events)
            }
            // The socket's queue overflowed: events were lost.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                vec![Change::Rescan("link notifications overflowed")]
            }
            Ok(Err(e)) => {
                tracing::error!(netns = netns.as_deref().unwrap_or(""), error = %e, "link notifications stopped");
                return;
            }
        };
        for c in changes {
            let c = match c {
                Change::Link { interface, .. } => Change::Link {
                    netns: netns.clone(),
                    interface,
                },
                other => other,
            };
            if tx.send(c).is_err() {
                return; // the daemon is shutting down
            }
        }
    }
}

/// One link notification.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkEvent {
    new: bool,
    ifindex: u32,
    name: Option<String>,
}

/// Parses the link messages of one datagram; anything else is skipped.
fn parse(mut buf: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let msg = &buf[NLMSG_HDRLEN..len];
        if (kind == RTM_NEWLINK || kind == RTM_DELLINK) && msg.len() >= IFINFOMSG_LEN {
            let ifindex = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]) as u32;
            let mut name = None;
            let mut attrs = &msg[IFINFOMSG_LEN..];
            while attrs.len() >= 4 {
                let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                let atype = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                if atype == IFLA_IFNAME {
                    let v = &attrs[4..alen];
                    let v = v.split(|b| *b == 0).next().unwrap_or_default();
                    name = Some(String::from_utf8_lossy(v).into_owned());
                }
                attrs = &attrs[(alen + 3) & !3..];
                if attrs.is_empty() {
                    break;
                }
            }
            out.push(LinkEvent {
                new: kind == RTM_NEWLINK,
                ifindex,
                name,
            });
        }
        let next = (len + 3) & !3;
        if next >= buf.len() {
            break;
        }
        buf = &buf[next..];
    }
    out
}

/// The changes among `events` that matter: a watched name that appears,
/// disappears, or comes back with another ifindex. Flag changes, address
/// changes and XDP attachments (kfd's own) do not matter. `known` is
/// updated so a repeated notification counts once.
fn relevant(known: &mut BTreeMap<String, Option<u32>>, events: &[LinkEvent]) -> Vec<Change> {
    let mut changed = BTreeSet::new();
    for e in events {
        // Whatever the message, a watched name that held this ifindex and
        // is not the message's name was renamed away or deleted.
        for (name, idx) in known.iter_mut() {
            let renamed_away = e.new && e.name.as_deref().is_some_and(|n| n != name);
            if *idx == Some(e.ifindex) && (!e.new || renamed_away) {
                *idx = None;
                changed.insert(name.clone());
            }
        }
        if let Some(name) = &e.name
            && e.new
            && let Some(idx) = known.get_mut(name)
            && *idx != Some(e.ifindex)
        {
            *idx = Some(e.ifindex);
            changed.insert(name.clone());
        }
    }
    changed
        .into_iter()
        .map(|interface| Change::Link {
            netns: None,
            interface,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, ifindex: u32, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let v = [name.as_bytes(), &[0]].concat();
        attr.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        attr.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attr.extend_from_slice(&v);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // A second attribute after the name (IFLA_MTU).
        attr.extend_from_slice(&8u16.to_ne_bytes());
        attr.extend_from_slice(&4u16.to_ne_bytes());
        attr.extend_from_slice(&1500u32.to_ne_bytes());
        let len = NLMSG_HDRLEN + IFINFOMSG_LEN + attr.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        let mut ifi = [0u8; IFINFOMSG_LEN];
        ifi[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        m.extend_from_slice(&ifi);
        m.extend_from_slice(&attr);
        m
    }

    fn link(name: &str) -> Change {
        Change::Link {
            netns: None,
            interface: name.into(),
        }
    }

    #[test]
    fn parses_several_messages_per_datagram() {
        let buf = [msg(RTM_NEWLINK, 7, "eth0"), msg(RTM_DELLINK, 8, "veth-x")].concat();
        assert_eq!(
            parse(&buf),
            [
                LinkEvent {
                    new: true,
                    ifindex: 7,
                    name: Some("eth0".into())
                },
                LinkEvent {
                    new: false,
                    ifindex: 8,
                    name: Some("veth-x".into())
                }
            ]
        );
        assert!(parse(&buf[..20]).is_empty(), "truncated");
    }

    #[test]
    fn only_appearing_disappearing_and_recreated_interfaces_count() {
        let mut known = BTreeMap::from([("eth0".to_owned(), Some(7)), ("eth1".to_owned(), None)]);
        let ev = |new, ifindex, name: &str| LinkEvent {
            new,
            ifindex,
            name: Some(name.into()),
        };
        // Flags or XDP changed on a known interface; another interface.
        assert!(relevant(&mut known, &[ev(true, 7, "eth0"), ev(true, 9, "lo2")]).is_empty());
        // eth1 appears.
        assert_eq!(relevant(&mut known, &[ev(true, 8, "eth1")]), [link("eth1")]);
        assert!(
            relevant(&mut known, &[ev(true, 8, "eth1")]).is_empty(),
            "once"
        );
        // eth0 is deleted, then recreated with a new ifindex.
        assert_eq!(
            relevant(&mut known, &[ev(false, 7, "eth0")]),
            [link("eth0")]
        );
        assert_eq!(
            relevant(&mut known, &[ev(true, 12, "eth0")]),
            [link("eth0")]
        );
        // eth1 is renamed away.
        assert_eq!(relevant(&mut known, &[ev(true, 8, "wan0")]), [link("eth1")]);
        assert_eq!(known.get("eth1"), Some(&None));
    }
}
