use ficus_testkit::TestMonolith;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::expect_error;

async fn post_task(m: &TestMonolith, token: &str, body: Value) -> reqwest::Response {
    m.http()
        .post(m.url("/api/tasks"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn task_json_carries_the_assignee_name_joined_from_people() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let linus = m
        .create_person(&token, "linus@example.test", "Linus", None)
        .await;
    let linus_id = linus["id"].as_i64().unwrap();

    let response = post_task(
        &m,
        &token,
        json!({
            "title": "Extract the people service",
            "description": "step one",
            "assignee_id": linus_id,
            "due_on": "2026-12-31",
            "tags": ["strangler", "people", "strangler"],
        }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let task: Value = response.json().await.unwrap();
    let path = format!("/api/tasks/{}", task["id"]);
    assert_eq!(task["status"], "todo");
    assert_eq!(
        task["assignee"],
        json!({ "id": linus_id, "display_name": "Linus" })
    );
    assert_eq!(task["due_on"], "2026-12-31");
    assert_eq!(task["tags"], json!(["strangler", "people"]));

    // Renaming the person shows in the task's JSON (joined at read time) and its ETag.
    let before = m
        .http()
        .get(m.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let etag = before.headers()["etag"].to_str().unwrap().to_owned();
    m.http()
        .patch(m.url(&format!("/api/people/{linus_id}")))
        .bearer_auth(&token)
        .json(&json!({ "display_name": "Linus T." }))
        .send()
        .await
        .unwrap();
    let after = m
        .http()
        .get(m.url(&path))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
    let after: Value = after.json().await.unwrap();
    assert_eq!(after["assignee"]["display_name"], "Linus T.");

    // Patch: status moves, null clears the assignee and the due date, the rest stays.
    let patched: Value = m
        .http()
        .patch(m.url(&path))
        .bearer_auth(&token)
        .json(&json!({ "status": "in_progress", "assignee_id": null, "due_on": null }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["status"], "in_progress");
    assert_eq!(patched["assignee"], Value::Null);
    assert_eq!(patched["due_on"], Value::Null);
    assert_eq!(patched["title"], "Extract the people service");
    assert_eq!(patched["tags"], json!(["strangler", "people"]));

    // Deleting a person unassigns their tasks.
    let reassigned: Value = m
        .http()
        .patch(m.url(&path))
        .bearer_auth(&token)
        .json(&json!({ "assignee_id": linus_id }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reassigned["assignee"]["id"], linus_id);
    m.http()
        .delete(m.url(&format!("/api/people/{linus_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let orphan: Value = m
        .http()
        .get(m.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(orphan["assignee"], Value::Null);

    let deleted = m
        .http()
        .delete(m.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = m
        .http()
        .get(m.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_error(gone, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn tasks_list_filters_by_status_assignee_and_tag() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let a = m.create_person(&token, "a@example.test", "A", None).await["id"]
        .as_i64()
        .unwrap();
    let b = m.create_person(&token, "b@example.test", "B", None).await["id"]
        .as_i64()
        .unwrap();
    for i in 0..9 {
        let status = ["todo", "in_progress", "done"][i % 3];
        let assignee = if i % 2 == 0 { a } else { b };
        let tags = if i < 4 { json!(["urgent"]) } else { json!([]) };
        let response = post_task(
            &m,
            &token,
            json!({ "title": format!("task {i}"), "status": status, "assignee_id": assignee, "tags": tags }),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let list = |query: String| {
        let m = &m;
        let token = &token;
        async move {
            let response = m
                .http()
                .get(m.url(&format!("/api/tasks{query}")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{query}");
            response.json::<Value>().await.unwrap()
        }
    };
    let titles = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(list(String::new()).await["total"], 9);
    let todo = list("?status=todo".into()).await;
    assert_eq!(titles(&todo), ["task 0", "task 3", "task 6"]);
    let a_done = list(format!("?status=done&assignee_id={a}")).await;
    assert_eq!(titles(&a_done), ["task 2", "task 8"]);
    assert!(
        a_done["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["assignee"]["display_name"] == "A")
    );
    let urgent = list("?tag=urgent&per_page=2".into()).await;
    assert_eq!(urgent["total"], 4);
    assert_eq!(titles(&urgent), ["task 0", "task 1"]);
    assert_eq!(
        urgent["links"]["next"],
        "/api/tasks?tag=urgent&page=2&per_page=2"
    );
    let bad = m
        .http()
        .get(m.url("/api/tasks?status=blocked"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let error = expect_error(bad, StatusCode::BAD_REQUEST, "invalid_query").await;
    assert!(
        error["message"].as_str().unwrap().contains("status"),
        "{error}"
    );
}

#[tokio::test]
async fn bad_task_input_names_the_field_and_writes_nothing() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let cases = [
        (json!({ "title": "" }), "title"),
        (json!({ "title": "x".repeat(201) }), "title"),
        (json!({ "title": "t", "status": "blocked" }), "status"),
        (
            json!({ "title": "t", "assignee_id": "seven" }),
            "assignee_id",
        ),
        (
            json!({ "title": "t", "assignee_id": 987654 }),
            "assignee_id",
        ),
        (json!({ "title": "t", "due_on": "next week" }), "due_on"),
        (json!({ "title": "t", "tags": ["ok", ""] }), "tags[1]"),
        (json!({ "title": "t", "tags": ["ok", 5] }), "tags[1]"),
    ];
    for (body, field) in cases {
        let response = post_task(&m, &token, body.clone()).await;
        let error = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(error["field"], field, "for {body}: {error}");
    }
    // A patch that fails validation changes nothing either.
    let task: Value = post_task(&m, &token, json!({ "title": "keep me" }))
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/tasks/{}", task["id"]);
    let response = m
        .http()
        .patch(m.url(&path))
        .bearer_auth(&token)
        .json(&json!({ "title": "changed", "assignee_id": 987654 }))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    let unchanged: Value = m
        .http()
        .get(m.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged, task);
    let list: Value = m
        .http()
        .get(m.url("/api/tasks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1);
}
