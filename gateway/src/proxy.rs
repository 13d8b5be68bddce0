//! Gateway mode's forwarding: requests go to the registry the way it would have received them
//! from the client (bodies streamed both ways, nothing buffered, raw paths and queries kept),
//! with our credentials stripped and `X-Forwarded-*` set so its `Location`s point back at us.

mod catalog;
mod route;

pub use catalog::{CatalogPage, CatalogQuery, next_link};
pub use route::{Mount, Route, RouteError, Target, repository_name, tag_or_digest, without_mount};

use crate::config;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tower_http::timeout::TimeoutBody;

/// Any body error, ours or a peer's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every request and response the gateway handles.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Readiness probes answer quickly or not at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Catalog pages are a few hundred KiB at most.
const MAX_JSON_BYTES: usize = 16 << 20;

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1), plus
/// the ones the gateway sets itself or must not pass on.
const DROPPED: [HeaderName; 13] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    // The registry must not see the user's password or token: it trusts us instead.
    header::AUTHORIZATION,
    // A client-sent `Forwarded` would override ours at the registry.
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-port"),
];

/// How the client reached the gateway, for the registry to build URLs from.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// `http` or `https`.
    pub proto: String,
    /// `host[:port]` the client used.
    pub host: String,
    /// The `X-Forwarded-For` chain to send, ending with the peer.
    pub chain: String,
}

impl Forwarded {
    /// `proto://host`, the gateway's origin as the client sees it.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.proto, self.host)
    }
}

/// Why the registry could not answer; each maps to a registry-style 502, 503 or 504.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting failed: the registry is down or refuses.
    #[error("the registry at {origin} is unavailable: {reason}")]
    Unavailable {
        /// The upstream origin.
        origin: String,
        /// The connection error.
        reason: String,
    },
    /// It took too long to start answering.
    #[error("the registry at {origin} did not answer within {} s", waited.as_secs())]
    Timeout {
        /// The upstream origin.
        origin: String,
        /// How long it was given.
        waited: Duration,
    },
    /// The exchange broke or the answer was unusable.
    #[error("the registry at {origin} failed: {reason}")]
    Failed {
        /// The upstream origin.
        origin: String,
        /// What went wrong.
        reason: String,
    },
}

impl UpstreamError {
    /// `unavailable`, `timeout` or `failed`, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Failed { .. } => "failed",
        }
    }
}

/// A registry's whole answer to a request of the gateway's own.
#[derive(Debug)]
pub struct Fetched {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, read whole.
    pub body: Bytes,
}

/// The registry behind the gateway, with a pool of kept-alive connections (shared by clones).
#[derive(Clone)]
pub struct Upstream {
    client: crate::client::HttpsClient<Body>,
    /// `scheme://host:port`, no trailing slash.
    origin: String,
    /// `[upstream] idle_timeout_seconds`.
    idle: Duration,
    /// `[upstream] answer_timeout_seconds`.
    answer: Duration,
}

