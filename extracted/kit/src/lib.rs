//! `ficus-kit`: what every extracted service needs, written once, so a service's own code is
//! its views, its routes and its JSON (`extracted/people` reads in a few minutes).
//!
//! Layout (a service touches the first four):
//! - [`serve`]: [`Service`] (name, views, routes) and [`serve::start`]: store, views, the HTTP
//!   server with request metrics, a readiness gate (503 `not_ready` until every view caught
//!   up), `/healthz`, `/readyz` (one check per view), `/views` (lag, applied source position,
//!   offsets) and `/metrics` (`ficus_service_http_*` and the views' `ficus_view_*`);
//! - [`identity`]: the [`Caller`] extractor, the identity the proxy forwards, verified with
//!   `ficus-identity` against the proxy's JWKS (fetched on first need, refetched on a new key);
//! - [`http`]: the monolith's pagination (`links` and a `Link` header) and ETags / 304;
//! - [`error`]: [`ApiError`], the monolith's JSON error shape; [`extract`]: `Query` and
//!   `PathParam` with the monolith's rejections;
//! - [`db`]: one SQL text for both view stores ([`fetch!`]);
//! - [`settings`]: `FICUS_<SERVICE>__*`, a file, flags, through `ficus_telemetry::Loader`;
//! - [`cli`]: [`main`], the `serve` and `rebuild` commands of every service binary.
//!
//! Data flow of a request:
//!
//! ```text
//! proxy (x-ficus-identity) -> track metrics -> readiness gate -> handler(Caller, Query)
//!   -> fetch!(store, SQL over the view tables) -> Page / json_with_etag -> JSON (+ETag, Link)
//! ```

pub mod cli;
pub mod db;
pub mod error;
pub mod extract;
pub mod http;
pub mod identity;
pub mod serve;
pub mod settings;

pub use cli::main;
pub use error::{ApiError, ApiResult};
pub use extract::{PathParam, Query};
pub use ficus_view::{ColumnType, Join, Store, ViewSpec};
pub use http::{Page, PageParams, json_with_etag};
pub use identity::Caller;
pub use serve::{Ctx, Running, Service};
pub use settings::Settings;
pub use sqlx;
