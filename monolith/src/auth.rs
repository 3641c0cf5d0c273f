//! The legacy authz: `POST /api/login` issues an RS256 JWT, `/.well-known/jwks.json` publishes
//! the public key, and the [`Caller`] extractor checks the token on every other route.
//!
//! Roles grant scopes: `admin` everything, `member` read people and read/write tasks and
//! documents. The token carries the scopes so that a verifier elsewhere (the proxy, later) can
//! decide without asking the monolith.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, password_hash::rand_core::OsRng};
use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::people::Role;

/// Failure to load or make a signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is not a PKCS#8 RSA private key in PEM: {detail}")]
    Parse { path: String, detail: String },
    #[error("generating an RSA key: {0}")]
    Generate(String),
}

/// The monolith's RS256 signing key with its derived verification key and JWK.
pub struct SigningKey {
    pem: String,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: serde_json::Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// A fresh 2048-bit RSA key.
    pub fn generate() -> Result<Self, KeyError> {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Self::from_rsa(&key)
    }

    /// A key from PKCS#8 PEM text; `origin` names where it came from in errors.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, KeyError> {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Parse {
            path: origin.to_owned(),
            detail: e.to_string(),
        })?;
        Self::from_rsa(&key)
    }

    /// Loads the key at `path`, or generates one and writes it there (mode 0600) so that tokens
    /// survive a restart.
    pub fn load_or_generate(path: &std::path::Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem, &shown),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                write_private(path, key.pem.as_bytes()).map_err(|source| KeyError::Write {
                    path: shown,
                    source,
                })?;
                Ok(key)
            }
            Err(source) => Err(KeyError::Read {
                path: shown,
                source,
            }),
        }
    }

    fn from_rsa(key: &rsa::RsaPrivateKey) -> Result<Self, KeyError> {
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Generate(e.to_string()))?
            .to_string();
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        // RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order.
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let decoding = DecodingKey::from_rsa_components(&n, &e)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let jwk = serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e,
        });
        Ok(Self {
            pem,
            kid,
            encoding,
            decoding,
            jwk,
        })
    }

    /// The key id (`kid`) tokens carry: the key's RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// The private key in PKCS#8 PEM.
    pub fn to_pem(&self) -> &str {
        &self.pem
    }
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The claims of a monolith token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The person's id, as a string (RFC 7519).
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// Space-separated scopes (RFC 8693 style).
    pub scope: String,
}

/// The scopes a role grants.
pub fn scopes_for(role: Role) -> &'static [&'static str] {
    match role {
        Role::Admin => &[
            "people:read",
            "people:write",
            "tasks:read",
            "tasks:write",
            "documents:read",
            "documents:write",
            "rooms:join",
        ],
        Role::Member => &[
            "people:read",
            "tasks:read",
            "tasks:write",
            "documents:read",
            "documents:write",
            "rooms:join",
        ],
    }
}

/// A verified caller: who sent this request, and what they may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    scopes: Arc<[String]>,
}

impl Caller {
    /// 403 unless the token grants `scope`.
    pub fn require(&self, scope: &str) -> ApiResult<()> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this request needs the scope `{scope}`, which your token does not grant"
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = bearer_token(parts)?;
        let claims = state.verify(token)?;
        let id = claims.sub.parse::<i64>().map_err(|_| {
            ApiError::unauthenticated("invalid_token", "the token's subject is not a person id")
        })?;
        Ok(Caller {
            id,
            email: claims.email,
            display_name: claims.name,
            role: claims.role,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        })
    }
}

/// The token from `Authorization: Bearer`, or for WebSocket upgrades (browsers cannot set
/// headers on them) from the `access_token` query parameter.
fn bearer_token(parts: &Parts) -> ApiResult<&str> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::unauthenticated(
                "invalid_request",
                "the Authorization header must be `Bearer <token>`",
            ));
        }
        return Ok(token.trim());
    }
    let is_upgrade = parts.headers.contains_key(header::UPGRADE);
    let query_token = parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
    });
    if let Some(token) = query_token.filter(|_| is_upgrade) {
        return Ok(token);
    }
    Err(ApiError::unauthenticated(
        "missing_token",
        "this route needs a bearer token: POST /api/login to get one",
    ))
}

impl AppState {
    fn verify(&self, token: &str) -> ApiResult<Claims> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.token_leeway.as_secs();
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            ApiError::unauthenticated("invalid_token", "the token is not a well-formed JWT")
        })?;
        if header.kid.as_deref() != Some(self.keys.kid()) {
            return Err(ApiError::unauthenticated(
                "invalid_token",
                "the token was not signed by a key of this server",
            ));
        }
        jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                let reason = match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidIssuer => "the token's issuer is not accepted here",
                    ErrorKind::InvalidAudience => "the token's audience is not accepted here",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted here",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token's signature or claims do not verify",
                };
                ApiError::unauthenticated("invalid_token", reason)
            })
    }

    /// Issues a token for a person.
    pub(crate) fn issue(
        &self,
        id: i64,
        email: &str,
        name: &str,
        role: Role,
    ) -> ApiResult<(String, u64)> {
        let now = chrono::Utc::now().timestamp();
        let ttl = self.config.token_ttl.as_secs();
        let claims = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: id.to_string(),
            iat: now,
            nbf: now,
            exp: now + ttl as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            email: email.to_owned(),
            name: name.to_owned(),
            role,
            scope: scopes_for(role).join(" "),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.keys.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.keys.encoding)
            .map_err(|e| ApiError::internal("sign token", &e))?;
        Ok((token, ttl))
    }
}

/// Hashes a password with Argon2id (off the async threads: it is deliberately slow).
pub(crate) async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| ApiError::internal("hash password", &e))?
    .map_err(|e| ApiError::internal("hash password", &e))
}

/// Checks a password against a stored hash. Without a stored hash it still does the work of one
/// check, so that response time does not tell which emails exist.
async fn verify_password(password: String, stored: Option<String>) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || {
        // A valid hash of a random password, for the timing-equal path.
        const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                             8qkHhU0g8yn8ar2UVQ2ydBz7tIuvOOi1KX5GxFm1DOo";
        let hash = stored.as_deref().unwrap_or(DECOY);
        let ok = PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && stored.is_some()
    })
    .await
    .map_err(|e| ApiError::internal("verify password", &e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub(crate) struct LoginResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// `POST /api/login`: email and password in, a bearer token out.
pub(crate) async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginRequest>,
) -> ApiResult<axum::Json<LoginResponse>> {
    let row: Option<(i64, String, String, Role, Option<String>)> = sqlx::query_as(
        "SELECT id, email, display_name, role, password_hash FROM people WHERE email = $1",
    )
    .bind(body.email.trim().to_lowercase())
    .fetch_optional(&state.db)
    .await
    .map_err(|e| ApiError::from_db("look up login", e))?;
    let stored = row.as_ref().and_then(|r| r.4.clone());
    let verified = verify_password(body.password, stored).await?;
    let Some((id, email, name, role, _)) = row.filter(|_| verified) else {
        return Err(ApiError::unauthenticated(
            "invalid_credentials",
            "email or password is wrong",
        ));
    };
    let (access_token, expires_in) = state.issue(id, &email, &name, role)?;
    tracing::info!(person = id, "login");
    Ok(axum::Json(LoginResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
    }))
}

/// `GET /.well-known/jwks.json`: the public key tokens verify with.
pub(crate) async fn jwks(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(serde_json::json!({ "keys": [state.keys.jwk()] })),
    )
        .into_response()
}
