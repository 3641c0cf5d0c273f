//! Verification keys: a JWKS fetched from the identity provider (over https with the system's
//! roots or `jwks_ca_file`, or http; cached, refreshed in the
//! background and on an unknown `kid` at most once per `jwks_min_refetch_ms`, served stale while
//! the provider fails), static keys from a file, and an HS256 secret where configured.
//!
//! A key carries the one algorithm it verifies: RSA keys RS256, P-256 keys ES256, Ed25519 keys
//! EdDSA. A token whose header names another algorithm than its key's is refused, which is what
//! stops algorithm confusion (an RSA public key used as an HMAC secret). Symmetric (`oct`) keys
//! in a JWKS are ignored: a published key set never holds secrets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::metrics::Metrics;

/// A key and the one algorithm it verifies.
pub struct VerifyKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Keys by `kid`, and those without one.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    without_kid: Vec<Arc<VerifyKey>>,
    /// For a fetched JWKS, the number [`JwksCache::generation`] takes when this set is in hand;
    /// `None` for static keys (fixed for the table's life).
    generation: Option<u64>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys of supported kinds.
    pub fn from_jwks(json: &[u8]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = KeySet::default();
        for jwk in &set.keys {
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (AlgorithmParameters::OctetKeyPair(okp), None | Some(KeyAlgorithm::EdDSA))
                    if okp.curve == EllipticCurve::Ed25519 =>
                {
                    Algorithm::EdDSA
                }
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let key = Arc::new(VerifyKey { algorithm, key });
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), key);
                }
                None => keys.without_kid.push(key),
            }
        }
        Ok(keys)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key for `kid`; without a `kid`, the single key of that algorithm, if there is one.
    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => {
                let mut candidates = self
                    .by_kid
                    .values()
                    .chain(&self.without_kid)
                    .filter(|k| k.algorithm == algorithm);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }
}

/// What a key lookup found.
pub enum Lookup {
    /// The key, and the JWKS generation it belongs to (`None`: a static key or the HS256
    /// secret, which change only with the table).
    Found(Arc<VerifyKey>, Option<u64>),
    /// Keys exist, but none with this `kid`.
    Unknown,
    /// No key at all could be had: fail closed.
    NoKeys,
}

/// A JWKS URL's keys, shared across reloads of the routes file.
pub struct JwksCache {
    uri: http::Uri,
    keys: ArcSwap<KeySet>,
    /// Bumped after each fetch that brought a different document, once its keys are stored:
    /// tokens verified under an older generation are verified again (see `cache`).
    generation: AtomicU64,
    /// The document the keys in hand came from.
    document: Mutex<Bytes>,
    /// When the last fetch was attempted (for the unknown-`kid` rate limit).
    last_attempt: Mutex<Option<Instant>>,
    min_refetch: Duration,
    gate: tokio::sync::Mutex<()>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    metrics: Arc<Metrics>,
}

