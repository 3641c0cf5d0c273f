//! The live route table: compiled from a checked [`RoutesFile`] (typed values, nothing left to
//! parse), matched per request, swapped whole on reload.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::authz::headers::Cidr;
use crate::authz::{Authz, Policy};
use crate::config::{Mode, RouteConfig, RoutesFile, Sticky, UpgradeToken};
use crate::metrics::RouteMetrics;
use crate::upstream::{Upstream, UpstreamPool};

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param,
}

/// A path template: `/api/people/{id}` (exact) or `/api/people/*` (that path and everything
/// below it). A route's `path` deserializes into one (`TryFrom<String>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    prefix: bool,
    /// As written in the file.
    text: Box<str>,
}

impl TryFrom<String> for PathPattern {
    type Error = String;
    fn try_from(path: String) -> Result<Self, String> {
        Self::parse(&path)
    }
}

impl serde::Serialize for PathPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl PathPattern {
    /// `/*`: every path (the default route's).
    pub fn everything() -> Self {
        Self {
            segments: Vec::new(),
            prefix: true,
            text: "/*".into(),
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn parse(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!("must start with /, got `{path}`"));
        }
        let mut parts: Vec<&str> = path[1..].split('/').collect();
        let prefix = parts.last() == Some(&"*");
        if prefix {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            if part.contains('*') {
                return Err(format!("`{path}`: `*` may only be the whole last segment"));
            }
            if part.starts_with('{') || part.ends_with('}') || part.contains(['{', '}']) {
                let name = part
                    .strip_prefix('{')
                    .and_then(|p| p.strip_suffix('}'))
                    .filter(|n| !n.is_empty() && !n.contains(['{', '}']));
                if name.is_none() {
                    return Err(format!(
                        "`{path}`: a parameter is a whole segment `{{name}}`, got `{part}`"
                    ));
                }
                segments.push(Segment::Param);
            } else if part.is_empty() && (prefix || i + 1 < parts.len()) {
                // Only an exact path may end in an empty segment (`/`, `/api/`).
                return Err(format!("`{path}`: empty segment"));
            } else {
                segments.push(Segment::Literal((*part).into()));
            }
        }
        Ok(Self {
            segments,
            prefix,
            text: path.into(),
        })
    }

    /// Whether `path` (no query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(literal), Some(part)) if **literal == *part => {}
                (Segment::Param, Some(part)) if !part.is_empty() => {}
                _ => return false,
            }
        }
        self.prefix || parts.next().is_none()
    }

    /// Orders patterns from most to least specific: segment by segment a literal beats a
    /// parameter; then more segments; then exact beats prefix.
    fn specificity(&self, other: &Self) -> Ordering {
        for (a, b) in self.segments.iter().zip(&other.segments) {
            let rank = |s: &Segment| match s {
                Segment::Literal(_) => 1,
                Segment::Param => 0,
            };
            match rank(a).cmp(&rank(b)) {
                Ordering::Equal => {}
                other => return other,
            }
        }
        self.segments
            .len()
            .cmp(&other.segments.len())
            .then((!self.prefix).cmp(&!other.prefix))
    }
}

/// The side of a route a request is sent to: the monolith, or the service extracted from it
/// (the words of the route modes). Who finally answered is a different question, with a third
/// answer (ficus itself): see [`crate::metrics::Answerer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Monolith,
    Extracted,
}

impl Side {
    /// The label in metrics, logs and `x-ficus-side`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Monolith => "monolith",
            Side::Extracted => "extracted",
        }
    }

    /// How messages to clients name the side.
    pub fn noun(self) -> &'static str {
        match self {
            Side::Monolith => "monolith",
            Side::Extracted => "extracted service",
        }
    }
}

/// A route ready to serve.
pub struct Route {
    pub name: Arc<str>,
    pattern: PathPattern,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
    pub mode: Mode,
    /// Canary threshold in basis points (0..=10_000).
    canary_bps: u32,
    sticky: Sticky,
    /// Salt of the stickiness hash: the extracted upstream's name, so that every route to one
    /// service puts a user on the same side.
    salt: Arc<str>,
    pub fallback: bool,
    pub timeout: Duration,
    pub max_body_bytes: u64,
    pub monolith: Arc<Upstream>,
    pub extracted: Option<Arc<Upstream>>,
    pub metrics: RouteMetrics,
    /// What a request needs to pass (edge authorization).
    pub policy: Policy,
    /// Upgrade protocols tunneled (`upgrades`; never h2c).
    pub upgrades: Vec<UpgradeToken>,
    /// Paths with an encoded `/` or `\` are forwarded (`allow_encoded_slashes`).
    pub allow_encoded_slashes: bool,
    /// `X-HTTP-Method-Override` and kin are forwarded (`allow_method_override`).
    pub allow_method_override: bool,
    /// Shadow comparison and recording, when the route does either.
    pub parity: Option<Arc<crate::shadow::RouteParity>>,
}