impl Upstream {
    /// A client for `[upstream]`; `https` trusts the system's roots plus `ca`.
    pub fn new(config: &config::Upstream) -> Result<Upstream, String> {
        let uri = config::origin(&config.url)?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("[upstream] url = {:?} names no host", config.url))?;
        let origin = format!("{}://{authority}", uri.scheme_str().unwrap_or("http"));
        if uri.scheme_str() == Some("https") && !crate::client::has_roots(config.ca.as_deref()) {
            return Err(
                "[upstream] is https but no CA is trusted: install the system's \
                        ca-certificates or set [upstream] ca"
                    .into(),
            );
        }
        let client = crate::client::https_client(
            config.ca.as_deref(),
            "[upstream] ca",
            Duration::from_secs(config.connect_timeout_seconds),
        )?;
        Ok(Upstream {
            client,
            origin,
            idle: Duration::from_secs(config.idle_timeout_seconds),
            answer: Duration::from_secs(config.answer_timeout_seconds),
        })
    }

    /// The registry's origin, `scheme://host:port`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Sends the request on, streaming its body, and returns the registry's answer with a
    /// streaming body. `query`, when given, replaces the request's query.
    pub async fn forward(
        &self,
        request: Request<Body>,
        forwarded: &Forwarded,
        query: Option<String>,
    ) -> Result<Response<Body>, UpstreamError> {
        let (mut parts, body) = request.into_parts();
        let query = query.or_else(|| parts.uri.query().map(str::to_string));
        parts.uri = self.uri(parts.uri.path(), query.as_deref())?;
        parts.version = hyper::Version::HTTP_11;
        strip(&mut parts.headers);
        set(&mut parts.headers, "x-forwarded-proto", &forwarded.proto);
        set(&mut parts.headers, "x-forwarded-host", &forwarded.host);
        set(&mut parts.headers, "x-forwarded-for", &forwarded.chain);
        let (sent, answered) = oneshot::channel();
        let body = Sent::new(TimeoutBody::new(self.idle, body).boxed(), sent).boxed();
        let mut response = self
            .send(Request::from_parts(parts, body), answered)
            .await?;
        strip(response.headers_mut());
        self.rewrite_location(response.headers_mut(), &forwarded.origin());
        Ok(response.map(|body| TimeoutBody::new(self.idle, body).boxed()))
    }

    /// GETs a JSON document from the registry (the catalog), with the `Link` header.
    pub async fn get_json(
        &self,
        path_and_query: &str,
    ) -> Result<(serde_json::Value, Option<String>), UpstreamError> {
        let fetched = self
            .fetch(
                Method::GET,
                path_and_query,
                HeaderMap::new(),
                MAX_JSON_BYTES,
            )
            .await?;
        if !fetched.status.is_success() {
            return Err(self.failed(format!("GET {path_and_query} answered {}", fetched.status)));
        }
        let link = fetched
            .headers
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let json = serde_json::from_slice(&fetched.body)
            .map_err(|e| self.failed(format!("not JSON: {e}")))?;
        Ok((json, link))
    }

    /// A request of the gateway's own with no body (the console reads and deletes), and its
    /// answer read whole: at most `limit` bytes, or it fails.
    pub async fn fetch(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        limit: usize,
    ) -> Result<Fetched, UpstreamError> {
        self.exchange(method, path_and_query, headers, Bytes::new(), limit)
            .await
    }

    /// A request of the gateway's own with a small body it holds whole (the revocations it
    /// writes), and the answer read whole: at most `limit` bytes, or it fails.
    pub async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
        limit: usize,
    ) -> Result<Fetched, UpstreamError> {
        let response = self.send_own(method, path_and_query, headers, body).await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(TimeoutBody::new(self.idle, body), limit)
            .collect()
            .await
            .map_err(|e| self.failed(format!("{path_and_query}: {e}")))?
            .to_bytes();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Asks the registry's `/v2/` and accepts any HTTP answer (200, or 401 from a registry
    /// with auth of its own): it is up and speaking HTTP.
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        let answer = tokio::time::timeout(PROBE_TIMEOUT, self.get("/v2/")).await;
        match answer {
            Ok(Ok(response)) => {
                // Read the small body so the connection goes back to the pool.
                let _ = Limited::new(response.into_body(), MAX_JSON_BYTES)
                    .collect()
                    .await;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(UpstreamError::Timeout {
                origin: self.origin.clone(),
                waited: PROBE_TIMEOUT,
            }),
        }
    }

    /// A GET of the gateway's own, with no body.
    async fn get(&self, path_and_query: &str) -> Result<Response<Incoming>, UpstreamError> {
        self.send_own(Method::GET, path_and_query, HeaderMap::new(), Bytes::new())
            .await
    }

    /// A request of the gateway's own, with a body held whole.
    async fn send_own(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.uri(path_and_query, None)?)
            .body(Full::new(body).map_err(|never| match never {}).boxed())
            .map_err(|e| self.failed(e))?;
        *request.headers_mut() = headers;
        let (sent, answered) = oneshot::channel();
        // The body is in hand: the answer timeout starts now.
        drop(sent);
        self.send(request, answered).await
    }

    fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, UpstreamError> {
        let uri = match query {
            Some(q) if !q.is_empty() => format!("{}{path}?{q}", self.origin),
            _ => format!("{}{path}", self.origin),
        };
        uri.parse()
            .map_err(|e| self.failed(format!("bad upstream URI: {e}")))
    }

    /// Sends and waits for the answer's head; the answer timeout starts once `answered`
    /// says the request body is sent (or was dropped).
    async fn send(
        &self,
        request: Request<Body>,
        answered: oneshot::Receiver<()>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let response = self.client.request(request);
        let deadline = async {
            let _ = answered.await;
            tokio::time::sleep(self.answer).await;
        };
        tokio::select! {
            result = response => result.map_err(|e| {
                if e.is_connect() {
                    UpstreamError::Unavailable { origin: self.origin.clone(), reason: chain(&e) }
                } else {
                    self.failed(chain(&e))
                }
            }),
            () = deadline => Err(UpstreamError::Timeout {
                origin: self.origin.clone(),
                waited: self.answer,
            }),
        }
    }

    /// A registry configured with `http.host` names itself in `Location`; clients must come
    /// back to us instead. Redirects elsewhere (signed storage URLs) stay untouched.
    fn rewrite_location(&self, headers: &mut HeaderMap, origin: &str) {
        let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
            return;
        };
        if let Some(rest) = location.strip_prefix(&self.origin)
            && rest.starts_with('/')
            && let Ok(value) = HeaderValue::from_str(&format!("{origin}{rest}"))
        {
            headers.insert(header::LOCATION, value);
        }
    }

    fn failed(&self, reason: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Failed {
            origin: self.origin.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in DROPPED.iter().chain(&named) {
        headers.remove(name);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    headers.remove(name);
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// An error with its causes, for logs and error bodies.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A request body that says when it has been sent in full, so the answer timeout does not
/// count the upload itself.
struct Sent {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
}

impl Sent {
    fn new(inner: Body, done: oneshot::Sender<()>) -> Sent {
        let mut sent = Sent {
            inner,
            done: Some(done),
        };
        // An empty body may never be polled.
        if hyper::body::Body::is_end_stream(&sent.inner) {
            sent.finish();
        }
        sent
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl hyper::body::Body for Sent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
