//! WebSocket tunnels through the proxy, and shutdown: requests in flight drain, tunnels get a
//! grace period.

use std::time::Duration;

use ficus_testkit::{TestMonolith, TestUpstream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::routes_file;

async fn next_text<S>(socket: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return text.to_string();
        }
    }
}

#[tokio::test]
async fn websockets_pass_through_to_the_side_the_route_names() {
    let monolith = TestUpstream::start("monolith").await;
    let people = TestUpstream::start("people").await;
    let routes = r#"
[[route]]
name = "ws"
path = "/ws"
serve = "people"
mode = "extracted"
"#;
    let proxy = crate::start_proxy(&routes_file(&monolith.url(), &people.url(), routes)).await;
    let url = format!("ws://{}/ws", proxy.addr);
    let (mut socket, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    for text in ["one", "two"] {
        socket.send(Message::text(text)).await.unwrap();
        assert_eq!(next_text(&mut socket).await, format!("people: {text}"));
    }
    assert_eq!(proxy.proxy.tunnels.count(), 1);
    socket.close(None).await.unwrap();
    drop(socket);
    for _ in 0..100 {
        if proxy.proxy.tunnels.count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        proxy.proxy.tunnels.count(),
        0,
        "the tunnel closed with the socket"
    );
}

#[tokio::test]
async fn the_monoliths_rooms_work_through_the_proxy() {
    let monolith = TestMonolith::start().await;
    let routes = format!(
        "[proxy]\ndefault = \"monolith\"\n[upstreams.monolith]\nurl = \"http://{}\"\n",
        monolith.addr
    );
    let proxy = crate::start_proxy(&routes).await;
    let token = monolith.admin_token().await;
    let connect = |room: &str| {
        let mut request = format!("ws://{}/api/rooms/{room}/ws", proxy.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let (mut a, _) = connect("lobby").await.expect("upgrade through the proxy");
    assert!(next_text(&mut a).await.contains("welcome"));
    let (mut b, _) = connect("lobby").await.expect("upgrade through the proxy");
    assert!(next_text(&mut b).await.contains("welcome"));
    b.send(Message::text("through ficus")).await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(&next_text(&mut a).await).unwrap();
    assert_eq!(seen["text"], "through ficus");
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight_then_stops() {
    let monolith = TestUpstream::start("monolith").await;
    let people = TestUpstream::start("people").await;
    let mut proxy = crate::start_proxy(&routes_file(&monolith.url(), &people.url(), "")).await;
    let http = reqwest::Client::new();
    let slow = tokio::spawn({
        let url = proxy.url("/slow?delay_ms=500");
        let http = http.clone();
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    // In flight: the upstream has the request (and holds it 500 ms) when the shutdown begins.
    monolith.wait_for_hits(1).await;
    let started = std::time::Instant::now();
    proxy.shutdown().await;
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        http.get(proxy.url("/after")).send().await.is_err(),
        "no new requests after shutdown"
    );
}

#[tokio::test]
async fn shutdown_closes_websockets_left_open_after_the_grace_period() {
    let monolith = TestUpstream::start("monolith").await;
    let people = TestUpstream::start("people").await;
    let mut proxy = crate::start_proxy_with(
        &routes_file(&monolith.url(), &people.url(), ""),
        ficus_proxy::ServerSettings {
            shutdown_grace: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .expect("upgrade");
    socket.send(Message::text("before")).await.unwrap();
    assert_eq!(next_text(&mut socket).await, "monolith: before");
    let started = std::time::Instant::now();
    proxy.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "shutdown took {took:?} with a grace of 300 ms"
    );
    assert!(
        took >= Duration::from_millis(250),
        "the tunnel had its grace period: {took:?}"
    );
    // The client sees its connection end.
    let ended = tokio::time::timeout(Duration::from_secs(2), socket.next())
        .await
        .expect("the socket ends");
    assert!(!matches!(ended, Some(Ok(Message::Text(_)))), "{ended:?}");
    assert_eq!(proxy.proxy.tunnels.count(), 0);
}
