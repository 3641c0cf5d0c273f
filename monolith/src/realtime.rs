//! Real-time rooms: `GET /api/rooms/{room}/ws` upgrades to a WebSocket; every text message a
//! client sends reaches the other clients in the same room.
//!
//! Each room is a `tokio::sync::broadcast` channel, made on first join and dropped with its last
//! member. A client first receives a `welcome` frame, sent once it is subscribed, so a client that
//! has seen it cannot miss a message sent afterwards.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::PathParam;

/// Largest message a client may send.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Messages a slow member may fall behind before it misses some.
const ROOM_BACKLOG: usize = 256;

#[derive(Clone)]
struct Event {
    from_connection: u64,
    frame: Utf8Bytes,
}

/// The live rooms of this instance.
#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, broadcast::Sender<Event>>>,
    next_connection: AtomicU64,
}

impl Rooms {
    fn join(&self, room: &str) -> (u64, broadcast::Sender<Event>, broadcast::Receiver<Event>) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let sender = rooms
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(ROOM_BACKLOG).0)
            .clone();
        let receiver = sender.subscribe();
        (id, sender, receiver)
    }

    fn leave(&self, room: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if rooms.get(room).is_some_and(|s| s.receiver_count() == 0) {
            rooms.remove(room);
        }
    }

    /// Rooms with at least one member.
    pub fn len(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no room has a member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn valid_room(room: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_path",
            "room: 1 to 64 characters of letters, digits, - and _",
        ))
    }
}

#[derive(Deserialize)]
struct Outgoing {
    text: String,
}

/// `GET /api/rooms/{room}/ws`
pub(crate) async fn join(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(room): PathParam<String>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    caller.require("rooms:join")?;
    valid_room(&room)?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("room", %room, person = caller.id);
            serve(state, caller, room, socket).instrument(span)
        }))
}

async fn serve(state: AppState, caller: Caller, room: String, mut socket: WebSocket) {
    let (me, sender, mut receiver) = state.rooms.join(&room);
    let from = serde_json::json!({ "id": caller.id, "display_name": caller.display_name });
    let welcome = serde_json::json!({
        "type": "welcome", "room": room, "you": from, "members": sender.receiver_count(),
    });
    if socket
        .send(Message::Text(welcome.to_string().into()))
        .await
        .is_err()
    {
        drop(receiver);
        state.rooms.leave(&room);
        return;
    }
    tracing::debug!(connection = me, "joined");
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    // A client sends either plain text or {"text": "..."}.
                    let text = serde_json::from_str::<Outgoing>(&text)
                        .map(|o| o.text)
                        .unwrap_or_else(|_| text.to_string());
                    let frame = serde_json::json!({
                        "type": "message", "room": room, "from": from, "text": text,
                        "sent_at": chrono::Utc::now(),
                    });
                    // No receivers is fine: the sender is alone in the room.
                    let _ = sender.send(Event { from_connection: me, frame: frame.to_string().into() });
                }
                Some(Ok(Message::Binary(_))) => {
                    let close = CloseFrame { code: 1003, reason: "text frames only".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {} // ping/pong are answered by the library
                Some(Err(error)) => {
                    tracing::debug!(%error, "connection broke");
                    break;
                }
            },
            event = receiver.recv() => match event {
                Ok(event) if event.from_connection == me => {}
                Ok(event) => {
                    if socket.send(Message::Text(event.frame)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "slow member missed messages");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    drop(receiver);
    state.rooms.leave(&room);
    tracing::debug!("left");
}
