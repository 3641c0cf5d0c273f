//! A broker outage under a whole service: the people chain (monolith, adapter, proxy, the
//! `ficus-people` process) on a broker of the test's own; the broker is killed: the service
//! keeps answering its routes (through the proxy, side `extracted`) with what its view holds,
//! and its `/metrics` and `/views` report the broker away (`/readyz` stays 200: it serves) and a growing lag; a person created
//! meanwhile appears once the broker is back, and the lag returns to zero.

use std::time::{Duration, Instant};

use ficus_testkit::PrivateBroker;
use serde_json::Value;

use crate::support::{PeopleChain, ServiceProcess, routes};

/// The service's `/views`: each view's readiness, lag, broker and applied position.
async fn views(people: &ServiceProcess) -> Value {
    reqwest::get(people.url("/views"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_away_the_service_serves_its_view_and_reports_its_lag() {
    let mut broker = PrivateBroker::new();
    broker.start();
    let PeopleChain {
        monolith,
        token,
        ids,
        adapter: _adapter,
        proxy,
        people,
    } = PeopleChain::start_on(
        &broker.brokers(),
        &[("ann@example.test", "Ann"), ("bob@example.test", "Bob")],
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
    proxy
        .write_routes(&routes(
            monolith.addr,
            &people.url(""),
            "http://127.0.0.1:9",
            "extracted",
        ))
        .await;
    let http = reqwest::Client::new();
    // A person through the proxy: (status, side that answered, display name).
    let read = |id: i64| {
        let request = http
            .get(proxy.url(&format!("/api/people/{id}")))
            .bearer_auth(&token);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let side = response
                .headers()
                .get("x-ficus-side")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, side, body["display_name"].clone())
        }
    };
    let lag_events = "ficus_view_lag_events{view=\"people\",partition=\"0\"}";
    let lag_seconds = "ficus_view_lag_seconds{view=\"people\"}";
    let broker_up = "ficus_view_broker_up{view=\"people\"}";
    assert_eq!(read(ids[0]).await, (200, "extracted".into(), "Ann".into()));
    assert_eq!(people.metric(broker_up).await, 1.0);
    assert_eq!(people.metric(lag_events).await, 0.0);
    assert_eq!(people.metric(lag_seconds).await, 0.0);

    // The broker goes away: the service serves its view and says how far behind it may be.
    broker.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while people.metric(lag_seconds).await < 2.0 {
        assert!(Instant::now() < deadline, "the lag did not grow");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(people.metric(broker_up).await, 0.0);
    let report = views(&people).await;
    assert_eq!(report["views"][0]["broker_up"], false, "{report}");
    assert!(
        report["views"][0]["lag_seconds"].as_f64().unwrap() >= 2.0,
        "{report}"
    );
    // Still ready: it serves what it has (a view once caught up stays so, by design).
    assert!(people.ready().await);
    assert_eq!(read(ids[0]).await, (200, "extracted".into(), "Ann".into()));
    assert_eq!(read(ids[1]).await, (200, "extracted".into(), "Bob".into()));
    let list = http
        .get(proxy.url("/api/people"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let list = list.text().await.unwrap();
    assert!(
        list.contains("\"Ann\"") && list.contains("\"Bob\""),
        "{list}"
    );

    // Written in the monolith meanwhile: not in the view until the broker is back.
    let cy = monolith
        .create_person(&token, "cy@example.test", "Cy", None)
        .await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(read(cy).await.0, 404);
    broker.start();
    let deadline = Instant::now() + Duration::from_secs(120);
    while read(cy).await != (200, "extracted".into(), "Cy".into()) {
        assert!(Instant::now() < deadline, "Cy never arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while people.metric(broker_up).await != 1.0
        || people.metric(lag_events).await != 0.0
        || people.metric(lag_seconds).await != 0.0
    {
        assert!(Instant::now() < deadline, "{}", views(&people).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(people.ready().await);
}
