//! The routes file (`routes.toml`): its format, as typed values, and the parsing half of the
//! one check ([`crate::check`]) that `ficus routes check|flip` and the proxy's loader share.
//!
//! Every field deserializes straight into what it means (a [`PathPattern`], an [`http::Method`],
//! a [`HeaderName`], a [`Sticky`] rule, a percent in basis points, a CIDR range, an upstream's
//! scheme and authority, a signature algorithm): a value that means nothing is a [`Problem`] at
//! its dotted key (`route."people-read".percent`, `upstreams.people.url`, `auth.keys_file`),
//! and nothing downstream parses a string again. Every problem of a file is reported at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::authz::headers::Cidr;
pub use crate::table::PathPattern;
pub use crate::tls::{ClientTls, ServerTls};

// ---------------------------------------------------------------------------------------------
// Problems

/// One thing wrong with a routes file, at its dotted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `proxy.default`, `upstreams.people.url`, `auth.algorithms[1]`,
    /// `route."people-read".percent`, `route[3].path` (a route without a usable name); empty
    /// for the file as a whole (not TOML).
    pub key: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `route "people-read": percent: 140 is not in 0..=100`, `upstreams.people.url: ...`: a route
/// is named the way a person reads it, the rest of the key follows.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match split_route_key(&self.key) {
            Some((label, "")) => write!(f, "{label}: {}", self.message),
            Some((label, rest)) => write!(f, "{label}: {rest}: {}", self.message),
            None if self.key.is_empty() => f.write_str(&self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// `route."a".percent` → (`route "a"`, `percent`); `route[3]` → (`route[3]`, ``).
fn split_route_key(key: &str) -> Option<(String, &str)> {
    let rest = key.strip_prefix("route")?;
    let (label, after) = if let Some(quoted) = rest.strip_prefix('.') {
        // A quoted name, `"` and `\` escaped.
        let mut chars = quoted.char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut escaped = false;
        let end = chars.find_map(|(i, c)| match c {
            _ if escaped => {
                escaped = false;
                None
            }
            '\\' => {
                escaped = true;
                None
            }
            '"' => Some(i + 1),
            _ => None,
        })?;
        (format!("route {}", &quoted[..end]), &quoted[end..])
    } else if rest.starts_with('[') {
        let end = rest.find(']')? + 1;
        (format!("route{}", &rest[..end]), &rest[end..])
    } else {
        return None;
    };
    match after {
        "" => Some((label, "")),
        _ => Some((label, after.strip_prefix('.').unwrap_or(after))),
    }
}

/// Every problem found in a routes file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The dotted keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|p| p.key.as_str())
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems:", many.len())?;
                for problem in many {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Problems {}

/// `prefix.rest`, or either alone.
fn join(prefix: &str, rest: &str) -> String {
    match (prefix, rest) {
        ("", rest) => rest.to_owned(),
        (prefix, "") => prefix.to_owned(),
        (prefix, rest) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (prefix, rest) => format!("{prefix}.{rest}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The file

/// The whole routes file, checked: only [`crate::check::check`] makes one, so every name in it
/// refers to something that exists (`proxy.default`, `serve` and `monolith` name upstreams).
// A private field, not `#[non_exhaustive]`: that would still let this crate build an unchecked
// file; the field keeps construction inside the check.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug, Clone)]
pub struct RoutesFile {
    pub proxy: ProxySection,
    /// Edge authorization; absent means none (every request passes as it is).
    pub auth: Option<AuthSection>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// `[dashboard]`: what the admin listener's dashboard reads beside the proxy's own state.
    pub dashboard: DashboardSection,
    /// Made by the check only.
    _checked: (),
}

impl RoutesFile {
    /// The monolith upstream of a route: its `monolith`, or `proxy.default`.
    pub fn monolith_of<'a>(&'a self, route: &'a RouteConfig) -> &'a str {
        route.monolith.as_deref().unwrap_or(&self.proxy.default)
    }
}

/// `[proxy]`: proxy-wide settings and defaults for routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Upstream for every request no route matches, and the monolith side of every route
    /// without its own `monolith`.
    pub default: String,
    /// Time to the upstream's response head, per route unless the route says otherwise.
    #[serde(default = "default_timeout_ms", deserialize_with = "positive")]
    pub timeout_ms: u64,
    /// Largest request body, per route unless the route says otherwise (413 past it).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Largest request header section, names and values together (431 past it); 1024 at least.
    #[serde(
        default = "default_max_header_bytes",
        deserialize_with = "max_header_bytes"
    )]
    pub max_header_bytes: usize,
    /// Largest request body kept to replay on the monolith when a fallback happens.
    #[serde(default = "default_fallback_buffer_bytes")]
    pub fallback_buffer_bytes: u64,
    /// Add `x-ficus-route`, `x-ficus-side` and `x-ficus-table` to responses (for tests and
    /// debugging; off in production).
    #[serde(default)]
    pub expose_headers: bool,
    /// Client addresses (CIDR) whose `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers are
    /// kept (a load balancer in front). From anyone else they are removed before forwarding.
    #[serde(default, deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<Cidr>,
    /// `[proxy.connections]`: deadlines and the cap on client connections.
    #[serde(default)]
    pub connections: ConnectionSettings,
    /// `[proxy.tls]`: the client listener terminates TLS (absent: plain HTTP/1.1 and h2c).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

/// `[dashboard]`: the admin listener's dashboard (`GET /dashboard`). Every key is optional; the
/// section itself too. Read on each look at the page, so a reload applies at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSection {
    /// The rollout ledger `ficus rollout` appends to (JSON lines), relative to the routes file's
    /// directory. Default `rollout.ledger.jsonl`, beside the routes file.
    pub ledger_file: PathBuf,
    /// At most this many bytes of the ledger's end are read per look. Default 256 KiB.
    #[serde(deserialize_with = "positive")]
    pub ledger_tail_bytes: u64,
    /// Request rates, error rates and latency are over this recent window. Default 60.
    #[serde(deserialize_with = "positive")]
    pub window_seconds: u64,
    /// How long each status URL below gets to answer; past it, shown as unreachable. Default 500.
    #[serde(deserialize_with = "positive")]
    pub probe_timeout_ms: u64,
    /// Change-data adapters: the base URL of each one's `metrics_listen` (its `/metrics` gives
    /// the slot's lag, its `/healthz` the pipeline's state).
    pub cdc: Vec<StatusSource>,
    /// Extracted services: the base URL where each serves `/views` (each view's lag).
    pub services: Vec<StatusSource>,
}

impl Default for DashboardSection {
    fn default() -> Self {
        Self {
            ledger_file: PathBuf::from("rollout.ledger.jsonl"),
            ledger_tail_bytes: 256 * 1024,
            window_seconds: 60,
            probe_timeout_ms: 500,
            cdc: Vec::new(),
            services: Vec::new(),
        }
    }
}

/// One status URL the dashboard reads: `{ name = "people", url = "http://127.0.0.1:8081" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSource {
    /// What the page calls it.
    pub name: String,
    /// A plain `http://` base URL (admin listeners are on private networks).
    pub url: StatusUrl,
}

/// A status source's `url`: `http://host:port`, optionally with a path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StatusUrl(pub http::Uri);

impl TryFrom<String> for StatusUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        match url.parse::<http::Uri>() {
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    && uri.authority().is_some()
                    && uri.query().is_none() =>
            {
                Ok(StatusUrl(uri))
            }
            _ => Err(format!(
                "`{url}` is not an http:// URL with a host (and no query)"
            )),
        }
    }
}

