//! Reading the request's target, before routing (the first step of [`crate::handler`]): the
//! method as spelled, the canonical path ([`crate::path`]), the one `Host`; and the rules that
//! need the route afterwards (encoded slashes, method overrides, upgrade protocols). Pure
//! functions over `http` types: what routes match is what is forwarded.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Uri, Version};

use crate::authz::headers::same_name;
use crate::config::UpgradeToken;
use crate::error::{BadRequest, ProxyError};
use crate::path::{Canonical, PathError, canonicalize};

/// The target as routed and forwarded.
#[derive(Debug, Clone)]
pub struct Target {
    /// The canonical path (what routes match).
    pub path: Canonical,
    /// The canonical path and the query as the client sent it (what is forwarded).
    pub path_and_query: PathAndQuery,
}

/// The canonical target of a request (`uri` as hyper parsed it: origin-form, absolute-form, or
/// an HTTP/2 request's pseudo-headers).
pub fn read(uri: &Uri) -> Result<Target, ProxyError> {
    let path = canonicalize(uri.path()).map_err(|error| {
        let message = match &error {
            PathError::NotAPath if uri.path().is_empty() => {
                "authority-form targets are for CONNECT, which ficus does not forward".to_owned()
            }
            other => other.to_string(),
        };
        ProxyError::bad_request(BadRequest::Path, message).with_source(error)
    })?;
    let path_and_query = match uri.path_and_query() {
        // Already canonical (the common case): the request's own, no copy.
        Some(raw) if raw.path() == path.path => raw.clone(),
        _ => {
            let text = match uri.query() {
                Some(query) => format!("{}?{query}", path.path),
                None => path.path.clone(),
            };
            PathAndQuery::try_from(text).map_err(|error| {
                ProxyError::bad_request(BadRequest::Path, "the query is not valid")
                    .with_source(error)
            })?
        }
    };
    Ok(Target {
        path,
        path_and_query,
    })
}

/// Refuses a standard method in another case (`get`): see [`crate::table::Table::is_misspelled`].
pub fn check_method(method: &Method, misspelled: bool) -> Result<(), ProxyError> {
    if misspelled {
        return Err(ProxyError::bad_request(
            BadRequest::Method,
            format!(
                "method names are case-sensitive: `{method}` is not `{}`",
                method.as_str().to_ascii_uppercase()
            ),
        ));
    }
    Ok(())
}

/// Makes `Host` the one authority the request is for, lower case, and returns it: from an
/// absolute-form target (whose authority wins over `Host`, RFC 9112 §3.2.2) or HTTP/2's
/// `:authority` (a `Host` beside it must agree, RFC 9113 §8.3.1), else the `Host` header.
/// Refused: several `Host` headers, none on HTTP/1.1 (RFC 9112 §3.2), one that is not a
/// plain `host[:port]`, an absolute-form target that is not http or https.
pub fn reconcile_host(
    uri: &Uri,
    version: Version,
    headers: &mut HeaderMap,
) -> Result<Option<HeaderValue>, ProxyError> {
    let refuse = |message: &'static str| ProxyError::bad_request(BadRequest::Host, message);
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(refuse("more than one Host header"));
    }
    let authority = match (uri.authority(), version) {
        (Some(authority), Version::HTTP_2) => {
            if let Some(host) = &host
                && !host
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes())
            {
                return Err(refuse("the Host header disagrees with :authority"));
            }
            Some(authority.as_str())
        }
        (Some(authority), _) => {
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(refuse("an absolute-form target must be http or https"));
            }
            Some(authority.as_str())
        }
        (None, _) => match &host {
            Some(host) => Some(
                host.to_str()
                    .map_err(|_| refuse("the Host header is not a host[:port]"))?,
            ),
            None if version == Version::HTTP_11 => {
                return Err(refuse("an HTTP/1.1 request needs a Host header"));
            }
            None => None,
        },
    };
    let Some(authority) = authority else {
        return Ok(None);
    };
    // Authority's grammar ignores case: checked before lower-casing, so that a Host header
    // already in canonical form (nearly every request's) is kept without a copy.
    let valid =
        !authority.is_empty() && !authority.contains('@') && authority.parse::<Authority>().is_ok();
    if !valid {
        return Err(refuse("the Host header is not a host[:port]"));
    }
    let canonical_already = !authority.bytes().any(|b| b.is_ascii_uppercase())
        && host
            .as_ref()
            .is_some_and(|h| h.as_bytes() == authority.as_bytes());
    if canonical_already {
        return Ok(host);
    }
    let canonical = authority.to_ascii_lowercase();
    let value =
        HeaderValue::from_str(&canonical).map_err(|_| refuse("the Host header is not a host"))?;
    headers.insert(header::HOST, value.clone());
    Ok(Some(value))
}

