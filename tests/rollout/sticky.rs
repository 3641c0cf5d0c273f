//! Canary stickiness through the real proxy: users are bucketed by their sticky key, so a
//! user in the canary at 5 % is still in it at 25 %, and a rollback from 25 % to 5 % moves
//! back exactly the users who joined at 25 % (the newest), no one else.

use std::collections::BTreeSet;
use std::path::Path;

use ficus_proxy::config::Mode;
use ficus_proxy::edit::{Flip, flip};
use ficus_testkit::{TestProxy, TestUpstream};

fn routes(monolith: &TestUpstream, people: &TestUpstream) -> String {
    format!(
        r#"
[proxy]
default = "monolith"
expose_headers = true

[upstreams.monolith]
url = "http://{}"
[upstreams.people]
url = "http://{}"

# The route the controller steps through its plan.
[[route]]
name = "people-read"
path = "/api/people/{{id}}"
serve = "people"
mode = "shadow"
sticky = "header:x-user-id"   # one user, one side
"#,
        monolith.addr, people.addr
    )
}

/// The users (of `users`) the proxy sends to the extracted side now.
async fn on_extracted(proxy: &TestProxy, users: usize) -> BTreeSet<usize> {
    let http = reqwest::Client::new();
    let mut out = BTreeSet::new();
    for user in 0..users {
        let response = http
            .get(proxy.url("/api/people/1"))
            .header("x-user-id", format!("user-{user}"))
            .send()
            .await
            .unwrap();
        let side = response.headers()["x-ficus-side"]
            .to_str()
            .unwrap()
            .to_owned();
        response.bytes().await.unwrap();
        if side == "extracted" {
            out.insert(user);
        }
    }
    out
}

/// Steps the route as the controller does: the proxy's flip and check, an atomic write.
async fn step(proxy: &TestProxy, percent: f64) {
    let text = std::fs::read_to_string(&proxy.routes_path).unwrap();
    let edited = flip(
        &text,
        "people-read",
        &Flip {
            mode: Some(Mode::Canary),
            percent: Some(percent),
            ..Flip::default()
        },
        Path::new("."),
    )
    .unwrap();
    assert!(
        edited.contains("# one user, one side"),
        "comments kept: {edited}"
    );
    proxy.write_routes(&edited).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_users_stay_as_the_percent_rises_and_the_newest_leave_first() {
    let monolith = TestUpstream::start("monolith").await;
    let people = TestUpstream::start("people").await;
    let proxy = TestProxy::start(&routes(&monolith, &people)).await;
    const USERS: usize = 1000;
    assert!(
        on_extracted(&proxy, USERS).await.is_empty(),
        "shadow: nobody on the service"
    );

    step(&proxy, 5.0).await;
    let at5 = on_extracted(&proxy, USERS).await;
    step(&proxy, 25.0).await;
    let at25 = on_extracted(&proxy, USERS).await;
    // Roughly the shares (hashing is even: see proxy/src/table.rs, buckets_spread_evenly).
    assert!((25..=80).contains(&at5.len()), "{} at 5 %", at5.len());
    assert!((180..=320).contains(&at25.len()), "{} at 25 %", at25.len());
    // Nobody in the canary at 5 % left it at 25 %.
    let left: Vec<_> = at5.difference(&at25).collect();
    assert!(
        left.is_empty(),
        "users moved back to the monolith at 25 %: {left:?}"
    );

    // Rollback 25 % → 5 %: exactly those who joined at 25 % leave; the first 5 % stay.
    step(&proxy, 5.0).await;
    let back = on_extracted(&proxy, USERS).await;
    assert_eq!(
        back, at5,
        "after the rollback the canary is the first 5 % again"
    );
    let joined_last: BTreeSet<usize> = at25.difference(&at5).copied().collect();
    let moved: BTreeSet<usize> = at25.difference(&back).copied().collect();
    assert_eq!(
        moved, joined_last,
        "the rollback moved the newest, and only them"
    );
    println!(
        "stickiness: {} users at 5 %, {} at 25 %, {} moved back by the rollback (all of them joined at 25 %)",
        at5.len(),
        at25.len(),
        moved.len()
    );
}
