//! Client connections: how many may be open at once, and how the one too many is turned
//! away, so a flood of connections costs a counter, not memory.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Refusals being answered at once; past this, refused connections are just closed.
const MAX_REFUSING: usize = 64;
/// A refused client gets this long to send its request head and read the answer.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// Of a refused client's request, this much is read (and thrown away) at most.
const REFUSAL_READ: usize = 16 * 1024;

/// The open connections, counted against `[server] max_connections` at each accept, so an
/// edited limit applies to the next connection.
#[derive(Default)]
pub(super) struct Connections {
    open: Arc<AtomicUsize>,
    refusing: Arc<AtomicUsize>,
    /// Whether the last accept was refused, to log a warning once per episode, not per
    /// connection.
    full: AtomicBool,
}

/// An admitted connection's place; dropping it frees the place.
pub(super) struct Slot {
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections(-1);
    }
}

impl Connections {
    /// A place for one more connection, if fewer than `max` are open.
    pub(super) fn admit(&self, max: usize, metrics: &Arc<Metrics>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        if self.full.swap(false, Ordering::Relaxed) {
            tracing::info!("accepting connections again");
        }
        metrics.connections(1);
        Some(Slot {
            open: self.open.clone(),
            metrics: metrics.clone(),
        })
    }

    /// Turns a connection away: a plain-HTTP client is answered a registry-style 503 with
    /// `Retry-After`; a TLS connection is closed (a handshake would cost more than the
    /// answer is worth).
    pub(super) fn refuse(&self, stream: TcpStream, tls: bool, max: usize, metrics: &Metrics) {
        metrics.connection_refused();
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_connections = max,
                "refusing connections: [server] max_connections are open"
            );
        }
        if tls {
            return;
        }
        let room = self
            .refusing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_REFUSING).then_some(n + 1)
            });
        if room.is_err() {
            return;
        }
        let refusing = self.refusing.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(REFUSAL_TIME, answer(stream)).await {
                tracing::debug!(error = %e, "a refused client was too slow for its answer");
            }
            refusing.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Reads the request head first: closing a connection with unread data resets it, and the
/// reset can destroy the answer before the client has read it.
async fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buffer = [0; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REFUSAL_READ {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"too many connections; retry shortly","detail":null}]}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}
