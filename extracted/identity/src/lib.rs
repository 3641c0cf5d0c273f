//! `ficus-identity`: what an extracted service uses instead of writing its own authz.
//!
//! `ficus proxy` verifies the caller's token at the edge and forwards the identity as a
//! short-lived EdDSA token it signs itself (header `x-ficus-identity` by default; see
//! `[auth.internal_token]` in routes.toml). Its public keys are served by the proxy's admin API at
//! `/.well-known/jwks.json`. A service builds a [`Verifier`] from them once and calls
//! [`Verifier::verify_headers`] per request:
//!
//! ```no_run
//! # async fn example(headers: http::HeaderMap) -> Result<(), ficus_identity::IdentityError> {
//! let verifier = ficus_identity::Verifier::fetch(
//!     "http://127.0.0.1:9900/.well-known/jwks.json",
//!     "ficus-services",
//! )
//! .await?;
//! let caller = verifier.verify_headers(&headers)?;
//! caller.require_scope("people:read")?;
//! # Ok(()) }
//! ```
//!
//! Only EdDSA tokens from issuer `ficus-proxy` for the given audience, unexpired, signed by a key
//! of the set, pass.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
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

/// Verifies internal identity tokens against the proxy's public keys.
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    audience: String,
    header: http::HeaderName,
    leeway_secs: u64,
}

impl Verifier {
    /// From a JWKS document (the proxy admin API's `/.well-known/jwks.json`).
    pub fn from_jwks(json: &[u8], audience: &str) -> Result<Self, IdentityError> {
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
        Ok(Self {
            keys,
            audience: audience.to_owned(),
            header: http::HeaderName::from_static(DEFAULT_HEADER),
            leeway_secs: 5,
        })
    }

    /// Fetches the JWKS from the proxy's admin API (`http://`).
    pub async fn fetch(jwks_url: &str, audience: &str) -> Result<Self, IdentityError> {
        let uri: http::Uri = jwks_url
            .parse()
            .map_err(|_| IdentityError::Fetch(format!("`{jwks_url}` is not a URL")))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
        let request = http::Request::get(uri)
            .body(Empty::new())
            .map_err(|e| IdentityError::Fetch(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
            .await
            .map_err(|_| IdentityError::Fetch("no answer within 5 s".to_owned()))?
            .map_err(|e| IdentityError::Fetch(e.to_string()))?;
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
        Self::from_jwks(&body, audience)
    }

    /// Reads the token from another header than [`DEFAULT_HEADER`].
    pub fn with_header(mut self, header: http::HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Verifies the token in the request's identity header.
    pub fn verify_headers(&self, headers: &http::HeaderMap) -> Result<Identity, IdentityError> {
        let token = headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| IdentityError::Missing(self.header.to_string()))?;
        self.verify(token)
    }

    /// Verifies one token.
    pub fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(IdentityError::Invalid(format!(
                "algorithm {:?} is not EdDSA",
                header.alg
            )));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
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
}
