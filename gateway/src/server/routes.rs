//! The one router: which listener serves which path, and the headers every answer carries.

use super::error::{json, text};
use super::listener::Listener;
use super::{ApiError, App, Body, console, cors, gateway, token_endpoint};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

impl App {
    /// Routes one request that came in on `listener`.
    pub(super) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
        listener: Listener,
    ) -> Response<Body> {
        let started = Instant::now();
        let path = request.uri().path();
        let route = match path {
            _ if path == "/v2" || path.starts_with("/v2/") => "registry",
            "/token" | "/auth" => "token",
            "/.well-known/jwks.json" => "jwks",
            "/healthz" => "healthz",
            "/readyz" => "readyz",
            "/metrics" => "metrics",
            "/status" => "status",
            _ if path == "/ui" || path.starts_with("/ui/") => "console",
            _ => "unknown",
        };
        use Listener::{Admin, Clients};
        // Browser-based UIs: the token endpoint, the keys, and the registry API we serve.
        let cors_route = listener == Clients
            && (matches!(route, "token" | "jwks")
                || (route == "registry" && self.upstream.is_some()));
        let cors_origin = cors_route
            .then(|| cors::allowed_origin(request.headers(), &self.config.server.cors_origins))
            .flatten();
        if let Some(origin) = &cors_origin
            && cors::is_preflight(request.method(), request.headers())
        {
            let response = cors::preflight(origin.clone(), route);
            self.metrics
                .request(route, response.status().as_u16(), started.elapsed());
            return response;
        }
        let response = match (listener, request.method(), route) {
            (Clients, _, "registry") if self.upstream.is_some() => {
                let result = gateway::handle(self.clone(), request, peer).await;
                if let Err(ApiError::Upstream(error)) = &result {
                    self.metrics.upstream_error(error.kind());
                }
                result
            }
            (Clients, &Method::GET | &Method::POST, "token") => {
                token_endpoint::handle(self.clone(), request, peer).await
            }
            (Clients, &Method::GET, "jwks") => Ok(self.jwks()),
            (Clients, _, "console") => Ok(console::handle(self.clone(), request, peer).await),
            (_, &Method::GET, "healthz") => Ok(text(StatusCode::OK, "ok\n")),
            (_, &Method::GET, "readyz") => Ok(self.readiness().await),
            (Admin, &Method::GET, "metrics") => Ok(self.metrics_page()),
            (Admin, &Method::GET, "status") => Ok(json(StatusCode::OK, &self.status())),
            // What the status page and metrics say (the upstream, modules, key ids, users,
            // reload errors) is for operators: never on the listener clients reach.
            (Clients, _, "metrics" | "status")
            | (Admin, _, "registry" | "token" | "jwks" | "console") => Err(ApiError::NotFound),
            (_, _, "registry" | "unknown") => Err(ApiError::NotFound),
            _ => Err(ApiError::MethodNotAllowed),
        };
        let mut response = response.unwrap_or_else(ApiError::into_response);
        if let Some(origin) = cors_origin {
            cors::allow(&mut response, origin);
        }
        response
            .headers_mut()
            .entry(API_VERSION)
            .or_insert(HeaderValue::from_static("registry/2.0"));
        self.metrics
            .request(route, response.status().as_u16(), started.elapsed());
        response
    }
}
