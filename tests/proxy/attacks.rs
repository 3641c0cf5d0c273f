//! The edge under attack (issue 10): each class of attack sent as raw bytes through the real
//! proxy to an upstream that would be fooled by it (one that records the bytes it receives,
//! one that normalizes paths like nginx, one that accepts h2c upgrades and speaks HTTP/2 in
//! the tunnel), asserting what the upstream received and what the client got. Every class is
//! a table of variants, not one request.

use std::time::Duration;

use ficus_testkit::TestProxy;
use ficus_testkit::raw::{Behavior, RawClient, RawResponse, RawUpstream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "attack-tests-secret-of-at-least-32-bytes";

/// A routes file with `[auth]` (HS256, `default = "deny"`) over one upstream, routes of
/// every policy, and the edge's opt-ins on routes of their own.
fn routes(upstream: &str) -> String {
    let dir =
        std::env::temp_dir().join(format!("ficus-attacks-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    format!(
        r#"
[proxy]
default = "upstream"
expose_headers = true

[auth]
issuer = "https://idp.example"
audience = ["ficus"]
algorithms = ["HS256"]
hs256_secret_file = "{secret}"
cookie = "session"
default = "deny"

[upstreams.upstream]
url = "{upstream}"

[[route]]
name = "public"
path = "/public/*"
auth = {{ public = true }}

[[route]]
name = "admin"
path = "/admin/*"
auth = {{ deny = true }}

[[route]]
name = "internal-host"
path = "/public/*"
headers = {{ host = "admin.internal" }}
auth = {{ deny = true }}

[[route]]
name = "getonly"
path = "/getonly/*"
methods = ["GET"]
auth = {{ public = true }}

[[route]]
name = "purge"
path = "/cache/*"
methods = ["PURGE"]
auth = {{ public = true }}

[[route]]
name = "files"
path = "/files/*"
allow_encoded_slashes = true
auth = {{ public = true }}

[[route]]
name = "forms"
path = "/forms/*"
allow_method_override = true
auth = {{ public = true }}

[[route]]
name = "feed"
path = "/feed"
upgrades = ["x-feed"]
auth = {{ public = true }}

[[route]]
name = "me"
path = "/me"
auth = {{}}
"#,
        secret = secret.display()
    )
}

async fn setup(behavior: Behavior) -> (RawUpstream, TestProxy) {
    let upstream = RawUpstream::start(behavior).await;
    let proxy = crate::start_proxy(&routes(&upstream.url())).await;
    (upstream, proxy)
}

/// Sends one raw request on a fresh connection.
async fn send(proxy: &TestProxy, request: &str) -> RawResponse {
    RawClient::connect(proxy.addr)
        .await
        .exchange(request.as_bytes())
        .await
}

/// `GET <target>` with a Host and `extra` header lines.
fn get(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nhost: shop.example\r\n{extra}connection: close\r\n\r\n")
}

/// What the edge does with one variant of an attack.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Passed on: the route, and the target the upstream received.
    Routed(&'static str, &'static str),
    /// Refused by ficus with this status; the upstream received nothing.
    Refused(u16),
}

/// Runs a table of variants, each on its own upstream record: returns the failures.
async fn run_table(
    upstream: &RawUpstream,
    proxy: &TestProxy,
    table: &[(String, Expect)],
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (request, expect) in table {
        upstream.clear();
        let response = send(proxy, request).await;
        let received = upstream.received();
        let first_line = request.lines().next().unwrap_or_default();
        match *expect {
            Expect::Routed(route, target) => {
                let got_route = response.header("x-ficus-route");
                let got_target = received.first().map(|r| r.target().to_owned());
                if response.status != 200
                    || got_route != route
                    || got_target.as_deref() != Some(target)
                    || received.len() != 1
                {
                    wrong.push(format!(
                        "{first_line}: expected route {route} forwarding {target}, got {} on \
                         route {got_route:?}, upstream received {got_target:?} ({} requests): {}",
                        response.status,
                        received.len(),
                        response.text()
                    ));
                }
            }
            Expect::Refused(status) => {
                if response.status != status || !received.is_empty() {
                    wrong.push(format!(
                        "{first_line}: expected {status} and nothing upstream, got {} ({}) and \
                         upstream received {:?}",
                        response.status,
                        response.text(),
                        received.iter().map(|r| r.target()).collect::<Vec<_>>()
                    ));
                }
            }
        }
    }
    wrong
}

/// Class 2: one canonical path decides and is forwarded. The upstream normalizes like nginx:
/// whatever it serves must be the path the route was chosen on.
#[tokio::test]
async fn path_tricks_are_routed_on_the_path_the_upstream_serves() {
    use Expect::{Refused, Routed};
    let (upstream, proxy) = setup(Behavior::NormalizePaths).await;
    let variants: Vec<(&str, Expect)> = vec![
        // Dot segments, plain and encoded: the admin route decides (deny: 403).
        ("/public/../admin/x", Refused(403)),
        ("/public/%2e%2e/admin/x", Refused(403)),
        ("/public/%2E%2E/admin/x", Refused(403)),
        ("/public/.%2e/admin/x", Refused(403)),
        ("/public/%2e./admin/x", Refused(403)),
        ("/public/./../admin/x", Refused(403)),
        ("/public/a/../../admin/x", Refused(403)),
        // Empty segments merge (nginx's merge_slashes).
        ("//admin/x", Refused(403)),
        ("/public//../admin/x", Refused(403)),
        ("///admin///x", Refused(403)),
        // Encoded unreserved characters are decoded before routing.
        ("/%61dmin/x", Refused(403)),
        ("/%41dmin/x", Refused(403)),
        ("/public/%2E%2e/%61%64%6d%69%6e/x", Refused(403)),
        // Meaning depends on the upstream: 400 unless the route opts in.
        ("/public/..%2fadmin/x", Refused(400)),
        ("/public/..%2Fadmin/x", Refused(400)),
        ("/public/..%5cadmin/x", Refused(400)),
        ("/public/..\\admin/x", Refused(400)),
        ("/public/%252e%252e/admin/x", Refused(400)),
        ("/public/..%252fadmin/x", Refused(400)),
        ("/public/..;/admin/x", Refused(400)),
        ("/public/%2e%2e;x=1/admin/x", Refused(400)),
        ("/public/a%00.html", Refused(400)),
        ("/public/a%0d%0aset-cookie:x", Refused(400)),
        ("/public/a%zz", Refused(400)),
        ("/public/a%", Refused(400)),
        ("/public/a%2", Refused(400)),
        // What stays inside the route is forwarded canonical.
        ("/public/a/./b/../c", Routed("public", "/public/a/c")),
        ("/public/%7euser/%41", Routed("public", "/public/~user/A")),
        ("/public/a%2fb/..", Refused(400)),
        ("/public/caf%c3%a9", Routed("public", "/public/caf%C3%A9")),
        (
            "/public/x?next=/../admin&y=%2e%2e",
            Routed("public", "/public/x?next=/../admin&y=%2e%2e"),
        ),
        ("/public/", Routed("public", "/public/")),
        // The weaker route a raw match would have picked.
        ("/%67etonly/1", Routed("getonly", "/getonly/1")),
        // A route that allows encoded slashes gets them as sent (upper-case hex).
        ("/files/a%2fb", Routed("files", "/files/a%2Fb")),
        ("/files/a%5Cb", Routed("files", "/files/a%5Cb")),
        // Absolute-form targets are normalized the same way.
        ("http://shop.example/public/../admin/x", Refused(403)),
        ("http://shop.example/public/%2e%2e/admin/x", Refused(403)),
        (
            "http://shop.example/public/./y",
            Routed("public", "/public/y"),
        ),
    ];
    let table: Vec<(String, Expect)> = variants
        .iter()
        .map(|(target, expect)| (get(target, ""), *expect))
        .collect();
    let wrong = run_table(&upstream, &proxy, &table).await;
    assert!(wrong.is_empty(), "{wrong:#?}");

    // For everything that passed, the nginx-like upstream served a path under the route that
    // was chosen (`/public/...` for the public route): what it acts on is what was judged.
    for (target, expect) in &variants {
        if let Expect::Routed(route, _) = expect {
            let response = send(&proxy, &get(target, "")).await;
            let served = response.text();
            assert!(
                served.starts_with(&format!("served /{route}")),
                "{target}: judged by route {route}, the upstream {served}"
            );
        }
    }
}

/// Class 2, Host: the authority of an absolute-form target wins over `Host`, is lower-cased,
/// decides the route (a route may match on `host`) and is the one Host forwarded.
#[tokio::test]
async fn host_and_absolute_form_are_reconciled_before_routing() {
    use Expect::{Refused, Routed};
    let (upstream, proxy) = setup(Behavior::Echo).await;
    let line = |target: &str, headers: &str| {
        format!("GET {target} HTTP/1.1\r\n{headers}connection: close\r\n\r\n")
    };
    let table = vec![
        (
            line("http://admin.internal/public/x", "host: shop.example\r\n"),
            Refused(403),
        ),
        (
            line("http://ADMIN.Internal/public/x", "host: shop.example\r\n"),
            Refused(403),
        ),
        (line("/public/x", "host: Admin.Internal\r\n"), Refused(403)),
        (
            line("http://shop.example/public/x", "host: admin.internal\r\n"),
            Routed("public", "/public/x"),
        ),
        (
            line("/public/x", "host: a.example\r\nhost: admin.internal\r\n"),
            Refused(400),
        ),
        (line("/public/x", ""), Refused(400)),
        (
            line("/public/x", "host: evil@shop.example\r\n"),
            Refused(400),
        ),
        (
            line("/public/x", "host: shop.example/admin\r\n"),
            Refused(400),
        ),
        (
            line("ftp://shop.example/public/x", "host: shop.example\r\n"),
            Refused(400),
        ),
        (
            "CONNECT admin.internal:443 HTTP/1.1\r\nhost: admin.internal:443\r\n\r\n".to_owned(),
            Refused(400),
        ),
    ];
    let wrong = run_table(&upstream, &proxy, &table).await;
    assert!(wrong.is_empty(), "{wrong:#?}");

    upstream.clear();
    send(
        &proxy,
        &line(
            "http://Shop.Example:8080/public/x",
            "host: other.example\r\n",
        ),
    )
    .await;
    let received = &upstream.received()[0];
    assert_eq!(received.headers("host"), ["shop.example:8080"]);
    assert_eq!(received.target(), "/public/x");
}

/// Class 3: methods are matched exactly; other spellings of known methods are refused; HEAD
/// follows GET; method overrides only where a route allows them.
#[tokio::test]
async fn methods_are_exact_and_overrides_are_refused() {
    use Expect::{Refused, Routed};
    let (upstream, proxy) = setup(Behavior::Echo).await;
    let request = |method: &str, target: &str, extra: &str| {
        format!(
            "{method} {target} HTTP/1.1\r\nhost: shop.example\r\n{extra}content-length: 0\r\n\
             connection: close\r\n\r\n"
        )
    };
    let mut table = Vec::new();
    for method in [
        "get", "Get", "gEt", "head", "Head", "post", "Post", "put", "delete", "patch", "options",
        "trace", "connect", "purge", "Purge",
    ] {
        table.push((request(method, "/getonly/1", ""), Refused(400)));
        table.push((request(method, "/cache/1", ""), Refused(400)));
    }
    table.push((
        request("GET", "/getonly/1", ""),
        Routed("getonly", "/getonly/1"),
    ));
    // HEAD is served by the GET route (it fell to `default = "deny"` before).
    table.push((
        request("HEAD", "/getonly/1", ""),
        Routed("getonly", "/getonly/1"),
    ));
    // Other methods still fall to the default (deny).
    table.push((request("POST", "/getonly/1", ""), Refused(403)));
    table.push((
        request("PURGE", "/cache/1", ""),
        Routed("purge", "/cache/1"),
    ));
    // An extension method no route names passes as spelled, to a route of every method.
    table.push((
        request("frobnicate", "/public/1", ""),
        Routed("public", "/public/1"),
    ));
    for name in [
        "X-HTTP-Method-Override",
        "x-http-method-override",
        "X-HTTP-Method",
        "X-Method-Override",
        "X_HTTP_Method_Override",
        "x_method_override",
    ] {
        let header = format!("{name}: DELETE\r\n");
        table.push((request("POST", "/public/1", &header), Refused(400)));
        table.push((request("GET", "/getonly/1", &header), Refused(400)));
        table.push((
            request("POST", "/forms/1", &header),
            Routed("forms", "/forms/1"),
        ));
    }
    let wrong = run_table(&upstream, &proxy, &table).await;
    assert!(wrong.is_empty(), "{wrong:#?}");

    upstream.clear();
    send(&proxy, &request("HEAD", "/getonly/1", "")).await;
    assert_eq!(upstream.received()[0].method(), "HEAD");
    upstream.clear();
    send(
        &proxy,
        &request("POST", "/forms/1", "X-HTTP-Method-Override: DELETE\r\n"),
    )
    .await;
    assert_eq!(
        upstream.received()[0].headers("x-http-method-override"),
        ["DELETE"]
    );
}

/// The h2c smuggling request of h2csmuggler, in `variant`'s spelling.
fn h2c_upgrade(target: &str, connection: &str, upgrade: &str, version: &str) -> String {
    format!(
        "GET {target} {version}\r\nhost: shop.example\r\nconnection: {connection}\r\n\
         upgrade: {upgrade}\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
}

/// Class 1: no tunnel bypasses the edge. The upstream accepts h2c and would serve HTTP/2
/// requests inside the tunnel (here one for the denied `/admin` with a forged subject): every
/// spelling of the h2c upgrade goes upstream as a plain request, without its Upgrade, and the
/// client never gets a 101.
#[tokio::test]
async fn h2c_upgrades_never_open_a_tunnel() {
    let (upstream, proxy) = setup(Behavior::H2c { always: false }).await;
    let variants = [
        ("Upgrade, HTTP2-Settings", "h2c", "HTTP/1.1"),
        ("upgrade", "h2c", "HTTP/1.1"),
        ("Upgrade, HTTP2-Settings", "H2C", "HTTP/1.1"),
        ("keep-alive, Upgrade", "h2c", "HTTP/1.1"),
        ("Upgrade", "h2c, websocket", "HTTP/1.1"),
        ("Upgrade", "websocket, h2c", "HTTP/1.1"),
        ("Upgrade", "h2c/1.0", "HTTP/1.1"),
        ("Upgrade", "TLS/1.2, h2c", "HTTP/1.1"),
        ("Upgrade", "x-feed, h2c", "HTTP/1.1"),
        ("Upgrade, HTTP2-Settings", "h2c", "HTTP/1.0"),
    ];
    for (connection, offer, version) in variants {
        upstream.clear();
        let mut client = RawClient::connect(proxy.addr).await;
        let response = client
            .exchange(h2c_upgrade("/public/x", connection, offer, version).as_bytes())
            .await;
        let smuggled = if response.status == 101 {
            client
                .h2_get("/admin/x", &[("x-ficus-subject", "root")])
                .await
        } else {
            None
        };
        let received = upstream.received();
        let what = format!("{connection} / {offer} / {version}");
        assert_eq!(response.status, 200, "{what}: {}", response.head);
        assert_eq!(smuggled, None, "{what}: HTTP/2 inside the tunnel");
        assert_eq!(upstream.tunneled(), Vec::<String>::new(), "{what}");
        assert_eq!(received.len(), 1, "{what}");
        let head = received[0].head.to_ascii_lowercase();
        assert!(!head.contains("h2c"), "{what}: forwarded {head}");
        assert!(!head.contains("http2-settings"), "{what}: forwarded {head}");
        let upgrade = received[0].headers("upgrade");
        assert!(
            upgrade.iter().all(|u| u.eq_ignore_ascii_case("websocket")),
            "{what}: only websocket may be offered upstream, got {upgrade:?}"
        );
    }
}

/// Class 1, the upstream's side: an upstream that switches protocols unasked (or to another
/// protocol than offered) gets no tunnel; the client gets a 502.
#[tokio::test]
async fn an_upstream_switching_protocols_unasked_gets_no_tunnel() {
    let (upstream, proxy) = setup(Behavior::H2c { always: true }).await;
    let variants = [
        get("/public/x", "").replace("connection: close\r\n", ""),
        h2c_upgrade("/public/x", "Upgrade, HTTP2-Settings", "h2c", "HTTP/1.1"),
        // websocket is allowed here and offered; the upstream switches to h2c instead.
        h2c_upgrade("/public/x", "Upgrade", "websocket", "HTTP/1.1"),
        // x-feed is allowed on /feed; the upstream switches to h2c instead.
        h2c_upgrade("/feed", "Upgrade", "x-feed", "HTTP/1.1"),
    ];
    for request in &variants {
        let mut client = RawClient::connect(proxy.addr).await;
        let response = client.exchange(request.as_bytes()).await;
        let smuggled = if response.status == 101 {
            client
                .h2_get("/admin/x", &[("x-ficus-subject", "root")])
                .await
        } else {
            None
        };
        let first = request.lines().next().unwrap();
        assert_eq!(response.status, 502, "{first}: {}", response.head);
        assert_eq!(smuggled, None, "{first}");
        assert_eq!(upstream.tunneled(), Vec::<String>::new(), "{first}");
    }
}

/// Class 1, the allowed way: a route that lists a protocol tunnels it (and websocket by
/// default, see websocket.rs); elsewhere the same offer goes on as a plain request.
#[tokio::test]
async fn a_route_may_allow_another_upgrade_explicitly() {
    let (upstream, proxy) = setup(Behavior::Tunnel("x-feed")).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let response = client
        .exchange(h2c_upgrade("/feed", "Upgrade", "x-feed", "HTTP/1.1").as_bytes())
        .await;
    assert_eq!(response.status, 101, "{}", response.head);
    assert_eq!(response.header("upgrade"), "x-feed");
    client.send(b"ping through the tunnel").await;
    let echoed = client.read_for(Duration::from_millis(500)).await;
    assert_eq!(echoed, b"ping through the tunnel");
    assert_eq!(upstream.received()[0].headers("upgrade"), ["x-feed"]);

    upstream.clear();
    let response = send(
        &proxy,
        &h2c_upgrade("/public/x", "Upgrade", "x-feed", "HTTP/1.1"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(upstream.received()[0].headers("upgrade").is_empty());
}

fn token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: Value, iss: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({ "iss": iss, "aud": "ficus", "sub": sub, "exp": now + 600 })
}

/// Class 5: tokens sent twice, an empty subject, `iss` as an array: refused, nothing
/// reaches the upstream. Forged `x-ficus-*` headers never reach it either.
#[tokio::test]
async fn smaller_holes_in_tokens_and_headers_are_closed() {
    use Expect::{Refused, Routed};
    let (upstream, proxy) = setup(Behavior::Echo).await;
    let issuer = json!("https://idp.example");
    let valid = token(&claims(json!("u-1"), issuer.clone()));
    let forged = token(&claims(json!("root"), json!("https://evil.example")));
    let bearer = |t: &str| format!("authorization: Bearer {t}\r\n");
    let table = vec![
        (get("/me", &bearer(&valid)), Routed("me", "/me")),
        (
            get("/me", &format!("{}{}", bearer(&valid), bearer(&forged))),
            Refused(401),
        ),
        (
            get("/me", &format!("{}{}", bearer(&forged), bearer(&valid))),
            Refused(401),
        ),
        (
            get("/me", &format!("{}{}", bearer(&valid), bearer(&valid))),
            Refused(401),
        ),
        (
            get(
                "/me",
                &format!("{}authorization: Basic dTpw\r\n", bearer(&valid)),
            ),
            Refused(401),
        ),
        (
            get(
                "/me",
                &format!("cookie: session={valid}; session={forged}\r\n"),
            ),
            Refused(401),
        ),
        (
            get(
                "/me",
                &format!("cookie: session={valid}\r\ncookie: session={forged}\r\n"),
            ),
            Refused(401),
        ),
        (
            get("/me", &format!("cookie: session={valid}\r\n")),
            Routed("me", "/me"),
        ),
        (
            get("/me", &bearer(&token(&claims(json!(""), issuer.clone())))),
            Refused(401),
        ),
        (
            get("/me", &bearer(&token(&claims(json!("  "), issuer.clone())))),
            Refused(401),
        ),
        (
            get("/me", &bearer(&token(&claims(json!(42), issuer.clone())))),
            Refused(401),
        ),
        (
            get(
                "/me",
                &bearer(&token(&claims(
                    json!("u-1"),
                    json!(["https://idp.example", "https://evil.example"]),
                ))),
            ),
            Refused(401),
        ),
        (
            get(
                "/me",
                &bearer(&token(&claims(
                    json!("u-1"),
                    json!(["https://idp.example"]),
                ))),
            ),
            Refused(401),
        ),
    ];
    let wrong = run_table(&upstream, &proxy, &table).await;
    assert!(wrong.is_empty(), "{wrong:#?}");

    // ficus's own namespace, forged in every spelling, on a public and a verified route.
    let forged_headers = "x-ficus-route: admin\r\nX-Ficus-Side: extracted\r\n\
                          x_ficus_table: 999\r\nx-ficus-subject: root\r\nX_FICUS_ROLES: admin\r\n\
                          x-ficus-anything: 1\r\nx-ficus-identity: forged\r\n";
    for (target, extra) in [
        ("/public/x", forged_headers.to_owned()),
        ("/me", format!("{forged_headers}{}", bearer(&valid))),
    ] {
        upstream.clear();
        let response = send(&proxy, &get(target, &extra)).await;
        assert_eq!(response.status, 200, "{target}: {}", response.text());
        let head = upstream.received()[0]
            .head
            .to_ascii_lowercase()
            .replace('_', "-");
        let mut ficus: Vec<&str> = head
            .lines()
            .filter(|l| l.starts_with("x-ficus-"))
            .map(|l| l.trim_end())
            .collect();
        ficus.sort();
        // Only what ficus itself set: the verified identity on /me, nothing on /public.
        let expected: Vec<&str> = match target {
            "/me" => vec!["x-ficus-roles:", "x-ficus-scopes:", "x-ficus-subject: u-1"],
            _ => vec![],
        };
        assert_eq!(ficus, expected, "{target}: {head}");
    }
}

/// Class 5: a body on a GET (or HEAD, DELETE, OPTIONS) is forwarded, chunked or not, never
/// dropped.
#[tokio::test]
async fn bodies_on_any_method_are_forwarded_not_dropped() {
    let (upstream, proxy) = setup(Behavior::Echo).await;
    for method in ["GET", "HEAD", "DELETE", "OPTIONS", "POST"] {
        for (framing, body) in [
            (
                "transfer-encoding: chunked\r\n",
                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            ),
            ("content-length: 11\r\n", "hello world"),
        ] {
            upstream.clear();
            let request = format!(
                "{method} /public/x HTTP/1.1\r\nhost: shop.example\r\n{framing}\
                 connection: close\r\n\r\n{body}"
            );
            let response = send(&proxy, &request).await;
            assert_eq!(
                response.status, 200,
                "{method} {framing}: {}",
                response.head
            );
            let received = upstream.received();
            assert_eq!(received.len(), 1, "{method} {framing}");
            assert_eq!(
                String::from_utf8_lossy(&received[0].body),
                "hello world",
                "{method} {framing}: the upstream got {}",
                received[0].head
            );
        }
    }
}

/// Class 5: the side is logged once per request (the request span's `side`).
#[tokio::test]
async fn the_side_is_logged_once_per_request() {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::FmtSpan;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let (_upstream, proxy) = setup(Behavior::Echo).await;
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "ficus_proxy::request=info",
        ))
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // This test's runtime is one thread: the proxy's tasks run on it, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    for request in [get("/public/x", ""), get("/admin/x", "")] {
        send(&proxy, &request).await;
    }
    // The span closes when its request is done.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let closes: Vec<&str> = text.lines().filter(|l| l.contains("close")).collect();
    assert_eq!(closes.len(), 2, "{text}");
    for line in closes {
        assert_eq!(line.matches("side=").count(), 1, "{line}");
    }
    assert!(
        text.contains("side=\"monolith\"") && text.contains("side=\"proxy\""),
        "{text}"
    );
}

