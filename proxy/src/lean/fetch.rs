//! One whole exchange on the lean pool, for the shadow's copies ([`crate::shadow`], beside
//! phase 4, on both HTTP/1 paths): the request written in one go, the answer read whole within
//! a bound and handed over as the parity engine compares it. Nothing streams: a copy's answer
//! is compared, never passed on.

use bytes::{Buf, Bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::codec::{self, Framing};
use super::{Answer, HeadError, pool, read_response_head};
use crate::table::Side;
use crate::upstream::Upstream;

/// An answer read whole.
pub struct Fetched {
    pub status: u16,
    /// Names in lower case, in the order received; hop-by-hop headers left out.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

/// Why there is no whole answer.
#[derive(Debug)]
pub enum FetchError {
    /// The body passed the bound.
    TooLarge,
    /// No connection, a broken exchange, or an answer that is not HTTP/1.
    Failed(String),
}

/// `request` (a whole HTTP/1.1 request: head and body) to `upstream`, its answer read whole
/// within `max` body bytes. A pooled connection the upstream closed meanwhile is replaced
/// once (the request is in hand: sending it again is the same request).
pub async fn fetch(
    upstream: &Upstream,
    side: Side,
    request: &[u8],
    head_request: bool,
    max: u64,
) -> Result<Fetched, FetchError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut conn = upstream
            .lean
            .get(&upstream.authority, upstream.connect_timeout, side)
            .await
            .map_err(|error| FetchError::Failed(error.chain().to_string()))?;
        let reused = conn.reused();
        let answer = match conn.stream.write_all(request).await {
            Ok(()) => read_response_head(conn, head_request).await,
            Err(error) => Err(HeadError::Closed(error)),
        };
        match answer {
            Ok(answer) => return read_whole(upstream, answer, max).await,
            Err(HeadError::Closed(_)) if reused && tries == 1 => {}
            Err(HeadError::Closed(error)) => {
                return Err(FetchError::Failed(format!(
                    "the {} broke off the exchange: {error}",
                    side.noun()
                )));
            }
            Err(HeadError::Malformed(what)) => {
                return Err(FetchError::Failed(format!("the {}: {what}", side.noun())));
            }
        }
    }
}

/// The body after the head of `answer`, whole; the connection back to the pool when the
/// upstream keeps it and nothing is left over.
async fn read_whole(upstream: &Upstream, answer: Answer, max: u64) -> Result<Fetched, FetchError> {
    let Answer {
        mut conn,
        head_len,
        status,
        framing,
        keep_alive,
        ..
    } = answer;
    let headers = header_list(&conn);
    conn.buf.advance(head_len);
    let mut body = Vec::new();
    let complete = match framing {
        Framing::Empty => true,
        Framing::Length(n) if n > max => return Err(FetchError::TooLarge),
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            body.reserve(n);
            loop {
                let take = (n - body.len()).min(conn.buf.len());
                body.extend_from_slice(&conn.buf[..take]);
                conn.buf.advance(take);
                if body.len() == n {
                    break true;
                }
                read_more(&mut conn).await?;
            }
        }
        Framing::Chunked => {
            let mut decoder = codec::Chunked::default();
            loop {
                decoder
                    .decode_data(&mut conn.buf, &mut body)
                    .map_err(|error| FetchError::Failed(error.0.to_owned()))?;
                if body.len() as u64 > max {
                    return Err(FetchError::TooLarge);
                }
                if decoder.is_done() {
                    break true;
                }
                read_more(&mut conn).await?;
            }
        }
        Framing::Close => loop {
            body.extend_from_slice(&conn.buf);
            conn.buf.clear();
            if body.len() as u64 > max {
                return Err(FetchError::TooLarge);
            }
            conn.buf.reserve(pool::BUFFER_BYTES);
            match conn.stream.read_buf(&mut conn.buf).await {
                Ok(0) => break false,
                Ok(_) => {}
                Err(error) => return Err(FetchError::Failed(error.to_string())),
            }
        },
    };
    if complete && keep_alive {
        upstream.lean.put(conn);
    }
    Ok(Fetched {
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// More of the body into the (consumed) buffer; the upstream closing first breaks it off.
async fn read_more(conn: &mut pool::Conn) -> Result<(), FetchError> {
    conn.buf.reserve(pool::BUFFER_BYTES);
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) => Err(FetchError::Failed("the answer's body broke off".to_owned())),
        Ok(_) => Ok(()),
        Err(error) => Err(FetchError::Failed(error.to_string())),
    }
}

/// The header lines of the response head at the front of `conn.buf`, as compared: names in
/// lower case, hop-by-hop ones left out (as the client gets the answer).
pub(crate) fn header_list(conn: &pool::Conn) -> Vec<(String, Vec<u8>)> {
    let buf = &conn.buf;
    let mut list = Vec::with_capacity(conn.fields.len());
    list.extend(
        conn.fields
            .iter()
            .filter(|field| !codec::is_hop_by_hop(&buf[field.name.clone()]))
            .map(|field| {
                // httparse took the name as a token: ASCII, so valid UTF-8.
                let mut name = buf[field.name.clone()].to_vec();
                name.make_ascii_lowercase();
                let name = String::from_utf8(name)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                (name, buf[field.value.clone()].to_vec())
            }),
    );
    list
}
