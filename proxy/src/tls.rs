//! TLS at both ends of the proxy, with rustls (no OpenSSL): the client listener's server
//! configuration (`[proxy.tls]`: certificate chain and key, ALPN `h2` then `http/1.1`), and the
//! client configurations of `https://` upstreams and the JWKS fetch (the system's roots, or a
//! given CA file). The check ([`crate::check`]) reads the files and builds these once per load,
//! so a bad certificate is a problem at its key and the previous table stays in force.
//!
//! The crypto provider is aws-lc-rs (the one pg_walstream already builds), always named
//! explicitly: another crate enabling rustls's `ring` feature cannot make the choice ambiguous.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN of the client listener, in the server's order of preference.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The client listener's TLS configuration from a PEM certificate chain and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, String> {
    let chain = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("no usable private key in the key file: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and the key do not make a pair: {e}"))?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration trusting the certificates of `ca_pem`, or the system's roots without
/// one. The connector ([`connector`]) offers ALPN `http/1.1` only: the upstream pools speak
/// HTTP/1.1 (upgrades, header case).
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("not a usable CA certificate: {e}"))?;
            }
            Arc::new(roots)
        }
        None => system_roots(),
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that trusts no certificate (for clients that never speak TLS).
pub fn trusting_nothing() -> Arc<ClientConfig> {
    static NOTHING: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    NOTHING
        .get_or_init(|| {
            Arc::new(
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("the provider supports the default versions")
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// The system's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the platform's store), read
/// once per process.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's trusted certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no trusted certificate found on the system: https:// upstreams need a ca_file"
                );
            }
            tracing::debug!(added, ignored, "system roots loaded");
            Arc::new(roots)
        })
        .clone()
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the file".to_owned());
    }
    Ok(chain)
}

/// Reads a PEM file named in the routes file, relative to its directory.
pub fn read_file(base_dir: &Path, path: &Path) -> Result<Vec<u8>, String> {
    let path = base_dir.join(path);
    std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// An HTTP connector that speaks TLS to `https://` URLs with `tls` (plain TCP to `http://`).
pub fn connector(connect_timeout: Duration, tls: &ClientConfig) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// A client's TLS configuration as a value the check hands on: the configuration, and a digest
/// of the CA bytes it was made from (what the upstream pool and the JWKS caches key on, so a
/// changed CA file makes a new client).
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub digest: [u8; 32],
}

impl ClientTls {
    /// From a CA file's bytes, or the system's roots.
    pub fn new(ca_pem: Option<&[u8]>) -> Result<Self, String> {
        use sha2::Digest;
        let config = client_config(ca_pem)?;
        let digest = sha2::Sha256::digest(ca_pem.unwrap_or_default()).into();
        Ok(Self { config, digest })
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// The client listener's TLS, as the check made it.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// A digest of the certificate and key bytes: a reload with changed files swaps the table
    /// even when the routes file's text did not change.
    pub digest: [u8; 32],
}

impl ServerTls {
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        use sha2::Digest;
        let config = server_config(cert_pem, key_pem)?;
        let mut hasher = sha2::Sha256::new();
        hasher.update(cert_pem);
        hasher.update(key_pem);
        Ok(Self {
            config,
            digest: hasher.finalize().into(),
        })
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}