impl StatusUrl {
    /// The URL of `path` (starting with `/`) under this base.
    pub fn join(&self, path: &str) -> String {
        let base = self.0.to_string();
        format!("{}{path}", base.trim_end_matches('/'))
    }
}

/// `[proxy.connections]`: every client connection has a deadline, and their number a cap. Read
/// for each new connection, so a reload applies to connections accepted after it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionSettings {
    /// From accept to a finished TLS handshake (with `[proxy.tls]`) and the bytes that tell the
    /// protocol: the first bytes of an HTTP/1 request, or the whole 24-byte HTTP/2 preface. A
    /// connection that sends nothing, or only part of it, is closed. Default 10 000.
    #[serde(deserialize_with = "positive")]
    pub handshake_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (HTTP/1 keep-alive
    /// between requests, HTTP/2 with no open stream, which gets a GOAWAY first). Default 60 000.
    #[serde(deserialize_with = "positive")]
    pub idle_timeout_ms: u64,
    /// HTTP/2: a PING this often, to find peers that went away without closing. Default 20 000.
    #[serde(deserialize_with = "positive")]
    pub http2_keepalive_interval_ms: u64,
    /// HTTP/2: a PING not acknowledged within this closes the connection; also the most the
    /// graceful close of an idle HTTP/2 connection may take before its socket is cut. Default
    /// 10 000.
    #[serde(deserialize_with = "positive")]
    pub http2_keepalive_timeout_ms: u64,
    /// Client connections open at once; past it a new connection is closed at once and counted
    /// in `ficus_proxy_connections_refused_total`. Default: half the process's descriptor limit
    /// (each client connection may hold an upstream connection too).
    #[serde(deserialize_with = "some_positive")]
    pub max_connections: Option<u64>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            http2_keepalive_interval_ms: 20_000,
            http2_keepalive_timeout_ms: 10_000,
            max_connections: None,
        }
    }
}

/// `[proxy.tls]`: the client listener's certificate and key (PEM), read at every load of the
/// routes file and whenever either file changes. ALPN offers `h2` and `http/1.1`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// The certificate chain, leaf first. Relative paths are taken from the routes file's
    /// directory.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The configuration made from both files; set by the check (never read from the file).
    #[serde(skip)]
    pub loaded: Option<ServerTls>,
}

/// `[auth]`: authorization at the edge, solved once for every route and both sides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// What a route without `auth` gets: `deny` (refused), `authenticated` (any valid token) or
    /// `allow` (no check).
    #[serde(default = "default_policy")]
    pub default: DefaultPolicy,
    /// The identity provider's JWKS, fetched, cached and refreshed (`https://`, or `http://`
    /// on a trusted network). The check does not fetch it.
    #[serde(default)]
    pub jwks_url: Option<JwksUrl>,
    /// PEM CA certificates trusted for an `https://` `jwks_url` instead of the system's roots.
    /// Relative paths are taken from the routes file's directory.
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// The TLS client configuration of an `https://` `jwks_url`; set by the check.
    #[serde(skip)]
    pub jwks_tls: Option<ClientTls>,
    /// Static keys: a JWKS JSON file (for air-gapped setups and tests), read at each reload.
    /// Relative paths are taken from the routes file's directory.
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// A file holding the HS256 secret (32 bytes at least); HS256 is accepted only when this
    /// is set. Relative paths are taken from the routes file's directory.
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// Required `iss`.
    #[serde(deserialize_with = "not_empty")]
    pub issuer: String,
    /// Accepted `aud` values (a token needs one of them).
    #[serde(deserialize_with = "audiences")]
    pub audience: Vec<String>,
    /// Accepted signature algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlgorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway_ms")]
    pub leeway_ms: u64,
    /// Background refresh period of the JWKS.
    #[serde(default = "default_jwks_refresh_ms", deserialize_with = "positive")]
    pub jwks_refresh_ms: u64,
    /// At most one JWKS fetch this often for tokens with an unknown `kid`.
    #[serde(default = "default_jwks_min_refetch_ms", deserialize_with = "positive")]
    pub jwks_min_refetch_ms: u64,
    /// A cookie that may carry the token when no `Authorization: Bearer` is sent.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Header names of the verified identity forwarded to both sides.
    #[serde(default)]
    pub forward: ForwardNames,
    /// More inbound headers to remove (in any case, `_` or `-`), on top of the forward names.
    #[serde(default, deserialize_with = "header_names")]
    pub strip_headers: Vec<HeaderName>,
    /// Also forward the identity as a short-lived token signed by ficus.
    #[serde(default)]
    pub internal_token: Option<InternalTokenConfig>,
    /// Verified tokens kept so a client's repeated requests verify once (each until its `exp`
    /// or the next change of the JWKS; at most 4 KiB per token). 0 verifies every request.
    #[serde(
        default = "default_token_cache_entries",
        deserialize_with = "token_cache_entries"
    )]
    pub token_cache_entries: usize,
}

/// What a route without its own `auth` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultPolicy {
    Deny,
    Authenticated,
    Allow,
}

/// A token signature algorithm the edge accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    RS256,
    ES256,
    EdDSA,
    /// Only with `hs256_secret_file`.
    HS256,
}

impl SigningAlgorithm {
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            SigningAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            SigningAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

/// `jwks_url`: an `https://` or `http://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl(pub http::Uri);

impl JwksUrl {
    pub fn is_https(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }
}

impl TryFrom<String> for JwksUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        match url.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() =>
            {
                Ok(JwksUrl(uri))
            }
            _ => Err(format!("`{url}` is not an https:// or http:// URL")),
        }
    }
}

/// `[auth.forward]`: the headers that carry the verified identity upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardNames {
    #[serde(deserialize_with = "header_name")]
    pub subject: HeaderName,
    #[serde(deserialize_with = "header_name")]
    pub email: HeaderName,
    #[serde(deserialize_with = "header_name")]
    pub name: HeaderName,
    #[serde(deserialize_with = "header_name")]
    pub scopes: HeaderName,
    #[serde(deserialize_with = "header_name")]
    pub roles: HeaderName,
}

impl Default for ForwardNames {
    fn default() -> Self {
        Self {
            subject: HeaderName::from_static("x-ficus-subject"),
            email: HeaderName::from_static("x-ficus-email"),
            name: HeaderName::from_static("x-ficus-name"),
            scopes: HeaderName::from_static("x-ficus-scopes"),
            roles: HeaderName::from_static("x-ficus-roles"),
        }
    }
}

/// `[auth.internal_token]`: the identity as an EdDSA token signed by ficus; its public keys are
/// at the admin API's `/.well-known/jwks.json`; `ficus-identity` verifies it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalTokenConfig {
    /// The header that carries the token upstream.
    #[serde(default = "default_internal_header", deserialize_with = "header_name")]
    pub header: HeaderName,
    /// The token's `aud`.
    #[serde(default = "default_internal_audience")]
    pub audience: String,
    /// The token's lifetime.
    #[serde(default = "default_internal_ttl_ms", deserialize_with = "positive")]
    pub ttl_ms: u64,
    /// A 32-byte Ed25519 seed, hex, in a file: every proxy instance given the same file signs
    /// with the same key. Without it each process makes its own key at start. Relative paths
    /// are taken from the routes file's directory.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// A route's `auth = { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// No token needed (login pages, health checks).
    #[serde(default)]
    pub public: bool,
    /// Refused to everyone.
    #[serde(default)]
    pub deny: bool,
    /// Scopes the token must all grant (`scope` or `scp` claim).
    #[serde(default)]
    pub require: Vec<String>,
    /// Roles of which the token must have one (`roles` or `role` claim).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Claims that must have these values (a string claim equal, or an array containing it).
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

