//! `ficus-identity`: what an extracted service uses instead of writing its own authz.
//!
//! `ficus proxy` verifies the caller's token at the edge and forwards the identity as a
//! short-lived EdDSA token it signs itself (header `x-ficus-identity` by default; see
//! `[auth.internal_token]` in routes.toml). Its public keys are served by the proxy's admin API at
//! `/.well-known/jwks.json` (or wherever the platform republishes them, over https). A service
//! builds a [`Verifier`] from them once and calls [`Verifier::verify_headers`] per request:
//!
//! ```no_run
//! # async fn example(headers: http::HeaderMap) -> Result<(), ficus_identity::IdentityError> {
//! let verifier = ficus_identity::Verifier::fetch(
//!     "http://127.0.0.1:9900/.well-known/jwks.json",
//!     "ficus-services",
//! )
//! .await?;
//! let caller = verifier.verify_headers(&headers).await?;
//! caller.require_scope("people:read")?;
//! # Ok(()) }
//! ```
//!
//! Only EdDSA tokens from issuer `ficus-proxy` for the given audience, unexpired, signed by a key
//! of the set, pass. A token signed by a key the verifier does not know makes it fetch the set
//! again (at most once per [`FetchOptions::min_refetch`]) before refusing: a proxy that restarts
//! with a new signing key does not lock services out until they restart too. `https://` URLs are
//! verified against the system's roots, or the CA of [`FetchOptions::ca_pem`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

/// The header the proxy puts the internal token in by default.
pub const DEFAULT_HEADER: &str = "x-ficus-identity";
/// The issuer of internal tokens.
pub const ISSUER: &str = "ficus-proxy";

/// Why an identity was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity token in the request (header {0})")]
    Missing(String),
    #[error("the identity token was signed by an unknown key")]
    UnknownKey,
    #[error("the identity token has expired")]
    Expired,
    #[error("the identity token is not valid: {0}")]
    Invalid(String),
    #[error("the caller lacks the scope `{0}`")]
    MissingScope(String),
    #[error("fetching the proxy's keys: {0}")]
    Fetch(String),
    #[error("the proxy's keys are not a usable JWKS: {0}")]
    Jwks(String),
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Identity {
    #[serde(rename = "sub")]
    pub subject: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "scope", deserialize_with = "space_separated")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The proxy route the request came through.
    #[serde(default)]
    pub route: Option<String>,
}

fn space_separated<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let text = String::deserialize(d)?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

impl Identity {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// `Err(MissingScope)` unless the caller has `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), IdentityError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(IdentityError::MissingScope(scope.to_owned()))
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// How [`Verifier::fetch_with`] fetches the key set.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// PEM CA certificates trusted for an `https://` URL instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// At most one fetch this often for tokens with an unknown key id (default 10 s).
    pub min_refetch: Duration,
    /// Time for one fetch (default 5 s).
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            ca_pem: None,
            min_refetch: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

type Keys = Arc<HashMap<String, DecodingKey>>;

/// Verifies internal identity tokens against the proxy's public keys.
pub struct Verifier {
    keys: RwLock<Keys>,
    audience: String,
    header: http::HeaderName,
    leeway_secs: u64,
    /// Where the keys came from, to fetch them again on an unknown key id (`None` for a
    /// verifier made from a document).
    source: Option<Source>,
}

struct Source {
    uri: http::Uri,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    options: FetchOptions,
    /// When the last fetch started.
    last: Mutex<Instant>,
    /// One fetch at a time.
    gate: tokio::sync::Mutex<()>,
}

impl Verifier {
    /// From a JWKS document (the proxy admin API's `/.well-known/jwks.json`). Such a verifier
    /// never fetches.
    pub fn from_jwks(json: &[u8], audience: &str) -> Result<Self, IdentityError> {
        Ok(Self {
            keys: RwLock::new(Arc::new(parse_jwks(json)?)),
            audience: audience.to_owned(),
            header: http::HeaderName::from_static(DEFAULT_HEADER),
            leeway_secs: 5,
            source: None,
        })
    }

    /// Fetches the JWKS (`https://` with the system's roots, or `http://`), and keeps the URL
    /// to fetch it again when a token names an unknown key.
    pub async fn fetch(jwks_url: &str, audience: &str) -> Result<Self, IdentityError> {
        Self::fetch_with(jwks_url, audience, FetchOptions::default()).await
    }

