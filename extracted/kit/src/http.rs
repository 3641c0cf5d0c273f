//! The monolith's HTTP habits, for services to answer alike: `?page=&per_page=` pagination
//! with `links` in the body and an RFC 8288 `Link` header, strong ETags over the body bytes and
//! 304s on `If-None-Match`. Written from the monolith's behaviour (its crate is never imported);
//! the services' parity tests hold the two to the same bytes.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// The largest page a client may ask for.
pub const MAX_PER_PAGE: u32 = 100;
const DEFAULT_PER_PAGE: u32 = 20;

/// `?page=&per_page=` of a list endpoint, 1-based. (List queries carry the two fields
/// themselves: `#[serde(flatten)]` breaks numbers in query strings.)
#[derive(Debug, Clone, Copy)]
pub struct PageParams {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// Validated paging: page >= 1, 1 <= per_page <= [`MAX_PER_PAGE`].
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub page: u32,
    pub per_page: u32,
}

impl PageParams {
    pub fn new(page: Option<u32>, per_page: Option<u32>) -> Self {
        Self { page, per_page }
    }

    pub fn validate(self) -> ApiResult<Paging> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        if page == 0 {
            return Err(ApiError::bad_request(
                "invalid_query",
                "page: must be 1 or more, got 0",
            ));
        }
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("per_page: must be 1..={MAX_PER_PAGE}, got {per_page}"),
            ));
        }
        Ok(Paging { page, per_page })
    }
}

impl Paging {
    pub fn limit(self) -> i64 {
        i64::from(self.per_page)
    }

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }
}

/// A page of a list, with the links a client follows (relative, so they stay right behind any
/// proxy).
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
    pub links: Links,
}

#[derive(Debug, Serialize)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub first: String,
    pub last: String,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl<T: Serialize> Page<T> {
    /// Builds the page; `path` is the list's path and `filters` the query pairs to carry along.
    pub fn new(
        items: Vec<T>,
        paging: Paging,
        total: i64,
        path: &str,
        filters: &[(&str, String)],
    ) -> Self {
        let per_page = paging.per_page;
        let last_page = u32::try_from(((total.max(1) - 1) / i64::from(per_page)) + 1)
            .unwrap_or(u32::MAX)
            .max(1);
        let link = |page: u32| {
            let mut url = format!("{path}?");
            for (key, value) in filters {
                url.push_str(key);
                url.push('=');
                url.push_str(&encode_query_value(value));
                url.push('&');
            }
            url.push_str(&format!("page={page}&per_page={per_page}"));
            url
        };
        let links = Links {
            this: link(paging.page),
            first: link(1),
            last: link(last_page),
            prev: (paging.page > 1).then(|| link((paging.page - 1).min(last_page))),
            next: (paging.page < last_page).then(|| link(paging.page + 1)),
        };
        Page {
            items,
            page: paging.page,
            per_page,
            total,
            links,
        }
    }

    /// The RFC 8288 `Link` header for the same links.
    fn link_header(&self) -> String {
        let mut parts = vec![
            format!("<{}>; rel=\"first\"", self.links.first),
            format!("<{}>; rel=\"last\"", self.links.last),
        ];
        if let Some(prev) = &self.links.prev {
            parts.push(format!("<{prev}>; rel=\"prev\""));
        }
        if let Some(next) = &self.links.next {
            parts.push(format!("<{next}>; rel=\"next\""));
        }
        parts.join(", ")
    }

    /// The page as a response with an ETag and a `Link` header.
    pub fn respond(self, request_headers: &HeaderMap) -> ApiResult<Response> {
        let link = self.link_header();
        let mut response = json_with_etag(StatusCode::OK, request_headers, &self)?;
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
        Ok(response)
    }
}

fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A strong ETag over a representation's bytes.
pub fn etag_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether `If-None-Match` names this ETag (or `*`); weak comparison, as RFC 9110 wants for it.
pub fn not_modified(request_headers: &HeaderMap, etag: &str) -> bool {
    request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// Serializes `value` as the response body with its ETag, or a bare 304 when the client already
/// has it.
pub fn json_with_etag<T: Serialize>(
    status: StatusCode,
    request_headers: &HeaderMap,
    value: &T,
) -> ApiResult<Response> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::internal("serialize", &e))?;
    let etag = etag_of(&body);
    let etag_value = HeaderValue::from_str(&etag).expect("hex ETag is a valid header value");
    if status == StatusCode::OK && not_modified(request_headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok((
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_carry_filters_and_bounds() {
        let paging = PageParams {
            page: Some(2),
            per_page: Some(10),
        }
        .validate()
        .unwrap();
        let page = Page::new(
            vec![1, 2],
            paging,
            25,
            "/api/tasks",
            &[("status", "in progress".into())],
        );
        assert_eq!(
            page.links.next.as_deref(),
            Some("/api/tasks?status=in%20progress&page=3&per_page=10")
        );
        assert_eq!(
            page.links.prev.as_deref(),
            Some("/api/tasks?status=in%20progress&page=1&per_page=10")
        );
        assert_eq!(
            page.links.last,
            "/api/tasks?status=in%20progress&page=3&per_page=10"
        );
        let last = Page::new(
            Vec::<u8>::new(),
            Paging {
                page: 3,
                per_page: 10,
            },
            25,
            "/x",
            &[],
        );
        assert!(last.links.next.is_none());
        let empty = Page::new(
            Vec::<u8>::new(),
            Paging {
                page: 1,
                per_page: 10,
            },
            0,
            "/x",
            &[],
        );
        assert_eq!(empty.links.last, "/x?page=1&per_page=10");
    }

    #[test]
    fn paging_rejects_out_of_range() {
        assert!(
            PageParams {
                page: Some(0),
                per_page: None
            }
            .validate()
            .is_err()
        );
        assert!(
            PageParams {
                page: None,
                per_page: Some(101)
            }
            .validate()
            .is_err()
        );
        let p = PageParams {
            page: Some(3),
            per_page: Some(5),
        }
        .validate()
        .unwrap();
        assert_eq!((p.limit(), p.offset()), (5, 10));
    }

    #[test]
    fn if_none_match_compares_weakly_and_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, "\"a\", W/\"b\"".parse().unwrap());
        assert!(not_modified(&headers, "\"b\""));
        assert!(not_modified(&headers, "\"a\""));
        assert!(!not_modified(&headers, "\"c\""));
    }
}
