//! Verified tokens, kept so a client's repeated requests verify once: edge authorization
//! ([`super::Authz::decide`]) looks the bearer token up here before it verifies a signature,
//! and stores what it verified.
//!
//! What makes an entry answer for a token:
//! - the key is the token itself, every byte (compared whole, never a digest of it): a token
//!   that differs anywhere — another signature over the same claims — is another key, and is
//!   verified on its own;
//! - only a token that verified is stored; a refusal is never kept;
//! - an entry answers only while the token would still verify by time: `exp` not passed and
//!   `nbf` reached, with the same clock skew (`leeway`) and the same comparisons as the
//!   verifier (`jsonwebtoken`'s: refused when `exp < now - leeway` or `nbf > now + leeway`);
//! - an entry whose key came from the JWKS answers only while the JWKS in hand is the one that
//!   key came from (its generation): when the JWKS changes (rotation, a key withdrawn), such
//!   entries are stale and their tokens verify again against the new keys. (Static keys and
//!   the HS256 secret change only with a reload, which builds a new [`super::Authz`] and with
//!   it a new, empty cache.)
//!
//! Bounded: at most `capacity` entries, and tokens longer than [`MAX_TOKEN_BYTES`] are not kept
//! (they verify every time). Eviction is CLOCK (second chance, an approximation of LRU that
//! costs a hit only a flag store): a full cache replaces the first entry, from the hand on,
//! that is expired, stale, or was not used since the hand last passed. A hit takes the read
//! lock only; the write lock is taken to store a freshly verified token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;

use super::Identity;

/// Tokens longer than this are verified every time, never kept (they would make the bound on
/// memory meaningless). Identity providers' tokens are a kilobyte or two.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// When a verified token is valid, in seconds since the epoch, from its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub not_before: Option<u64>,
    pub expires: u64,
}

impl Window {
    /// From verified claims, read as the verifier reads them (integers, or numbers rounded);
    /// `None` when `exp` cannot be read that way (such a token is then not kept).
    pub fn from_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Option<Self> {
        fn seconds(value: &serde_json::Value) -> Option<u64> {
            value.as_u64().or_else(|| {
                value
                    .as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f.round() as u64)
            })
        }
        let expires = seconds(claims.get("exp")?)?;
        let not_before = match claims.get("nbf") {
            None => None,
            Some(value) => Some(seconds(value)?),
        };
        Some(Window {
            not_before,
            expires,
        })
    }

    /// Whether a token with this window passes the verifier's time checks at `now`.
    fn valid_at(&self, now: u64, leeway: u64) -> bool {
        self.expires >= now.saturating_sub(leeway)
            && self
                .not_before
                .is_none_or(|nbf| nbf <= now.saturating_add(leeway))
    }
}

/// The lookup counters (`ficus_proxy_authz_token_cache_lookups_total{result}`) and evictions.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub evictions: Counter,
}

struct Slot {
    token: Arc<str>,
    identity: Arc<Identity>,
    window: Window,
    /// The JWKS generation of the key that verified it (`None`: a static key).
    generation: Option<u64>,
    /// Used since the clock hand last passed.
    referenced: AtomicBool,
}

struct Inner {
    /// Token → index in `slots`.
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    slots: Vec<Slot>,
    hand: usize,
    /// The newest JWKS generation seen; entries of older ones are stale.
    generation: u64,
}

impl Inner {
    /// Removes the slots at these ascending positions (swap-remove from the end, so the
    /// positions still to remove stay valid), the index following.
    fn drop_slots(&mut self, positions: &[usize]) {
        for &at in positions.iter().rev() {
            let removed = self.slots.swap_remove(at);
            self.index.remove(&removed.token);
            if let Some(moved) = self.slots.get(at) {
                self.index.insert(moved.token.clone(), at);
            }
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }
}

/// The verified-token cache of one [`super::Authz`].
pub struct TokenCache {
    capacity: usize,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (the verifier's).
    leeway: u64,
    inner: RwLock<Inner>,
    metrics: CacheMetrics,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0: nothing is kept, every request verifies).
    pub fn new(capacity: usize, leeway: u64, metrics: CacheMetrics) -> Self {
        Self {
            capacity,
            leeway,
            inner: RwLock::new(Inner {
                index: HashMap::default(),
                slots: Vec::new(),
                hand: 0,
                generation: 0,
            }),
            metrics,
        }
    }