    /// [`Verifier::fetch`] with a CA of its own, a refetch rate limit, a timeout.
    pub async fn fetch_with(
        jwks_url: &str,
        audience: &str,
        options: FetchOptions,
    ) -> Result<Self, IdentityError> {
        let uri: http::Uri = jwks_url
            .parse()
            .map_err(|_| IdentityError::Fetch(format!("`{jwks_url}` is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(IdentityError::Fetch(format!(
                "`{jwks_url}` is not an https:// or http:// URL"
            )));
        }
        let tls = client_config(options.ca_pem.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let source = Source {
            uri,
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            options,
            last: Mutex::new(Instant::now()),
            gate: tokio::sync::Mutex::new(()),
        };
        let keys = source.fetch().await?;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            audience: audience.to_owned(),
            header: http::HeaderName::from_static(DEFAULT_HEADER),
            leeway_secs: 5,
            source: Some(source),
        })
    }

    /// Reads the token from another header than [`DEFAULT_HEADER`].
    pub fn with_header(mut self, header: http::HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Verifies the token in the request's identity header (fetching the keys again, rate
    /// limited, when it names an unknown key).
    pub async fn verify_headers(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Identity, IdentityError> {
        let token = headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| IdentityError::Missing(self.header.to_string()))?;
        self.verify(token).await
    }

    /// Verifies one token; on an unknown key id fetches the keys again (at most once per
    /// `min_refetch`, one fetch at a time) and tries once more.
    pub async fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        match self.verify_with_keys_in_hand(token) {
            Err(IdentityError::UnknownKey) => {}
            verified => return verified,
        }
        let Some(source) = &self.source else {
            return Err(IdentityError::UnknownKey);
        };
        let seen = self.keys();
        {
            let _one_at_a_time = source.gate.lock().await;
            // Another request may have fetched while this one waited.
            if Arc::ptr_eq(&seen, &self.keys()) {
                let due = {
                    let mut last = source.last.lock().unwrap_or_else(|e| e.into_inner());
                    let due = last.elapsed() >= source.options.min_refetch;
                    if due {
                        *last = Instant::now();
                    }
                    due
                };
                if !due {
                    return Err(IdentityError::UnknownKey);
                }
                // A failed fetch keeps the keys in hand.
                let keys = source.fetch().await?;
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            }
        }
        self.verify_with_keys_in_hand(token)
    }

    /// Verifies one token with the keys in hand, without fetching (an unknown key id is
    /// [`IdentityError::UnknownKey`]).
    pub fn verify_with_keys_in_hand(&self, token: &str) -> Result<Identity, IdentityError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(IdentityError::Invalid(format!(
                "algorithm {:?} is not EdDSA",
                header.alg
            )));
        }
        let keys = self.keys();
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| keys.get(kid))
            .ok_or(IdentityError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway_secs;
        jsonwebtoken::decode::<Identity>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => IdentityError::Expired,
                _ => IdentityError::Invalid(e.to_string()),
            })
    }

    fn keys(&self) -> Keys {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Source {
    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, IdentityError> {
        let request = http::Request::get(self.uri.clone())
            .body(Empty::new())
            .map_err(|e| IdentityError::Fetch(e.to_string()))?;
        let timeout = self.options.timeout;
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| IdentityError::Fetch(format!("no answer within {timeout:?}")))?
            .map_err(|e| IdentityError::Fetch(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(IdentityError::Fetch(format!(
                "status {}",
                response.status()
            )));
        }
        let body = Limited::new(response.into_body(), 1024 * 1024)
            .collect()
            .await
            .map_err(|e| IdentityError::Fetch(e.to_string()))?
            .to_bytes();
        parse_jwks(&body)
    }
}

/// An error with its causes (a TLS failure is two or three levels down).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse_jwks(json: &[u8]) -> Result<HashMap<String, DecodingKey>, IdentityError> {
    let set: JwkSet =
        serde_json::from_slice(json).map_err(|e| IdentityError::Jwks(e.to_string()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        // Only Ed25519 keys with a kid: that is what the proxy publishes.
        let (AlgorithmParameters::OctetKeyPair(okp), Some(kid)) =
            (&jwk.algorithm, &jwk.common.key_id)
        else {
            continue;
        };
        if okp.curve != EllipticCurve::Ed25519 {
            continue;
        }
        let key = DecodingKey::from_ed_components(&okp.x)
            .map_err(|e| IdentityError::Jwks(e.to_string()))?;
        keys.insert(kid.clone(), key);
    }
    if keys.is_empty() {
        return Err(IdentityError::Jwks("no Ed25519 key with a kid".to_owned()));
    }
    Ok(keys)
}

/// TLS for the fetch: the CA of `ca_pem`, or the system's roots (read once per process).
fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, IdentityError> {
    static SYSTEM: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    let roots = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| IdentityError::Fetch(format!("the CA file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| IdentityError::Fetch(format!("the CA file: {e}")))?;
            }
            if roots.is_empty() {
                return Err(IdentityError::Fetch(
                    "the CA file holds no certificate".to_owned(),
                ));
            }
            Arc::new(roots)
        }
        None => SYSTEM
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                Arc::new(roots)
            })
            .clone(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IdentityError::Fetch(e.to_string()))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}
