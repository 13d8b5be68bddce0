//! Outgoing TLS: one way to trust the system's roots plus an optional CA file, and a pooled
//! HTTP(S) client on it, for the registry behind the gateway and for identity providers.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A client for `http://` and `https://` URLs with bodies of type `B`.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// A pooled client: TLS 1.2/1.3 by rustls, trusting the system's roots and the PEM
/// certificates in `ca` (named in errors as `what`, a config key).
pub fn https_client<B>(
    ca: Option<&Path>,
    what: &str,
    connect_timeout: Duration,
) -> Result<HttpsClient<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(ca, what)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector))
}

/// TLS 1.2/1.3 by rustls (ring), trusting the system's roots and the PEM certificates in
/// `ca` (named in errors as `what`, a config key).
pub fn tls_config(ca: Option<&Path>, what: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{what} {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{what} {}: no `BEGIN CERTIFICATE` block",
                ca.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{what} {}: {e}", ca.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Whether the client trusts any root for `https` (none when the system has no
/// ca-certificates and no CA file was given).
pub fn has_roots(ca: Option<&Path>) -> bool {
    ca.is_some() || !rustls_native_certs::load_native_certs().certs.is_empty()
}

/// An outgoing request's error with its whole cause chain (a client's "client error
/// (Connect)" says nothing alone), and what it most likely means: `ca_key` is the config key
/// that trusts another CA for this peer.
pub fn describe(error: &(dyn std::error::Error + 'static), ca_key: &str) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        let text = error.to_string();
        if !chain.iter().any(|seen| seen.contains(&text)) {
            chain.push(text);
        }
        cause = error.source();
    }
    let text = chain.join(": ");
    let hint = hint(&text, ca_key);
    match hint {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

/// What an error's text most likely means, and what to change.
pub fn hint(text: &str, ca_key: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let said = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if said(&["unknownissuer", "unknown issuer", "badsignature"]) {
        Some(format!(
            "the server's certificate is signed by a CA this machine does not trust: name \
             that CA's PEM file in {ca_key}"
        ))
    } else if said(&["notvalidforname", "not valid for name"]) {
        Some(
            "the server's certificate is not for this host name: use the name it was issued for"
                .into(),
        )
    } else if said(&["expired"]) {
        Some("the server's certificate has expired, or this machine's clock is wrong".into())
    } else if said(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
    ]) {
        Some("the host name does not resolve: check the URL".into())
    } else if said(&["connection refused"]) {
        Some("nothing listens at that address and port".into())
    } else if said(&["timed out", "deadline has elapsed"]) {
        Some("no answer in time: a firewall, or the wrong port".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_causes_and_say_what_to_change() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let wrapped = std::io::Error::other(refused);
        let text = describe(&wrapped, "[[identity.oidc]] ca");
        assert!(
            text.contains("Connection refused") && text.contains("nothing listens"),
            "{text}"
        );
        let tls = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let text = describe(&tls, "[[identity.oidc]] ca");
        assert!(text.contains("[[identity.oidc]] ca"), "{text}");
        assert_eq!(hint("fine", "x"), None);
    }
}
