//! Authorization at the edge: the token is verified once, here, for every route and both sides;
//! the verified identity travels upstream in headers (and optionally as a token signed by
//! ficus); whatever a client sent that could pose as an identity is removed first.
//!
//! Files: [`keys`] key sources (JWKS cache, static keys, HS256 secret); [`cache`] verified
//! tokens kept until their `exp` or the next key rotation; [`headers`] spoofable header removal
//! and trusted proxy ranges; [`internal`] the internal identity token.

pub mod cache;
pub mod headers;
pub mod internal;
pub mod keys;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use crate::config::{AuthSection, DefaultPolicy, RouteAuth};
use crate::error::{Kind, Origin, ProxyError};
use cache::{CacheMetrics, TokenCache, Window};
use internal::InternalSigner;
use keys::{Keys, Lookup};

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    claims: serde_json::Map<String, Value>,
    /// The header values forwarded upstream, made once per verified token.
    forwarded: Forwarded,
}

/// An identity's forwarded header values (`None`: not a valid header value, or no such claim).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forwarded {
    subject: Option<HeaderValue>,
    email: Option<HeaderValue>,
    name: Option<HeaderValue>,
    scopes: Option<HeaderValue>,
    roles: Option<HeaderValue>,
}

impl Identity {
    fn from_claims(claims: serde_json::Map<String, Value>) -> Self {
        let text = |key: &str| claims.get(key).and_then(Value::as_str).map(str::to_owned);
        let list = |value: Option<&Value>| -> Vec<String> {
            match value {
                Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let scopes = list(claims.get("scope").or_else(|| claims.get("scp")));
        let roles = list(claims.get("roles").or_else(|| claims.get("role")));
        let subject = text("sub").unwrap_or_default();
        let (email, name) = (text("email"), text("name"));
        let value = |text: &str| HeaderValue::from_str(text).ok();
        let forwarded = Forwarded {
            subject: value(&subject),
            email: email.as_deref().and_then(value),
            name: name.as_deref().and_then(value),
            scopes: value(&scopes.join(" ")),
            roles: value(&roles.join(" ")),
        };
        Identity {
            subject,
            email,
            name,
            scopes,
            roles,
            claims,
            forwarded,
        }
    }

    fn claim_matches(&self, key: &str, expected: &str) -> bool {
        match self.claims.get(key) {
            Some(Value::String(s)) => s == expected,
            Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(expected)),
            Some(Value::Number(n)) => n.to_string() == expected,
            Some(Value::Bool(b)) => b.to_string() == expected,
            _ => false,
        }
    }
}

/// What a route asks of a request, compiled.
#[derive(Debug, Clone)]
pub enum Policy {
    /// No check at all (no `[auth]`, or `default = "allow"`).
    Open,
    /// No token needed.
    Public,
    /// Refused to everyone; `reason` says why (route_denied or default_deny).
    Deny { reason: Reason },
    /// A valid token with these grants.
    Require {
        scopes: Vec<String>,
        roles: Vec<String>,
        claims: BTreeMap<String, String>,
    },
}

impl Policy {
    /// The policy of a route under an `[auth]` section (`None`: no `[auth]`).
    pub fn compile(auth: Option<&AuthSection>, route: Option<&RouteAuth>) -> Self {
        let Some(auth) = auth else {
            return Policy::Open;
        };
        match route {
            Some(r) if r.deny => Policy::Deny {
                reason: Reason::RouteDenied,
            },
            Some(r) if r.public => Policy::Public,
            Some(r) => Policy::Require {
                scopes: r.require.clone(),
                roles: r.roles.clone(),
                claims: r.claims.clone(),
            },
            None => match auth.default {
                DefaultPolicy::Allow => Policy::Open,
                DefaultPolicy::Deny => Policy::Deny {
                    reason: Reason::DefaultDeny,
                },
                DefaultPolicy::Authenticated => Policy::Require {
                    scopes: Vec::new(),
                    roles: Vec::new(),
                    claims: BTreeMap::new(),
                },
            },
        }
    }
}

/// Why edge authorization decided as it did: the `reason` label of
/// `ficus_proxy_authz_decisions_total` and the log field. A closed set, so that the metrics
/// handles of every reason exist from the moment a table is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Allowed: the route has no check.
    Open,
    /// Allowed: the route is public.
    Public,
    /// Allowed: a verified token with the grants the route needs.
    Allowed,
    /// Refused: the route is closed to everyone.
    RouteDenied,
    /// Refused: no route policy and `default = "deny"`.
    DefaultDeny,
    NoToken,
    Malformed,
    AlgNotAllowed,
    UnknownKey,
    /// No keys to verify with (503, fail closed).
    NoKeys,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    BadSignature,
    MissingClaim,
    InsufficientScope,
    MissingRole,
    ClaimMismatch,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`].
    pub const ALL: [Reason; 19] = [
        Reason::Open,
        Reason::Public,
        Reason::Allowed,
        Reason::RouteDenied,
        Reason::DefaultDeny,
        Reason::NoToken,
        Reason::Malformed,
        Reason::AlgNotAllowed,
        Reason::UnknownKey,
        Reason::NoKeys,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongAudience,
        Reason::WrongIssuer,
        Reason::BadSignature,
        Reason::MissingClaim,
        Reason::InsufficientScope,
        Reason::MissingRole,
        Reason::ClaimMismatch,
    ];

    /// The position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Open => "open",
            Reason::Public => "public",
            Reason::Allowed => "allowed",
            Reason::RouteDenied => "route_denied",
            Reason::DefaultDeny => "default_deny",
            Reason::NoToken => "no_token",
            Reason::Malformed => "malformed",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::UnknownKey => "unknown_key",
            Reason::NoKeys => "no_keys",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::BadSignature => "bad_signature",
            Reason::MissingClaim => "missing_claim",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::MissingRole => "missing_role",
            Reason::ClaimMismatch => "claim_mismatch",
        }
    }

    /// The `decision` label: `allow` or `deny`.
    pub fn decision(self) -> &'static str {
        match self {
            Reason::Open | Reason::Public | Reason::Allowed => "allow",
            _ => "deny",
        }
    }
}

/// 401: no valid token, with the challenge RFC 6750 asks for.
fn unauthenticated(reason: Reason, message: &'static str) -> ProxyError {
    let challenge = if reason == Reason::NoToken {
        "Bearer realm=\"ficus\"".to_owned()
    } else {
        format!("Bearer realm=\"ficus\", error=\"invalid_token\", error_description=\"{message}\"")
    };
    ProxyError::new(
        Kind::Unauthenticated(reason),
        Origin::Client,
        false,
        message,
    )
    .with_challenge(challenge)
}

/// 403: the token does not carry what the route needs (or the route is closed).
fn forbidden(
    reason: Reason,
    message: impl Into<Cow<'static, str>>,
    scope: Option<&str>,
) -> ProxyError {
    let error = ProxyError::new(Kind::Forbidden(reason), Origin::Client, false, message);
    match scope {
        Some(s) => error.with_challenge(format!(
            "Bearer realm=\"ficus\", error=\"insufficient_scope\", scope=\"{s}\""
        )),
        None => error,
    }
}

/// What the JWT library lets pass but RFC 7519 does not, or what would forward no identity:
/// `iss` must be one string (§4.1.1; the library accepts an array with one right issuer in
/// it), `sub` a non-empty string (an empty subject would be forwarded as nobody in particular).
fn check_claim_shapes(claims: &serde_json::Map<String, Value>) -> Result<(), ProxyError> {
    if !matches!(claims.get("iss"), Some(Value::String(_))) {
        return Err(unauthenticated(
            Reason::WrongIssuer,
            "the token's issuer must be one string",
        ));
    }
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.trim().is_empty() => Ok(()),
        _ => Err(unauthenticated(
            Reason::MissingClaim,
            "the token's subject must be a non-empty string",
        )),
    }
}

/// A request edge authorization lets through.
pub struct Allowed {
    /// The caller, when a token was verified (shared with the token cache).
    pub identity: Option<Arc<Identity>>,
    pub reason: Reason,
}

/// Header names of the forwarded identity.
struct Forward {
    subject: HeaderName,
    email: HeaderName,
    name: HeaderName,
    scopes: HeaderName,
    roles: HeaderName,
}

/// The internal token settings.
struct Internal {
    signer: Arc<InternalSigner>,
    header: HeaderName,
    audience: String,
    ttl: Duration,
}

/// The edge authorization of one table.
pub struct Authz {
    keys: Keys,
    issuer: String,
    audience: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    cookie: Option<String>,
    forward: Forward,
    /// Normalized names removed from every request (see [`headers`]).
    protected: Vec<String>,
    internal: Option<Internal>,
    /// Tokens verified, kept until their `exp` or the next key rotation.
    cache: TokenCache,
}

impl Authz {
    /// Builds from a checked section. `keys` and `signer` come from the loader, which keeps
    /// them across reloads; the token cache is new (a reload may change issuer, audience or
    /// keys, so nothing verified under the previous table is kept).
    pub fn new(
        auth: &AuthSection,
        keys: Keys,
        signer: Option<Arc<InternalSigner>>,
        cache_metrics: CacheMetrics,
    ) -> Self {
        let names = &auth.forward;
        let forward = Forward {
            subject: names.subject.clone(),
            email: names.email.clone(),
            name: names.name.clone(),
            scopes: names.scopes.clone(),
            roles: names.roles.clone(),
        };
        let internal = auth
            .internal_token
            .as_ref()
            .zip(signer)
            .map(|(config, signer)| Internal {
                signer,
                header: config.header.clone(),
                audience: config.audience.clone(),
                ttl: Duration::from_millis(config.ttl_ms),
            });
        let mut protected: Vec<String> = [
            &names.subject,
            &names.email,
            &names.name,
            &names.scopes,
            &names.roles,
        ]
        .into_iter()
        .chain(auth.internal_token.as_ref().map(|i| &i.header))
        .chain(&auth.strip_headers)
        .map(|n| headers::normalize(n.as_str()))
        .collect();
        protected.sort();
        protected.dedup();
        let algorithms = auth.algorithms.iter().map(|a| a.jwt()).collect();
        let leeway = Duration::from_millis(auth.leeway_ms).as_secs();
        Authz {
            keys,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            algorithms,
            leeway,
            cookie: auth.cookie.clone(),
            forward,
            protected,
            internal,
            cache: TokenCache::new(auth.token_cache_entries, leeway, cache_metrics),
        }
    }

    /// The verified-token cache (for tests and the admin API).
    pub fn token_cache(&self) -> &TokenCache {
        &self.cache
    }

    /// The internal token's signer (for the admin API's JWKS).
    pub fn signer(&self) -> Option<&Arc<InternalSigner>> {
        self.internal.as_ref().map(|i| &i.signer)
    }

    /// Removes identity headers a client could have forged, in every spelling; and forwarding
    /// headers unless the client is a trusted proxy.
    pub fn strip_spoofable(&self, headers: &mut HeaderMap, trusted: bool) -> usize {
        headers::strip(headers, &self.protected, trusted)
    }

    /// Decides on a request under `policy`: let through (with the verified identity), or
    /// refused with the answer the client gets.
    pub async fn decide(
        &self,
        policy: &Policy,
        headers: &HeaderMap,
    ) -> Result<Allowed, ProxyError> {
        let allow = |reason| {
            Ok(Allowed {
                identity: None,
                reason,
            })
        };
        let (scopes, roles, claims) = match policy {
            Policy::Open => return allow(Reason::Open),
            Policy::Public => return allow(Reason::Public),
            Policy::Deny { reason } => {
                return Err(forbidden(
                    *reason,
                    "this route is closed to every caller",
                    None,
                ));
            }
            Policy::Require {
                scopes,
                roles,
                claims,
            } => (scopes, roles, claims),
        };
        let Some(token) = self.token(headers)? else {
            return Err(unauthenticated(
                Reason::NoToken,
                "this route needs a bearer token",
            ));
        };
        let identity = self.verified(token).await?;
        if let Some(missing) = scopes.iter().find(|s| !identity.scopes.contains(s)) {
            return Err(forbidden(
                Reason::InsufficientScope,
                format!("this route needs the scope `{missing}`"),
                Some(missing),
            ));
        }
        if !roles.is_empty() && !roles.iter().any(|r| identity.roles.contains(r)) {
            return Err(forbidden(
                Reason::MissingRole,
                format!("this route needs one of the roles {}", roles.join(", ")),
                None,
            ));
        }
        if let Some((key, _)) = claims
            .iter()
            .find(|(key, value)| !identity.claim_matches(key, value))
        {
            return Err(forbidden(
                Reason::ClaimMismatch,
                format!("this route needs a different `{key}` claim"),
                None,
            ));
        }
        Ok(Allowed {
            identity: Some(identity),
            reason: Reason::Allowed,
        })
    }

    /// The bearer token from `Authorization`, or from the configured cookie. Sent twice (two
    /// `Authorization` headers, or the cookie twice), it is refused: the edge would verify one
    /// while an upstream might read the other.
    fn token<'a>(&self, headers: &'a HeaderMap) -> Result<Option<&'a str>, ProxyError> {
        if headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(unauthenticated(
                Reason::Malformed,
                "send one Authorization header, not several",
            ));
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().unwrap_or_default();
            return match value.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                {
                    Ok(Some(token.trim()))
                }
                _ => Err(unauthenticated(
                    Reason::Malformed,
                    "the Authorization header must be `Bearer <token>`",
                )),
            };
        }
        let Some(cookie) = &self.cookie else {
            return Ok(None);
        };
        let mut values = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == cookie).then_some(v)
            });
        let first = values.next();
        if values.next().is_some() {
            return Err(unauthenticated(
                Reason::Malformed,
                "send the token cookie once, not several times",
            ));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    /// The identity of a valid token: from the cache when this very token verified before and
    /// is still valid by time and keys, otherwise verified now (and kept when it passes).
    async fn verified(&self, token: &str) -> Result<Arc<Identity>, ProxyError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(identity) = self.cache.get(token, now, self.keys.generation()) {
            return Ok(identity);
        }
        let (identity, window, generation) = self.verify(token).await?;
        let identity = Arc::new(identity);
        if let Some(window) = window {
            self.cache
                .insert(token, identity.clone(), window, generation, now);
        }
        Ok(identity)
    }

    /// Verifies a token's signature and claims; with the identity, the window in which it is
    /// valid (`None` when it cannot be read as the verifier reads it: then it is not kept) and
    /// the generation of the key set its key came from.
    async fn verify(
        &self,
        token: &str,
    ) -> Result<(Identity, Option<Window>, Option<u64>), ProxyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|error| {
            unauthenticated(Reason::Malformed, "the token is not a well-formed JWT")
                .with_source(error)
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(unauthenticated(
                Reason::AlgNotAllowed,
                "the token's algorithm is not accepted",
            ));
        }
        let (key, generation) = match self.keys.find(header.kid.as_deref(), header.alg).await {
            Lookup::Found(key, generation) => (key, generation),
            Lookup::Unknown => {
                return Err(unauthenticated(
                    Reason::UnknownKey,
                    "the token was signed by an unknown key",
                ));
            }
            Lookup::NoKeys => {
                // Fail closed: without keys nothing verifies, so nothing passes.
                return Err(ProxyError::new(
                    Kind::AuthUnavailable(Reason::NoKeys),
                    Origin::Proxy,
                    false,
                    "tokens cannot be verified right now",
                ));
            }
        };
        if key.algorithm != header.alg {
            return Err(unauthenticated(
                Reason::AlgNotAllowed,
                "the token's algorithm does not match its key",
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
                .map_err(|error| {
                    let (reason, message) = match error.kind() {
                        ErrorKind::ExpiredSignature => (Reason::Expired, "the token has expired"),
                        ErrorKind::ImmatureSignature => {
                            (Reason::NotYetValid, "the token is not valid yet")
                        }
                        ErrorKind::InvalidAudience => (
                            Reason::WrongAudience,
                            "the token's audience is not accepted",
                        ),
                        ErrorKind::InvalidIssuer => {
                            (Reason::WrongIssuer, "the token's issuer is not accepted")
                        }
                        ErrorKind::InvalidSignature => (
                            Reason::BadSignature,
                            "the token's signature does not verify",
                        ),
                        ErrorKind::InvalidAlgorithm => (
                            Reason::AlgNotAllowed,
                            "the token's algorithm is not accepted",
                        ),
                        ErrorKind::MissingRequiredClaim(_) => {
                            (Reason::MissingClaim, "the token lacks a required claim")
                        }
                        _ => (Reason::Malformed, "the token could not be verified"),
                    };
                    unauthenticated(reason, message).with_source(error)
                })?;
        check_claim_shapes(&data.claims)?;
        let window = Window::from_claims(&data.claims);
        Ok((Identity::from_claims(data.claims), window, generation))
    }

    /// Puts the verified identity on the request headers going upstream.
    pub fn forward(&self, headers: &mut HeaderMap, identity: &Identity, route: &str) {
        let mut put = |name: &HeaderName, value: &Option<HeaderValue>| {
            if let Some(value) = value {
                headers.insert(name.clone(), value.clone());
            }
        };
        let values = &identity.forwarded;
        put(&self.forward.subject, &values.subject);
        put(&self.forward.email, &values.email);
        put(&self.forward.name, &values.name);
        put(&self.forward.scopes, &values.scopes);
        put(&self.forward.roles, &values.roles);
        if let Some(internal) = &self.internal {
            match internal
                .signer
                .mint(identity, &internal.audience, internal.ttl, route)
            {
                Ok(token) => put(&internal.header, &HeaderValue::from_str(&token).ok()),
                Err(error) => tracing::error!(%error, "signing the internal token failed"),
            }
        }
    }
}
