//! The lean path's HTTP/1.1 framing (RFC 9112), between the bytes read and the bytes written:
//! how a request head says its body is framed (or that the lean path leaves it to hyper), the
//! chunked decoder that re-encodes as it goes, which response headers are hop-by-hop, and the
//! cached `Date`.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// What a request's header section tells, read in one pass.
pub struct RequestHeads {
    pub framing: Framing,
    /// The client asked to close after this exchange.
    pub close: bool,
}

/// Reads a request's framing, or `None` when anything about it is ambiguous or asks for
/// machinery the lean path leaves to hyper: a `Transfer-Encoding` other than exactly one
/// `chunked`, `Content-Length` beside it, more than one `Content-Length` or one that is not
/// digits, an `Expect`, an upgrade offer. hyper then reads the same bytes and refuses or
/// re-frames them as it always did.
pub fn request_framing(headers: &[httparse::Header<'_>]) -> Option<RequestHeads> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    for header in headers {
        let name = header.name.as_bytes();
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if length.is_some() {
                    return None;
                }
                length = Some(digits(header.value)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if chunked || !trim(header.value).eq_ignore_ascii_case(b"chunked") {
                    return None;
                }
                chunked = true;
            }
            6 if name.eq_ignore_ascii_case(b"expect") => return None,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return None,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in header.value.split(|b| *b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    }
                    close |= token.eq_ignore_ascii_case(b"close");
                }
            }
            _ => {}
        }
    }
    let framing = match (length, chunked) {
        (Some(_), true) => return None,
        (Some(0), false) | (None, false) => Framing::Empty,
        (Some(n), false) => Framing::Length(n),
        (None, true) => Framing::Chunked,
    };
    Some(RequestHeads { framing, close })
}

/// A response's framing (RFC 9112 §6.3): no body for a HEAD, 1xx, 204 and 304; chunked wins
/// over a length; otherwise the length, or until close. `None`: malformed (a length that is
/// not digits or two that differ, a transfer coding other than a final chunked).
pub fn response_framing(
    status: u16,
    head_request: bool,
    headers: &[httparse::Header<'_>],
) -> Option<Framing> {
    let mut length: Option<u64> = None;
    let mut encoded = false;
    let mut chunked = false;
    for header in headers {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = digits(header.value)?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoded = true;
            let last = header.value.rsplit(|b| *b == b',').next().map(trim);
            chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        }
    }
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some(Framing::Empty);
    }
    Some(match (encoded, chunked, length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) => Framing::Close,
        (false, _, Some(0)) => Framing::Empty,
        (false, _, Some(n)) => Framing::Length(n),
        (false, _, None) => Framing::Close,
    })
}

fn digits(value: &[u8]) -> Option<u64> {
    let value = trim(value);
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

pub fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Response headers that end at this hop (RFC 9110 §7.6.1), as the hyper path strips them,
/// and those the proxy replaces (`x-request-id`) or frames itself (`content-length`,
/// `transfer-encoding`: written by the caller from the framing).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // By length first: most names a response carries are ruled out without a comparison.
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        14 => is(b"content-length") || is(b"http2-settings"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// Why a chunked body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body decoded as it arrives and written again as chunks (extensions and trailers
/// dropped, as the hyper path does); the data never waits for a whole chunk.
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    trailer_bytes: usize,
}

/// Trailers are read and dropped; past this they are an attack, not metadata.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            trailer_bytes: 0,
        }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what it can of `input`, appending the data re-encoded as chunks to `out` (and
    /// the last chunk once the body ended). Returns the data bytes decoded.
    pub fn decode(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Result<u64, ChunkError> {
        self.decode_with(input, out, |_| {})
    }

    /// As [`Chunked::decode`], each piece of data also given to `also` (a shadow's tee).
    pub fn decode_with(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
        also: impl FnMut(&[u8]),
    ) -> Result<u64, ChunkError> {
        let mut also = also;
        let ended = self.is_done();
        let data = self.each(input, |piece| {
            chunk(out, piece);
            also(piece);
        })?;
        if !ended && self.is_done() {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(data)
    }

    /// Consumes what it can of `input`, appending only the data to `out` (a body read whole).
    pub fn decode_data(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> Result<u64, ChunkError> {
        self.each(input, |piece| out.extend_from_slice(piece))
    }

    /// Consumes what it can of `input`, each piece of data given to `data` as it is found.
    fn each(
        &mut self,
        input: &mut BytesMut,
        mut data_of: impl FnMut(&[u8]),
    ) -> Result<u64, ChunkError> {
        let mut data = 0u64;
        while !input.is_empty() && self.state != State::Done {
            if self.state == State::Data {
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                data_of(&input[..n]);
                input.advance(n);
                self.size -= n as u64;
                data += n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[0];
            input.advance(1);
            self.state = match (self.state, byte) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    self.digits += 1;
                    if self.digits > 15 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    let digit = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size * 16 + u64::from(digit);
                    State::Size
                }
                (State::Size, _) if self.digits == 0 => return Err(ChunkError("no chunk size")),
                (State::Size | State::SizeLws, b' ' | b'\t') => State::SizeLws,
                (State::Size | State::SizeLws, b';') => State::Extension,
                (State::Size | State::SizeLws | State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(ChunkError("bare LF in an extension")),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') => {
                    self.digits = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.size = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::TrailerLine, b'\n') => {
                    return Err(ChunkError("bare LF in a trailer"));
                }
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, _) => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(ChunkError("trailers too large"));
                    }
                    State::TrailerLine
                }
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(ChunkError("unexpected byte")),
            };
        }
        Ok(data)
    }
}

