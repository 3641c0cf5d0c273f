//! TLS where a production edge needs it, with certificates of a CA made per test: clients
//! through TLS (ALPN `h2` and `http/1.1`, the certificate renewed in place while running), an
//! `https://` upstream verified with its CA file, an `https://` JWKS, and `ficus-identity`
//! fetching over https and again on an unknown key id.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ficus_testkit::tls::{self, TestCa};
use ficus_testkit::TestUpstream;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::{routes_file, upstreams};

/// A directory of the test's own for certificate files.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ficus-tls-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    ficus_proxy::edit::write_atomically(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn clients_speak_h2_or_http11_by_alpn_and_a_renewed_certificate_is_served() {
    let (monolith, people) = upstreams().await;
    let ca = TestCa::new("edge");
    let dir = temp_dir();
    let issued = ca.issue(&["localhost"]);
    let cert = write(&dir, "cert.pem", &issued.cert_pem);
    let key = write(&dir, "key.pem", &issued.key_pem);
    let file = format!(
        "{}\n[proxy.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
        routes_file(&monolith.url(), &people.url(), "")
    );
    let proxy = crate::start_proxy(&file).await;

    let h2 = tls::request(proxy.addr, "localhost", &ca.pem(), &[b"h2"], "/a?x=1")
        .await
        .expect("an answer over TLS");
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!(h2.status, 200);
    let echo: Value = serde_json::from_slice(&h2.body).unwrap();
    assert_eq!(echo["upstream"], "monolith");
    assert_eq!(echo["query"], "x=1");

    let h1 = tls::request(proxy.addr, "localhost", &ca.pem(), &[b"http/1.1"], "/b")
        .await
        .expect("an answer over TLS");
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.version, http::Version::HTTP_11);
    assert_eq!(h1.status, 200);

    // Plain HTTP to the TLS listener gets no answer.
    assert!(reqwest::get(proxy.url("/a")).await.is_err());
    assert!(
        proxy
            .metric("ficus_proxy_tls_handshake_failures_total")
            .await
            >= 1.0
    );

    // The certificate is renewed in place (by another CA, to tell them apart): the proxy
    // reloads it without a restart, and new connections get the new one.
    let renewed_ca = TestCa::new("renewed");
    let renewed = renewed_ca.issue(&["localhost"]);
    let before = proxy.version();
    // Key first, then certificate: in between the pair does not match and the load is refused
    // (the previous certificate stays in force).
    write(&dir, "key.pem", &renewed.key_pem);
    write(&dir, "cert.pem", &renewed.cert_pem);
    proxy.wait_for_version_after(before).await;
    let answer = tls::request(proxy.addr, "localhost", &renewed_ca.pem(), &[b"h2"], "/c")
        .await
        .expect("the renewed certificate");
    assert_eq!(answer.status, 200);
    assert!(
        tls::connect(proxy.addr, "localhost", &ca.pem(), &[b"h2"])
            .await
            .is_err(),
        "the old certificate is still served"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_https_upstream_is_verified_with_its_ca_file_or_the_system_roots() {
    let ca = TestCa::new("upstreams");
    let secure = TestUpstream::start_tls("secure", &ca.issue(&["localhost"])).await;
    let monolith = TestUpstream::start("monolith").await;
    let dir = temp_dir();
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let port = secure.addr.port();
    let file = format!(
        r#"
[proxy]
default = "monolith"

[upstreams.monolith]
url = "{}"
[upstreams.secure]
url = "https://localhost:{port}"
ca_file = "{ca_file}"
[upstreams.unknown-ca]
url = "https://localhost:{port}"

[[route]]
name = "secure"
path = "/secure/*"
serve = "secure"
mode = "extracted"

[[route]]
name = "unknown-ca"
path = "/unknown/*"
serve = "unknown-ca"
mode = "extracted"
"#,
        monolith.url()
    );
    let proxy = crate::start_proxy(&file).await;

    let answer = reqwest::get(proxy.url("/secure/1?q=2")).await.unwrap();
    assert_eq!(answer.status(), 200);
    let echo: Value = answer.json().await.unwrap();
    assert_eq!(echo["upstream"], "secure");
    assert_eq!(echo["path"], "/secure/1");

    // The test CA is not among the system's roots: the upstream is not trusted.
    let refused = reqwest::get(proxy.url("/unknown/1")).await.unwrap();
    assert_eq!(refused.status(), 502);
    assert_eq!(secure.hits(), 1, "an untrusted upstream got a request");
    let _ = std::fs::remove_dir_all(dir);
}

/// An Ed25519 key with its JWK, signing tokens.
struct SigningKey {
    kid: String,
    jwk: Value,
    encoding: EncodingKey,
}

impl SigningKey {
    fn new() -> Self {
        let seed: [u8; 32] = rand::random();
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed prefix, then the seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let kid = format!("k-{}", ficus_testkit::unique_suffix());
        Self {
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
                "x": URL_SAFE_NO_PAD.encode(public),
            }),
            kid,
            encoding: EncodingKey::from_ed_der(&der),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWKS endpoint over TLS whose keys the test changes; counts its fetches.
struct HttpsJwks {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<Mutex<u32>>,
    server: tokio::task::JoinHandle<()>,
}

impl HttpsJwks {
    async fn start(ca: &TestCa, keys: &[&SigningKey]) -> Self {
        let keys = Arc::new(Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let fetches = Arc::new(Mutex::new(0u32));
        let (served, counted) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let keys = served.lock().unwrap().clone();
                *counted.lock().unwrap() += 1;
                async move { axum::Json(json!({ "keys": keys })) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}/jwks.json",
            listener.local_addr().unwrap().port()
        );
        let server = tls::serve_tls(listener, app, &ca.issue(&["localhost"]));
        Self {
            url,
            keys,
            fetches,
            server,
        }
    }

    fn set_keys(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fetches(&self) -> u32 {
        *self.fetches.lock().unwrap()
    }
}

impl Drop for HttpsJwks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test]
async fn the_proxy_fetches_an_https_jwks_with_its_ca_file() {
    let (monolith, people) = upstreams().await;
    let ca = TestCa::new("idp");
    let key = SigningKey::new();
    let idp = HttpsJwks::start(&ca, &[&key]).await;
    let dir = temp_dir();
    let ca_file = write(&dir, "idp-ca.pem", &ca.pem());
    let file = routes_file(&monolith.url(), &people.url(), "").replace(
        "[upstreams.monolith]",
        &format!(
            "[auth]\ndefault = \"authenticated\"\nissuer = \"https://idp.test\"\naudience = [\"ficus\"]\njwks_url = \"{}\"\njwks_ca_file = \"{ca_file}\"\n\n[upstreams.monolith]",
            idp.url
        ),
    );
    let proxy = crate::start_proxy(&file).await;
    proxy
        .wait_for_metric_above("ficus_proxy_jwks_fetches_total{result=\"ok\"}", 0.0)
        .await;

    let token = key.sign(&json!({
        "iss": "https://idp.test", "aud": "ficus", "sub": "u-1", "iat": now(), "exp": now() + 600,
    }));
    let http = reqwest::Client::new();
    let allowed = http
        .get(proxy.url("/api/anything"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let echo: Value = allowed.json().await.unwrap();
    assert_eq!(echo["headers"]["x-ficus-subject"], "u-1");
    let anonymous = http.get(proxy.url("/api/anything")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        proxy
            .metric("ficus_proxy_jwks_fetches_total{result=\"error\"}")
            .await,
        0.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_the_ca_file_an_https_jwks_is_not_trusted() {
    let (monolith, people) = upstreams().await;
    let ca = TestCa::new("idp");
    let key = SigningKey::new();
    let idp = HttpsJwks::start(&ca, &[&key]).await;
    let file = routes_file(&monolith.url(), &people.url(), "").replace(
        "[upstreams.monolith]",
        &format!(
            "[auth]\ndefault = \"authenticated\"\nissuer = \"https://idp.test\"\naudience = [\"ficus\"]\njwks_url = \"{}\"\n\n[upstreams.monolith]",
            idp.url
        ),
    );
    let proxy = crate::start_proxy(&file).await;
    proxy
        .wait_for_metric_above("ficus_proxy_jwks_fetches_total{result=\"error\"}", 0.0)
        .await;
    assert_eq!(idp.fetches(), 0, "the handshake failed before any request");
    let token = key.sign(&json!({
        "iss": "https://idp.test", "aud": "ficus", "sub": "u-1", "iat": now(), "exp": now() + 600,
    }));
    let refused = reqwest::Client::new()
        .get(proxy.url("/api/anything"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503, "no keys: fail closed");
}

fn internal_claims(sub: &str) -> Value {
    json!({
        "iss": ficus_identity::ISSUER, "aud": "people-service", "sub": sub,
        "iat": now(), "exp": now() + 60, "scope": "people:read",
    })
}

#[tokio::test]
async fn ficus_identity_fetches_over_https_and_again_on_an_unknown_key() {
    let ca = TestCa::new("keys");
    let first = SigningKey::new();
    let jwks = HttpsJwks::start(&ca, &[&first]).await;
    let options = ficus_identity::FetchOptions {
        ca_pem: Some(ca.pem().into_bytes()),
        min_refetch: Duration::from_millis(500),
        ..Default::default()
    };
    let verifier = ficus_identity::Verifier::fetch_with(&jwks.url, "people-service", options)
        .await
        .expect("keys over https");
    assert_eq!(jwks.fetches(), 1);
    let identity = verifier
        .verify(&first.sign(&internal_claims("u-1")))
        .await
        .unwrap();
    assert_eq!(identity.subject, "u-1");

    // The proxy restarts with a new signing key: its first token makes the service fetch again.
    let second = SigningKey::new();
    jwks.set_keys(&[&second]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let identity = verifier
        .verify(&second.sign(&internal_claims("u-2")))
        .await
        .expect("the new key, fetched on demand");
    assert_eq!(identity.subject, "u-2");
    assert_eq!(jwks.fetches(), 2);

    // Tokens of a key nobody publishes: refused, and the fetches are rate-limited.
    let stranger = SigningKey::new();
    for _ in 0..5 {
        assert!(matches!(
            verifier.verify(&stranger.sign(&internal_claims("x"))).await,
            Err(ficus_identity::IdentityError::UnknownKey)
        ));
    }
    assert_eq!(jwks.fetches(), 2, "fetched again within min_refetch");
    // Known keys keep working without a fetch.
    assert!(
        verifier
            .verify(&second.sign(&internal_claims("u-3")))
            .await
            .is_ok()
    );
    assert_eq!(jwks.fetches(), 2);

    // Without the test CA, the same URL is not trusted.
    let untrusted = ficus_identity::Verifier::fetch(&jwks.url, "people-service").await;
    assert!(
        matches!(&untrusted, Err(ficus_identity::IdentityError::Fetch(m)) if m.contains("certificate")),
        "{:?}",
        untrusted.err()
    );
}
