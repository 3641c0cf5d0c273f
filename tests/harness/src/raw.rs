//! Raw HTTP/1.1 at both ends of the proxy, for the attack tests: [`RawUpstream`] records the
//! exact bytes every request reached it with and can behave like the servers an attacker
//! aims at through the edge (one that normalizes paths like nginx, one that accepts h2c
//! upgrades and then speaks HTTP/2 in the tunnel); [`RawClient`] sends bytes exactly as
//! written and reads one response at a time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How a [`RawUpstream`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// `200`, body `served <target>`.
    Echo,
    /// Like nginx: the path decoded once, slashes merged, dot segments resolved, then served:
    /// `200`, body `served <that path>`.
    NormalizePaths,
    /// Accepts `Upgrade: h2c` (or, with `always`, any request) with a 101, then serves HTTP/2
    /// on the connection: every request inside is recorded ([`RawUpstream::tunneled`]) and
    /// answered `200 tunneled`.
    H2c { always: bool },
    /// Switches to `protocol` when offered (101), then echoes every byte back.
    Tunnel(&'static str),
}

/// One request as it reached the upstream.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request line and headers, exactly as received (up to the blank line).
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
}

impl Received {
    /// The request target of the request line.
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    /// The method of the request line.
    pub fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or_default()
    }

    /// Every value of header `name` (case-insensitive).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

#[derive(Default)]
struct Records {
    received: Vec<Received>,
    tunneled: Vec<String>,
}

