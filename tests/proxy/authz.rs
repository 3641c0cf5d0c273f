//! Authorization at the edge: tokens verified against a live JWKS, per-route policy, the
//! identity forwarded (and re-signed for services), forged identity headers removed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode as AxumStatus;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ficus_testkit::{TestProxy, TestUpstream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::header;

/// A key the test identity provider signs with.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn rsa() -> Self {
        let key = ficus_monolith::SigningKey::generate().unwrap();
        let mut jwk = key.jwk().clone();
        let kid = format!("rsa-{}", ficus_testkit::unique_suffix());
        jwk["kid"] = json!(kid);
        TestKey {
            kid,
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(key.to_pem().as_bytes()).unwrap(),
            jwk,
        }
    }

    fn ed25519() -> Self {
        let seed: [u8; 32] = rand::random();
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let kid = format!("ed-{}", ficus_testkit::unique_suffix());
        TestKey {
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public), "kid": kid}),
            kid,
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&der),
        }
    }

    fn p256() -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePrivateKey;
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let point = secret.public_key().to_encoded_point(false);
        let der = secret.to_pkcs8_der().unwrap();
        let kid = format!("ec-{}", ficus_testkit::unique_suffix());
        TestKey {
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            }),
            kid,
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims a valid token carries; tests change what they probe.
fn claims(sub: &str, scope: &str) -> Value {
    json!({
        "iss": "https://idp.example", "aud": "ficus", "sub": sub, "email": format!("{sub}@example.test"),
        "name": "Test User", "scope": scope, "roles": ["member"], "tenant": "acme",
        "iat": now(), "nbf": now() - 5, "exp": now() + 600,
    })
}

/// The keys a test identity provider publishes, whether it answers, how often it was asked.
type IdpState = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<bool>>, Arc<Mutex<u32>>);

