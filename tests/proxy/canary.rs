//! Canary routing end to end: the share of users on the extracted side, stickiness by header,
//! cookie and client address, and what raising the percent moves.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ficus_testkit::TestProxy;
use futures_util::StreamExt;

use crate::{routes_file, upstreams};

fn canary(percent: u32, sticky: &str) -> String {
    format!(
        r#"
[[route]]
name = "people-read"
path = "/api/people/{{id}}"
methods = ["GET"]
serve = "people"
mode = "canary"
percent = {percent}
sticky = "{sticky}"
"#
    )
}

/// The side each user lands on, one request per user, 32 at a time.
async fn sides(
    proxy: &TestProxy,
    http: &reqwest::Client,
    users: &[String],
) -> HashMap<String, String> {
    futures_util::stream::iter(users.iter().cloned())
        .map(|user| {
            let http = http.clone();
            let url = proxy.url("/api/people/1");
            async move {
                let response = http
                    .get(url)
                    .header("x-user-id", &user)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let upstream = response.headers()["x-upstream"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                (user, upstream)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

#[tokio::test]
async fn a_sticky_canary_keeps_users_and_raising_the_percent_only_moves_monolith_users() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&routes_file(
        &monolith.url(),
        &people.url(),
        &canary(25, "header:x-user-id"),
    ))
    .await;
    let http = reqwest::Client::new();
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();

    let first = sides(&proxy, &http, &users).await;
    let share = first.values().filter(|s| *s == "people").count() as f64 / users.len() as f64;
    assert!(
        (0.23..=0.27).contains(&share),
        "25% canary, measured {:.2}%",
        share * 100.0
    );

    // Same key, same side: another 10k requests.
    let again = sides(&proxy, &http, &users).await;
    assert_eq!(first, again, "every user stayed on their side");

    // 25% -> 50%: users on the extracted side stay; only monolith users move.
    proxy
        .write_routes(&routes_file(
            &monolith.url(),
            &people.url(),
            &canary(50, "header:x-user-id"),
        ))
        .await;
    let raised = sides(&proxy, &http, &users).await;
    let mut moved = 0;
    for user in &users {
        match (first[user].as_str(), raised[user].as_str()) {
            ("people", "monolith") => panic!("{user} moved back to the monolith"),
            ("monolith", "people") => moved += 1,
            _ => {}
        }
    }
    let share = raised.values().filter(|s| *s == "people").count() as f64 / users.len() as f64;
    assert!(
        (0.48..=0.52).contains(&share),
        "50% canary, measured {:.2}%",
        share * 100.0
    );
    assert!(moved > 2000, "about a quarter of users moved, got {moved}");

    // A request without its sticky key cannot be kept on one side: the monolith takes it.
    for _ in 0..50 {
        let response = http.get(proxy.url("/api/people/1")).send().await.unwrap();
        assert_eq!(response.headers()["x-upstream"], "monolith");
    }
}

#[tokio::test]
async fn cookie_stickiness_and_absolute_percents() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&routes_file(
        &monolith.url(),
        &people.url(),
        &canary(50, "cookie:session"),
    ))
    .await;
    let http = reqwest::Client::new();
    let mut seen = HashMap::new();
    for round in 0..3 {
        for i in 0..200 {
            let response = http
                .get(proxy.url("/api/people/9"))
                .header("cookie", format!("theme=dark; session=s{i}; other=1"))
                .send()
                .await
                .unwrap();
            let side = response.headers()["x-upstream"]
                .to_str()
                .unwrap()
                .to_owned();
            if round == 0 {
                seen.insert(i, side);
            } else {
                assert_eq!(seen[&i], side, "session s{i} switched sides");
            }
        }
    }
    let extracted = seen.values().filter(|s| *s == "people").count();
    assert!(
        (70..=130).contains(&extracted),
        "about half of 200: {extracted}"
    );

    // 0% and 100% are absolute.
    for (percent, expected) in [(0, "monolith"), (100, "people")] {
        proxy
            .write_routes(&routes_file(
                &monolith.url(),
                &people.url(),
                &canary(percent, "header:x-user-id"),
            ))
            .await;
        for i in 0..200 {
            let response = http
                .get(proxy.url("/api/people/1"))
                .header("x-user-id", format!("u{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["x-upstream"], expected, "{percent}%");
        }
    }
}

/// A client whose connections leave from `ip` (Linux routes all of 127.0.0.0/8 to loopback, so
/// every such address reaches the proxy on 127.0.0.1 as a distinct client).
fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .expect("a client")
}

/// The side each client address lands on: `rounds` requests per address, each on a new
/// connection; panics if an address switches sides between its requests.
async fn sides_by_address(
    proxy: &TestProxy,
    addresses: &[IpAddr],
    rounds: usize,
) -> HashMap<IpAddr, String> {
    futures_util::stream::iter(addresses.iter().copied())
        .map(|ip| {
            let url = proxy.url("/api/people/1");
            async move {
                let mut seen: Option<String> = None;
                for _ in 0..rounds {
                    // A fresh client per request: a new connection (and source port) each time.
                    let response = client_from(ip).get(&url).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    let upstream = response.headers()["x-upstream"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    if let Some(first) = &seen {
                        assert_eq!(first, &upstream, "{ip} switched sides between requests");
                    }
                    seen = Some(upstream);
                }
                (ip, seen.expect("at least one round"))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

fn extracted_share(sides: &HashMap<IpAddr, String>) -> f64 {
    sides.values().filter(|s| *s == "people").count() as f64 / sides.len() as f64
}

#[tokio::test]
async fn address_stickiness_over_many_client_addresses() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&routes_file(
        &monolith.url(),
        &people.url(),
        &canary(25, "ip"),
    ))
    .await;
    // 2,000 distinct client addresses, 127.0.1.0 to 127.0.8.207.
    let addresses: Vec<IpAddr> = (256..2256u32)
        .map(|n| IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n)))
        .collect();

    // Each address keeps its side across requests and connections; a quarter are canaried.
    let first = sides_by_address(&proxy, &addresses, 3).await;
    let share = extracted_share(&first);
    assert!(
        (0.22..=0.28).contains(&share),
        "25% canary by address, measured {:.2}%",
        share * 100.0
    );

    // 25% -> 50%: addresses on the extracted side stay there; only monolith users move.
    proxy
        .write_routes(&routes_file(
            &monolith.url(),
            &people.url(),
            &canary(50, "ip"),
        ))
        .await;
    let raised = sides_by_address(&proxy, &addresses, 2).await;
    let share = extracted_share(&raised);
    assert!(
        (0.47..=0.53).contains(&share),
        "50% canary by address, measured {:.2}%",
        share * 100.0
    );
    let mut moved = 0;
    for ip in &addresses {
        match (first[ip].as_str(), raised[ip].as_str()) {
            ("people", "monolith") => panic!("{ip} moved back to the monolith"),
            ("monolith", "people") => moved += 1,
            _ => {}
        }
    }
    // A quarter of all addresses (a third of those on the monolith) moved.
    assert!(
        (400..=600).contains(&moved),
        "about 500 of 2,000 addresses moved, got {moved}"
    );
}