fn default_policy() -> DefaultPolicy {
    DefaultPolicy::Deny
}
fn default_algorithms() -> Vec<SigningAlgorithm> {
    vec![
        SigningAlgorithm::RS256,
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
    ]
}
fn default_leeway_ms() -> u64 {
    30_000
}
fn default_jwks_refresh_ms() -> u64 {
    300_000
}
fn default_jwks_min_refetch_ms() -> u64 {
    10_000
}
fn default_token_cache_entries() -> usize {
    10_000
}
fn default_internal_header() -> HeaderName {
    HeaderName::from_static("x-ficus-identity")
}
fn default_internal_audience() -> String {
    "ficus-services".to_owned()
}
fn default_internal_ttl_ms() -> u64 {
    60_000
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_max_body_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_fallback_buffer_bytes() -> u64 {
    1024 * 1024
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}

/// `[upstreams.NAME]`: a service the proxy forwards to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port`; no path.
    pub url: UpstreamUrl,
    /// Time to establish a connection (504 past it).
    #[serde(default = "default_connect_timeout_ms", deserialize_with = "positive")]
    pub connect_timeout_ms: u64,
    /// PEM CA certificates trusted for an `https://` upstream instead of the system's roots.
    /// Relative paths are taken from the routes file's directory.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The TLS client configuration of an `https://` upstream; set by the check.
    #[serde(skip)]
    pub tls: Option<ClientTls>,
}

/// An upstream's `url`: `http://host[:port]` or `https://host[:port]`, no path, no query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl TryFrom<String> for UpstreamUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        let parts = uri.into_parts();
        if !matches!(
            parts.scheme.as_ref().map(Scheme::as_str),
            Some("http" | "https")
        ) {
            return Err(format!("`{url}`: only http:// and https:// upstreams"));
        }
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(format!("`{url}`: no host"));
        };
        let bare = parts
            .path_and_query
            .is_none_or(|pq| pq.path() == "/" && pq.query().is_none());
        if !bare {
            return Err(format!("`{url}`: must not have a path or query"));
        }
        Ok(UpstreamUrl { scheme, authority })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Who serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The monolith serves.
    Monolith,
    /// The monolith serves; the extracted service gets a copy to compare (parity issue).
    Shadow,
    /// A sticky share of `percent` goes to the extracted service.
    Canary,
    /// The extracted service serves all.
    Extracted,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Monolith => "monolith",
            Mode::Shadow => "shadow",
            Mode::Canary => "canary",
            Mode::Extracted => "extracted",
        }
    }
}

/// `[[route]]`: one step of the migration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name: metrics, logs and `ficus routes flip` use it.
    #[serde(deserialize_with = "route_name")]
    pub name: String,
    /// Path template: literal segments, `{param}` segments, and a final `*` for a prefix.
    pub path: PathPattern,
    /// Methods matched; empty matches all.
    #[serde(default)]
    pub methods: Vec<MethodName>,
    /// Header values that must match exactly (names case-insensitive).
    #[serde(default)]
    pub headers: HeaderRules,
    /// The extracted upstream (needed for canary and extracted).
    #[serde(default)]
    pub serve: Option<String>,
    /// The monolith upstream; `proxy.default` when absent.
    #[serde(default)]
    pub monolith: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Canary share, 0..=100 (two decimals count).
    #[serde(default)]
    pub percent: Option<Percent>,
    /// Canary stickiness: `header:NAME`, `cookie:NAME`, `ip` or `none`. Default `ip`.
    #[serde(default)]
    pub sticky: Option<StickyRule>,
    /// Idempotent requests that fail on the extracted side are answered by the monolith side.
    #[serde(default)]
    pub fallback: bool,
    /// Time to the upstream's response head; `proxy.timeout_ms` when absent.
    #[serde(default, deserialize_with = "some_positive")]
    pub timeout_ms: Option<u64>,
    /// Largest request body; `proxy.max_body_bytes` when absent.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// What a request needs here; `[auth] default` when absent.
    #[serde(default)]
    pub auth: Option<RouteAuth>,

    // What the route lets through beyond the edge's safe defaults (README, "Security model").
    // Each is a trust decision about the route's upstreams.
    /// Upgrade tokens tunneled (`Upgrade: websocket`): `["websocket"]` when absent, `[]` for
    /// none. After the 101 bytes pass both ways unchecked (only the first request was
    /// authorized), so list a protocol only when the upstream does not carry requests for
    /// other routes inside it. `h2c` is refused here: its tunnel is HTTP/2 requests that would
    /// bypass the edge (ficus speaks h2c to clients itself). Any other offer is forwarded as a
    /// plain request, its `Upgrade` removed.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeToken>,
    /// Forward paths whose segments hold an encoded `/` or `\` (`%2F`, `%5C`, a raw `\`) as
    /// they are; refused with 400 when false. Allow it only when the upstream never decodes
    /// them into separators (the route matched them as one segment).
    #[serde(default)]
    pub allow_encoded_slashes: bool,
    /// Forward `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override`; refused with
    /// 400 when false. The route is still matched, and its policy decided, on the method on
    /// the wire: allow it only when that policy also fits every method an override can name.
    #[serde(default)]
    pub allow_method_override: bool,

    // Parity: shadow comparison and recording (crate::shadow).
    /// `shadow = { ... }`: how mode `shadow` copies requests to the extracted side (read in
    /// that mode, and in mode `canary` when `in_canary`; the settings stay when the route is
    /// flipped and back).
    #[serde(default)]
    pub shadow: ShadowConfig,
    /// `[route.parity]` (or `parity = { ... }`): how the extracted side's answers are compared
    /// with the monolith's, by the live shadow and by `ficus parity` alike: headers compared,
    /// ignored JSON paths and headers, redactions, calibration share, thresholds
    /// ([`ficus_parity::Rules`]; the defaults when absent).
    #[serde(default)]
    pub parity: ficus_parity::Rules,

    /// `record = { file = "..." }`: a sample of the route's requests written to a corpus file
    /// (in any mode), replayed by `ficus parity`.
    #[serde(default)]
    pub record: Option<RecordConfig>,
}

/// A route's `shadow = { ... }`: what is copied to the extracted side, how much, and how the
/// answers are kept. The comparison's rules and the calibration's share are the route's
/// `[route.parity]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// Share of users (0..=100) whose requests are copied, chosen by the route's `sticky` key
    /// with the canary's hash: the users compared are those a canary moves first. Default 100.
    pub sample: Percent,
    /// Methods copied. Default the safe ones, GET, HEAD and OPTIONS: a copied write would be
    /// applied twice. Name others only for a candidate that does not write.
    pub methods: Vec<MethodName>,
    /// Largest request body and largest response body (each side) kept for the comparison;
    /// past it the request is not compared and counted as skipped. Default 1 MiB.
    pub max_body_bytes: u64,
    /// Copies in flight at once; past it a copy is skipped and counted. Default 64.
    #[serde(deserialize_with = "positive")]
    pub max_concurrent: u64,
    /// Time for the extracted side's whole answer (head and body); the route's `timeout_ms`
    /// when absent. Past it the copy is counted as skipped (`candidate_timeout`).
    #[serde(deserialize_with = "some_positive")]
    pub timeout_ms: Option<u64>,
    /// Time between the client's last byte and the copy's first: the copy's work then runs
    /// after the client's answer has left, not beside the next requests' answers (the copy
    /// holds its `max_concurrent` permit meanwhile). 0 sends it at once. Default 1.
    pub delay_ms: u64,
    /// Mismatches kept in memory for the admin API (`/shadow`). Default 50.
    pub mismatches_kept: usize,
    /// A JSON-lines log of every mismatch (relative to the routes file's directory).
    pub log_file: Option<PathBuf>,
    /// Largest size of `log_file`; past it mismatches are no longer written (still counted and
    /// kept in memory). Default 64 MiB.
    pub log_max_bytes: u64,
    /// In mode `canary` too: a sampled request is copied to the side that did not serve it,
    /// and the two answers compared (the monolith's is the reference), so a canary step is
    /// judged on parity as well. Default false.
    pub in_canary: bool,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            sample: Percent {
                basis_points: 10_000,
            },
            methods: safe_methods(),
            max_body_bytes: 1024 * 1024,
            max_concurrent: 64,
            timeout_ms: None,
            delay_ms: 1,
            mismatches_kept: 50,
            log_file: None,
            log_max_bytes: 64 * 1024 * 1024,
            in_canary: false,
        }
    }
}