impl JwksCache {
    /// Makes the cache and starts its background refresh (which ends with the cache).
    pub fn start(
        uri: http::Uri,
        refresh: Duration,
        min_refetch: Duration,
        tls: Option<&rustls::ClientConfig>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let tls = tls
            .cloned()
            .unwrap_or_else(|| (*crate::tls::trusting_nothing()).clone());
        let connector = crate::tls::connector(Duration::from_secs(2), &tls);
        let cache = Arc::new(Self {
            uri,
            keys: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            document: Mutex::new(Bytes::new()),
            last_attempt: Mutex::new(None),
            min_refetch,
            gate: tokio::sync::Mutex::new(()),
            client: Client::builder(TokioExecutor::new()).build(connector),
            metrics,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh_loop(Arc::downgrade(&cache), refresh));
        }
        cache
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Changes whenever the keys in hand change (rotation, a key withdrawn or added): a key
    /// found in a set whose generation is not this one any more may have been withdrawn.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Fetches the JWKS now. On failure the keys in hand stay (served stale).
    pub async fn fetch(&self) -> Result<usize, String> {
        let _single_flight = self.gate.lock().await;
        *self.last_attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let result = self.fetch_once().await;
        match &result {
            Ok(count) => {
                self.metrics.jwks_fetch("ok");
                self.metrics.jwks_keys.set(*count as i64);
            }
            Err(_) => self.metrics.jwks_fetch("error"),
        }
        result
    }

    async fn fetch_once(&self) -> Result<usize, String> {
        let request = http::Request::get(self.uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.client.request(request))
            .await
            .map_err(|_| "the JWKS endpoint did not answer within 5 s".to_owned())?
            .map_err(|e| format!("the JWKS endpoint could not be reached: {}", chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("the JWKS endpoint answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), 1024 * 1024)
            .collect()
            .await
            .map_err(|e| format!("reading the JWKS: {e}"))?
            .to_bytes();
        let mut keys = KeySet::from_jwks(&body)?;
        let count = keys.len();
        // Only the fetch in flight (under `gate`) gets here.
        let mut document = self.document.lock().unwrap_or_else(|e| e.into_inner());
        if *document != body {
            let next = self.generation.load(Ordering::Acquire) + 1;
            keys.generation = Some(next);
            self.keys.store(Arc::new(keys));
            // After the store: whoever reads the new generation finds the new keys.
            self.generation.store(next, Ordering::Release);
            *document = body;
        }
        Ok(count)
    }

    /// Fetches again if the last attempt is older than the rate limit; otherwise waits for a
    /// fetch in flight instead of starting another. True when the keys may have changed.
    async fn refetch_if_allowed(&self) -> bool {
        let due = self
            .last_attempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= self.min_refetch);
        if !due {
            // A fetch may be in flight (the first one at start, say): wait for it, then let the
            // caller look again.
            drop(self.gate.lock().await);
            return true;
        }
        if let Err(error) = self.fetch().await {
            tracing::warn!(%error, url = %self.uri, "JWKS fetch for an unknown key failed");
        }
        true
    }
}

/// An error with its causes: a TLS failure is a few levels below "client error (Connect)".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn refresh_loop(cache: Weak<JwksCache>, every: Duration) {
    let mut failing = false;
    loop {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        let outcome = strong.fetch().await;
        let url = strong.uri.clone();
        drop(strong);
        let wait = match outcome {
            Ok(count) => {
                if failing {
                    tracing::info!(%url, keys = count, "JWKS endpoint answers again");
                }
                failing = false;
                every
            }
            Err(error) => {
                if !failing {
                    // Logged once per failing streak; the keys in hand stay in use.
                    tracing::warn!(%error, %url, "JWKS refresh failed; serving the keys in hand");
                }
                failing = true;
                every.min(Duration::from_secs(5))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Every key source of one table.
pub struct Keys {
    pub jwks: Option<Arc<JwksCache>>,
    pub static_keys: KeySet,
    pub hs256: Option<Arc<VerifyKey>>,
}

impl Keys {
    /// Finds the key for a token's `kid` and algorithm, fetching the JWKS again (rate-limited)
    /// when the `kid` is unknown.
    pub async fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Lookup {
        if algorithm == Algorithm::HS256 {
            // HS256 verifies only with the configured secret, never with a published key.
            return match &self.hs256 {
                Some(key) => Lookup::Found(key.clone(), None),
                None => Lookup::Unknown,
            };
        }
        if let Some((key, generation)) = self.lookup(kid, algorithm) {
            return Lookup::Found(key, generation);
        }
        if let Some(jwks) = &self.jwks
            && jwks.refetch_if_allowed().await
            && let Some((key, generation)) = self.lookup(kid, algorithm)
        {
            return Lookup::Found(key, generation);
        }
        let empty = self.static_keys.is_empty()
            && self.hs256.is_none()
            && self.jwks.as_ref().is_none_or(|j| j.keys().is_empty());
        if empty {
            Lookup::NoKeys
        } else {
            Lookup::Unknown
        }
    }

    /// The generation of the keys in hand: the JWKS's (static keys and the HS256 secret change
    /// only with a reload, which builds new [`Keys`]).
    pub fn generation(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |jwks| jwks.generation())
    }

    fn lookup(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Option<(Arc<VerifyKey>, Option<u64>)> {
        if let Some(key) = self.static_keys.find(kid, algorithm) {
            return Some((key, None));
        }
        let set = self.jwks.as_ref()?.keys();
        set.find(kid, algorithm).map(|key| (key, set.generation))
    }
}
