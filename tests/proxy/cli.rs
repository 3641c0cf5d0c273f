//! The operator's commands, as processes: `ficus routes check|flip` and `ficus proxy` with its
//! environment overrides, SIGHUP reload and SIGTERM drain.

use std::process::{Command, Stdio};
use std::time::Duration;

use ficus_testkit::TestUpstream;

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");

fn temp_routes(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ficus-cli-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const ROUTES: &str = r#"# Demo routes.
[proxy]
default = "monolith"

[upstreams.monolith]
url = "http://127.0.0.1:1"
[upstreams.people]
url = "http://127.0.0.1:2"

[[route]]
name = "people-read"   # the first step
path = "/api/people/{id}"
serve = "people"
mode = "monolith"
"#;

#[test]
fn routes_check_lists_every_problem_and_exits_non_zero() {
    let good = temp_routes(ROUTES);
    let output = Command::new(FICUS)
        .args(["routes", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok (1 routes, 2 upstreams)"));

    let bad = temp_routes(
        &ROUTES
            .replace("mode = \"monolith\"", "mode = \"canary\"\npercent = 140")
            .replace("default = \"monolith\"", "default = \"gone\""),
    );
    let output = Command::new(FICUS)
        .args(["routes", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("route \"people-read\": percent: 140 is not in 0..=100"),
        "{stderr}"
    );
    assert!(
        stderr.contains("proxy.default: no upstream named \"gone\""),
        "{stderr}"
    );
}

#[test]
fn routes_flip_edits_in_place_and_refuses_invalid_edits() {
    let path = temp_routes(ROUTES);
    let output = Command::new(FICUS)
        .args([
            "routes",
            "flip",
            "people-read",
            "--mode",
            "canary",
            "--percent",
            "25",
            "--sticky",
            "header:x-user-id",
            "--file",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# Demo routes.\n"));
    assert!(text.contains("name = \"people-read\"   # the first step"));
    assert!(
        text.contains("mode = \"canary\"\n") && text.contains("percent = 25\n"),
        "{text}"
    );
    assert!(text.contains("sticky = \"header:x-user-id\""));

    let refused = Command::new(FICUS)
        .args([
            "routes",
            "flip",
            "people-read",
            "--percent",
            "140",
            "--file",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("percent: 140 is not in 0..=100"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "a refused edit writes nothing"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn ficus_proxy_serves_reloads_on_sighup_and_drains_on_sigterm() {
    let monolith = TestUpstream::start("monolith").await;
    let path = temp_routes(&format!(
        "[proxy]\ndefault = \"monolith\"\n[upstreams.monolith]\nurl = \"{}\"\n",
        monolith.url()
    ));
    let (port, admin_port) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(FICUS)
        .args(["proxy", "--routes"])
        .arg(&path)
        .env("FICUS_PROXY__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "FICUS_PROXY__ADMIN_LISTEN",
            format!("127.0.0.1:{admin_port}"),
        )
        .env("FICUS_PROXY__WORKERS", "1")
        .env("FICUS_PROXY__SHUTDOWN_GRACE_MS", "3000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{admin}/readyz")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ficus proxy became ready");
    let response = http
        .get(format!("http://127.0.0.1:{port}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-upstream"], "monolith");

    let attempt = |table: &serde_json::Value| table["last_reload_attempt_unix"].clone();
    let before: serde_json::Value = http
        .get(format!("{admin}/routes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(attempt(&before), serde_json::Value::Null);
    let pid = child.id().unwrap() as i32;
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut reloaded = false;
    for _ in 0..100 {
        let table: serde_json::Value = http
            .get(format!("{admin}/routes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if attempt(&table) != serde_json::Value::Null {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "SIGHUP made the proxy read its routes file");

    // SIGTERM: a request in flight still completes, then the process exits.
    let slow = tokio::spawn({
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}/slow?delay_ms=700"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
