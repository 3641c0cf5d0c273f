use ficus_testkit::TestMonolith;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::expect_error;

#[tokio::test]
async fn people_crud_round_trip() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let http = m.http();

    // Create: a generated id, timestamps, a Location and an ETag; no password hash in sight.
    let response = http
        .post(m.url("/api/people"))
        .bearer_auth(&token)
        .json(&json!({ "email": " Grace@Example.TEST ", "display_name": "Grace Hopper" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("etag"));
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_i64().expect("a generated id");
    assert_eq!(location, format!("/api/people/{id}"));
    assert_eq!(created["email"], "grace@example.test");
    assert_eq!(created["role"], "member");
    assert_eq!(created["created_at"], created["updated_at"]);
    assert!(created.get("password_hash").is_none());

    // Read, with ETag revalidation.
    let response = http
        .get(m.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let read: Value = response.json().await.unwrap();
    assert_eq!(read, created);
    let revalidated = http
        .get(m.url(&location))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());

    // Update only what is given; updated_at moves, the ETag changes.
    let response = http
        .patch(m.url(&location))
        .bearer_auth(&token)
        .json(&json!({ "display_name": "Rear Admiral Hopper", "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["display_name"], "Rear Admiral Hopper");
    assert_eq!(updated["role"], "admin");
    assert_eq!(updated["email"], "grace@example.test");
    assert_eq!(updated["created_at"], created["created_at"]);
    assert!(updated["updated_at"].as_str() > created["updated_at"].as_str());
    let stale = http
        .get(m.url(&location))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        StatusCode::OK,
        "a changed person is not 304"
    );

    // Delete, then it is gone.
    let response = http
        .delete(m.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let gone = http
        .get(m.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let error = expect_error(gone, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(error["message"], format!("person {id} not found"));
    let again = http
        .delete(m.url(&location))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_error(again, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn people_list_paginates_with_links() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    for i in 0..11 {
        m.create_person(
            &token,
            &format!("p{i:02}@example.test"),
            &format!("Person {i}"),
            None,
        )
        .await;
    }
    // 12 people with the admin; pages of 5.
    let mut seen = Vec::new();
    let mut next = Some("/api/people?per_page=5".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let response = m
            .http()
            .get(m.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["link"]
                .to_str()
                .unwrap()
                .contains("rel=\"last\"")
        );
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["total"], 12);
        assert_eq!(page["per_page"], 5);
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_i64().unwrap());
        }
        next = page["links"]["next"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 12);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ordered by id, no repeats"
    );

    let filtered: Value = m
        .http()
        .get(m.url("/api/people?email=P03@example.test"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["total"], 1);
    assert_eq!(filtered["items"][0]["display_name"], "Person 3");

    for bad in [
        "/api/people?page=0",
        "/api/people?per_page=500",
        "/api/people?page=x",
    ] {
        let response = m
            .http()
            .get(m.url(bad))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

#[tokio::test]
async fn duplicate_email_is_a_conflict_and_bad_fields_are_named() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    m.create_person(&token, "dup@example.test", "First", None)
        .await;
    let post = |body: Value| {
        m.http()
            .post(m.url("/api/people"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let dup = post(json!({ "email": "DUP@example.test", "display_name": "Second" }))
        .await
        .unwrap();
    let error = expect_error(dup, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(error["field"], "email");

    let cases = [
        (
            json!({ "email": "not-an-email", "display_name": "X" }),
            "email",
        ),
        (
            json!({ "email": "a@b.test", "display_name": "  " }),
            "display_name",
        ),
        (
            json!({ "email": "a@b.test", "display_name": "X", "role": "owner" }),
            "role",
        ),
        (
            json!({ "email": "a@b.test", "display_name": 7 }),
            "display_name",
        ),
        (
            json!({ "email": "a@b.test", "display_name": "X", "password": "short" }),
            "password",
        ),
        (
            json!({ "email": "a@b.test", "display_name": "X", "admin": true }),
            "admin",
        ),
        (json!({ "display_name": "X" }), "body"),
    ];
    for (body, field) in cases {
        let response = post(body.clone()).await.unwrap();
        let error = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(error["field"], field, "for {body}: {error}");
    }
    // Nothing of the refused requests was written.
    let list: Value = m
        .http()
        .get(m.url("/api/people"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 2);
}

#[tokio::test]
async fn a_cleared_password_ends_logins_and_unknown_people_are_404() {
    let m = TestMonolith::start().await;
    let admin = m.admin_token().await;
    let person = m
        .create_person(
            &admin,
            "leaver@example.test",
            "Leaver",
            Some("leaver-password"),
        )
        .await;
    m.login("leaver@example.test", "leaver-password").await;
    let path = format!("/api/people/{}", person["id"]);
    let response = m
        .http()
        .patch(m.url(&path))
        .bearer_auth(&admin)
        .json(&json!({ "password": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let login = m
        .http()
        .post(m.url("/api/login"))
        .json(&json!({ "email": "leaver@example.test", "password": "leaver-password" }))
        .send()
        .await
        .unwrap();
    expect_error(login, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    let response = m
        .http()
        .patch(m.url("/api/people/424242"))
        .bearer_auth(&admin)
        .json(&json!({ "display_name": "Ghost" }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = m
        .http()
        .get(m.url("/api/people/abc"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_path").await;
}

#[tokio::test]
async fn me_shows_the_caller_and_what_an_edge_forwarded() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let me: Value = m
        .http()
        .get(m.url("/api/me"))
        .bearer_auth(&token)
        .header("x-ficus-subject", "1")
        .header("x-other", "ignored")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["person"]["email"], m.admin_email.as_str());
    assert_eq!(me["edge_identity"], json!({ "x-ficus-subject": "1" }));
    let anonymous = m.http().get(m.url("/api/me")).send().await.unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "missing_token").await;
}
