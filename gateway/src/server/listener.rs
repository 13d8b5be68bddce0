//! The listeners: the accept loop for clients (TLS when configured) and operators, the
//! connection limit, and the bounded drain on shutdown.

use super::connections::Connections;
use super::{Live, StartError};
use std::sync::Arc;
use std::time::Duration;

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    /// `[server] listen`: the registry API, tokens, JWKS and the probes.
    Clients,
    /// `[server] admin_listen`: the probes, `/metrics` and `/status`, for operators.
    Admin,
}

/// Serves `listener` (and `admin`, `[server] admin_listen`, in plain HTTP) until `shutdown`
/// resolves, then stops accepting and lets the connections in flight finish their requests
/// for at most `[server] drain_seconds` (keep-alive ends after the current response).
/// With TLS configured, client connections are TLS (HTTP/2 or HTTP/1.1, as the client
/// offers). One failed connection never stops the loop. `[server] header_timeout_seconds`
/// and `max_connections` are read at each accept, so edits apply to the next connection.
pub async fn serve(
    live: Arc<Live>,
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    // The certificate is looked up at each handshake, in whatever App serves then.
    let tls = match &live.current().tls {
        Some(_) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            crate::tls::server_config(live.clone()).map_err(StartError)?,
        ))),
        None => None,
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Connections::default();
    tokio::pin!(shutdown);
    // Personal tokens are refused until the revocations were read: a registry that keeps
    // them is read before the first accept (clients wait in the backlog), unless it is away.
    let _ = tokio::time::timeout(FIRST_READ, live.current().poll_revocations()).await;
    let revocations = tokio::spawn(poll_revocations(live.clone()));
    loop {
        let (accepted, on) = tokio::select! {
            accepted = listener.accept() => (accepted, Listener::Clients),
            accepted = async {
                match &admin {
                    Some(admin) => admin.accept().await,
                    None => std::future::pending().await,
                }
            } => (accepted, Listener::Admin),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends pass; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let tls = tls.clone().filter(|_| on == Listener::Clients);
        let (max, header_timeout, metrics) = {
            let app = live.current();
            let server = &app.config.server;
            (
                server.max_connections,
                Duration::from_secs(server.header_timeout_seconds),
                app.metrics.clone(),
            )
        };
        let Some(slot) = connections.admit(max, &metrics) else {
            connections.refuse(stream, tls.is_some(), max, &metrics);
            continue;
        };
        // Responses are written as they stream from the registry: no waiting for ACKs.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
        }
        let live = live.clone();
        let service = hyper::service::service_fn(move |request| {
            // Each request takes the App serving when it arrives, and finishes on it.
            let app = live.current();
            async move { Ok::<_, std::convert::Infallible>(app.handle(request, peer, on).await) }
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let served = match tls {
                None => {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    watcher
                        .watch(connection)
                        .await
                        .map_err(|e| Box::new(e) as crate::proxy::BoxError)
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let mut builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout);
                    builder.http2().timer(hyper_util::rt::TokioTimer::new());
                    let connection =
                        builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    revocations.abort();
    drop((listener, admin));
    let drain = Duration::from_secs(live.current().config.server.drain_seconds);
    tracing::info!(seconds = drain.as_secs(), "draining the requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => {
            tracing::warn!("requests still in flight after the drain time; stopping anyway");
        }
    }
    Ok(())
}

/// The longest the start waits for the revocations a registry keeps.
const FIRST_READ: Duration = Duration::from_secs(5);

/// Reads the revocations a registry keeps at every poll of the watched files, in whatever
/// App serves then (files raise events; a registry does not).
async fn poll_revocations(live: Arc<Live>) {
    let poll = crate::watch::POLL;
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        live.current().poll_revocations().await;
    }
}