/// A route's `record = { ... }`: requests sampled into a corpus file (JSON lines, secrets
/// redacted), bounded in size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// The corpus file, appended to (relative to the routes file's directory).
    pub file: PathBuf,
    /// Share of users (0..=100) recorded, by the route's sticky key. Default 100.
    #[serde(default = "all_users")]
    pub sample: Percent,
    /// Methods recorded. Default GET, HEAD and OPTIONS.
    #[serde(default = "safe_methods")]
    pub methods: Vec<MethodName>,
    /// Largest request body recorded; a larger request is skipped. Default 64 KiB.
    #[serde(default = "default_record_body_bytes")]
    pub max_body_bytes: u64,
    /// Largest size of the file; once reached, recording stops (counted). Default 64 MiB.
    #[serde(default = "default_record_max_bytes", deserialize_with = "positive")]
    pub max_bytes: u64,
}

fn all_users() -> Percent {
    Percent {
        basis_points: 10_000,
    }
}

fn safe_methods() -> Vec<MethodName> {
    [Method::GET, Method::HEAD, Method::OPTIONS]
        .into_iter()
        .map(MethodName)
        .collect()
}

fn default_record_body_bytes() -> u64 {
    64 * 1024
}

fn default_record_max_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_mode() -> Mode {
    Mode::Monolith
}

fn default_upgrades() -> Vec<UpgradeToken> {
    vec![UpgradeToken("websocket".into())]
}

/// A protocol a route tunnels after an HTTP/1.1 upgrade (`websocket`, `name/version`),
/// compared without case. Never `h2c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeToken(pub Box<str>);

impl TryFrom<String> for UpgradeToken {
    type Error = String;
    fn try_from(token: String) -> Result<Self, String> {
        let (name, version) = match token.split_once('/') {
            Some((name, version)) => (name, Some(version)),
            None => (token.as_str(), None),
        };
        if !valid_token(name) || version.is_some_and(|v| !valid_token(v)) {
            return Err(format!(
                "`{token}` is not an upgrade protocol (a token, or token/version)"
            ));
        }
        if name.eq_ignore_ascii_case("h2c") {
            return Err(
                "`h2c` is never tunneled: HTTP/2 requests inside the tunnel would bypass the \
                 edge (ficus speaks h2c to clients itself)"
                    .to_owned(),
            );
        }
        Ok(Self(token.to_ascii_lowercase().into()))
    }
}

impl UpgradeToken {
    /// Whether `offered` (one element of an `Upgrade` header) names this protocol.
    pub fn accepts(&self, offered: &str) -> bool {
        self.0.eq_ignore_ascii_case(offered)
            || offered
                .split_once('/')
                .is_some_and(|(name, _)| !self.0.contains('/') && self.0.eq_ignore_ascii_case(name))
    }
}

