//! The metrics endpoint: `GET /metrics` on `--metrics-address`.
//!
//! metrics-exporter-prometheus has an HTTP listener, but it renders only
//! what was recorded and runs an upkeep timer every 5 s. kfd's kernel
//! series (verdict counters, map fill) have to be read from bpffs when
//! Prometheus asks, and an idle kfd should not wake up at all. So the
//! exporter renders and this small HTTP/1.x responder serves: one request
//! per connection, read with a deadline and a size cap, answered with
//! `Connection: close`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};

use crate::layout::Layout;
use crate::metrics::Metrics;

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 8;

/// Serves until the runtime shuts down.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, layout: Layout) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Scrapes read the kernel on a blocking thread; one at a time is plenty.
    let render = Arc::new(Mutex::new(()));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "metrics: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, layout, render) = (metrics.clone(), layout.clone(), render.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let served =
                tokio::time::timeout(CLIENT_DEADLINE, answer(stream, &metrics, &layout, &render))
                    .await;
            if let Ok(Err(e)) = served {
                tracing::debug!(error = %e, "metrics: connection failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    metrics: &Arc<Metrics>,
    layout: &Layout,
    render: &Mutex<()>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", "").await;
        }
    }
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
