use base64::Engine;
use ficus_testkit::TestMonolith;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::expect_error;

#[tokio::test]
async fn login_token_verifies_against_the_published_jwks() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;

    let jwks: Value = m
        .http()
        .get(m.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().expect("a keys array");
    assert_eq!(keys.len(), 1);
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["use"], "sig");

    // Verify the token the way an outside party would: only with the JWKS.
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&["ficus-monolith"]);
    validation.set_audience(&["ficus"]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .expect("the token verifies with the published key")
        .claims;
    assert_eq!(claims["email"], m.admin_email.as_str());
    assert_eq!(claims["role"], "admin");
    assert!(claims["scope"].as_str().unwrap().contains("people:write"));
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
}

#[tokio::test]
async fn wrong_password_and_unknown_email_are_refused_alike() {
    let m = TestMonolith::start().await;
    for (email, password) in [
        (m.admin_email.as_str(), "not-the-password"),
        ("nobody@example.test", "whatever-password"),
    ] {
        let response = m
            .http()
            .post(m.url("/api/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        let error = expect_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        assert_eq!(error["message"], "email or password is wrong");
    }
}

#[tokio::test]
async fn a_member_logs_in_with_member_scopes() {
    let m = TestMonolith::start().await;
    let admin = m.admin_token().await;
    m.create_person(
        &admin,
        "mia@example.test",
        "Mia Member",
        Some("mia-password"),
    )
    .await;
    let token = m.login("MIA@example.test", "mia-password").await;
    // Members read people but may not write them.
    let ok = m
        .http()
        .get(m.url("/api/people"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let denied = m
        .http()
        .post(m.url("/api/people"))
        .bearer_auth(&token)
        .json(&json!({ "email": "x@example.test", "display_name": "X" }))
        .send()
        .await
        .unwrap();
    let error = expect_error(denied, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(error["message"].as_str().unwrap().contains("people:write"));
}

#[tokio::test]
async fn routes_refuse_missing_malformed_forged_and_expired_tokens() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let get = |auth: Option<String>| {
        let mut request = m.http().get(m.url("/api/people"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };

    let missing = get(None).await.unwrap();
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"ficus-monolith\""
    );
    expect_error(missing, StatusCode::UNAUTHORIZED, "missing_token").await;

    let basic = get(Some("Basic YWRtaW46YWRtaW4=".into())).await.unwrap();
    expect_error(basic, StatusCode::UNAUTHORIZED, "invalid_request").await;

    let garbage = get(Some("Bearer not.a.jwt".into())).await.unwrap();
    assert!(
        garbage.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    expect_error(garbage, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // Tamper with the payload: the signature no longer matches.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
    claims["role"] = json!("admin");
    claims["sub"] = json!("999");
    parts[1] = engine.encode(serde_json::to_vec(&claims).unwrap());
    let forged = get(Some(format!("Bearer {}", parts.join("."))))
        .await
        .unwrap();
    expect_error(forged, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // alg: none is never accepted.
    let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let none = format!("Bearer {header}.{}.", parts[1]);
    let none = get(Some(none)).await.unwrap();
    expect_error(none, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // A token signed by the right key but expired long ago.
    let expired_monolith = TestMonolith::start_with(ficus_monolith::MonolithConfig {
        token_ttl: std::time::Duration::ZERO,
        token_leeway: std::time::Duration::ZERO,
        ..Default::default()
    })
    .await;
    let stale = expired_monolith.admin_token().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = expired_monolith
        .http()
        .get(expired_monolith.url("/api/people"))
        .bearer_auth(&stale)
        .send()
        .await
        .unwrap();
    let error = expect_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_eq!(error["message"], "the token has expired");
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    // Same key (the harness shares it), different issuer and audience.
    let other = TestMonolith::start_with(ficus_monolith::MonolithConfig {
        issuer: "someone-else".into(),
        audience: "elsewhere".into(),
        ..Default::default()
    })
    .await;
    let foreign = other.admin_token().await;
    let m = TestMonolith::start().await;
    let response = m
        .http()
        .get(m.url("/api/people"))
        .bearer_auth(&foreign)
        .send()
        .await
        .unwrap();
    let error = expect_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_eq!(error["message"], "the token's issuer is not accepted here");
}