/// A JWKS endpoint whose keys and health the test controls.
struct TestIdp {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    up: Arc<Mutex<bool>>,
    fetches: Arc<Mutex<u32>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl TestIdp {
    async fn start(keys: &[&TestKey]) -> Self {
        let state = (
            Arc::new(Mutex::new(
                keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(Mutex::new(true)),
            Arc::new(Mutex::new(0u32)),
        );
        let app =
            axum::Router::new()
                .route(
                    "/jwks.json",
                    axum::routing::get(
                        |axum::extract::State((keys, up, fetches)): axum::extract::State<
                            IdpState,
                        >| async move {
                            *fetches.lock().unwrap() += 1;
                            if !*up.lock().unwrap() {
                                return (AxumStatus::SERVICE_UNAVAILABLE, axum::Json(json!({})));
                            }
                            let keys = keys.lock().unwrap().clone();
                            (AxumStatus::OK, axum::Json(json!({ "keys": keys })))
                        },
                    ),
                )
                .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestIdp {
            url,
            keys: state.0,
            up: state.1,
            fetches: state.2,
            stop: Some(stop),
            server,
        }
    }

    fn set_keys(&self, keys: &[&TestKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn set_up(&self, up: bool) {
        *self.up.lock().unwrap() = up;
    }

    fn fetches(&self) -> u32 {
        *self.fetches.lock().unwrap()
    }

    /// Stops the server, closing its idle keep-alive connections too: from now on every
    /// fetch fails to connect.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.server).await;
    }
}

/// A routes file with `[auth]` over `jwks_url`, a monolith and an extracted upstream.
fn file(monolith: &TestUpstream, people: &TestUpstream, auth_extra: &str, routes: &str) -> String {
    format!(
        r#"
[proxy]
default = "monolith"
expose_headers = true

[auth]
issuer = "https://idp.example"
audience = ["ficus"]
jwks_min_refetch_ms = 200
{auth_extra}

[upstreams.monolith]
url = "{}"
[upstreams.people]
url = "{}"

[[route]]
name = "people-read"
path = "/api/people/*"
methods = ["GET"]
serve = "people"
mode = "extracted"
auth = {{ require = ["people:read"] }}

[[route]]
name = "people-write"
path = "/api/people/*"
methods = ["POST", "PATCH", "DELETE"]
auth = {{ require = ["people:write"], roles = ["admin"] }}

[[route]]
name = "login"
path = "/api/login"
auth = {{ public = true }}

[[route]]
name = "tenant"
path = "/api/tenant/*"
auth = {{ claims = {{ tenant = "acme" }} }}

[[route]]
name = "closed"
path = "/internal/*"
auth = {{ deny = true }}
{routes}
"#,
        monolith.url(),
        people.url()
    )
}

async fn setup(auth_extra: &str) -> (TestUpstream, TestUpstream, TestIdp, TestKey, TestProxy) {
    let monolith = TestUpstream::start("monolith").await;
    let people = TestUpstream::start("people").await;
    let key = TestKey::rsa();
    let idp = TestIdp::start(&[&key]).await;
    let extra = format!("jwks_url = \"{}\"\n{auth_extra}", idp.url);
    let proxy = crate::start_proxy(&file(&monolith, &people, &extra, "")).await;
    (monolith, people, idp, key, proxy)
}

async fn call(
    proxy: &TestProxy,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, proxy.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn refused(response: reqwest::Response, status: u16, reason: &str) -> Value {
    assert_eq!(response.status(), status, "expected {status} for {reason}");
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.ends_with(&format!("({reason})")),
        "reason {reason} in {body}"
    );
    body
}

#[tokio::test]
async fn a_valid_token_passes_and_both_sides_receive_the_verified_identity() {
    let (_monolith, _people, _idp, key, proxy) = setup("").await;
    let token = key.sign(&claims("u-42", "people:read people:write"));
    // Extracted side.
    let response = call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-upstream"), "people");
    let echo: Value = response.json().await.unwrap();
    let headers = &echo["headers"];
    assert_eq!(headers["x-ficus-subject"], "u-42");
    assert_eq!(headers["x-ficus-email"], "u-42@example.test");
    assert_eq!(headers["x-ficus-name"], "Test User");
    assert_eq!(headers["x-ficus-scopes"], "people:read people:write");
    assert_eq!(headers["x-ficus-roles"], "member");
    assert!(
        headers["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer "),
        "the token still reaches the legacy authz"
    );
    // Monolith side: a claims route to the monolith.
    let response = call(&proxy, reqwest::Method::GET, "/api/tenant/x", Some(&token)).await;
    assert_eq!(header(&response, "x-upstream"), "monolith");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["headers"]["x-ficus-subject"], "u-42");

    // Every signature algorithm the edge accepts: ES256 and EdDSA keys in the same JWKS.
    let ec = TestKey::p256();
    let ed = TestKey::ed25519();
    _idp.set_keys(&[&key, &ec, &ed]);
    // Past the unknown-kid rate limit (200 ms here), the new kids make the proxy fetch again.
    tokio::time::sleep(Duration::from_millis(250)).await;
    for other in [&ec, &ed] {
        let token = other.sign(&claims("u-7", "people:read"));
        let response = call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&token)).await;
        assert_eq!(response.status(), 200, "{:?}", other.alg);
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_the_reason() {
    let (_monolith, people, _idp, key, proxy) = setup("").await;
    let get = |token: Option<String>| {
        let proxy = &proxy;
        async move {
            call(
                proxy,
                reqwest::Method::GET,
                "/api/people/1",
                token.as_deref(),
            )
            .await
        }
    };
    let missing = get(None).await;
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"ficus\""
    );
    refused(missing, 401, "no_token").await;

    let mut expired = claims("u", "people:read");
    expired["exp"] = json!(now() - 120);
    let response = get(Some(key.sign(&expired))).await;
    assert!(header(&response, "www-authenticate").contains("error=\"invalid_token\""));
    refused(response, 401, "expired").await;

    let mut early = claims("u", "people:read");
    early["nbf"] = json!(now() + 600);
    refused(get(Some(key.sign(&early))).await, 401, "not_yet_valid").await;

    let mut audience = claims("u", "people:read");
    audience["aud"] = json!("someone-else");
    refused(get(Some(key.sign(&audience))).await, 401, "wrong_audience").await;

    let mut issuer = claims("u", "people:read");
    issuer["iss"] = json!("https://evil.example");
    refused(get(Some(key.sign(&issuer))).await, 401, "wrong_issuer").await;

    let stranger = TestKey::rsa();
    refused(
        get(Some(stranger.sign(&claims("u", "people:read")))).await,
        401,
        "unknown_key",
    )
    .await;

    // A known kid, but the signature of another key.
    let mut impostor = TestKey::rsa();
    impostor.kid = key.kid.clone();
    refused(
        get(Some(impostor.sign(&claims("u", "people:read")))).await,
        401,
        "bad_signature",
    )
    .await;

    // alg: none, unsigned.
    let header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        key.kid
    ));
    let body = URL_SAFE_NO_PAD.encode(claims("u", "people:read").to_string());
    refused(
        get(Some(format!("{header}.{body}."))).await,
        401,
        "malformed",
    )
    .await;

