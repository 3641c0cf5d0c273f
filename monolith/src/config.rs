//! What a monolith instance is told at start.

use std::time::Duration;

/// Settings of one monolith instance. The database and the signing key are passed separately
/// (see [`crate::Monolith::new`]) so that tests can share a key and bring their own database.
#[derive(Debug, Clone)]
pub struct MonolithConfig {
    /// `iss` of the tokens `POST /api/login` issues and the monolith accepts.
    pub issuer: String,
    /// `aud` of those tokens.
    pub audience: String,
    /// Lifetime of an issued token.
    pub token_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub token_leeway: Duration,
    /// Largest JSON request body, in bytes (413 past it).
    pub max_json_bytes: usize,
    /// Largest document upload, in bytes (413 past it).
    pub max_document_bytes: u64,
    /// An administrator ensured at start, so that a fresh database can be logged into.
    pub bootstrap_admin: Option<AdminAccount>,
}

/// The bootstrap administrator's credentials.
#[derive(Debug, Clone)]
pub struct AdminAccount {
    pub email: String,
    pub password: String,
    pub display_name: String,
}

/// The issuer the monolith names itself by default.
pub const DEFAULT_ISSUER: &str = "ficus-monolith";
/// The audience of the monolith's tokens by default.
pub const DEFAULT_AUDIENCE: &str = "ficus";

impl Default for MonolithConfig {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            token_ttl: Duration::from_secs(3600),
            token_leeway: Duration::from_secs(30),
            max_json_bytes: 1024 * 1024,
            max_document_bytes: 50 * 1024 * 1024,
            bootstrap_admin: None,
        }
    }
}
