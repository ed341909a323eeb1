//! Telling systemd how kfd is doing (`Type=notify`): one datagram per
//! update to the socket named by `$NOTIFY_SOCKET`, as sd_notify(3)
//! describes. The protocol is a single `sendto` of `KEY=VALUE` lines, so
//! kfd writes it itself rather than link libsystemd or add a crate.

use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// Where the notifications go, if kfd runs under a service manager.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

/// The notify socket could not be used.
#[derive(Debug, thiserror::Error)]
#[error("NOTIFY_SOCKET {socket}: {source}")]
pub struct NotifyError {
    /// The socket as named in the environment.
    pub socket: String,
    /// The failure.
    #[source]
    pub source: io::Error,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; a no-op when it is unset.
    pub fn from_env() -> Result<Self, NotifyError> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(Self { target: None });
        };
        let shown = name.to_string_lossy().into_owned();
        let err = |source| NotifyError {
            socket: shown.clone(),
            source,
        };
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
        // '@' names an abstract socket (systemd uses a path by default).
        let addr = match bytes.strip_prefix(b"@") {
            Some(abs) => SocketAddr::from_abstract_name(abs),
            None => SocketAddr::from_pathname(PathBuf::from(&name)),
        }
        .map_err(err)?;
        let sock = UnixDatagram::unbound().map_err(err)?;
        Ok(Self {
            target: Some((sock, addr)),
        })
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `KEY=VALUE` lines. Newlines in a STATUS value would start a
    /// new key, so callers pass single-line values.
    pub fn notify(&self, fields: &[(&str, &str)]) -> Result<(), NotifyError> {
        let Some((sock, addr)) = &self.target else {
            return Ok(());
        };
        let msg: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={}\n", v.replace('\n', " ")))
            .collect();
        sock.send_to_addr(msg.as_bytes(), addr)
            .map(drop)
            .map_err(|source| NotifyError {
                socket: format!("{addr:?}"),
                source,
            })
    }
}

/// CLOCK_MONOTONIC in microseconds, for `MONOTONIC_USEC` with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("kfd-sdn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        n.notify(&[("READY", "1"), ("STATUS", "two\nlines")])
            .unwrap();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=two lines\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let n = Notifier { target: None };
        assert!(!n.enabled());
        n.notify(&[("READY", "1")]).unwrap();
    }
}