    // HS256 with the RSA key's public material as the HMAC secret (algorithm confusion).
    let public_der = key.jwk["n"].as_str().unwrap().as_bytes().to_vec();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims("u", "people:read"),
        &EncodingKey::from_secret(&public_der),
    )
    .unwrap();
    refused(get(Some(confused)).await, 401, "alg_not_allowed").await;

    let basic = reqwest::Client::new()
        .get(proxy.url("/api/people/1"))
        .header("authorization", "Basic dTpw")
        .send()
        .await
        .unwrap();
    refused(basic, 401, "malformed").await;
    assert_eq!(people.hits(), 0, "no refused request reached the service");

    let metrics = reqwest::get(proxy.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ficus_proxy_authz_decisions_total{route="people-read",decision="deny",reason="expired"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn hs256_only_where_configured_and_never_with_a_public_key() {
    let dir = std::env::temp_dir().join(format!("ficus-hs-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, secret).unwrap();
    let extra = format!(
        "algorithms = [\"RS256\", \"HS256\"]\nhs256_secret_file = \"{}\"",
        secret_file.display()
    );
    let (_monolith, _people, _idp, key, proxy) = setup(&extra).await;
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("u", "people:read"),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&hs))
            .await
            .status(),
        200
    );
    // The RSA key's modulus as an HMAC secret: HS256 verifies only with the configured secret.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("u", "people:read"),
        &EncodingKey::from_secret(key.jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    refused(
        call(
            &proxy,
            reqwest::Method::GET,
            "/api/people/1",
            Some(&confused),
        )
        .await,
        401,
        "bad_signature",
    )
    .await;
    // And an RS256 header with a kid of nothing: unknown.
    assert_eq!(
        call(
            &proxy,
            reqwest::Method::GET,
            "/api/people/1",
            Some(&key.sign(&claims("u", "people:read")))
        )
        .await
        .status(),
        200
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn per_route_policy_allows_and_denies() {
    let (monolith, _people, _idp, key, proxy) = setup("").await;
    let reader = key.sign(&claims("reader", "people:read"));
    let mut admin_claims = claims("boss", "people:read people:write");
    admin_claims["roles"] = json!(["admin"]);
    let admin = key.sign(&admin_claims);
    let mut writer_claims = claims("writer", "people:write");
    writer_claims["roles"] = json!(["member"]);
    let writer = key.sign(&writer_claims);

    let response = call(
        &proxy,
        reqwest::Method::POST,
        "/api/people/1",
        Some(&reader),
    )
    .await;
    assert!(header(&response, "www-authenticate").contains("insufficient_scope"));
    assert!(header(&response, "www-authenticate").contains("scope=\"people:write\""));
    refused(response, 403, "insufficient_scope").await;
    refused(
        call(
            &proxy,
            reqwest::Method::POST,
            "/api/people/1",
            Some(&writer),
        )
        .await,
        403,
        "missing_role",
    )
    .await;
    assert_eq!(
        call(&proxy, reqwest::Method::POST, "/api/people/1", Some(&admin))
            .await
            .status(),
        200
    );

    let mut other_tenant = claims("u", "");
    other_tenant["tenant"] = json!("globex");
    refused(
        call(
            &proxy,
            reqwest::Method::GET,
            "/api/tenant/1",
            Some(&key.sign(&other_tenant)),
        )
        .await,
        403,
        "claim_mismatch",
    )
    .await;

    // Public: no token needed.
    assert_eq!(
        call(&proxy, reqwest::Method::POST, "/api/login", None)
            .await
            .status(),
        200
    );
    // Explicit deny, even with the best token.
    refused(
        call(&proxy, reqwest::Method::GET, "/internal/x", Some(&admin)).await,
        403,
        "route_denied",
    )
    .await;
    // Routes that say nothing: deny by default.
    refused(
        call(&proxy, reqwest::Method::GET, "/elsewhere", Some(&admin)).await,
        403,
        "default_deny",
    )
    .await;
    let hits = monolith.hits();

    // default = "authenticated" and "allow".
    let text = std::fs::read_to_string(&proxy.routes_path).unwrap();
    proxy
        .write_routes(&text.replace(
            "jwks_min_refetch_ms = 200",
            "jwks_min_refetch_ms = 200\ndefault = \"authenticated\"",
        ))
        .await;
    refused(
        call(&proxy, reqwest::Method::GET, "/elsewhere", None).await,
        401,
        "no_token",
    )
    .await;
    assert_eq!(
        call(&proxy, reqwest::Method::GET, "/elsewhere", Some(&reader))
            .await
            .status(),
        200
    );
    proxy
        .write_routes(&text.replace(
            "jwks_min_refetch_ms = 200",
            "jwks_min_refetch_ms = 200\ndefault = \"allow\"",
        ))
        .await;
    assert_eq!(
        call(&proxy, reqwest::Method::GET, "/elsewhere", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        monolith.hits(),
        hits + 2,
        "only the two allowed /elsewhere reached it"
    );
}

#[tokio::test]
async fn forged_identity_headers_are_removed_in_every_spelling() {
    let (_monolith, _people, _idp, key, proxy) =
        setup("strip_headers = [\"x-user-id\"]\n[auth.internal_token]\n").await;
    let token = key.sign(&claims("real-user", "people:read"));
    let forged = [
        ("x-ficus-subject", "admin"),
        ("X-Ficus-Subject", "admin"),
        ("x_ficus_subject", "admin"),
        ("X_FICUS_SUBJECT", "admin"),
        ("x-ficus_subject", "admin"),
        ("x_ficus-email", "boss@example.test"),
        ("X-Ficus-Scopes", "people:write admin"),
        ("x_ficus_roles", "admin"),
        ("x-ficus-identity", "forged.token.here"),
        ("X_Ficus_Identity", "forged.token.here"),
        ("x-user-id", "1"),
        ("X_User_Id", "1"),
        ("X_Forwarded_User", "admin"),
        ("x-forwarded-email", "boss@example.test"),
        ("X-Forwarded-Uri", "/api/login"),
        ("x-original-url", "/api/login"),
    ];
    // On a protected route: the forged path hints do not make it public, the identity is the
    // token's, none of the forged headers arrive.
    let mut request = reqwest::Client::new().get(proxy.url("/api/people/1"));
    for (name, value) in forged {
        request = request.header(name, value);
    }
    let response = request.try_clone().unwrap().send().await.unwrap();
    refused(response, 401, "no_token").await;
    let response = request.bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["x-ficus-subject"], "real-user");
    assert_eq!(headers["x-ficus-scopes"], "people:read");
    assert_eq!(headers["x-ficus-roles"], "member");
    assert_ne!(headers["x-ficus-identity"], "forged.token.here");
    for (name, _) in forged {
        let lowered = name.to_ascii_lowercase();
        if lowered.starts_with("x-ficus-") && !lowered.contains('_') {
            continue; // re-set by the proxy from the verified token
        }
        assert!(
            !headers.contains_key(&lowered),
            "{name} reached the upstream: {headers:?}"
        );
    }

    // On a public route too: no identity at all arrives.
    let mut request = reqwest::Client::new().post(proxy.url("/api/login"));
    for (name, value) in forged {
        request = request.header(name, value);
    }
    let echo: Value = request.send().await.unwrap().json().await.unwrap();
    let headers = echo["headers"].as_object().unwrap();
    for (name, _) in forged {
        assert!(
            !headers.contains_key(&name.to_ascii_lowercase()),
            "{name} reached the upstream"
        );
    }
}

#[tokio::test]
async fn the_internal_token_is_verified_by_the_service_helper() {
    let (_monolith, _people, _idp, key, proxy) =
        setup("[auth.internal_token]\naudience = \"people-service\"\n").await;
    let token = key.sign(&claims("u-9", "people:read"));
    let response = call(&proxy, reqwest::Method::GET, "/api/people/9", Some(&token)).await;
    let echo: Value = response.json().await.unwrap();
    let internal = echo["headers"]["x-ficus-identity"]
        .as_str()
        .unwrap()
        .to_owned();

    // The service side: keys from the proxy's admin API, verification through ficus-identity.
    let verifier = ficus_identity::Verifier::fetch(
        &proxy.admin_url("/.well-known/jwks.json"),
        "people-service",
    )
    .await
    .expect("the proxy's keys");
    let mut headers = http_headers();
    headers.insert("x-ficus-identity", internal.parse().unwrap());
    let identity = verifier
        .verify_headers(&headers)
        .await
        .expect("a verified identity");
    assert_eq!(identity.subject, "u-9");
    assert_eq!(identity.email.as_deref(), Some("u-9@example.test"));
    assert!(identity.has_scope("people:read"));
    assert!(identity.require_scope("people:write").is_err());
    assert_eq!(identity.route.as_deref(), Some("people-read"));

    // Tampered, wrong audience, missing: refused by the helper.
    let mut parts: Vec<&str> = internal.split('.').collect();
    let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"iss":"ficus-proxy","aud":"people-service","sub":"admin","exp":9999999999,"scope":"people:write"}"#);
    parts[1] = &forged_claims;
    assert!(verifier.verify(&parts.join(".")).await.is_err());
    let other_audience = ficus_identity::Verifier::fetch(
        &proxy.admin_url("/.well-known/jwks.json"),
        "tasks-service",
    )
    .await
    .unwrap();
    assert!(other_audience.verify(&internal).await.is_err());
    assert!(matches!(
        verifier.verify_headers(&http_headers()).await,
        Err(ficus_identity::IdentityError::Missing(_))
    ));
    // A token signed by the identity provider is not an internal token.
    assert!(verifier.verify(&token).await.is_err());
}

fn http_headers() -> axum::http::HeaderMap {
    axum::http::HeaderMap::new()
}

#[tokio::test]
async fn jwks_rotation_while_running_and_an_unreachable_provider() {
    let (_monolith, _people, idp, old, proxy) = setup("").await;
    let old_token = old.sign(&claims("u", "people:read"));
    // Twice: the second is answered from the verified-token cache, so the refusal below shows
    // that a rotation empties it.
    for _ in 0..2 {
        assert_eq!(
            call(
                &proxy,
                reqwest::Method::GET,
                "/api/people/1",
                Some(&old_token)
            )
            .await
            .status(),
            200
        );
    }
    assert_eq!(proxy.metric(CACHE_HITS).await, 1.0);

    // Rotation: the provider now publishes only a new key. A token with the new kid makes the
    // proxy fetch again (rate-limited), and passes.
    let new = TestKey::rsa();
    idp.set_keys(&[&new]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // First a token of the new key that is refused for another reason: the proxy fetches the
    // new set for it, but keeps nothing (so the cache has verified nothing since the rotation).
    let mut elsewhere = claims("u", "people:read");
    elsewhere["aud"] = json!("someone-else");
    refused(
        call(
            &proxy,
            reqwest::Method::GET,
            "/api/people/1",
            Some(&new.sign(&elsewhere)),
        )
        .await,
        401,
        "wrong_audience",
    )
    .await;
    // The old key is gone from the set: its tokens are refused, cached or not.
    refused(
        call(
            &proxy,
            reqwest::Method::GET,
            "/api/people/1",
            Some(&old_token),
        )
        .await,
        401,
        "unknown_key",
    )
    .await;
    let new_token = new.sign(&claims("u", "people:read"));
    assert_eq!(
        call(
            &proxy,
            reqwest::Method::GET,
            "/api/people/1",
            Some(&new_token)
        )
        .await
        .status(),
        200
    );

    // Unknown kids do not hammer the provider: many in a burst cause at most a couple of fetches.
    let before = idp.fetches();
    for _ in 0..20 {
        let stranger = TestKey::ed25519();
        let _ = call(
            &proxy,
            reqwest::Method::GET,
            "/api/people/1",
            Some(&stranger.sign(&claims("u", "people:read"))),
        )
        .await;
    }
    assert!(
        idp.fetches() - before <= 3,
        "rate-limited: {} fetches",
        idp.fetches() - before
    );
}

const CACHE_HITS: &str = "ficus_proxy_authz_token_cache_lookups_total{result=\"hit\"}";
const CACHE_MISSES: &str = "ficus_proxy_authz_token_cache_lookups_total{result=\"miss\"}";

#[tokio::test]
async fn a_cached_token_is_refused_once_its_exp_has_passed() {
    // No clock skew tolerated, so the token's own `exp` is the end.
    let (_monolith, people, _idp, key, proxy) = setup("leeway_ms = 0").await;
    let mut short = claims("u", "people:read");
    let exp = now() + 2;
    short["exp"] = json!(exp);
    let token = key.sign(&short);
    for _ in 0..3 {
        let response = call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&token)).await;
        assert_eq!(response.status(), 200);
    }
    // Verified once, then served from the cache.
    assert_eq!(proxy.metric(CACHE_MISSES).await, 1.0);
    assert_eq!(proxy.metric(CACHE_HITS).await, 2.0);
    // The verifier refuses from exp + 1 on (`exp < now`).
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hits = people.hits();
    refused(
        call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&token)).await,
        401,
        "expired",
    )
    .await;
    assert_eq!(people.hits(), hits);
}

