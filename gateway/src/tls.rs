//! TLS on the listener: rustls (TLS 1.2 and 1.3 only), HTTP/2 offered by ALPN, and a
//! certificate that is swapped in when its files change, without dropping a connection.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The listener's certificate and key, reloadable.
#[derive(Debug)]
pub struct Certificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl Certificate {
    /// Loads a PEM chain (leaf first) and its PEM private key, checking they belong together.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Certificate, String> {
        Ok(Certificate {
            current: ArcSwap::from_pointee(certified_key(cert_path, key_path)?),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
        })
    }

    /// Re-reads the files; on failure the serving certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    /// The files to watch.
    pub fn files(&self) -> [&Path; 2] {
        [&self.cert_path, &self.key_path]
    }

    /// The certificate and key serving now.
    pub fn certified(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

/// A server config that asks `resolver` for the certificate at each handshake and offers
/// HTTP/2, then HTTP/1.1.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<rustls::ServerConfig, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("[server] tls_cert {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "[server] tls_cert {}: no `BEGIN CERTIFICATE` block",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("[server] tls_key {}: {e}", key_path.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        format!(
            "[server] tls_cert {} and tls_key {} do not fit together: {e}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(certified)
}