impl Route {
    fn matches(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self
                .headers
                .iter()
                .all(|(name, value)| headers.get(name) == Some(value))
            && self.pattern.matches(path)
    }

    /// Which side serves this request.
    pub fn side(&self, headers: &HeaderMap, client_ip: std::net::IpAddr) -> Side {
        match self.mode {
            Mode::Monolith | Mode::Shadow => Side::Monolith,
            Mode::Extracted => Side::Extracted,
            Mode::Canary => {
                // A request without its sticky key cannot be kept on one side: the monolith,
                // which serves everyone, takes it.
                match self.sticky_bucket(headers, client_ip) {
                    Some(b) if b < self.canary_bps => Side::Extracted,
                    _ => Side::Monolith,
                }
            }
        }
    }

    /// The request's bucket in 0..10_000 by the route's sticky key (`None` without the key):
    /// the canary's share, and the shadow's and the recording's samples, so the users compared
    /// are the users a canary moves first.
    pub fn sticky_bucket(&self, headers: &HeaderMap, client_ip: std::net::IpAddr) -> Option<u32> {
        match &self.sticky {
            Sticky::Header(name) => headers.get(name).map(|v| bucket(&self.salt, v.as_bytes())),
            Sticky::Cookie(name) => cookie(headers, name).map(|v| bucket(&self.salt, v.as_bytes())),
            Sticky::Ip => Some(match client_ip {
                std::net::IpAddr::V4(ip) => bucket(&self.salt, &ip.octets()),
                std::net::IpAddr::V6(ip) => bucket(&self.salt, &ip.octets()),
            }),
            Sticky::None => Some(rand::random::<u32>() % 10_000),
        }
    }