#[tokio::test]
async fn a_bad_signature_is_refused_even_after_a_good_token_with_the_same_claims() {
    let (_monolith, people, _idp, key, proxy) = setup("").await;
    let same = claims("u", "people:read");
    let good = key.sign(&same);
    for _ in 0..2 {
        let response = call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&good)).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(proxy.metric(CACHE_HITS).await, 1.0);
    let hits = people.hits();
    // The same header and claims, signed by another key under the trusted kid.
    let mut impostor = TestKey::rsa();
    impostor.kid = key.kid.clone();
    let forged = impostor.sign(&same);
    assert_eq!(
        forged.rsplit_once('.').unwrap().0,
        good.rsplit_once('.').unwrap().0,
        "only the signature differs"
    );
    // The good token's signature, one character in its middle changed.
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let mut signature = signature.as_bytes().to_vec();
    let middle = signature.len() / 2;
    signature[middle] = if signature[middle] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = format!("{signed}.{}", String::from_utf8(signature).unwrap());
    for token in [&forged, &tampered, &forged] {
        refused(
            call(&proxy, reqwest::Method::GET, "/api/people/1", Some(token)).await,
            401,
            "bad_signature",
        )
        .await;
    }
    assert_eq!(people.hits(), hits);
    // Still good after the refusals.
    let response = call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&good)).await;
    assert_eq!(response.status(), 200);
}

