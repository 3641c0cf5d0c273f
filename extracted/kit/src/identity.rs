//! The caller, as the proxy vouches for it: `ficus proxy` verifies the end user's token at the
//! edge and forwards the identity as a short-lived EdDSA token (`[auth.internal_token]` in
//! routes.toml); [`Keys`] verifies it with `ficus-identity` against the proxy's JWKS, and the
//! [`Caller`] extractor hands handlers the verified identity.
//!
//! The keys are fetched on first need, not at start, so a service may start before the proxy
//! (a failed first fetch is retried at most every [`REFETCH_INTERVAL`]); a token signed by a key
//! not yet known makes `ficus-identity` refetch them.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use ficus_identity::{Identity, IdentityError, Verifier};

use crate::error::{ApiError, ApiResult};

/// How often a failed first fetch of the JWKS may be tried again.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(2);

/// Where the proxy's keys are and what a token must carry.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub jwks_url: String,
    pub audience: String,
    pub header: axum::http::HeaderName,
}

/// The proxy's public keys, fetched lazily (`ficus-identity` refreshes them on an unknown key).
pub struct Keys {
    config: IdentityConfig,
    verifier: RwLock<Option<Arc<Verifier>>>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl Keys {
    pub fn new(config: IdentityConfig) -> Self {
        Self {
            config,
            verifier: RwLock::new(None),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Keys from a JWKS document already at hand (tests, a key set shipped as a file).
    pub fn from_jwks(config: IdentityConfig, jwks: &[u8]) -> Result<Self, IdentityError> {
        let verifier =
            Verifier::from_jwks(jwks, &config.audience)?.with_header(config.header.clone());
        let keys = Self::new(config);
        *keys.verifier.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(verifier));
        Ok(keys)
    }

    fn current(&self) -> Option<Arc<Verifier>> {
        self.verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fetches the JWKS unless that was tried within [`REFETCH_INTERVAL`].
    async fn refresh(&self) -> Result<(), IdentityError> {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let verifier = Verifier::fetch(&self.config.jwks_url, &self.config.audience)
            .await?
            .with_header(self.config.header.clone());
        *self.verifier.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(verifier));
        tracing::info!(jwks_url = %self.config.jwks_url, "identity keys loaded");
        Ok(())
    }

    /// Verifies the request's identity token.
    pub async fn verify(&self, headers: &axum::http::HeaderMap) -> ApiResult<Identity> {
        if self.current().is_none()
            && let Err(error) = self.refresh().await
        {
            tracing::warn!(%error, "identity keys unavailable");
        }
        let Some(verifier) = self.current() else {
            return Err(ApiError::unavailable(
                "identity_unavailable",
                "the proxy's identity keys could not be fetched yet",
            ));
        };
        // An unknown key id makes `ficus-identity` fetch the key set again (rate-limited) before
        // it refuses: a proxy restarted with a new signing key does not lock the service out.
        verifier.verify_headers(headers).await.map_err(refusal)
    }
}

fn refusal(error: IdentityError) -> ApiError {
    match error {
        IdentityError::Missing(header) => ApiError::unauthenticated(
            "missing_token",
            format!("this route needs the identity ficus proxy forwards (header {header})"),
        ),
        IdentityError::Expired => {
            ApiError::unauthenticated("token_expired", "the identity token has expired")
        }
        IdentityError::MissingScope(scope) => ApiError::missing_scope(&scope),
        other => ApiError::unauthenticated("invalid_token", other.to_string()),
    }
}

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl Caller {
    /// 403 unless the caller has `scope` (the monolith's wording).
    pub fn require(&self, scope: &str) -> ApiResult<()> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::missing_scope(scope))
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Keys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let keys = Arc::<Keys>::from_ref(state);
        keys.verify(&parts.headers).await.map(Caller)
    }
}
