//! The metrics endpoint: `GET /metrics` on `--metrics-address`.
//!
//! metrics-exporter-prometheus has an HTTP listener, but it renders only
//! what was recorded and runs an upkeep timer every 5 s. kfd's kernel
//! series (verdict counters, map fill) have to be read from bpffs when
//! Prometheus asks, and an idle kfd should not wake up at all. So the
//! exporter renders and this small HTTP/1.x responder serves: one request
//! per connection, read with a deadline and a size cap, answered with
//! `Connection: close`.
//!
//! Clients that connect and say nothing (or drip a byte at a time) must not
//! delay a scrape, however many there are: every connection is accepted at
//! once, its request head must arrive within [`HEAD_DEADLINE`], and past
//! [`MAX_CONNECTIONS`] the oldest connection still sending its head is
//! dropped to make room. A new client is therefore never stuck behind idle
//! ones in the listen backlog.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{AbortHandle, Id, JoinSet};

use crate::layout::Layout;
use crate::metrics::Metrics;

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head (Prometheus sends it
/// right after connecting).
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// A client gets this long in all, to send its request and read the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);
/// Connections held at once; past this the oldest one still sending its
/// head (else the oldest) is dropped.
const MAX_CONNECTIONS: usize = 32;

/// One open connection, oldest first in the queue.
struct Conn {
    id: Id,
    /// Set once the request head has arrived.
    head_read: Arc<AtomicBool>,
    abort: AbortHandle,
}

/// Serves until the runtime shuts down.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, layout: Layout) {
    // Scrapes read the kernel on a blocking thread; one at a time is plenty.
    let render = Arc::new(Mutex::new(()));
    let mut tasks = JoinSet::new();
    let mut open: VecDeque<Conn> = VecDeque::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "metrics: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(done) = tasks.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.retain(|c| c.id != id);
                continue;
            }
        };
        if open.len() >= MAX_CONNECTIONS {
            let victim = open
                .iter()
                .position(|c| !c.head_read.load(Ordering::Relaxed))
                .unwrap_or(0);
            if let Some(c) = open.remove(victim) {
                c.abort.abort();
            }
        }
        let head_read = Arc::new(AtomicBool::new(false));
        let (metrics, layout, render, flag) = (
            metrics.clone(),
            layout.clone(),
            render.clone(),
            head_read.clone(),
        );
        let abort = tasks.spawn(async move {
            let served = tokio::time::timeout(
                CLIENT_DEADLINE,
                answer(stream, &metrics, &layout, &render, &flag),
            )
            .await;
            match served {
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics: connection failed"),
                Err(_) => tracing::debug!("metrics: a client took too long; dropped"),
                Ok(Ok(())) => {}
            }
        });
        open.push_back(Conn {
            id: abort.id(),
            head_read,
            abort,
        });
    }
}

/// Reads a request head (up to the blank line) within [`HEAD_DEADLINE`].
/// None: the client closed, was too slow, or sent too much (answered).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete =
        |h: &[u8]| h.windows(4).any(|w| w == b"\r\n\r\n") || h.windows(2).any(|w| w == b"\n\n");
    let read = tokio::time::timeout(HEAD_DEADLINE, async {
        while !complete(&head) {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
        Ok::<bool, std::io::Error>(true)
    })
    .await;
    match read {
        Ok(Ok(true)) => Ok(Some(head)),
        Ok(Ok(false)) if head.len() > MAX_HEAD => {
            respond(stream, "431 Request Header Fields Too Large", "", "").await?;
            Ok(None)
        }
        Ok(Ok(false)) => Ok(None),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            respond(stream, "408 Request Timeout", "", "").await?;
            Ok(None)
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    metrics: &Arc<Metrics>,
    layout: &Layout,
    render: &Mutex<()>,
    head_read: &AtomicBool,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream).await? else {
        return Ok(());
    };
    head_read.store(true, Ordering::Relaxed);
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = {
                let _one = render.lock().await;
                let (metrics, layout) = (metrics.clone(), layout.clone());
                tokio::task::spawn_blocking(move || metrics.render(&layout))
                    .await
                    .map_err(std::io::Error::other)?
            };
            respond(&mut stream, "200 OK", CONTENT_TYPE, &body).await
        }
        ("GET", "/") => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain; charset=utf-8",
                "kfd: metrics at /metrics\n",
            )
            .await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "", "").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "", "").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