const JWKS_ERRORS: &str = "ficus_proxy_jwks_fetches_total{result=\"error\"}";

#[tokio::test]
async fn the_keys_in_hand_are_served_stale_while_the_provider_fails() {
    // A background refresh every 100 ms, so the failing provider is asked again by itself.
    let (_monolith, people, mut idp, key, proxy) = setup("jwks_refresh_ms = 100").await;
    let token = key.sign(&claims("u", "people:read"));
    let get = |token: String| {
        let proxy = &proxy;
        async move { call(proxy, reqwest::Method::GET, "/api/people/1", Some(&token)).await }
    };
    assert_eq!(get(token.clone()).await.status(), 200);

    // The provider answers 500 now: wait until a refresh has actually failed.
    let errors = proxy.metric(JWKS_ERRORS).await;
    idp.set_up(false);
    let errors = proxy.wait_for_metric_above(JWKS_ERRORS, errors).await;
    // Tokens signed with the cached key still verify, and reach the service.
    let hits = people.hits();
    assert_eq!(get(token.clone()).await.status(), 200);
    assert_eq!(people.hits(), hits + 1);
    // A kid the cache does not hold is refused as unknown (the keys in hand are not thrown
    // away: that would be 503 no_keys), and the service never sees it.
    let stranger = TestKey::rsa().sign(&claims("u", "people:read"));
    refused(get(stranger.clone()).await, 401, "unknown_key").await;
    assert_eq!(people.hits(), hits + 1);

    // The provider is gone altogether (connections refused): still the same.
    idp.stop().await;
    proxy.wait_for_metric_above(JWKS_ERRORS, errors).await;
    assert_eq!(get(token).await.status(), 200);
    refused(get(stranger).await, 401, "unknown_key").await;
    assert_eq!(people.hits(), hits + 2);
}