/// Classes 2 and 3 over HTTP/2 (prior knowledge): the same canonical path, exact methods and
/// one authority, whatever the protocol the client speaks.
#[tokio::test]
async fn http2_requests_get_the_same_treatment() {
    let (upstream, proxy) = setup(Behavior::NormalizePaths).await;
    /// Path, extra headers, the status, what the upstream received.
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        u16,
        Option<&'static str>,
    );
    let cases: [Case; 8] = [
        ("/public/x", &[], 200, Some("/public/x")),
        ("/public/%2e%2e/admin/x", &[], 403, None),
        ("/public/../admin/x", &[], 403, None),
        ("//admin/x", &[], 403, None),
        ("/public/..%2fadmin/x", &[], 400, None),
        ("/public/a%00", &[], 400, None),
        ("/public/./%7ex", &[], 200, Some("/public/~x")),
        // `:authority` is localhost; a Host beside it that names another is refused.
        ("/public/x", &[("host", "admin.internal")], 400, None),
    ];
    for (path, headers, status, forwarded) in cases {
        upstream.clear();
        let client = RawClient::connect(proxy.addr).await;
        let got = client.h2_get(path, headers).await;
        assert_eq!(got, Some(status), "{path} {headers:?}");
        let received: Vec<String> = upstream
            .received()
            .iter()
            .map(|r| r.target().to_owned())
            .collect();
        let expected: Vec<String> = forwarded.iter().map(|f| (*f).to_owned()).collect();
        assert_eq!(received, expected, "{path} {headers:?}");
    }
}