    /// The upstream of a side.
    pub fn upstream(&self, side: Side) -> &Arc<Upstream> {
        match side {
            Side::Extracted => self.extracted.as_ref().unwrap_or(&self.monolith),
            Side::Monolith => &self.monolith,
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// A stable bucket in 0..10_000 for a sticky key: the same on every proxy instance and every
/// version (FNV-1a, then a 64-bit finalizer to spread the bits). A user's bucket never changes,
/// so raising a percent only moves users from the monolith to the extracted side.
pub fn bucket(salt: &str, key: &[u8]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in salt.as_bytes().iter().chain(&[0xff]).chain(key) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    (hash % 10_000) as u32
}

/// The methods of RFC 9110 §9 and PATCH (RFC 5789).
const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// A route that serves GET serves HEAD under the same policy (RFC 9110 §9.3.2: HEAD is GET
/// without the body), so HEAD never falls to a weaker route or to `default = "deny"`.
fn with_head(mut methods: Vec<Method>) -> Vec<Method> {
    if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
        methods.push(Method::HEAD);
    }
    methods
}

/// The live table: routes ordered most specific first, the default upstream for the rest.
pub struct Table {
    pub version: u64,
    pub loaded_at: SystemTime,
    pub file: RoutesFile,
    pub routes: Vec<Route>,
    pub default_route: Route,
    pub max_header_bytes: usize,
    pub fallback_buffer_bytes: u64,
    pub expose_headers: bool,
    /// Edge authorization, when the file has an `[auth]` section.
    pub authz: Option<Arc<Authz>>,
    trusted_proxies: Vec<Cidr>,
    /// The methods a route may name: the standard ones and every route's.
    methods: Vec<Method>,
}

impl Table {
    /// Compiles a checked file: its values are typed already, so nothing here can fail.
    /// Upstream clients come from `pool`, which keeps their connections across reloads.
    pub fn compile(
        file: RoutesFile,
        version: u64,
        pool: &UpstreamPool,
        metrics: &crate::metrics::Metrics,
        authz: Option<Arc<Authz>>,
    ) -> Self {
        Self::compile_with(
            file,
            version,
            pool,
            metrics,
            authz,
            &crate::shadow::Hub::default(),
        )
    }

    /// [`Table::compile`], taking the shadow and recording state (counters, learned noise,
    /// open files) from `parity`, which the loader keeps across reloads.
    pub fn compile_with(
        file: RoutesFile,
        version: u64,
        pool: &UpstreamPool,
        metrics: &crate::metrics::Metrics,
        authz: Option<Arc<Authz>>,
        parity: &crate::shadow::Hub,
    ) -> Self {
        // The check made sure every upstream a route names exists.
        let upstream = |name: &str| pool.get(name, &file.upstreams[name]);
        let proxy = &file.proxy;
        let build = |config: &RouteConfig| -> Route {
            let salt: Arc<str> = config
                .serve
                .as_deref()
                .unwrap_or(config.name.as_str())
                .into();
            let timeout = Duration::from_millis(config.timeout_ms.unwrap_or(proxy.timeout_ms));
            Route {
                name: config.name.as_str().into(),
                pattern: config.path.clone(),
                methods: with_head(config.methods.iter().map(|m| m.0.clone()).collect()),
                headers: config.headers.0.clone(),
                mode: config.mode,
                canary_bps: config.percent.map_or(0, |p| p.basis_points),
                sticky: config
                    .sticky
                    .as_ref()
                    .map_or(Sticky::Ip, |s| s.rule.clone()),
                salt,
                fallback: config.fallback,
                timeout,
                max_body_bytes: config.max_body_bytes.unwrap_or(proxy.max_body_bytes),
                monolith: upstream(file.monolith_of(config)),
                extracted: config.serve.as_deref().map(upstream),
                metrics: metrics.route(&config.name),
                policy: Policy::compile(file.auth.as_ref(), config.auth.as_ref()),
                upgrades: config.upgrades.clone(),
                allow_encoded_slashes: config.allow_encoded_slashes,
                allow_method_override: config.allow_method_override,
                parity: parity.compile(config, metrics, timeout),
            }
        };
        let mut routes: Vec<Route> = file.routes.iter().map(build).collect();
        // Most specific first; a stable sort keeps file order among equals.
        routes.sort_by(|a, b| {
            b.pattern
                .specificity(&a.pattern)
                .then((!b.methods.is_empty()).cmp(&!a.methods.is_empty()))
                .then(b.headers.len().cmp(&a.headers.len()))
        });
        let default_route = Route {
            name: "default".into(),
            pattern: PathPattern::everything(),
            methods: Vec::new(),
            headers: Vec::new(),
            mode: Mode::Monolith,
            canary_bps: 0,
            sticky: Sticky::Ip,
            salt: "default".into(),
            fallback: false,
            timeout: Duration::from_millis(proxy.timeout_ms),
            max_body_bytes: proxy.max_body_bytes,
            monolith: upstream(&proxy.default),
            extracted: None,
            metrics: metrics.route("default"),
            policy: Policy::compile(file.auth.as_ref(), None),
            upgrades: vec![UpgradeToken("websocket".into())],
            allow_encoded_slashes: false,
            allow_method_override: false,
            parity: None,
        };
        let mut methods: Vec<Method> = STANDARD_METHODS.to_vec();
        for route in &routes {
            for method in &route.methods {
                if !methods.contains(method) {
                    methods.push(method.clone());
                }
            }
        }
        Table {
            version,
            loaded_at: SystemTime::now(),
            max_header_bytes: proxy.max_header_bytes,
            fallback_buffer_bytes: proxy.fallback_buffer_bytes,
            expose_headers: proxy.expose_headers,
            authz,
            trusted_proxies: proxy.trusted_proxies.clone(),
            methods,
            file,
            routes,
            default_route,
        }
    }

    /// Whether `ip` is a trusted proxy whose forwarding headers are kept.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|range| range.contains(ip))
    }

    /// Whether `method` is another spelling of a method ficus knows (`get`, `Post`, `purge`
    /// when a route names `PURGE`): method names are case-sensitive (RFC 9110 §9.1), so it
    /// matches no route, and an upstream that upper-cases it would run what the route refused.
    pub fn is_misspelled(&self, method: &Method) -> bool {
        let name = method.as_str();
        name.bytes().any(|b| b.is_ascii_lowercase())
            && self
                .methods
                .iter()
                .any(|known| known.as_str().eq_ignore_ascii_case(name))
    }

    /// The most specific route matching the request, or the default route.
    pub fn route(&self, method: &Method, path: &str, headers: &HeaderMap) -> &Route {
        self.routes
            .iter()
            .find(|r| r.matches(method, path, headers))
            .unwrap_or(&self.default_route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_templates_and_prefixes() {
        let p = PathPattern::parse("/api/people/{id}").unwrap();
        assert!(p.matches("/api/people/42"));
        assert!(!p.matches("/api/people"));
        assert!(!p.matches("/api/people/"));
        assert!(!p.matches("/api/people/42/tasks"));
        let prefix = PathPattern::parse("/api/people/*").unwrap();
        assert!(prefix.matches("/api/people"));
        assert!(prefix.matches("/api/people/42/tasks"));
        assert!(!prefix.matches("/api/peoplex"));
        let root = PathPattern::parse("/*").unwrap();
        assert!(root.matches("/") && root.matches("/anything/at/all"));
        let exact_root = PathPattern::parse("/").unwrap();
        assert!(exact_root.matches("/") && !exact_root.matches("/x"));
        for bad in ["api", "/a/{id", "/a/x{id}", "/a/*/b", "/a//b", "/a/{}"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn literal_beats_parameter_beats_prefix() {
        let literal = PathPattern::parse("/api/people/me").unwrap();
        let param = PathPattern::parse("/api/people/{id}").unwrap();
        let prefix = PathPattern::parse("/api/people/*").unwrap();
        let short_prefix = PathPattern::parse("/api/*").unwrap();
        assert_eq!(literal.specificity(&param), Ordering::Greater);
        assert_eq!(param.specificity(&prefix), Ordering::Greater);
        assert_eq!(prefix.specificity(&short_prefix), Ordering::Greater);
        let early_literal = PathPattern::parse("/api/people/{id}/x").unwrap();
        let late_literal = PathPattern::parse("/api/{kind}/1/x").unwrap();
        assert_eq!(early_literal.specificity(&late_literal), Ordering::Greater);
    }

    /// Buckets pinned as today's function computes them. A proxy whose hash differs from the
    /// one already deployed would move users between the sides mid-rollout (and two instances
    /// of different versions would disagree about the same user): changing any value here is a
    /// breaking change of the canary, not a refactoring.
    #[test]
    fn buckets_are_pinned() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        let v4 = |ip: &str| ip.parse::<Ipv4Addr>().unwrap().octets().to_vec();
        let v6 = |ip: &str| ip.parse::<Ipv6Addr>().unwrap().octets().to_vec();
        let golden: [(&str, Vec<u8>, u32); 15] = [
            ("people", b"user-1".to_vec(), 8672),
            ("people", b"user-2".to_vec(), 2611),
            ("people", b"user-9999".to_vec(), 4488),
            ("people", b"s42".to_vec(), 2925),
            // The salt (the extracted upstream) separates services, and the separator byte
            // keeps salt and key from running into each other.
            ("tasks", b"user-1".to_vec(), 9418),
            ("peopl", b"euser-1".to_vec(), 9599),
            // Empty key and empty salt.
            ("people", Vec::new(), 4920),
            ("", Vec::new(), 2295),
            ("", b"user-1".to_vec(), 1151),
            // `sticky = "ip"` hashes the address's octets (4 for IPv4, 16 for IPv6).
            ("people", v4("127.0.0.1"), 7142),
            ("people", v4("10.1.2.3"), 2419),
            ("people", v6("::1"), 4341),
            ("people", v6("2001:db8::42"), 1377),
            // Non-ASCII header values and salts hash as their UTF-8 bytes.
            ("people", "zoë-ß".as_bytes().to_vec(), 3867),
            ("personnes", "ユーザー-7".as_bytes().to_vec(), 1561),
        ];
        let wrong: Vec<String> = golden
            .iter()
            .filter(|(salt, key, expected)| bucket(salt, key) != *expected)
            .map(|(salt, key, expected)| {
                format!(
                    "({salt:?}, {key:?}): {} instead of {expected}",
                    bucket(salt, key)
                )
            })
            .collect();
        assert!(wrong.is_empty(), "buckets moved: {wrong:#?}");
    }

    #[test]
    fn buckets_spread_evenly() {
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[(bucket("people", format!("user-{i}").as_bytes()) / 1000) as usize] += 1;
        }
        for c in counts {
            assert!((900..1100).contains(&c), "{counts:?}");
        }
    }
}
