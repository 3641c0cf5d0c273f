//! Shadow mode against the real people service: the monolith answers the client, the proxy
//! copies every read to `ficus-people` (which verifies the identity the proxy forwards) and
//! compares with `ficus-parity`: all compared, none mismatched. The same routes record their
//! requests into a corpus, which `ficus parity` (the CI replay) then replays green against the
//! monolith and the service.

use std::time::{Duration, Instant};

use ficus_testkit::{TestProxy, unique_suffix};
use serde_json::Value;

use crate::support::{PeopleChain, routes};

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");

/// The chain's routes with the people routes in `mode`, shadowed and recorded into `corpus`.
fn shadow_routes(monolith: std::net::SocketAddr, people: &str, corpus: &str) -> String {
    let base = routes(monolith, people, "http://127.0.0.1:9", "extracted");
    let mut text = String::new();
    for block in base.split("[[route]]") {
        if text.is_empty() {
            text.push_str(block);
            continue;
        }
        text.push_str("[[route]]");
        if block.contains("name = \"people-") {
            text.push_str(&block.replace("mode = \"extracted\"", "mode = \"shadow\""));
            text.push_str(&format!(
                "record = {{ file = \"{corpus}\" }}\n[route.parity]\ncalibrate_percent = 50\n\n"
            ));
        } else {
            text.push_str(block);
        }
    }
    text
}

/// The admin API's `/shadow` entry of `route`.
async fn status(proxy: &TestProxy, route: &str) -> Value {
    let all: Value = reqwest::get(proxy.admin_url("/shadow"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .cloned()
        .unwrap_or_else(|| panic!("{route} in {all:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_people_service_shadowed_matches_and_its_recorded_corpus_replays_green() {
    let PeopleChain {
        monolith,
        token,
        ids,
        adapter: _adapter,
        proxy,
        people,
    } = PeopleChain::start(
        &[
            ("ann@example.test", "Ann"),
            ("bob@example.test", "Bob"),
            ("cy@example.test", "Cy"),
        ],
        |monolith| {
            routes(
                monolith,
                "http://127.0.0.1:9",
                "http://127.0.0.1:9",
                "monolith",
            )
        },
    )
    .await;
    let dir = std::env::temp_dir().join(format!("ficus-shadow-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let extracted = routes(
        monolith.addr,
        &people.url(""),
        "http://127.0.0.1:9",
        "extracted",
    );
    proxy.write_routes(&extracted).await;
    // Caught up: the list answers alike through the proxy (extracted) and from the monolith.
    let http = reqwest::Client::new();
    let get = |url: String| {
        let request = http.get(url).bearer_auth(&token);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(monolith.url("/api/people?per_page=100")).await
        != get(proxy.url("/api/people?per_page=100")).await
    {
        assert!(Instant::now() < deadline, "the service did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Shadow mode: the monolith answers, the service gets a copy of every read.
    let corpus = dir.join("corpus.jsonl");
    proxy
        .write_routes(&shadow_routes(
            monolith.addr,
            &people.url(""),
            &corpus.display().to_string(),
        ))
        .await;
    let targets = crate::support::people_reads(&ids);
    for target in &targets {
        let response = http
            .get(proxy.url(target))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-ficus-side"], "monolith", "{target}");
        response.bytes().await.unwrap();
    }
    let reads = ids.len() as u64 + 2;
    let lists = targets.len() as u64 - reads;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (read, list) = loop {
        let read = status(&proxy, "people-read").await;
        let list = status(&proxy, "people-list").await;
        let done = read["compared"].as_u64().unwrap() == reads
            && list["compared"].as_u64().unwrap() == lists
            && read["record"]["recorded"].as_u64().unwrap() == reads
            && list["record"]["recorded"].as_u64().unwrap() == lists;
        if done || Instant::now() > deadline {
            break (read, list);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (now, count) in [(&read, reads), (&list, lists)] {
        assert_eq!(now["compared"], count, "{now:#}");
        assert_eq!(now["matched"], count, "{now:#}");
        assert_eq!(now["mismatched"], 0, "{now:#}");
        assert_eq!(now["record"]["recorded"], count, "{now:#}");
    }
    let calibrated =
        read["calibrations"].as_u64().unwrap() + list["calibrations"].as_u64().unwrap();
    println!(
        "shadowed {} reads: all matched; {calibrated} calibrations; noise learned: {} / {}",
        reads + lists,
        read["noise"],
        list["noise"]
    );

    // The recorded corpus, replayed by `ficus parity` against the monolith and the service
    // (behind the proxy again, which forwards the identity the service verifies): green.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&corpus).unwrap();
    assert_eq!(text.lines().count() as u64, reads + lists, "{text}");
    assert!(!text.contains(&token), "the token was recorded: {text}");
    assert!(
        !text.contains("x-ficus-identity"),
        "the identity was recorded: {text}"
    );
    proxy.write_routes(&extracted).await;
    let replay_routes = dir.join("replay.toml");
    std::fs::write(
        &replay_routes,
        format!(
            "[proxy]\ndefault = \"monolith\"\n[upstreams.monolith]\nurl = \"http://{}\"\n\
             [upstreams.people]\nurl = \"{}\"\n\
             [[route]]\nname = \"people-list\"\npath = \"/api/people\"\nmethods = [\"GET\"]\n\
             serve = \"people\"\nmode = \"extracted\"\n\
             [[route]]\nname = \"people-read\"\npath = \"/api/people/{{id}}\"\nmethods = [\"GET\"]\n\
             serve = \"people\"\nmode = \"extracted\"\n",
            monolith.addr,
            proxy.url("")
        ),
    )
    .unwrap();
    let output = tokio::process::Command::new(FICUS)
        .arg("parity")
        .arg("--corpus")
        .arg(&corpus)
        .arg("--routes")
        .arg(&replay_routes)
        .arg("--header")
        .arg(format!("authorization: Bearer {token}"))
        .arg("--junit")
        .arg(dir.join("junit.xml"))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("running ficus parity");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!(
        "ficus parity:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "people-read: {reads} compared, {reads} matched, 0 mismatched"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "people-list: {lists} compared, {lists} matched, 0 mismatched"
        )),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
