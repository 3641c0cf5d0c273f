//! The internal identity token: the verified identity, re-signed by ficus with Ed25519 for the
//! services behind it, short-lived. Services verify it with `ficus-identity` against the public
//! keys the admin API serves at `/.well-known/jwks.json`, so none of them writes its own authz.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Identity;

/// The issuer of internal tokens.
pub const ISSUER: &str = "ficus-proxy";

/// An Ed25519 signing key with its JWK.
pub struct InternalSigner {
    kid: String,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

#[derive(Serialize)]
struct InternalClaims<'a> {
    iss: &'static str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    scope: String,
    roles: &'a [String],
    route: &'a str,
}

impl InternalSigner {
    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = signing.verifying_key().to_bytes();
        // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed prefix, then the seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let x = URL_SAFE_NO_PAD.encode(public);
        // RFC 7638 thumbprint of an OKP key.
        let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
        let jwk = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig",
        });
        Self {
            kid,
            encoding: EncodingKey::from_ed_der(&der),
            jwk,
        }
    }

    /// A signer with a fresh random key.
    pub fn generate() -> Self {
        Self::from_seed(rand::random())
    }

    /// A signer from a file holding the seed as 64 hex digits.
    pub fn from_file(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        let hex = text.trim();
        if hex.len() != 64 {
            return Err(format!("{path}: expected 64 hex digits (a 32-byte seed)"));
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("{path}: not hex"))?;
        }
        Ok(Self::from_seed(seed))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `{"keys": [...]}` for the admin API.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// Signs the identity for `audience`, valid for `ttl`.
    pub fn mint(
        &self,
        identity: &Identity,
        audience: &str,
        ttl: std::time::Duration,
        route: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = InternalClaims {
            iss: ISSUER,
            aud: audience,
            sub: &identity.subject,
            iat: now,
            exp: now + ttl.as_secs().max(1),
            email: identity.email.as_deref(),
            name: identity.name.as_deref(),
            scope: identity.scopes.join(" "),
            roles: &identity.roles,
            route,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }
}