impl Serialize for UpgradeToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An HTTP method, written in upper case as on the wire (`GET`, `POST`, `PURGE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodName(pub Method);

impl TryFrom<String> for MethodName {
    type Error = String;
    fn try_from(method: String) -> Result<Self, String> {
        match Method::from_bytes(method.as_bytes()) {
            Ok(parsed) if method.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Self(parsed)),
            _ => Err(format!(
                "`{method}` is not an HTTP method (use upper case: GET, POST, ...)"
            )),
        }
    }
}

impl Serialize for MethodName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A route's `headers = { name = "value" }`: each must be present with exactly that value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules(pub Vec<(HeaderName, HeaderValue)>);

impl<'de> Deserialize<'de> for HeaderRules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        let mut rules = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| D::Error::custom(format!("`{name}` is not a header name")))?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                D::Error::custom(format!("{name}: `{value}` is not a header value"))
            })?;
            rules.push((name, value));
        }
        Ok(Self(rules))
    }
}

impl Serialize for HeaderRules {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or_default())),
        )
    }
}

/// A canary share in basis points (0..=10_000): `percent = 12.5` is 1250.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent {
    pub basis_points: u32,
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let percent = f64::deserialize(d)?;
        if !(0.0..=100.0).contains(&percent) {
            return Err(D::Error::custom(format!("{percent} is not in 0..=100")));
        }
        Ok(Percent {
            basis_points: (percent * 100.0).round() as u32,
        })
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.basis_points) / 100.0)
    }
}

/// How a canary keeps a user on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Header(HeaderName),
    Cookie(String),
    Ip,
    None,
}

impl Sticky {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
                .map(Sticky::Header)
                .map_err(|_| format!("`{name}` is not a header name")),
            Some(("cookie", name)) if valid_token(name) => Ok(Sticky::Cookie(name.to_owned())),
            Some(("cookie", name)) => Err(format!("`{name}` is not a cookie name")),
            None if raw == "ip" => Ok(Sticky::Ip),
            None if raw == "none" => Ok(Sticky::None),
            _ => Err(format!(
                "`{raw}` is not one of header:NAME, cookie:NAME, ip, none"
            )),
        }
    }
}

/// A route's `sticky`: the rule, and the text it was written as (which it derefs to, so the
/// admin API shows it back as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyRule {
    text: Box<str>,
    pub rule: Sticky,
}

impl TryFrom<String> for StickyRule {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let rule = Sticky::parse(&text)?;
        Ok(Self {
            text: text.into(),
            rule,
        })
    }
}

impl std::ops::Deref for StickyRule {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// `TryFrom<String>` types deserialize through it.
macro_rules! deserialize_via_string {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::try_from(String::deserialize(d)?).map_err(D::Error::custom)
            }
        }
    )*};
}
deserialize_via_string!(
    JwksUrl,
    UpstreamUrl,
    MethodName,
    StickyRule,
    PathPattern,
    UpgradeToken
);

/// A header name, one element of a list.
struct HeaderNameText(HeaderName);

impl<'de> Deserialize<'de> for HeaderNameText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        header_name(d).map(HeaderNameText)
    }
}

fn header_name<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
    let name = String::deserialize(d)?;
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| D::Error::custom(format!("`{name}` is not a header name")))
}

fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HeaderName>, D::Error> {
    let names = Vec::<HeaderNameText>::deserialize(d)?;
    Ok(names.into_iter().map(|n| n.0).collect())
}

/// A CIDR range, one element of a list.
struct CidrText(Cidr);

impl<'de> Deserialize<'de> for CidrText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cidr::parse(&String::deserialize(d)?)
            .map(CidrText)
            .map_err(D::Error::custom)
    }
}

fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    let ranges = Vec::<CidrText>::deserialize(d)?;
    Ok(ranges.into_iter().map(|c| c.0).collect())
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(D::Error::custom("must be more than 0")),
        n => Ok(n),
    }
}

fn token_cache_entries<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        n if n > 1_000_000 => Err(D::Error::custom(format!(
            "must be at most 1000000 (entries of up to 4 KiB each), got {n}"
        ))),
        n => Ok(n),
    }
}

fn some_positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    positive(d).map(Some)
}

fn max_header_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        n if n < 1024 => Err(D::Error::custom(format!("must be at least 1024, got {n}"))),
        n => Ok(n),
    }
}

fn not_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Err(D::Error::custom("must not be empty"));
    }
    Ok(text)
}

fn audiences<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let audiences = Vec::<String>::deserialize(d)?;
    if audiences.is_empty() {
        return Err(D::Error::custom("name at least one accepted audience"));
    }
    Ok(audiences)
}

fn route_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        return Err(D::Error::custom(
            "must be letters, digits, -, _ or . (and not empty)",
        ));
    }
    Ok(name)
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// The sections of a file, each as far as it could be read, and the problems met.
#[derive(Default)]
pub(crate) struct Sections {
    pub proxy: Option<ProxySection>,
    pub auth: Option<AuthSection>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub dashboard: DashboardSection,
    pub problems: Vec<Problem>,
}

impl Sections {
    /// Reads the text into typed sections, and checks what refers to what. Reads no file.
    pub(crate) fn parse(text: &str) -> Self {
        let mut sections = Sections::default();
        let mut found = Vec::new();
        let problems = &mut found;
        let root: toml::Table = match toml::from_str(text) {
            Ok(root) => root,
            Err(e) => {
                let at = e
                    .span()
                    .map(|span| {
                        let line = text[..span.start.min(text.len())].lines().count().max(1);
                        format!(" (line {line})")
                    })
                    .unwrap_or_default();
                problems.push(Problem::new(
                    "",
                    format!("not valid TOML{at}: {}", e.message().trim()),
                ));
                sections.problems = found;
                return sections;
            }
        };

        for key in root.keys() {
            if !matches!(
                key.as_str(),
                "proxy" | "auth" | "upstreams" | "route" | "dashboard"
            ) {
                problems.push(Problem::new(
                    key.as_str(),
                    "unknown section (expected proxy, auth, upstreams, route, dashboard)",
                ));
            }
        }

        sections.proxy = match root.get("proxy") {
            None => {
                problems.push(Problem::new(
                    "proxy",
                    "missing section [proxy] with `default`",
                ));
                None
            }
            Some(value) => deserialize_all("proxy", value, problems),
        };
        sections.auth = root
            .get("auth")
            .and_then(|value| deserialize_all::<AuthSection>("auth", value, problems));
        if let Some(auth) = &sections.auth {
            check_auth(auth, problems);
        }
        if let Some(value) = root.get("dashboard") {
            sections.dashboard = dashboard(value, problems);
        }

        match root.get("upstreams") {
            None => {}
            Some(toml::Value::Table(table)) => {
                for (name, value) in table {
                    let key = format!("upstreams.{}", dotted_name(name));
                    if let Some(upstream) = deserialize_all(&key, value, problems) {
                        sections.upstreams.insert(name.clone(), upstream);
                    }
                }
            }
            Some(_) => problems.push(Problem::new(
                "upstreams",
                "must be a table of [upstreams.NAME]",
            )),
        }

        // Routes by key, for the checks across fields.
        let mut routes = Vec::new();
        match root.get("route") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    let Some(table) = item.as_table() else {
                        problems.push(Problem::new(
                            format!("route[{index}]"),
                            "must be a [[route]] table",
                        ));
                        continue;
                    };
                    let key = route_key(index, table);
                    if table.contains_key("legacy") {
                        problems.push(Problem::new(
                            join(&key, "legacy"),
                            "`legacy` is now `monolith` (the monolith upstream of the route); \
                             rename the key",
                        ));
                        let mut table = table.clone();
                        table.remove("legacy");
                        let value = toml::Value::Table(table);
                        if let Some(route) = deserialize_all::<RouteConfig>(&key, &value, problems)
                        {
                            routes.push((key, route));
                        }
                    } else if let Some(route) = deserialize_all(&key, item, problems) {
                        routes.push((key, route));
                    }
                }
            }
            Some(_) => problems.push(Problem::new(
                "route",
                "must be an array of [[route]] tables",
            )),
        }

        if let Some(proxy) = &sections.proxy
            && !sections.upstreams.contains_key(&proxy.default)
            && !names_a_broken_upstream(&root, &proxy.default)
        {
            report(
                problems,
                "proxy.default".to_owned(),
                format!(
                    "no upstream named \"{}\" (define [upstreams.{}])",
                    proxy.default, proxy.default
                ),
            );
        }

        let mut names = HashSet::new();
        for (key, route) in &routes {
            check_route(key, route, &sections, &root, problems);
            if !names.insert(route.name.as_str()) {
                report(
                    problems,
                    join(key, "name"),
                    "used by another route too".to_owned(),
                );
            }
        }
        sections.routes = routes.into_iter().map(|(_, route)| route).collect();
        sections.problems = found;
        sections
    }

    /// The file, when nothing is wrong with it (`problems` holds every problem, the key files'
    /// included).
    pub(crate) fn into_file(self) -> Result<RoutesFile, Problems> {
        match self.proxy {
            Some(proxy) if self.problems.is_empty() => Ok(RoutesFile {
                proxy,
                auth: self.auth,
                upstreams: self.upstreams,
                routes: self.routes,
                dashboard: self.dashboard,
                _checked: (),
            }),
            _ => Err(Problems(self.problems)),
        }
    }
}

/// An upstream that is defined but has a problem of its own: a reference to it is not a
/// second problem.
fn names_a_broken_upstream(root: &toml::Table, name: &str) -> bool {
    root.get("upstreams")
        .and_then(toml::Value::as_table)
        .is_some_and(|t| t.contains_key(name))
}

/// `people`, or `"odd name"` when a bare key would not do.
pub(crate) fn dotted_name(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// `route."people-read"` when the route has a name, else `route[3]`.
fn route_key(index: usize, table: &toml::Table) -> String {
    match table.get("name").and_then(|v| v.as_str()) {
        Some(name) => format!("route.{name:?}"),
        None => format!("route[{index}]"),
    }
}

/// Deserializes `value` as a `T`, reporting every field that does not, at its key: after each
/// problem the offending key (or array element) is set aside and the rest read again, until
/// nothing more is wrong. Returns what could be read without the keys set aside (so that the
/// checks across fields and the key files still run), `None` when a required key is missing.
fn deserialize_all<T: DeserializeOwned + Placeholders>(
    key: &str,
    value: &toml::Value,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut probe = value.clone();
    let mut removed: HashSet<String> = HashSet::new();
    // Original indices of array elements set aside, by the array's path.
    let mut removed_elements: HashMap<String, Vec<usize>> = HashMap::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(probe.clone()) {
            Ok(parsed) => return Some(parsed),
            Err(error) => error,
        };
        let mut path: Vec<PathStep> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(PathStep::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(PathStep::Index(*index)),
                _ => None,
            })
            .collect();
        let message = error.into_inner().message().trim().to_owned();
        let message = if let Some(rest) = message.strip_prefix("unknown field `") {
            let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
            // serde names the unknown field in the message, not in the path.
            if path.last() != Some(&PathStep::Key(field.to_owned())) {
                path.push(PathStep::Key(field.to_owned()));
            }
            format!("unknown key{expected}")
        } else if let Some(rest) = message.strip_prefix("missing field `") {
            let field = rest.split_once('`').map_or(rest, |(f, _)| f);
            path.push(PathStep::Key(field.to_owned()));
            let shown = render(&path, &removed_elements);
            if !removed.contains(&shown) {
                problems.push(Problem::new(join(key, &shown), "missing (required)"));
            }
            // Missing, or set aside for its own problem: a stand-in lets the rest be checked
            // (problems at its key are reported once, see `report`).
            match (T::placeholder(field), &mut probe) {
                (Some(stand_in), toml::Value::Table(table)) if path.len() == 1 => {
                    table.insert(field.to_owned(), stand_in);
                    removed.insert(shown);
                    continue;
                }
                _ => return None,
            }
        } else {
            message
        };
        let shown = render(&path, &removed_elements);
        problems.push(Problem::new(join(key, &shown), message));
        if path.is_empty() || !set_aside(&mut probe, &path, &mut removed_elements) {
            return None;
        }
        removed.insert(shown);
    }
}