/// Appends `data` as one chunk (nothing for no data).
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Appends `date: <IMF-fixdate>\r\n`, formatted at most once a second per thread.
pub fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&cached.1);
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn hop_by_hop_names_in_any_case_and_no_others() {
        for name in [
            "Connection",
            "KEEP-ALIVE",
            "proxy-connection",
            "TE",
            "Trailer",
            "transfer-encoding",
            "Proxy-Authenticate",
            "proxy-authorization",
            "HTTP2-Settings",
            "upgrade",
            "Content-Length",
        ] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in [
            "content-type",
            "server",
            "date",
            "x-te",
            "tee",
            "trailers",
            "connections",
            "x-request-id",
            "",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn ambiguous_request_framing_is_left_to_hyper() {
        let framing = |h: &[httparse::Header<'_>]| request_framing(h).map(|r| r.framing);
        assert_eq!(framing(&[]), Some(Framing::Empty));
        assert_eq!(
            framing(&[header("Content-Length", "11")]),
            Some(Framing::Length(11))
        );
        assert_eq!(
            framing(&[header("transfer-encoding", " Chunked")]),
            Some(Framing::Chunked)
        );
        for ambiguous in [
            &[
                header("content-length", "1"),
                header("transfer-encoding", "chunked"),
            ][..],
            &[header("content-length", "1"), header("content-length", "1")],
            &[header("content-length", "+1")],
            &[header("content-length", "1, 1")],
            &[header("transfer-encoding", "gzip, chunked")],
            &[header("transfer-encoding", "chunked, identity")],
            &[header("transfer-encoding", "xchunked")],
            &[
                header("transfer-encoding", "chunked"),
                header("transfer-encoding", "chunked"),
            ],
            &[header("expect", "100-continue")],
            &[
                header("connection", "keep-alive, Upgrade"),
                header("upgrade", "websocket"),
            ],
        ] {
            assert_eq!(framing(ambiguous), None, "{ambiguous:?}");
        }
        assert!(
            request_framing(&[header("Connection", "close")])
                .unwrap()
                .close
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let cl = [header("content-length", "5")];
        assert_eq!(response_framing(200, false, &cl), Some(Framing::Length(5)));
        assert_eq!(response_framing(200, true, &cl), Some(Framing::Empty));
        assert_eq!(response_framing(304, false, &cl), Some(Framing::Empty));
        assert_eq!(response_framing(200, false, &[]), Some(Framing::Close));
        let both = [
            header("content-length", "5"),
            header("transfer-encoding", "chunked"),
        ];
        assert_eq!(response_framing(200, false, &both), Some(Framing::Chunked));
        let differ = [header("content-length", "5"), header("content-length", "6")];
        assert_eq!(response_framing(200, false, &differ), None);
    }

    #[test]
    fn chunks_are_decoded_across_reads_and_written_again() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for split in 1..wire.len() {
            let mut decoder = Chunked::default();
            let mut out = Vec::new();
            let mut data = 0;
            let mut rest = BytesMut::from(&wire[..split]);
            data += decoder.decode(&mut rest, &mut out).unwrap();
            assert!(rest.is_empty() || decoder.is_done());
            rest.extend_from_slice(&wire[split..]);
            data += decoder.decode(&mut rest, &mut out).unwrap();
            assert!(decoder.is_done(), "{split}");
            assert_eq!(&rest[..], b"NEXT", "{split}");
            assert_eq!(data, 11);
            let mut again = Chunked::default();
            let mut plain = Vec::new();
            again
                .decode(&mut BytesMut::from(&out[..]), &mut plain)
                .unwrap();
            assert!(again.is_done());
        }
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloXX",
            b"10000000000000000\r\n",
        ] {
            let error = Chunked::default().decode(&mut BytesMut::from(bad), &mut Vec::new());
            assert!(error.is_err(), "{bad:?}");
        }
    }
}
