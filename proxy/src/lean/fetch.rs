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
    pub headers: Lines,
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
    let headers = Lines::of(&conn, head_len);
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

/// An answer's header lines as the shadow's job holds them: the raw head and where its fields
/// lie (this path: one copy of the head, no allocation per header), or a list already made (the
/// hyper path). Made into the parity engine's list only when more than the quick check is
/// needed (a difference, a calibration, a record).
#[derive(Debug)]
pub enum Lines {
    Raw {
        head: Bytes,
        fields: Vec<pool::Field>,
    },
    List(Vec<(String, Vec<u8>)>),
}

impl Lines {
    /// The header lines of the response head at the front of `conn.buf`, `head_len` long.
    pub(crate) fn of(conn: &pool::Conn, head_len: usize) -> Self {
        Lines::Raw {
            head: Bytes::copy_from_slice(&conn.buf[..head_len]),
            fields: conn.fields.clone(),
        }
    }

    /// Whether the headers named in `names` (lower case) have the same values here and in
    /// `other`, in the same order. The lines are compared as received, hop-by-hop ones included,
    /// so `true` also means the same values in the lists the engine compares; `false` may be a
    /// difference the engine would not see (then it is asked).
    pub fn same(&self, other: &Lines, names: &[String]) -> bool {
        let named = |lines| Named {
            lines,
            names,
            at: 0,
        };
        named(self).eq(named(other))
    }

    /// As the parity engine compares them: names in lower case, in the order received,
    /// hop-by-hop ones left out (as the client gets the answer).
    pub fn into_list(self) -> Vec<(String, Vec<u8>)> {
        let (head, fields) = match self {
            Lines::List(list) => return list,
            Lines::Raw { head, fields } => (head, fields),
        };
        fields
            .iter()
            .filter(|field| !codec::is_hop_by_hop(&head[field.name.clone()]))
            .map(|field| {
                // httparse took the name as a token: ASCII, so valid UTF-8.
                let name = String::from_utf8_lossy(&head[field.name.clone()]).to_ascii_lowercase();
                (name, head[field.value.clone()].to_vec())
            })
            .collect()
    }
}

/// The lines whose name is in `names`, each as (which name, value), in the order received.
struct Named<'a> {
    lines: &'a Lines,
    names: &'a [String],
    at: usize,
}

impl<'a> Iterator for Named<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (name, value) = match self.lines {
                Lines::Raw { head, fields } => {
                    let field = fields.get(self.at)?;
                    (&head[field.name.clone()], &head[field.value.clone()])
                }
                Lines::List(list) => {
                    let (name, value) = list.get(self.at)?;
                    (name.as_bytes(), value.as_slice())
                }
            };
            self.at += 1;
            // By length and last byte first: most lines are ruled out without a comparison.
            let named = self.names.iter().position(|known| {
                let known = known.as_bytes();
                known.len() == name.len()
                    && known.last() == name.last().map(u8::to_ascii_lowercase).as_ref()
                    && known.eq_ignore_ascii_case(name)
            });
            if let Some(which) = named {
                return Some((which, value));
            }
        }
    }
}