/// Stand-ins for the required keys of a section, so that a section with a bad or missing
/// required value is still checked in its other keys.
trait Placeholders {
    fn placeholder(_field: &str) -> Option<toml::Value> {
        None
    }
}

impl Placeholders for ProxySection {
    fn placeholder(field: &str) -> Option<toml::Value> {
        (field == "default").then(|| toml::Value::from("-"))
    }
}

impl Placeholders for AuthSection {
    fn placeholder(field: &str) -> Option<toml::Value> {
        match field {
            "issuer" => Some(toml::Value::from("-")),
            "audience" => Some(toml::Value::Array(vec![toml::Value::from("-")])),
            _ => None,
        }
    }
}

impl Placeholders for DashboardSection {}

/// `[dashboard]`: its lists read element by element (a bad source is reported at its index and
/// left out, the others kept), names unique per list (the page shows sources by name).
fn dashboard(value: &toml::Value, problems: &mut Vec<Problem>) -> DashboardSection {
    let mut rest = value.clone();
    let lists = match &mut rest {
        toml::Value::Table(table) => ["cdc", "services"].map(|list| (list, table.remove(list))),
        _ => ["cdc", "services"].map(|list| (list, None)),
    };
    let mut section: DashboardSection =
        deserialize_all("dashboard", &rest, problems).unwrap_or_default();
    for (list, items) in lists {
        let Some(items) = items else { continue };
        let Some(items) = items.as_array() else {
            problems.push(Problem::new(
                format!("dashboard.{list}"),
                "must be a list of { name, url }",
            ));
            continue;
        };
        let mut names = HashSet::new();
        let mut sources = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let key = format!("dashboard.{list}[{index}]");
            let Some(source) = deserialize_all::<StatusSource>(&key, item, problems) else {
                continue;
            };
            if names.insert(source.name.clone()) {
                sources.push(source);
            } else {
                report(
                    problems,
                    join(&key, "name"),
                    format!("\"{}\" is named twice in dashboard.{list}", source.name),
                );
            }
        }
        match list {
            "cdc" => section.cdc = sources,
            _ => section.services = sources,
        }
    }
    section
}

impl Placeholders for StatusSource {
    fn placeholder(field: &str) -> Option<toml::Value> {
        match field {
            "name" => Some(toml::Value::from("-")),
            "url" => Some(toml::Value::from("http://placeholder.invalid")),
            _ => None,
        }
    }
}

impl Placeholders for UpstreamConfig {
    fn placeholder(field: &str) -> Option<toml::Value> {
        (field == "url").then(|| toml::Value::from("http://placeholder.invalid"))
    }
}

impl Placeholders for RouteConfig {
    fn placeholder(field: &str) -> Option<toml::Value> {
        match field {
            "name" => Some(toml::Value::from("-")),
            "path" => Some(toml::Value::from("/")),
            _ => None,
        }
    }
}

/// One step of a path into a TOML value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathStep {
    Key(String),
    Index(usize),
}

/// The path as a dotted key with the indices of the original file.
fn render(path: &[PathStep], removed: &HashMap<String, Vec<usize>>) -> String {
    let mut shown = String::new();
    for step in path {
        match step {
            PathStep::Key(key) => {
                if !shown.is_empty() {
                    shown.push('.');
                }
                shown.push_str(&dotted_name(key));
            }
            PathStep::Index(index) => {
                let original = original_index(*index, removed.get(&shown));
                shown.push_str(&format!("[{original}]"));
            }
        }
    }
    shown
}

/// The index in the file of element `index` of an array some elements were taken from.
fn original_index(index: usize, removed: Option<&Vec<usize>>) -> usize {
    let removed = removed.map(Vec::as_slice).unwrap_or_default();
    (0..)
        .filter(|i| !removed.contains(i))
        .nth(index)
        .unwrap_or(index)
}

