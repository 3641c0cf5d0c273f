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
            if !matches!(key.as_str(), "proxy" | "upstreams" | "route") {
                errors.push(format!(
                    "{key}: unknown section (expected proxy, upstreams, route)"
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
            if !names.insert(route.name.as_str()) {
                errors.push(format!("{label}: name: used by another route too"));
            }
        }

        match proxy {
            Some(proxy) if errors.is_empty() => Ok(RoutesFile {
                proxy,
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