    /// The identity verified for exactly this token, if its entry is still valid at `now` with
    /// the JWKS of `generation` in hand.
    pub fn get(&self, token: &str, now: u64, generation: u64) -> Option<Arc<Identity>> {
        if self.capacity == 0 {
            return None;
        }
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let found = inner.index.get(token).and_then(|&at| {
            let slot = &inner.slots[at];
            let current = slot.generation.is_none_or(|g| g == generation);
            (current && slot.window.valid_at(now, self.leeway)).then(|| {
                slot.referenced.store(true, Ordering::Relaxed);
                slot.identity.clone()
            })
        });
        drop(inner);
        match &found {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        };
        found
    }

    /// Keeps a token that has just verified at `now` with a key of the JWKS of `generation`
    /// (the set the key was found in: a rotation during the verification leaves the entry
    /// stale, never wrongly fresh), or with a static key (`None`).
    pub fn insert(
        &self,
        token: &str,
        identity: Arc<Identity>,
        window: Window,
        generation: Option<u64>,
        now: u64,
    ) {
        if self.capacity == 0 || token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match generation {
            Some(g) if g < inner.generation => return, // verified with keys already replaced
            Some(g) if g > inner.generation => {
                // The JWKS changed: the entries of its keys are stale.
                inner.generation = g;
                let stale: Vec<usize> = (0..inner.slots.len())
                    .filter(|&at| inner.slots[at].generation.is_some())
                    .collect();
                inner.drop_slots(&stale);
            }
            _ => {}
        }
        let fresh = |token: Arc<str>| Slot {
            token,
            identity,
            window,
            generation,
            referenced: AtomicBool::new(false),
        };
        if let Some(&at) = inner.index.get(token) {
            let token = inner.slots[at].token.clone();
            inner.slots[at] = fresh(token);
            return;
        }
        let token: Arc<str> = Arc::from(token);
        if inner.slots.len() < self.capacity {
            let at = inner.slots.len();
            inner.slots.push(fresh(token.clone()));
            inner.index.insert(token, at);
            return;
        }
        let at = self.victim(&mut inner, now);
        let old = std::mem::replace(&mut inner.slots[at], fresh(token.clone()));
        inner.index.remove(&old.token);
        inner.index.insert(token, at);
        self.metrics.evictions.inc();
    }

    /// CLOCK: from the hand on, the first slot expired, stale, or not used since the hand last
    /// passed (its flag is cleared on the way). Two laps at most.
    fn victim(&self, inner: &mut Inner, now: u64) -> usize {
        let len = inner.slots.len();
        loop {
            let at = inner.hand;
            inner.hand = (at + 1) % len;
            let slot = &inner.slots[at];
            let unusable = slot.generation.is_some_and(|g| g != inner.generation)
                || !slot.window.valid_at(now, self.leeway);
            if unusable || !slot.referenced.swap(false, Ordering::Relaxed) {
                return at;
            }
        }
    }

    /// Entries held (expired and stale ones included, until replaced).
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .slots
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(subject: &str) -> Arc<Identity> {
        let claims = serde_json::json!({"sub": subject, "scope": "a b"});
        let serde_json::Value::Object(map) = claims else {
            unreachable!()
        };
        Arc::new(Identity::from_claims(map))
    }

    const NOW: u64 = 1_800_000_000;

    fn window(expires: u64) -> Window {
        Window {
            not_before: Some(NOW - 10),
            expires,
        }
    }

    fn cache(capacity: usize, leeway: u64) -> (TokenCache, CacheMetrics) {
        let metrics = CacheMetrics::default();
        (TokenCache::new(capacity, leeway, metrics.clone()), metrics)
    }

    #[test]
    fn a_kept_token_answers_until_exp_plus_leeway_and_not_after() {
        let (cache, metrics) = cache(8, 5);
        cache.insert("t1", identity("a"), window(NOW + 60), Some(0), NOW);
        assert_eq!(cache.get("t1", NOW, 0).unwrap().subject, "a");
        // exp + leeway is still accepted (the verifier's `exp < now - leeway` refuses).
        assert!(cache.get("t1", NOW + 65, 0).is_some());
        assert!(cache.get("t1", NOW + 66, 0).is_none());
        assert_eq!(metrics.hits.get(), 2);
        assert_eq!(metrics.misses.get(), 1);
    }

    #[test]
    fn not_before_is_checked_with_the_leeway_even_when_the_clock_steps_back() {
        let (cache, _) = cache(8, 5);
        let w = Window {
            not_before: Some(NOW),
            expires: NOW + 60,
        };
        cache.insert("t", identity("a"), w, Some(0), NOW);
        assert!(cache.get("t", NOW - 5, 0).is_some());
        assert!(cache.get("t", NOW - 6, 0).is_none());
    }

    #[test]
    fn only_the_exact_token_answers() {
        let (cache, _) = cache(8, 0);
        cache.insert(
            "head.claims.good",
            identity("a"),
            window(NOW + 60),
            Some(0),
            NOW,
        );
        assert!(cache.get("head.claims.bad", NOW, 0).is_none());
        assert!(cache.get("head.claims.goo", NOW, 0).is_none());
        assert!(cache.get("head.claims.good", NOW, 0).is_some());
    }

