//! Authorization at the edge: the token is verified once, here, for every route and both sides;
//! the verified identity travels upstream in headers (and optionally as a token signed by
//! ficus); whatever a client sent that could pose as an identity is removed first.
//!
//! Files: [`keys`] key sources (JWKS cache, static keys, HS256 secret); [`headers`] spoofable
//! header removal and trusted proxy ranges; [`internal`] the internal identity token.

pub mod headers;
pub mod internal;
pub mod keys;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use crate::config::{AuthSection, DefaultPolicy, RouteAuth};
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
        Identity {
            subject: text("sub").unwrap_or_default(),
            email: text("email"),
            name: text("name"),
            scopes,
            roles,
            claims,
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
    Deny { reason: &'static str },
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
                reason: "route_denied",
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
                    reason: "default_deny",
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

/// A refusal, answered by the proxy.
#[derive(Debug, Clone)]
pub struct Denial {
    pub status: StatusCode,
    /// The metrics label and log field: why.
    pub reason: &'static str,
    pub message: String,
    /// `WWW-Authenticate` for 401s and scope refusals.
    pub challenge: Option<String>,
}

impl Denial {
    fn unauthenticated(reason: &'static str, message: &str) -> Self {
        let challenge = if reason == "no_token" {
            "Bearer realm=\"ficus\"".to_owned()
        } else {
            format!(
                "Bearer realm=\"ficus\", error=\"invalid_token\", error_description=\"{message}\""
            )
        };
        Denial {
            status: StatusCode::UNAUTHORIZED,
            reason,
            message: message.to_owned(),
            challenge: Some(challenge),
        }
    }

    fn forbidden(reason: &'static str, message: String, scope: Option<&str>) -> Self {
        Denial {
            status: StatusCode::FORBIDDEN,
            reason,
            message,
            challenge: scope.map(|s| {
                format!("Bearer realm=\"ficus\", error=\"insufficient_scope\", scope=\"{s}\"")
            }),
        }
    }
}

/// The outcome for a request.
pub enum Decision {
    /// Pass, with the identity when a token was verified.
    Allow(Option<Identity>, &'static str),
    Deny(Denial),
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
}

impl Authz {
    /// Builds from a checked section. `keys` and `signer` come from the loader, which keeps
    /// them across reloads.
    pub fn new(auth: &AuthSection, keys: Keys, signer: Option<Arc<InternalSigner>>) -> Self {
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
        Authz {
            keys,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            algorithms,
            leeway: Duration::from_millis(auth.leeway_ms).as_secs(),
            cookie: auth.cookie.clone(),
            forward,
            protected,
            internal,
        }
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

    /// Decides on a request under `policy`.
    pub async fn decide(&self, policy: &Policy, headers: &HeaderMap) -> Decision {
        let (scopes, roles, claims) = match policy {
            Policy::Open => return Decision::Allow(None, "open"),
            Policy::Public => return Decision::Allow(None, "public"),
            Policy::Deny { reason } => {
                return Decision::Deny(Denial::forbidden(
                    reason,
                    "this route is closed to every caller".to_owned(),
                    None,
                ));
            }
            Policy::Require {
                scopes,
                roles,
                claims,
            } => (scopes, roles, claims),
        };
        let token = match self.token(headers) {
            Ok(Some(token)) => token,
            Ok(None) => {
                return Decision::Deny(Denial::unauthenticated(
                    "no_token",
                    "this route needs a bearer token",
                ));
            }
            Err(denial) => return Decision::Deny(denial),
        };
        let identity = match self.verify(token).await {
            Ok(identity) => identity,
            Err(denial) => return Decision::Deny(denial),
        };
        if let Some(missing) = scopes.iter().find(|s| !identity.scopes.contains(s)) {
            return Decision::Deny(Denial::forbidden(
                "insufficient_scope",
                format!("this route needs the scope `{missing}`"),
                Some(missing),
            ));
        }
        if !roles.is_empty() && !roles.iter().any(|r| identity.roles.contains(r)) {
            return Decision::Deny(Denial::forbidden(
                "missing_role",
                format!("this route needs one of the roles {}", roles.join(", ")),
                None,
            ));
        }
        if let Some((key, _)) = claims
            .iter()
            .find(|(key, value)| !identity.claim_matches(key, value))
        {
            return Decision::Deny(Denial::forbidden(
                "claim_mismatch",
                format!("this route needs a different `{key}` claim"),
                None,
            ));
        }
        Decision::Allow(Some(identity), "allowed")
    }

    /// The bearer token from `Authorization`, or from the configured cookie.
    fn token<'a>(&self, headers: &'a HeaderMap) -> Result<Option<&'a str>, Denial> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().unwrap_or_default();
            return match value.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                {
                    Ok(Some(token.trim()))
                }
                _ => Err(Denial::unauthenticated(
                    "malformed",
                    "the Authorization header must be `Bearer <token>`",
                )),
            };
        }
        let Some(cookie) = &self.cookie else {
            return Ok(None);
        };
        Ok(headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == cookie && !v.is_empty()).then_some(v)
            }))
    }

    async fn verify(&self, token: &str) -> Result<Identity, Denial> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Denial::unauthenticated("malformed", "the token is not a well-formed JWT")
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Denial::unauthenticated(
                "alg_not_allowed",
                "the token's algorithm is not accepted",
            ));
        }
        let key = match self.keys.find(header.kid.as_deref(), header.alg).await {
            Lookup::Found(key) => key,
            Lookup::Unknown => {
                return Err(Denial::unauthenticated(
                    "unknown_key",
                    "the token was signed by an unknown key",
                ));
            }
            Lookup::NoKeys => {
                // Fail closed: without keys nothing verifies, so nothing passes.
                return Err(Denial {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    reason: "no_keys",
                    message: "tokens cannot be verified right now".to_owned(),
                    challenge: None,
                });
            }
        };
        if key.algorithm != header.alg {
            return Err(Denial::unauthenticated(
                "alg_not_allowed",
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
                        ErrorKind::ExpiredSignature => ("expired", "the token has expired"),
                        ErrorKind::ImmatureSignature => {
                            ("not_yet_valid", "the token is not valid yet")
                        }
                        ErrorKind::InvalidAudience => {
                            ("wrong_audience", "the token's audience is not accepted")
                        }
                        ErrorKind::InvalidIssuer => {
                            ("wrong_issuer", "the token's issuer is not accepted")
                        }
                        ErrorKind::InvalidSignature => {
                            ("bad_signature", "the token's signature does not verify")
                        }
                        ErrorKind::InvalidAlgorithm => {
                            ("alg_not_allowed", "the token's algorithm is not accepted")
                        }
                        ErrorKind::MissingRequiredClaim(_) => {
                            ("missing_claim", "the token lacks a required claim")
                        }
                        _ => ("malformed", "the token could not be verified"),
                    };
                    Denial::unauthenticated(reason, message)
                })?;
        Ok(Identity::from_claims(data.claims))
    }

    /// Puts the verified identity on the request headers going upstream.
    pub fn forward(&self, headers: &mut HeaderMap, identity: &Identity, route: &str) {
        let mut put = |name: &HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), value);
            }
        };
        put(&self.forward.subject, &identity.subject);
        if let Some(email) = &identity.email {
            put(&self.forward.email, email);
        }
        if let Some(name) = &identity.name {
            put(&self.forward.name, name);
        }
        put(&self.forward.scopes, &identity.scopes.join(" "));
        put(&self.forward.roles, &identity.roles.join(" "));
        if let Some(internal) = &self.internal {
            match internal
                .signer
                .mint(identity, &internal.audience, internal.ttl, route)
            {
                Ok(token) => put(&internal.header, &token),
                Err(error) => tracing::error!(%error, "signing the internal token failed"),
            }
        }
    }
}