/// Class 6: request smuggling by framing (CL.TE, TE.CL, TE.TE as the public smuggling tools
/// send them). Whatever the edge does with each variant (refuse it, or re-frame it), the
/// upstream gets one unambiguous framing per request, and no request the client did not get an
/// answer for: a smuggled `GET /admin/…` never reaches it. Both HTTP/1 paths run this.
#[tokio::test]
async fn ambiguous_framing_never_smuggles_a_request_upstream() {
    let (upstream, proxy) = setup(Behavior::Echo).await;
    let smuggled = "GET /admin/smuggled HTTP/1.1\r\nhost: shop.example\r\n\r\n";
    let variants = [
        ("content-length: 6\r\ntransfer-encoding: chunked\r\n", "0\r\n\r\nX"),
        ("transfer-encoding: chunked\r\ncontent-length: 4\r\n", "5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n"),
        ("transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n", "0\r\n\r\n"),
        ("transfer-encoding: identity, chunked\r\n", "0\r\n\r\n"),
        ("transfer-encoding: xchunked\r\n", "0\r\n\r\n"),
        ("transfer-encoding:\tchunked\r\n", "0\r\n\r\n"),
        ("transfer-encoding : chunked\r\n", "0\r\n\r\n"),
        ("content-length: 5\r\ncontent-length: 6\r\n", "hello"),
        ("content-length: +5\r\n", "hello"),
        ("content-length: 5, 5\r\n", "hello"),
        ("transfer-encoding: chunked\r\n", "5;a=\"\r\n\"\r\nhello\r\n0\r\n\r\n"),
        ("transfer-encoding: chunked\r\n", "fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ];
    let mut wrong = Vec::new();
    for (framing, body) in variants {
        upstream.clear();
        let request = format!(
            "POST /public/x HTTP/1.1\r\nhost: shop.example\r\n{framing}\r\n{body}{smuggled}"
        );
        let mut client = RawClient::connect(proxy.addr).await;
        client.send(request.as_bytes()).await;
        let mut answers = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(2), client.response()).await
        {
            answers += 1;
        }
        let received = upstream.received();
        for request in &received {
            let lengths = request.headers("content-length");
            let codings = request.headers("transfer-encoding");
            if (!lengths.is_empty() && !codings.is_empty())
                || lengths.len() > 1
                || codings.iter().any(|c| !c.eq_ignore_ascii_case("chunked"))
                || codings.len() > 1
            {
                wrong.push(format!("{framing:?}: the upstream got {}", request.head));
            }
            if request.target().starts_with("/admin") {
                wrong.push(format!("{framing:?}: smuggled {}", request.target()));
            }
        }
        if received.len() > answers {
            wrong.push(format!(
                "{framing:?}: {} requests upstream, {answers} answers",
                received.len()
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