#[tokio::test]
async fn without_any_key_the_edge_fails_closed() {
    let monolith = TestUpstream::start("monolith").await;
    let people = TestUpstream::start("people").await;
    let key = TestKey::rsa();
    let idp = TestIdp::start(&[&key]).await;
    idp.set_up(false);
    let extra = format!("jwks_url = \"{}\"", idp.url);
    let proxy = crate::start_proxy(&file(&monolith, &people, &extra, "")).await;
    let token = key.sign(&claims("u", "people:read"));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let response = call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&token)).await;
    let body = refused(response, 503, "no_keys").await;
    assert_eq!(body["error"]["code"], "auth_unavailable");
    assert_eq!(people.hits(), 0);
    // Public routes still work.
    assert_eq!(
        call(&proxy, reqwest::Method::POST, "/api/login", None)
            .await
            .status(),
        200
    );
    // The provider comes back: tokens verify.
    idp.set_up(true);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        call(&proxy, reqwest::Method::GET, "/api/people/1", Some(&token))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_websocket_upgrade_on_a_protected_route() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let (_monolith, _people, _idp, key, proxy) = setup("cookie = \"ficus_token\"").await;
    let text = std::fs::read_to_string(&proxy.routes_path).unwrap();
    proxy
        .write_routes(&(text + "\n[[route]]\nname = \"ws\"\npath = \"/ws\"\nserve = \"people\"\nmode = \"extracted\"\nauth = { require = [\"people:read\"] }\n"))
        .await;
    let url = format!("ws://{}/ws", proxy.addr);
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    // Browsers send the token as a cookie on a WebSocket.
    let token = key.sign(&claims("u", "people:read"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "cookie",
        format!("theme=dark; ficus_token={token}").parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("hello")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "people: hello");
}

