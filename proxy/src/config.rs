//! The routes file (`routes.toml`): its format, parsing and validation.
//!
//! Parsing reports every problem at once, each naming where it is: `proxy.default`,
//! `upstreams.people.url`, `route "people-read": percent: 140 is not in 0..=100`. A file with any
//! problem never becomes the live table.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The whole routes file.
#[derive(Debug, Clone, Serialize)]
pub struct RoutesFile {
    pub proxy: ProxySection,
    /// Edge authorization; absent means none (every request passes as it is).
    pub auth: Option<AuthSection>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
}

/// `[proxy]`: proxy-wide settings and defaults for routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Upstream for every request no route matches, and the legacy side of every route.
    pub default: String,
    /// Time to the upstream's response head, per route unless the route says otherwise.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest request body, per route unless the route says otherwise (413 past it).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Largest request header section, names and values together (431 past it).
    #[serde(default = "default_max_header_bytes")]
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
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `[auth]`: authorization at the edge, solved once for every route and both sides.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// What a route without `auth` gets: `deny` (refused), `authenticated` (any valid token) or
    /// `allow` (no check).
    #[serde(default = "default_policy")]
    pub default: DefaultPolicy,
    /// The identity provider's JWKS, fetched, cached and refreshed (http://).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Static keys: a JWKS JSON file (for air-gapped setups and tests), read at each reload.
    #[serde(default)]
    pub keys_file: Option<String>,
    /// A file holding the HS256 secret; HS256 is accepted only when this is set.
    #[serde(default)]
    pub hs256_secret_file: Option<String>,
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values (a token needs one of them).
    pub audience: Vec<String>,
    /// Accepted signature algorithms among RS256, ES256, EdDSA, HS256.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway_ms")]
    pub leeway_ms: u64,
    /// Background refresh period of the JWKS.
    #[serde(default = "default_jwks_refresh_ms")]
    pub jwks_refresh_ms: u64,
    /// At most one JWKS fetch this often for tokens with an unknown `kid`.
    #[serde(default = "default_jwks_min_refetch_ms")]
    pub jwks_min_refetch_ms: u64,
    /// A cookie that may carry the token when no `Authorization: Bearer` is sent.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Header names of the verified identity forwarded to both sides.
    #[serde(default)]
    pub forward: ForwardNames,
    /// More inbound headers to remove (in any case, `_` or `-`), on top of the forward names.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// Also forward the identity as a short-lived token signed by ficus.
    #[serde(default)]
    pub internal_token: Option<InternalTokenConfig>,
}

/// What a route without its own `auth` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultPolicy {
    Deny,
    Authenticated,
    Allow,
}

/// `[auth.forward]`: the headers that carry the verified identity upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardNames {
    pub subject: String,
    pub email: String,
    pub name: String,
    pub scopes: String,
    pub roles: String,
}

impl Default for ForwardNames {
    fn default() -> Self {
        Self {
            subject: "x-ficus-subject".to_owned(),
            email: "x-ficus-email".to_owned(),
            name: "x-ficus-name".to_owned(),
            scopes: "x-ficus-scopes".to_owned(),
            roles: "x-ficus-roles".to_owned(),
        }
    }
}