/// Header names that ask an upstream to run another method than the one on the wire
/// (normalized: lower case, `_` as `-`).
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The method-override header of a request, in any spelling (`X_HTTP_Method_Override`).
pub fn method_override(headers: &HeaderMap) -> Option<&HeaderName> {
    headers
        .keys()
        .find(|name| METHOD_OVERRIDES.iter().any(|o| same_name(name.as_str(), o)))
}

/// Refuses a method override unless the route allows it.
pub fn check_method_override(headers: &HeaderMap, allowed: bool) -> Result<(), ProxyError> {
    if allowed {
        return Ok(());
    }
    match method_override(headers) {
        Some(name) => Err(ProxyError::bad_request(
            BadRequest::MethodOverride,
            format!("`{name}` is not accepted on this route: send the method itself"),
        )),
        _ => Ok(()),
    }
}

/// Refuses an encoded separator the route does not allow.
pub fn check_separators(path: &Canonical, allowed: bool) -> Result<(), ProxyError> {
    if path.encoded_separator && !allowed {
        return Err(ProxyError::bad_request(
            BadRequest::Path,
            "the path has an encoded `/` or `\\` (`%2F`, `%5C`) that this route does not allow",
        ));
    }
    Ok(())
}

/// The `Upgrade` value to forward: the protocols the client offers that the route tunnels, in
/// the client's order; `None` when it offers none of them (or the request is no HTTP/1.1
/// upgrade): then the request goes on as a plain one, its `Upgrade` removed.
pub fn upgrade_offer(
    version: Version,
    headers: &HeaderMap,
    allowed: &[UpgradeToken],
) -> Option<HeaderValue> {
    let asks = version == Version::HTTP_11
        && comma_tokens(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let offered: Vec<&str> = comma_tokens(headers, &header::UPGRADE)
        .filter(|offer| allowed.iter().any(|token| token.accepts(offer)))
        .collect();
    if offered.is_empty() {
        return None;
    }
    HeaderValue::from_str(&offered.join(", ")).ok()
}

/// Whether a 101's `Upgrade` names a protocol that was offered.
pub fn switched_to_offered(response: &HeaderMap, offered: &HeaderValue) -> bool {
    let offered = offered.to_str().unwrap_or_default();
    comma_tokens(response, &header::UPGRADE).any(|chosen| {
        offered
            .split(',')
            .any(|offer| offer.trim().eq_ignore_ascii_case(chosen))
    })
}

/// The comma-separated elements of every `name` header, trimmed, empty ones left out.
fn comma_tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn tokens(list: &[&str]) -> Vec<UpgradeToken> {
        list.iter()
            .map(|t| UpgradeToken::try_from((*t).to_owned()).unwrap())
            .collect()
    }

    #[test]
    fn only_allowed_protocols_are_offered_upstream() {
        let websocket = tokens(&["websocket"]);
        let up = |upgrade: &str, connection: &str, allowed: &[UpgradeToken]| {
            upgrade_offer(
                Version::HTTP_11,
                &headers(&[("upgrade", upgrade), ("connection", connection)]),
                allowed,
            )
            .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            up("websocket", "Upgrade", &websocket).as_deref(),
            Some("websocket")
        );
        assert_eq!(
            up("WebSocket", "keep-alive, upgrade", &websocket).as_deref(),
            Some("WebSocket")
        );
        assert_eq!(up("h2c", "Upgrade, HTTP2-Settings", &websocket), None);
        assert_eq!(
            up("h2c, websocket", "Upgrade", &websocket).as_deref(),
            Some("websocket")
        );
        assert_eq!(up("websocket", "close", &websocket), None);
        assert_eq!(up("TLS/1.2", "Upgrade", &websocket), None);
        assert_eq!(up("websocket", "Upgrade", &[]), None);
        let custom = tokens(&["x-feed", "tls/1.3"]);
        assert_eq!(
            up("X-Feed/2", "Upgrade", &custom).as_deref(),
            Some("X-Feed/2")
        );
        assert_eq!(up("TLS/1.2", "Upgrade", &custom), None);
        assert_eq!(
            up("tls/1.3", "Upgrade", &custom).as_deref(),
            Some("tls/1.3")
        );
        let http10 = upgrade_offer(
            Version::HTTP_10,
            &headers(&[("upgrade", "websocket"), ("connection", "upgrade")]),
            &websocket,
        );
        assert_eq!(http10, None);
        for h2c in ["h2c", "H2C", "h2c/1"] {
            assert!(UpgradeToken::try_from(h2c.to_owned()).is_err(), "{h2c}");
        }
        assert!(UpgradeToken::try_from("web socket".to_owned()).is_err());
    }

    #[test]
    fn a_switch_must_be_to_an_offered_protocol() {
        let offered = HeaderValue::from_static("websocket");
        assert!(switched_to_offered(
            &headers(&[("upgrade", "WebSocket")]),
            &offered
        ));
        assert!(!switched_to_offered(
            &headers(&[("upgrade", "h2c")]),
            &offered
        ));
        assert!(!switched_to_offered(&headers(&[]), &offered));
    }

    #[test]
    fn host_is_reconciled_with_the_target() {
        let host = |target: &str, version: Version, pairs: &[(&str, &str)]| {
            let uri: Uri = target.parse().unwrap();
            let mut headers = headers(pairs);
            reconcile_host(&uri, version, &mut headers).map(|h| {
                let value = h.map(|v| v.to_str().unwrap().to_owned());
                assert_eq!(
                    headers.get(header::HOST).map(|v| v.to_str().unwrap()),
                    value.as_deref()
                );
                value
            })
        };
        let h11 = Version::HTTP_11;
        assert_eq!(
            host("/a", h11, &[("host", "Shop.Example:8080")]).unwrap(),
            Some("shop.example:8080".into())
        );
        assert_eq!(
            host("http://Admin.Internal/a", h11, &[("host", "shop.example")]).unwrap(),
            Some("admin.internal".into())
        );
        assert_eq!(
            host("http://x.example/a", Version::HTTP_2, &[]).unwrap(),
            Some("x.example".into())
        );
        assert_eq!(host("/a", Version::HTTP_10, &[]).unwrap(), None);
        for (target, version, pairs) in [
            ("/a", h11, &[][..]),
            ("/a", h11, &[("host", "a"), ("host", "b")][..]),
            ("/a", h11, &[("host", "evil@shop.example")][..]),
            ("/a", h11, &[("host", "a/b")][..]),
            ("/a", h11, &[("host", "")][..]),
            ("ftp://x/a", h11, &[("host", "x")][..]),
            (
                "http://x.example/a",
                Version::HTTP_2,
                &[("host", "y.example")][..],
            ),
        ] {
            let refused = host(target, version, pairs).unwrap_err();
            assert_eq!(refused.kind_label(), "bad_host", "{target} {pairs:?}");
        }
    }

    #[test]
    fn method_overrides_are_found_in_any_spelling() {
        for name in [
            "x-http-method-override",
            "X-HTTP-Method",
            "x_method_override",
            "X_Http_Method_Override",
        ] {
            let h = headers(&[(name, "DELETE")]);
            assert!(check_method_override(&h, false).is_err(), "{name}");
            assert!(check_method_override(&h, true).is_ok(), "{name}");
        }
        assert!(check_method_override(&headers(&[("x-method", "DELETE")]), false).is_ok());
    }

    #[test]
    fn the_forwarded_target_is_the_canonical_path_and_the_raw_query() {
        let target = read(&"/a/../b/%7euser?x=%2e%2e&y=1".parse().unwrap()).unwrap();
        assert_eq!(target.path_and_query.as_str(), "/b/~user?x=%2e%2e&y=1");
        let target = read(&"http://h.example/%2e%2e/admin".parse().unwrap()).unwrap();
        assert_eq!(target.path_and_query.as_str(), "/admin");
        let refused = read(&"example.com:443".parse().unwrap()).unwrap_err();
        assert!(refused.to_string().contains("CONNECT"), "{refused}");
    }
}