#[tokio::test]
async fn the_monoliths_own_tokens_are_verified_at_the_edge() {
    let monolith = ficus_testkit::TestMonolith::start().await;
    let routes = format!(
        r#"
[proxy]
default = "monolith"
[auth]
jwks_url = "http://{addr}/.well-known/jwks.json"
issuer = "ficus-monolith"
audience = ["ficus"]
default = "authenticated"
[upstreams.monolith]
url = "http://{addr}"
[[route]]
name = "login"
path = "/api/login"
methods = ["POST"]
auth = {{ public = true }}
[[route]]
name = "people-write"
path = "/api/people/*"
methods = ["POST", "PATCH", "DELETE"]
auth = {{ require = ["people:write"] }}
"#,
        addr = monolith.addr
    );
    let proxy = crate::start_proxy(&routes).await;
    let http = reqwest::Client::new();
    // Log in through the proxy (a public route), then use the monolith's token at the edge.
    let login: Value = http
        .post(proxy.url("/api/login"))
        .json(&json!({ "email": monolith.admin_email, "password": monolith.admin_password }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    let people = http
        .get(proxy.url("/api/people"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(people.status(), 200);
    // Refused at the edge: the body is the proxy's, naming the route.
    let refused_body: Value = http
        .get(proxy.url("/api/people"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refused_body["error"]["route"], "default");
    assert_eq!(refused_body["error"]["code"], "unauthorized");
    // A member may read but not write people: the edge says so before the monolith is asked.
    monolith
        .create_person(token, "m@example.test", "Member", Some("member-password"))
        .await;
    let member = monolith.login("m@example.test", "member-password").await;
    let denied = http
        .post(proxy.url("/api/people"))
        .bearer_auth(&member)
        .json(&json!({ "email": "x@example.test", "display_name": "X" }))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["route"], "people-write");
}

#[tokio::test]
async fn static_keys_and_custom_forward_names() {
    let monolith = TestUpstream::start("monolith").await;
    let people = TestUpstream::start("people").await;
    let key = TestKey::ed25519();
    let dir = std::env::temp_dir().join(format!("ficus-keys-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys_file = dir.join("jwks.json");
    std::fs::write(&keys_file, json!({ "keys": [key.jwk] }).to_string()).unwrap();
    let extra = format!(
        "keys_file = \"{}\"\n[auth.forward]\nsubject = \"x-remote-user\"\nemail = \"x-remote-email\"\nname = \"x-remote-name\"\nscopes = \"x-remote-scopes\"\nroles = \"x-remote-roles\"\n",
        keys_file.display()
    );
    let proxy = crate::start_proxy(&file(&monolith, &people, &extra, "")).await;
    let token = key.sign(&claims("static-user", "people:read"));
    let response = reqwest::Client::new()
        .get(proxy.url("/api/people/1"))
        .bearer_auth(&token)
        .header("X_Remote_User", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["headers"]["x-remote-user"], "static-user");
    assert_eq!(echo["headers"]["x-remote-scopes"], "people:read");
    assert!(echo["headers"].get("x_remote_user").is_none());
    assert!(echo["headers"].get("x-ficus-subject").is_none());
    // A keys file that is not a JWKS is refused at reload, naming the key; the old table stays.
    std::fs::write(&keys_file, "not json").unwrap();
    let text = std::fs::read_to_string(&proxy.routes_path).unwrap();
    std::fs::write(&proxy.routes_path, text + "\n# touched\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !proxy
        .loader
        .last_attempt()
        .error
        .unwrap_or_default()
        .contains("auth.keys_file")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad keys file was reported"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.version(), 1);
    let again = reqwest::Client::new()
        .get(proxy.url("/api/people/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the old keys are still in force");
    let _ = std::fs::remove_dir_all(dir);
}