/// Takes the value at `path` out of `probe`; false when there is none to take.
fn set_aside(
    probe: &mut toml::Value,
    path: &[PathStep],
    removed_elements: &mut HashMap<String, Vec<usize>>,
) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = probe;
    for step in parents {
        let next = match (step, at) {
            (PathStep::Key(key), toml::Value::Table(table)) => table.get_mut(key),
            (PathStep::Index(index), toml::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    match (last, at) {
        (PathStep::Key(key), toml::Value::Table(table)) => table.remove(key).is_some(),
        (PathStep::Index(index), toml::Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            let array = render(parents, removed_elements);
            let taken = removed_elements.entry(array).or_default();
            let original = original_index(*index, Some(taken));
            taken.push(original);
            true
        }
        _ => false,
    }
}

/// Adds a problem found across fields, unless the key has one already (a value set aside
/// for its own problem is not also "missing").
fn report(problems: &mut Vec<Problem>, key: String, message: String) {
    let reported = problems
        .iter()
        .any(|p| p.key == key || key.starts_with(&format!("{}.", p.key)));
    if !reported {
        problems.push(Problem::new(key, message));
    }
}

fn check_auth(auth: &AuthSection, problems: &mut Vec<Problem>) {
    if auth.jwks_url.is_none() && auth.keys_file.is_none() && auth.hs256_secret_file.is_none() {
        let mentioned = problems.iter().any(|p| {
            ["auth.jwks_url", "auth.keys_file", "auth.hs256_secret_file"].contains(&p.key.as_str())
        });
        if !mentioned {
            report(
                problems,
                "auth".to_owned(),
                "no keys to verify tokens with: set jwks_url, keys_file or hs256_secret_file"
                    .to_owned(),
            );
        }
    }
    let hs256 = auth.algorithms.contains(&SigningAlgorithm::HS256);
    if hs256 != auth.hs256_secret_file.is_some() {
        report(
            problems,
            "auth.hs256_secret_file".to_owned(),
            "HS256 in `algorithms` and a secret file go together".to_owned(),
        );
    }
}

fn check_route(
    key: &str,
    route: &RouteConfig,
    sections: &Sections,
    root: &toml::Table,
    problems: &mut Vec<Problem>,
) {
    let mut problem = |field: &str, message: String| report(problems, join(key, field), message);
    let known =
        |name: &str| sections.upstreams.contains_key(name) || names_a_broken_upstream(root, name);
    if let Some(serve) = &route.serve
        && !known(serve)
    {
        problem("serve", format!("no upstream named \"{serve}\""));
    }
    if let Some(monolith) = &route.monolith
        && !known(monolith)
    {
        problem("monolith", format!("no upstream named \"{monolith}\""));
    }
    let monolith = route
        .monolith
        .as_deref()
        .or(sections.proxy.as_ref().map(|p| p.default.as_str()));
    match route.mode {
        Mode::Monolith => {}
        Mode::Shadow | Mode::Canary | Mode::Extracted => {
            match &route.serve {
                None => problem(
                    "serve",
                    format!(
                        "mode \"{}\" needs `serve`, the extracted upstream",
                        route.mode.as_str()
                    ),
                ),
                Some(serve) if Some(serve.as_str()) == monolith => problem(
                    "serve",
                    format!("\"{serve}\" is also the monolith side; name the extracted upstream"),
                ),
                Some(_) => {}
            }
            if route.mode == Mode::Canary && route.percent.is_none() {
                problem(
                    "percent",
                    "mode \"canary\" needs a percent (0..=100)".to_owned(),
                );
            }
        }
    }
    if let Some(route_auth) = &route.auth {
        if !root.contains_key("auth") {
            problem(
                "auth",
                "the file has no [auth] section to verify tokens with".to_owned(),
            );
        }
        let conditions = !route_auth.require.is_empty()
            || !route_auth.roles.is_empty()
            || !route_auth.claims.is_empty();
        if route_auth.public && (route_auth.deny || conditions) {
            problem(
                "auth",
                "`public` excludes `deny`, `require`, `roles` and `claims`".to_owned(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [proxy]
        default = "monolith"
        [upstreams.monolith]
        url = "http://127.0.0.1:8080"
        [upstreams.people]
        url = "http://127.0.0.1:8081"
        [[route]]
        name = "people-read"
        path = "/api/people/{id}"
        methods = ["GET"]
        serve = "people"
        mode = "canary"
        percent = 10
        sticky = "header:x-user-id"
        fallback = true
    "#;

    fn parse(text: &str) -> Result<RoutesFile, Problems> {
        Sections::parse(text).into_file()
    }

    #[test]
    fn a_good_file_parses_into_typed_values_with_defaults() {
        let file = parse(GOOD).unwrap();
        assert_eq!(file.proxy.timeout_ms, 30_000);
        let route = &file.routes[0];
        assert_eq!(route.percent, Some(Percent { basis_points: 1000 }));
        assert_eq!(route.methods, [MethodName(Method::GET)]);
        assert_eq!(
            route.sticky.as_ref().map(|s| &s.rule),
            Some(&Sticky::Header(HeaderName::from_static("x-user-id")))
        );
        assert_eq!(&**route.sticky.as_ref().unwrap(), "header:x-user-id");
        assert_eq!(file.upstreams["people"].connect_timeout_ms, 2_000);
        assert_eq!(
            file.upstreams["people"].url.to_string(),
            "http://127.0.0.1:8081"
        );
        assert_eq!(file.monolith_of(route), "monolith");
        let half = parse(&GOOD.replace("percent = 10", "percent = 12.345")).unwrap();
        assert_eq!(half.routes[0].percent, Some(Percent { basis_points: 1235 }));
    }

    #[test]
    fn parity_rules_are_read_and_checked_at_their_keys() {
        let file = parse(&format!(
            "{GOOD}\n[route.parity]\nignore = [\"$.items[*].updated_at\", \"header:date\"]\n\
             redact = [\"$.email\"]\nmax_mismatch_percent = 1.5\n"
        ))
        .unwrap();
        let rules = &file.routes[0].parity;
        assert_eq!(rules.max_mismatch_percent, 1.5);
        assert_eq!(rules.ignore.len(), 2);
        assert_eq!(rules.headers, ficus_parity::Rules::default().headers);
        // Absent: the defaults.
        assert_eq!(
            parse(GOOD).unwrap().routes[0].parity,
            ficus_parity::Rules::default()
        );

        let found = shown(&format!(
            "{GOOD}\nparity = {{ ignore = [\"updated_at\"], max_mismatch_percent = 140, compare = [] }}\n"
        ));
        let expect = [
            "route \"people-read\": parity.ignore[0]: `updated_at` is not a JSON path",
            "route \"people-read\": parity.max_mismatch_percent: 140 is not in 0..=100",
            "route \"people-read\": parity.compare: unknown key",
        ];
        for expected in expect {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{expected}\nnot in {found:#?}"
            );
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        parse(text).unwrap_err().0
    }

    fn shown(text: &str) -> Vec<String> {
        problems(text).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = GOOD
            .replace("percent = 10", "percent = 140")
            .replace(
                "methods = [\"GET\"]",
                "methods = [\"GET\", \"get\", \"p st\"]",
            )
            .replace("sticky = \"header:x-user-id\"", "sticky = \"session\"")
            + "\n[[route]]\nname = \"people-read\"\npath = \"api\"\nserve = \"nobody\"\n";
        let found = problems(&text);
        let expect = [
            (
                "route.\"people-read\".methods[1]",
                "route \"people-read\": methods[1]: `get` is not an HTTP method",
            ),
            (
                "route.\"people-read\".methods[2]",
                "route \"people-read\": methods[2]: `p st` is not an HTTP method",
            ),
            (
                "route.\"people-read\".percent",
                "route \"people-read\": percent: 140 is not in 0..=100",
            ),
            (
                "route.\"people-read\".sticky",
                "route \"people-read\": sticky: `session` is not one of",
            ),
            (
                "route.\"people-read\".path",
                "route \"people-read\": path: must start with /",
            ),
            (
                "route.\"people-read\".serve",
                "route \"people-read\": serve: no upstream named \"nobody\"",
            ),
            (
                "route.\"people-read\".name",
                "route \"people-read\": name: used by another route too",
            ),
        ];
        for (key, text) in expect {
            assert!(
                found
                    .iter()
                    .any(|p| p.key == key && p.to_string().starts_with(text)),
                "{key} / {text} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn structural_problems_name_their_place() {
        assert!(shown("[proxy\n")[0].starts_with("not valid TOML (line 1)"));
        assert_eq!(
            shown("[upstreams.m]\nurl = \"http://x:1\"\n"),
            ["proxy: missing section [proxy] with `default`"]
        );
        let found =
            problems("[proxy]\ndefault = \"m\"\ncolour = 1\n[upstreams.m]\nurl = \"ftp://x\"\n");
        assert_eq!(found[0].key, "proxy.colour", "{found:?}");
        assert!(found[0].message.starts_with("unknown key, expected one of"));
        assert_eq!(found[1].key, "upstreams.m.url", "{found:?}");
        assert!(
            found[1]
                .to_string()
                .starts_with("upstreams.m.url: `ftp://x`: only http:// and https://"),
            "{found:?}"
        );
        // A broken upstream is not also an unknown one.
        assert_eq!(found.len(), 2, "{found:?}");
        let found = shown(&GOOD.replace("mode = \"canary\"", "mode = \"sideways\""));
        assert!(
            found[0].starts_with("route \"people-read\": mode: unknown variant `sideways`"),
            "{found:?}"
        );
        let found = shown(&GOOD.replace("percent = 10", "percent = \"ten\""));
        assert!(
            found[0].starts_with("route \"people-read\": percent: invalid type"),
            "{found:?}"
        );
        let found = problems(&GOOD.replace("name = \"people-read\"\n", ""));
        assert_eq!(found[0].key, "route[0].name", "{found:?}");
        assert_eq!(found[0].to_string(), "route[0]: name: missing (required)");
    }

    #[test]
    fn nested_and_auth_problems_each_have_their_key() {
        let text = GOOD.replace(
            "[upstreams.monolith]",
            "[auth]\nissuer = \"\"\naudience = []\nkeys_file = \"k.json\"\n\
             algorithms = [\"RS256\", \"XS256\"]\nstrip_headers = [\"ok\", \"not ok\"]\n\
             [auth.forward]\nsubject = \"bad name\"\nroles = \"also bad\"\n\
             [upstreams.monolith]",
        );
        let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "auth.algorithms[1]",
                "auth.audience",
                "auth.forward.roles",
                "auth.forward.subject",
                "auth.issuer",
                "auth.strip_headers[1]",
            ]
        );
    }

    #[test]
    fn legacy_is_refused_with_its_new_name() {
        let found = problems(&GOOD.replace(
            "serve = \"people\"",
            "serve = \"people\"\nlegacy = \"monolith\"",
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "route.\"people-read\".legacy");
        assert!(found[0].message.contains("is now `monolith`"), "{found:?}");
        let file = parse(&GOOD.replace(
            "serve = \"people\"",
            "serve = \"people\"\nmonolith = \"people\"",
        ))
        .unwrap_err();
        assert!(
            file.to_string()
                .contains("\"people\" is also the monolith side"),
            "{file}"
        );
    }

    #[test]
    fn canary_and_extracted_need_an_extracted_upstream() {
        let found = shown(&GOOD.replace("serve = \"people\"\n", ""));
        assert!(
            found[0].contains("serve: mode \"canary\" needs `serve`"),
            "{found:?}"
        );
        let found = shown(&GOOD.replace("percent = 10\n", ""));
        assert!(
            found[0].contains("percent: mode \"canary\" needs a percent"),
            "{found:?}"
        );
        let found = shown(&GOOD.replace("serve = \"people\"", "serve = \"monolith\""));
        assert!(found[0].contains("is also the monolith side"), "{found:?}");
        let shadow = GOOD
            .replace("mode = \"canary\"", "mode = \"shadow\"")
            .replace("percent = 10\n", "");
        let found = shown(&shadow.replace("serve = \"people\"\n", ""));
        assert!(
            found[0].contains("serve: mode \"shadow\" needs `serve`"),
            "{found:?}"
        );
    }

    #[test]
    fn shadow_and_record_settings_default_safe_and_name_their_problems() {
        let shadow = GOOD
            .replace("mode = \"canary\"", "mode = \"shadow\"")
            .replace("percent = 10\n", "");
        let file = parse(&shadow).unwrap();
        let route = &file.routes[0];
        assert_eq!(route.mode, Mode::Shadow);
        let methods: Vec<&str> = route.shadow.methods.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(methods, ["GET", "HEAD", "OPTIONS"]);
        assert_eq!(route.shadow.sample.basis_points, 10_000);
        assert_eq!(route.parity.calibrate_percent, 10.0);
        assert_eq!(route.shadow.max_concurrent, 64);
        assert_eq!(route.shadow.delay_ms, 1);
        assert!(route.record.is_none());
        let text = shadow.replace(
            "fallback = true",
            "fallback = true\nshadow = { sample = 120, methods = [\"GET\", \"post\"], \
             max_concurrent = 0, delay_ms = -1, colour = 1 }\nrecord = { file = \"c.jsonl\", sample = 101 }",
        );
        let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "route.\"people-read\".record.sample",
                "route.\"people-read\".shadow.colour",
                "route.\"people-read\".shadow.delay_ms",
                "route.\"people-read\".shadow.max_concurrent",
                "route.\"people-read\".shadow.methods[1]",
                "route.\"people-read\".shadow.sample",
            ]
        );
        let found = problems(&shadow.replace(
            "fallback = true",
            "fallback = true\nrecord = { sample = 5 }",
        ));
        assert_eq!(
            found[0].key, "route.\"people-read\".record.file",
            "{found:?}"
        );
        let found = problems(&shadow.replace(
            "fallback = true",
            "fallback = true\n[route.parity]\nignore = [\"fetched_at\"]",
        ));
        assert_eq!(
            found[0].key, "route.\"people-read\".parity.ignore[0]",
            "{found:?}"
        );
    }

    #[test]
    fn route_keys_display_as_a_person_reads_them() {
        let show = |key: &str| Problem::new(key, "m").to_string();
        assert_eq!(show("route.\"a\".percent"), "route \"a\": percent: m");
        assert_eq!(show("route.\"a\""), "route \"a\": m");
        assert_eq!(show("route[3].methods[0]"), "route[3]: methods[0]: m");
        assert_eq!(show("route.\"a\\\"b\".path"), "route \"a\\\"b\": path: m");
        assert_eq!(show("route"), "route: m");
        assert_eq!(show("upstreams.people.url"), "upstreams.people.url: m");
        assert_eq!(show(""), "m");
    }

    #[test]
    fn edge_keys_default_safe_and_h2c_is_never_tunneled() {
        let file = parse(GOOD).unwrap();
        let route = &file.routes[0];
        assert_eq!(route.upgrades, [UpgradeToken("websocket".into())]);
        assert!(!route.allow_encoded_slashes && !route.allow_method_override);
        let text = GOOD.replace(
            "fallback = true",
            "fallback = true\nupgrades = [\"WebSocket\", \"H2C\", \"tls/1.3\", \"bad token\"]\n\
             allow_encoded_slashes = true\nallow_method_override = true",
        );
        let found = problems(&text);
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "route.\"people-read\".upgrades[1]",
                "route.\"people-read\".upgrades[3]"
            ],
            "{found:#?}"
        );
        assert!(
            found[0].message.contains("`h2c` is never tunneled"),
            "{found:?}"
        );
        let file = parse(&text.replace(", \"H2C\"", "").replace(", \"bad token\"", "")).unwrap();
        let route = &file.routes[0];
        assert_eq!(
            route.upgrades,
            [
                UpgradeToken("websocket".into()),
                UpgradeToken("tls/1.3".into())
            ]
        );
        assert!(route.allow_encoded_slashes && route.allow_method_override);
    }

    #[test]
    fn sticky_forms() {
        assert_eq!(Sticky::parse("ip"), Ok(Sticky::Ip));
        assert_eq!(Sticky::parse("none"), Ok(Sticky::None));
        assert_eq!(
            Sticky::parse("cookie:session_id"),
            Ok(Sticky::Cookie("session_id".into()))
        );
        assert!(matches!(
            Sticky::parse("header:X-User"),
            Ok(Sticky::Header(_))
        ));
        assert!(Sticky::parse("header:bad name").is_err());
    }

    #[test]
    fn the_dashboard_section_is_optional_and_every_problem_in_it_has_its_key() {
        let file = parse(GOOD).unwrap();
        assert_eq!(file.dashboard.window_seconds, 60);
        assert_eq!(
            file.dashboard.ledger_file,
            PathBuf::from("rollout.ledger.jsonl")
        );
        assert!(file.dashboard.cdc.is_empty() && file.dashboard.services.is_empty());

        let good = format!(
            "{GOOD}\n[dashboard]\nwindow_seconds = 30\ncdc = [{{ name = \"db\", url = \"http://127.0.0.1:9464/\" }}]\n"
        );
        let file = parse(&good).unwrap();
        assert_eq!(file.dashboard.window_seconds, 30);
        assert_eq!(
            file.dashboard.cdc[0].url.join("/metrics"),
            "http://127.0.0.1:9464/metrics"
        );

        let bad = format!(
            "{GOOD}\n[dashboard]\nwindow_seconds = 0\nrefresh = 1\n\
             services = [{{ name = \"p\", url = \"https://p:1\" }}, {{ name = \"q\", url = \"http://q:1\" }}, {{ name = \"q\", url = \"http://q:2\" }}]\n"
        );
        let keys: Vec<String> = problems(&bad).into_iter().map(|p| p.key).collect();
        for key in [
            "dashboard.window_seconds",
            "dashboard.refresh",
            "dashboard.services[0].url",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
        }
        assert!(
            keys.iter()
                .any(|k| k.starts_with("dashboard.services[") && k.ends_with("].name")),
            "the name used twice is not reported: {keys:?}"
        );
    }
}