/// `[auth.internal_token]`: the identity as an EdDSA token signed by ficus; its public keys are
/// at the admin API's `/.well-known/jwks.json`; `ficus-identity` verifies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalTokenConfig {
    #[serde(default = "default_internal_header")]
    pub header: String,
    #[serde(default = "default_internal_audience")]
    pub audience: String,
    #[serde(default = "default_internal_ttl_ms")]
    pub ttl_ms: u64,
    /// A 32-byte Ed25519 seed, hex, in a file: every proxy instance given the same file signs
    /// with the same key. Without it each process makes its own key at start.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// A route's `auth = { ... }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned(), "ES256".to_owned(), "EdDSA".to_owned()]
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
fn default_internal_header() -> String {
    "x-ficus-identity".to_owned()
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port`; no path.
    pub url: String,
    /// Time to establish a connection (504 past it).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// Who serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The legacy monolith serves.
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name: metrics, logs and `ficus routes flip` use it.
    pub name: String,
    /// Path template: literal segments, `{param}` segments, and a final `*` for a prefix.
    pub path: String,
    /// Methods matched; empty matches all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header values that must match exactly (names case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The extracted upstream (needed for canary and extracted).
    #[serde(default)]
    pub serve: Option<String>,
    /// The legacy upstream; `proxy.default` when absent.
    #[serde(default)]
    pub legacy: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Canary share, 0..=100 (two decimals count).
    #[serde(default)]
    pub percent: Option<f64>,
    /// Canary stickiness: `header:NAME`, `cookie:NAME`, `ip` or `none`. Default `ip`.
    #[serde(default)]
    pub sticky: Option<String>,
    /// Idempotent requests that fail on the extracted side are answered by the legacy side.
    #[serde(default)]
    pub fallback: bool,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// What a request needs here; `[auth] default` when absent.
    #[serde(default)]
    pub auth: Option<RouteAuth>,
}

fn default_mode() -> Mode {
    Mode::Monolith
}

/// How a canary keeps a user on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Header(http::HeaderName),
    Cookie(String),
    Ip,
    None,
}

impl Sticky {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.split_once(':') {
            Some(("header", name)) => http::HeaderName::from_bytes(name.trim().as_bytes())
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

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Every problem found in a routes file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
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

impl std::error::Error for ConfigErrors {}

/// Where a route is, for messages: its name when it has one, else its index.
fn route_label(index: usize, table: &toml::Table) -> String {
    match table.get("name").and_then(|v| v.as_str()) {
        Some(name) => format!("route \"{name}\""),
        None => format!("route[{index}]"),
    }
}

/// Shortens serde's messages ("unknown field `x`, expected one of ..." stays; spans go).
fn serde_message(error: &toml::de::Error) -> String {
    error.message().trim().to_owned()
}

impl RoutesFile {
    /// Parses and validates the text of a routes file.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let root: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigErrors(vec![format!("not valid TOML{at}: {}", serde_message(&e))])
        })?;

        for key in root.keys() {
            if !matches!(key.as_str(), "proxy" | "auth" | "upstreams" | "route") {
                errors.push(format!(
                    "{key}: unknown section (expected proxy, auth, upstreams, route)"
                ));
            }
        }

        let proxy = match root.get("proxy") {
            None => {
                errors.push("proxy: missing section [proxy] with `default`".to_owned());
                None
            }
            Some(value) => match ProxySection::deserialize(value.clone()) {
                Ok(proxy) => Some(proxy),
                Err(e) => {
                    errors.push(format!("proxy: {}", serde_message(&e)));
                    None
                }
            },
        };

        let auth = match root.get("auth") {
            None => None,
            Some(value) => match AuthSection::deserialize(value.clone()) {
                Ok(auth) => {
                    validate_auth(&auth, &mut errors);
                    Some(auth)
                }
                Err(e) => {
                    errors.push(format!("auth: {}", serde_message(&e)));
                    None
                }
            },
        };

        let mut upstreams = BTreeMap::new();
        match root.get("upstreams") {
            None => {}
            Some(toml::Value::Table(table)) => {
                for (name, value) in table {
                    match UpstreamConfig::deserialize(value.clone()) {
                        Ok(upstream) => {
                            if let Err(problem) = validate_upstream_url(&upstream.url) {
                                errors.push(format!("upstreams.{name}.url: {problem}"));
                            }
                            if upstream.connect_timeout_ms == 0 {
                                errors.push(format!(
                                    "upstreams.{name}.connect_timeout_ms: must be more than 0"
                                ));
                            }
                            upstreams.insert(name.clone(), upstream);
                        }
                        Err(e) => errors.push(format!("upstreams.{name}: {}", serde_message(&e))),
                    }
                }
            }
            Some(_) => errors.push("upstreams: must be a table of [upstreams.NAME]".to_owned()),
        }

        let mut routes = Vec::new();
        match root.get("route") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    let Some(table) = item.as_table() else {
                        errors.push(format!("route[{index}]: must be a [[route]] table"));
                        continue;
                    };
                    let label = route_label(index, table);
                    match RouteConfig::deserialize(item.clone()) {
                        Ok(route) => routes.push((label, route)),
                        Err(e) => errors.push(format!("{label}: {}", serde_message(&e))),
                    }
                }
            }
            Some(_) => errors.push("route: must be an array of [[route]] tables".to_owned()),
        }

        if let Some(proxy) = &proxy {
            if !upstreams.contains_key(&proxy.default) {
                errors.push(format!(
                    "proxy.default: no upstream named \"{}\" (define [upstreams.{}])",
                    proxy.default, proxy.default
                ));
            }
            if proxy.timeout_ms == 0 {
                errors.push("proxy.timeout_ms: must be more than 0".to_owned());
            }
            for (i, range) in proxy.trusted_proxies.iter().enumerate() {
                if let Err(message) = crate::authz::headers::Cidr::parse(range) {
                    errors.push(format!("proxy.trusted_proxies[{i}]: {message}"));
                }
            }
            if proxy.max_header_bytes < 1024 {
                errors.push(format!(
                    "proxy.max_header_bytes: must be at least 1024, got {}",
                    proxy.max_header_bytes
                ));
            }
        }

        let mut names = HashSet::new();
        for (label, route) in &routes {
            validate_route(label, route, proxy.as_ref(), &upstreams, &mut errors);
            if let Some(route_auth) = &route.auth {
                if root.get("auth").is_none() {
                    errors.push(format!(
                        "{label}: auth: the file has no [auth] section to verify tokens with"
                    ));
                }
                let conditions = !route_auth.require.is_empty()
                    || !route_auth.roles.is_empty()
                    || !route_auth.claims.is_empty();
                if route_auth.public && (route_auth.deny || conditions) {
                    errors.push(format!(
                        "{label}: auth: `public` excludes `deny`, `require`, `roles` and `claims`"
                    ));
                }
            }
            if !names.insert(route.name.as_str()) {
                errors.push(format!("{label}: name: used by another route too"));
            }
        }

        match proxy {
            Some(proxy) if errors.is_empty() => Ok(RoutesFile {
                proxy,
                auth,
                upstreams,
                routes: routes.into_iter().map(|(_, r)| r).collect(),
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// The legacy upstream of a route.
    pub fn legacy_of<'a>(&'a self, route: &'a RouteConfig) -> &'a str {
        route.legacy.as_deref().unwrap_or(&self.proxy.default)
    }
}

fn validate_auth(auth: &AuthSection, errors: &mut Vec<String>) {
    if auth.jwks_url.is_none() && auth.keys_file.is_none() && auth.hs256_secret_file.is_none() {
        errors.push(
            "auth: no keys to verify tokens with: set jwks_url, keys_file or hs256_secret_file"
                .to_owned(),
        );
    }
    if let Some(url) = &auth.jwks_url {
        match url.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
            _ => errors.push(format!(
                "auth.jwks_url: `{url}` is not an http:// URL (https is not supported yet)"
            )),
        }
    }
    if auth.issuer.trim().is_empty() {
        errors.push("auth.issuer: must not be empty".to_owned());
    }
    if auth.audience.is_empty() {
        errors.push("auth.audience: name at least one accepted audience".to_owned());
    }
    for (i, alg) in auth.algorithms.iter().enumerate() {
        if !matches!(alg.as_str(), "RS256" | "ES256" | "EdDSA" | "HS256") {
            errors.push(format!(
                "auth.algorithms[{i}]: `{alg}` is not one of RS256, ES256, EdDSA, HS256"
            ));
        }
    }
    let hs256 = auth.algorithms.iter().any(|a| a == "HS256");
    if hs256 != auth.hs256_secret_file.is_some() {
        errors.push(
            "auth.hs256_secret_file: HS256 in `algorithms` and a secret file go together"
                .to_owned(),
        );
    }
    if auth.jwks_min_refetch_ms == 0 || auth.jwks_refresh_ms == 0 {
        errors
            .push("auth.jwks_refresh_ms, auth.jwks_min_refetch_ms: must be more than 0".to_owned());
    }
    let forward = &auth.forward;
    let mut names = vec![
        ("auth.forward.subject", &forward.subject),
        ("auth.forward.email", &forward.email),
        ("auth.forward.name", &forward.name),
        ("auth.forward.scopes", &forward.scopes),
        ("auth.forward.roles", &forward.roles),
    ];
    if let Some(internal) = &auth.internal_token {
        names.push(("auth.internal_token.header", &internal.header));
        if internal.ttl_ms == 0 {
            errors.push("auth.internal_token.ttl_ms: must be more than 0".to_owned());
        }
    }
    for (key, name) in names {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(format!("{key}: `{name}` is not a header name"));
        }
    }
    for (i, name) in auth.strip_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(format!(
                "auth.strip_headers[{i}]: `{name}` is not a header name"
            ));
        }
    }
}

fn validate_upstream_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("`{url}`: only http:// upstreams are supported"));
    }
    if uri.authority().is_none() {
        return Err(format!("`{url}`: no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("`{url}`: must not have a path or query"));
    }
    Ok(())
}

fn validate_route(
    label: &str,
    route: &RouteConfig,
    proxy: Option<&ProxySection>,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    errors: &mut Vec<String>,
) {
    let mut problem =
        |key: &str, message: String| errors.push(format!("{label}: {key}: {message}"));
    let name_ok = !route.name.is_empty()
        && route
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !name_ok {
        problem(
            "name",
            "must be letters, digits, -, _ or . (and not empty)".to_owned(),
        );
    }
    if let Err(message) = crate::table::PathPattern::parse(&route.path) {
        problem("path", message);
    }
    for method in &route.methods {
        let ok = http::Method::from_bytes(method.as_bytes()).is_ok()
            && method.bytes().all(|b| b.is_ascii_uppercase());
        if !ok {
            problem(
                "methods",
                format!("`{method}` is not an HTTP method (use upper case: GET, POST, ...)"),
            );
        }
    }
    for header in route.headers.keys() {
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            problem("headers", format!("`{header}` is not a header name"));
        }
    }
    let known = |name: &str| upstreams.contains_key(name);
    if let Some(serve) = &route.serve
        && !known(serve)
    {
        problem("serve", format!("no upstream named \"{serve}\""));
    }
    if let Some(legacy) = &route.legacy
        && !known(legacy)
    {
        problem("legacy", format!("no upstream named \"{legacy}\""));
    }
    let legacy = route
        .legacy
        .as_deref()
        .or(proxy.map(|p| p.default.as_str()));
    match route.mode {
        Mode::Monolith => {}
        Mode::Shadow => problem(
            "mode",
            "\"shadow\" is not available in this version (it comes with parity comparison); \
             use monolith, canary or extracted"
                .to_owned(),
        ),
        Mode::Canary | Mode::Extracted => {
            match &route.serve {
                None => problem(
                    "serve",
                    format!(
                        "mode \"{}\" needs `serve`, the extracted upstream",
                        route.mode.as_str()
                    ),
                ),
                Some(serve) if Some(serve.as_str()) == legacy => problem(
                    "serve",
                    format!("\"{serve}\" is also the legacy side; name the extracted upstream"),
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
    if let Some(percent) = route.percent
        && !(0.0..=100.0).contains(&percent)
    {
        problem("percent", format!("{percent} is not in 0..=100"));
    }
    if let Some(sticky) = &route.sticky
        && let Err(message) = Sticky::parse(sticky)
    {
        problem("sticky", message);
    }
    if route.timeout_ms == Some(0) {
        problem("timeout_ms", "must be more than 0".to_owned());
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

    #[test]
    fn a_good_file_parses_with_defaults() {
        let file = RoutesFile::parse(GOOD).unwrap();
        assert_eq!(file.proxy.timeout_ms, 30_000);
        assert_eq!(file.routes[0].percent, Some(10.0));
        assert_eq!(file.upstreams["people"].connect_timeout_ms, 2_000);
        assert_eq!(file.legacy_of(&file.routes[0]), "monolith");
    }

    fn problems(text: &str) -> Vec<String> {
        RoutesFile::parse(text).unwrap_err().0
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = GOOD
            .replace("percent = 10", "percent = 140")
            .replace("methods = [\"GET\"]", "methods = [\"get\"]")
            .replace("sticky = \"header:x-user-id\"", "sticky = \"session\"")
            + "\n[[route]]\nname = \"people-read\"\npath = \"api\"\nserve = \"nobody\"\n";
        let found = problems(&text);
        let expect = [
            "route \"people-read\": percent: 140 is not in 0..=100",
            "route \"people-read\": methods: `get` is not an HTTP method",
            "route \"people-read\": sticky: `session` is not one of",
            "route \"people-read\": path: must start with /",
            "route \"people-read\": serve: no upstream named \"nobody\"",
            "route \"people-read\": name: used by another route too",
        ];
        for want in expect {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "{want} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn structural_problems_name_their_place() {
        assert!(problems("[proxy\n")[0].starts_with("not valid TOML (line 1)"));
        assert_eq!(
            problems("[upstreams.m]\nurl = \"http://x:1\"\n"),
            ["proxy: missing section [proxy] with `default`"]
        );
        let found =
            problems("[proxy]\ndefault = \"m\"\ncolour = 1\n[upstreams.m]\nurl = \"https://x\"\n");
        assert!(
            found[0].starts_with("proxy: unknown field `colour`"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("upstreams.m.url: `https://x`: only http://"),
            "{found:?}"
        );
        let found = problems(&GOOD.replace("mode = \"canary\"", "mode = \"sideways\""));
        assert!(
            found[0].starts_with("route \"people-read\": unknown variant `sideways`"),
            "{found:?}"
        );
        let found = problems(&GOOD.replace("percent = 10", "percent = \"ten\""));
        assert!(
            found[0].starts_with("route \"people-read\": invalid type"),
            "{found:?}"
        );
    }

    #[test]
    fn canary_and_extracted_need_an_extracted_upstream() {
        let found = problems(&GOOD.replace("serve = \"people\"\n", ""));
        assert!(
            found[0].contains("serve: mode \"canary\" needs `serve`"),
            "{found:?}"
        );
        let found = problems(&GOOD.replace("percent = 10\n", ""));
        assert!(
            found[0].contains("percent: mode \"canary\" needs a percent"),
            "{found:?}"
        );
        let found = problems(&GOOD.replace("serve = \"people\"", "serve = \"monolith\""));
        assert!(found[0].contains("is also the legacy side"), "{found:?}");
        let found = problems(&GOOD.replace("mode = \"canary\"", "mode = \"shadow\""));
        assert!(
            found[0].contains("mode: \"shadow\" is not available"),
            "{found:?}"
        );
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
}