/// A raw upstream on `127.0.0.1:0`; stops when dropped.
pub struct RawUpstream {
    pub addr: SocketAddr,
    records: Arc<Mutex<Records>>,
    server: JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start(behavior: Behavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("an address");
        let records = Arc::new(Mutex::new(Records::default()));
        let shared = records.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, behavior, shared.clone()));
            }
        });
        Self {
            addr,
            records,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The HTTP/1 requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.records.lock().unwrap().received.clone()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        *self.records.lock().unwrap() = Records::default();
    }

    /// `METHOD path subject=<x-ficus-subject>` of every HTTP/2 request received in an h2c
    /// tunnel.
    pub fn tunneled(&self) -> Vec<String> {
        self.records.lock().unwrap().tunneled.clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(mut stream: TcpStream, behavior: Behavior, records: Arc<Mutex<Records>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        records.lock().unwrap().received.push(request.clone());
        let upgrade = request.headers("upgrade").join(",").to_ascii_lowercase();
        match behavior {
            Behavior::H2c { always } if always || upgrade.contains("h2c") => {
                let switch = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\
                              upgrade: h2c\r\n\r\n";
                if stream.write_all(switch.as_bytes()).await.is_err() {
                    return;
                }
                let records = records.clone();
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let subject = request
                        .headers()
                        .get("x-ficus-subject")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    records.lock().unwrap().tunneled.push(format!(
                        "{} {} subject={subject}",
                        request.method(),
                        request.uri().path()
                    ));
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"tunneled"),
                        )))
                    }
                });
                let io = TokioIo::new(Prefixed {
                    prefix: std::mem::take(&mut buffer),
                    stream,
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
                return;
            }
            Behavior::Tunnel(protocol) if upgrade.contains(protocol) => {
                let switch = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\
                     upgrade: {protocol}\r\n\r\n"
                );
                if stream.write_all(switch.as_bytes()).await.is_err() {
                    return;
                }
                let (mut read, mut write) = stream.into_split();
                if !buffer.is_empty() && write.write_all(&buffer).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy(&mut read, &mut write).await;
                return;
            }
            _ => {}
        }
        let served = match behavior {
            Behavior::NormalizePaths => nginx_path(request.target()),
            _ => request.target().to_owned(),
        };
        let body = format!("served {served}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            if request.method() == "HEAD" {
                ""
            } else {
                &body
            }
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// How nginx serves a target: the path decoded once, slashes merged, dot segments resolved.
pub fn nginx_path(target: &str) -> String {
    let path = target.split('?').next().unwrap_or_default();
    let mut decoded = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&a), Some(&b)) if hex(a).is_some() && hex(b).is_some() => {
                decoded.push((hex(a).unwrap() * 16 + hex(b).unwrap()) as u8);
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in decoded.trim_start_matches('/').split('/') {
        trailing = true;
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out: String = segments.iter().map(|s| format!("/{s}")).collect();
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

/// Reads one request (head and body) off `stream`; `buffer` keeps what was read past it.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Received> {
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, buffer).await?;
    };
    let head = String::from_utf8_lossy(&buffer[..head_end - 4]).into_owned();
    buffer.drain(..head_end);
    let mut request = Received {
        head,
        body: Vec::new(),
        chunked: false,
    };
    let chunked = request
        .headers("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.chunked = true;
        loop {
            let line_end = loop {
                if let Some(at) = find(buffer, b"\r\n") {
                    break at;
                }
                fill(stream, buffer).await?;
            };
            let size_text = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buffer.drain(..line_end + 2);
            while buffer.len() < size + 2 {
                fill(stream, buffer).await?;
            }
            request.body.extend_from_slice(&buffer[..size]);
            buffer.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(length) = request
        .headers("content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok())
    {
        while buffer.len() < length {
            fill(stream, buffer).await?;
        }
        request.body = buffer.drain(..length).collect();
    }
    Some(request)
}

async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A stream with bytes already read from it put back in front.
struct Prefixed {
    prefix: Vec<u8>,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive), or "".
    pub fn header(&self, name: &str) -> String {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that writes bytes as given.
pub struct RawClient {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// The last request sent was a HEAD: its response has no body.
    head: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connecting"),
            buffer: Vec::new(),
            head: false,
        }
    }

    /// Sends `bytes` and reads one response (panics after 10 s).
    pub async fn exchange(&mut self, bytes: &[u8]) -> RawResponse {
        self.send(bytes).await;
        self.response()
            .await
            .expect("a response before the connection closed")
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.head = bytes.starts_with(b"HEAD ");
        self.stream.write_all(bytes).await.expect("writing");
    }

    /// Reads one response; `None` when the connection closes first.
    pub async fn response(&mut self) -> Option<RawResponse> {
        tokio::time::timeout(Duration::from_secs(10), self.read_response())
            .await
            .expect("a response within 10 s")
    }

    /// Reads whatever comes within `wait` (until the connection closes).
    pub async fn read_for(&mut self, wait: Duration) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buffer);
        let _ = tokio::time::timeout(wait, async {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = self.stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        out
    }

    /// After a 101, speaks HTTP/2 on the connection (as h2csmuggler does) and sends
    /// `GET path` with `headers`: the status, or `None` when the connection carries no HTTP/2.
    pub async fn h2_get(self, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
        let io = TokioIo::new(Prefixed {
            prefix: self.buffer,
            stream: self.stream,
        });
        let attempt = async {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .ok()?;
            tokio::spawn(connection);
            let mut request = http::Request::get(format!("http://localhost{path}"));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request.body(http_body_util::Empty::<Bytes>::new()).ok()?;
            let response = sender.send_request(request).await.ok()?;
            Some(response.status().as_u16())
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten()
    }

    async fn read_response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            fill(&mut self.stream, &mut self.buffer).await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end - 4]).into_owned();
        self.buffer.drain(..head_end);
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let mut response = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        if self.head || status == 101 || status == 204 || status == 304 {
            return Some(response);
        }
        if response
            .header("transfer-encoding")
            .to_ascii_lowercase()
            .contains("chunked")
        {
            loop {
                let line_end = loop {
                    if let Some(at) = find(&self.buffer, b"\r\n") {
                        break at;
                    }
                    fill(&mut self.stream, &mut self.buffer).await?;
                };
                let size_text = String::from_utf8_lossy(&self.buffer[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.trim(), 16).ok()?;
                self.buffer.drain(..line_end + 2);
                while self.buffer.len() < size + 2 {
                    fill(&mut self.stream, &mut self.buffer).await?;
                }
                response.body.extend_from_slice(&self.buffer[..size]);
                self.buffer.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
        } else {
            let length: usize = response.header("content-length").parse().unwrap_or(0);
            while self.buffer.len() < length {
                fill(&mut self.stream, &mut self.buffer).await?;
            }
            response.body = self.buffer.drain(..length).collect();
        }
        Some(response)
    }
}
