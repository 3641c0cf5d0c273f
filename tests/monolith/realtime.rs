use std::time::Duration;

use ficus_testkit::TestMonolith;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(m: &TestMonolith, room: &str, token: &str) -> Socket {
    let mut request = m
        .ws_url(&format!("/api/rooms/{room}/ws"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    let welcome = next_json(&mut socket).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["room"], room);
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("an open socket")
            .expect("a well-formed frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn nothing_within(socket: &mut Socket, wait: Duration) {
    if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(wait, socket.next()).await {
        panic!("expected silence, got {text}");
    }
}

#[tokio::test]
async fn clients_in_a_room_see_each_others_messages_and_no_one_elses() {
    let m = TestMonolith::start().await;
    let admin = m.admin_token().await;
    m.create_person(&admin, "bo@example.test", "Bo", Some("bo-password"))
        .await;
    let bo = m.login("bo@example.test", "bo-password").await;

    let mut alice = connect(&m, "ops", &admin).await;
    let mut bob = connect(&m, "ops", &bo).await;
    let mut carol = connect(&m, "sales", &admin).await;

    bob.send(Message::text("hello ops")).await.unwrap();
    let seen = next_json(&mut alice).await;
    assert_eq!(seen["type"], "message");
    assert_eq!(seen["room"], "ops");
    assert_eq!(seen["text"], "hello ops");
    assert_eq!(seen["from"]["display_name"], "Bo");

    alice
        .send(Message::text(r#"{"text":"hi Bo"}"#))
        .await
        .unwrap();
    let seen = next_json(&mut bob).await;
    assert_eq!(seen["text"], "hi Bo");
    assert_eq!(seen["from"]["display_name"], "Ada Admin");

    // Other rooms hear nothing; senders do not get their own messages echoed.
    nothing_within(&mut carol, Duration::from_millis(300)).await;
    nothing_within(&mut alice, Duration::from_millis(100)).await;

    // A room disappears with its last member.
    alice.close(None).await.unwrap();
    bob.close(None).await.unwrap();
    carol.close(None).await.unwrap();
}

#[tokio::test]
async fn joining_a_room_needs_a_valid_token() {
    let m = TestMonolith::start().await;
    let request = m.ws_url("/api/rooms/ops/ws").into_client_request().unwrap();
    let error = tokio_tungstenite::connect_async(request)
        .await
        .expect_err("refused");
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    // Browsers cannot set headers on a WebSocket: the token may come as a query parameter.
    let token = m.admin_token().await;
    let url = m.ws_url(&format!("/api/rooms/ops/ws?access_token={token}"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    let bad_room = m.ws_url(&format!("/api/rooms/no%20spaces/ws?access_token={token}"));
    assert!(tokio_tungstenite::connect_async(bad_room).await.is_err());
}
