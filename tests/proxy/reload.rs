//! Live reloads of the routes file: flips under load, and refused files that keep the table in
//! force.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;


use crate::{routes_file, upstreams};

const RELOAD_FAILURES: &str = "ficus_proxy_reload_failures_total";

fn route(mode: &str) -> String {
    let percent = if mode == "canary" {
        "percent = 50\nsticky = \"none\"\n"
    } else {
        ""
    };
    format!(
        "\n[[route]]\nname = \"people\"\npath = \"/api/people/*\"\nserve = \"people\"\nmode = \"{mode}\"\n{percent}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_flips_under_load_fail_no_request_and_respect_the_table_in_force() {
    let (monolith, people) = upstreams().await;
    let file = |mode: &str| routes_file(&monolith.url(), &people.url(), &route(mode));
    let proxy = Arc::new(crate::start_proxy(&file("monolith")).await);
    let mut modes: HashMap<u64, &'static str> = HashMap::from([(1, "monolith")]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..16 {
        let stop = stop.clone();
        let url = proxy.url(&format!("/api/people/{client}"));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = http.get(&url).send().await.expect("no failed request");
                assert_eq!(response.status(), 200, "no failed request");
                let version: u64 = response.headers()["x-ficus-table"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let upstream = response.headers()["x-upstream"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                seen.push((version, upstream));
            }
            seen
        }));
    }

    let cycle = ["extracted", "canary", "monolith"];
    for flip in 0..100 {
        let mode = cycle[flip % cycle.len()];
        let version = proxy.write_routes(&file(mode)).await;
        modes.insert(version, mode);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut versions = std::collections::HashSet::new();
    for client in clients {
        for (version, upstream) in client.await.expect("a client without failures") {
            total += 1;
            versions.insert(version);
            let mode = modes[&version];
            let allowed = match mode {
                "monolith" => upstream == "monolith",
                "extracted" => upstream == "people",
                _ => upstream == "monolith" || upstream == "people",
            };
            assert!(
                allowed,
                "table {version} ({mode}) was answered by {upstream}"
            );
        }
    }
    assert_eq!(proxy.version(), 101, "every flip became a table");
    assert!(total > 500, "continuous load: {total} requests");
    assert!(
        versions.len() > 50,
        "requests saw many tables: {}",
        versions.len()
    );
}

#[tokio::test]
async fn every_kind_of_bad_file_keeps_the_old_table_and_names_the_key() {
    let (monolith, people) = upstreams().await;
    let good = routes_file(&monolith.url(), &people.url(), &route("extracted"));
    let proxy = crate::start_proxy(&good).await;
    let http = reqwest::Client::new();
    let bad_files: Vec<(String, &str)> = vec![
        ("[proxy\ndefault = ".to_owned(), "not valid TOML (line 1)"),
        (String::new(), "proxy: missing section [proxy]"),
        (
            good.replace("mode = \"extracted\"", "mode = \"canary\"\npercent = 140"),
            "route \"people\": percent: 140 is not in 0..=100",
        ),
        (
            good.replace("serve = \"people\"", "serve = \"nobody\""),
            "route \"people\": serve: no upstream named \"nobody\"",
        ),
        (
            good.replace("default = \"monolith\"", "default = \"legacy\""),
            "proxy.default: no upstream named \"legacy\"",
        ),
        (
            good.replace("path = \"/api/people/*\"", "path = \"api/people\""),
            "route \"people\": path: must start with /",
        ),
        (
            good.replace("mode = \"extracted\"", "mode = \"sideways\""),
            "route \"people\": mode: unknown variant `sideways`",
        ),
        (
            good.replace(
                "mode = \"extracted\"",
                "mode = \"extracted\"\ncolour = \"red\"",
            ),
            "route \"people\": colour: unknown key",
        ),
        (
            good.replace(
                "mode = \"extracted\"",
                "mode = \"canary\"\npercent = 5\nsticky = \"session\"",
            ),
            "route \"people\": sticky:",
        ),
        (
            good.clone() + &route("monolith"),
            "route \"people\": name: used by another route too",
        ),
        (
            good.replace("url = \"http://", "url = \"ftp://"),
            "upstreams.monolith.url:",
        ),
        (
            good.replace("[upstreams.people]", "[upstream.people]"),
            "upstream: unknown section",
        ),
        (
            good.replace(
                "mode = \"extracted\"",
                "mode = \"shadow\"\nshadow = { max_concurrent = 0 }",
            ),
            "route \"people\": shadow.max_concurrent: must be more than 0",
        ),
        (
            good.replace("connect_timeout_ms = 500", "connect_timeout_ms = \"fast\""),
            "upstreams.people.connect_timeout_ms: invalid type",
        ),
    ];
    let bad_count = bad_files.len();
    for (text, expected) in bad_files {
        // The watcher has seen this file only once it counted a refusal naming the key; only
        // then does "the version did not change" mean anything.
        let failures = proxy.metric(RELOAD_FAILURES).await;
        std::fs::write(&proxy.routes_path, &text).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let error = proxy.loader.last_attempt().error.unwrap_or_default();
            if error.contains(expected) && proxy.metric(RELOAD_FAILURES).await > failures {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected a refusal naming `{expected}`, last error: {error}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(proxy.version(), 1, "the old table stays after: {expected}");
        let response = http.get(proxy.url("/api/people/1")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-upstream"],
            "people",
            "still routed by the old table"
        );
    }
    // The admin API reports the refusal; metrics count it.
    let table: serde_json::Value = http
        .get(proxy.admin_url("/routes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        table["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("upstreams.people")
    );
    let failures = proxy.metric(RELOAD_FAILURES).await;
    assert!(
        failures >= bad_count as f64,
        "{bad_count} refused files counted, got {failures}"
    );

    // A removed file keeps the table too (once the watcher has tried to read it and failed);
    // a good file is taken again.
    std::fs::remove_file(&proxy.routes_path).unwrap();
    proxy.wait_for_metric_above(RELOAD_FAILURES, failures).await;
    let error = proxy.loader.last_attempt().error.unwrap_or_default();
    assert!(error.contains("reading"), "a read error: {error}");
    assert_eq!(proxy.version(), 1);
    let response = http.get(proxy.url("/api/people/1")).send().await.unwrap();
    assert_eq!(
        response.headers()["x-upstream"],
        "people",
        "still routed by the old table"
    );
    let version = proxy
        .write_routes(&good.replace("mode = \"extracted\"", "mode = \"monolith\""))
        .await;
    assert_eq!(version, 2);
    let response = http.get(proxy.url("/api/people/1")).send().await.unwrap();
    assert_eq!(response.headers()["x-upstream"], "monolith");
}