    #[test]
    fn a_new_jwks_generation_makes_the_entries_of_its_keys_stale() {
        let (cache, _) = cache(8, 0);
        cache.insert("old", identity("a"), window(NOW + 60), Some(1), NOW);
        cache.insert("static", identity("s"), window(NOW + 60), None, NOW);
        assert!(cache.get("old", NOW, 1).is_some());
        assert!(
            cache.get("old", NOW, 2).is_none(),
            "verified with the keys before"
        );
        // A static key is not the JWKS's: its tokens stay.
        assert!(cache.get("static", NOW, 2).is_some());
        // A token verified with the new keys drops the stale ones; one verified with the old
        // keys while the new ones arrived is not kept.
        cache.insert("new", identity("b"), window(NOW + 60), Some(2), NOW);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("new", NOW, 2).is_some());
        assert!(cache.get("static", NOW, 2).is_some());
        cache.insert("late", identity("c"), window(NOW + 60), Some(1), NOW);
        assert!(cache.get("late", NOW, 1).is_none());
        assert!(cache.get("late", NOW, 2).is_none());
        let inner = cache.inner.read().unwrap();
        assert_eq!(inner.index.len(), 2);
        for (token, &at) in &inner.index {
            assert_eq!(&inner.slots[at].token, token, "the index follows the slots");
        }
    }

    #[test]
    fn the_bound_holds_and_recently_used_entries_survive() {
        let (cache, metrics) = cache(4, 0);
        for i in 0..4 {
            cache.insert(
                &format!("t{i}"),
                identity("a"),
                window(NOW + 60),
                Some(0),
                NOW,
            );
        }
        // t0 and t2 used: the hand passes them once, and evicts t1 then t3.
        assert!(cache.get("t0", NOW, 0).is_some());
        assert!(cache.get("t2", NOW, 0).is_some());
        cache.insert("t4", identity("a"), window(NOW + 60), Some(0), NOW);
        cache.insert("t5", identity("a"), window(NOW + 60), Some(0), NOW);
        assert_eq!(cache.len(), 4);
        assert!(cache.get("t1", NOW, 0).is_none());
        assert!(cache.get("t3", NOW, 0).is_none());
        for kept in ["t0", "t2", "t4", "t5"] {
            assert!(cache.get(kept, NOW, 0).is_some(), "{kept}");
        }
        assert_eq!(metrics.evictions.get(), 2);
        // Many more tokens: never more than the capacity.
        for i in 0..100 {
            cache.insert(
                &format!("x{i}"),
                identity("a"),
                window(NOW + 60),
                Some(0),
                NOW,
            );
            assert!(cache.len() <= 4);
        }
        assert_eq!(cache.inner.read().unwrap().index.len(), 4);
    }

    #[test]
    fn expired_entries_are_evicted_first() {
        let (cache, _) = cache(2, 0);
        cache.insert("short", identity("a"), window(NOW + 1), Some(0), NOW);
        cache.insert("long", identity("a"), window(NOW + 600), Some(0), NOW);
        assert!(cache.get("short", NOW, 0).is_some());
        assert!(cache.get("long", NOW, 0).is_some());
        // Both were used; at NOW + 10 "short" has expired and is the one replaced.
        cache.insert("next", identity("a"), window(NOW + 600), Some(0), NOW + 10);
        assert!(cache.get("long", NOW + 10, 0).is_some());
        assert!(cache.get("next", NOW + 10, 0).is_some());
    }

    #[test]
    fn disabled_or_oversized_keeps_nothing() {
        let (cache0, _) = cache(0, 0);
        cache0.insert("t", identity("a"), window(NOW + 60), Some(0), NOW);
        assert!(cache0.get("t", NOW, 0).is_none());
        let (cache, _) = cache(4, 0);
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        cache.insert(&long, identity("a"), window(NOW + 60), Some(0), NOW);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_window_is_read_as_the_verifier_reads_it() {
        let claims = |v: serde_json::Value| match v {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        };
        assert_eq!(
            Window::from_claims(&claims(serde_json::json!({"exp": 10, "nbf": 2.6}))),
            Some(Window {
                not_before: Some(3),
                expires: 10
            })
        );
        assert_eq!(
            Window::from_claims(&claims(serde_json::json!({"exp": 9.4}))),
            Some(Window {
                not_before: None,
                expires: 9
            })
        );
        assert_eq!(
            Window::from_claims(&claims(serde_json::json!({"exp": "10"}))),
            None
        );
    }
}
