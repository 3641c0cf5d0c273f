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

#[test]
fn routes_flip_refuses_a_file_the_proxy_would_refuse_and_says_why() {
    // Valid TOML, valid values, but the keys file it names is missing: the proxy would refuse
    // the file, so flip writes nothing and names the key.
    let text = ROUTES.replace(
        "[upstreams.monolith]",
        "[auth]\nissuer = \"i\"\naudience = [\"a\"]\nkeys_file = \"jwks.json\"\n\n[upstreams.monolith]",
    );
    let path = temp_routes(&text);
    let flip = || {
        Command::new(FICUS)
            .args(["routes", "flip", "people-read", "--sticky", "ip", "--file"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let refused = flip();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("the proxy would refuse"), "{stderr}");
    assert!(stderr.contains("auth.keys_file: reading "), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    // `routes check` says the same; with the keys file beside the routes file both go through.
    let check = Command::new(FICUS)
        .args(["routes", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    std::fs::write(path.with_file_name("jwks.json"), r#"{"keys": []}"#).unwrap();
    let done = flip();
    assert!(done.status.success(), "{done:?}");
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("sticky = \"ip\"")
    );
}

/// Every file of `tests/proxy/routes_corpus/`, and the demo's `routes.toml`: `ficus routes check`
/// (the real binary) accepts exactly the files the proxy's loader loads, and reports the same
/// problems; each problem names the dotted key its file's `# expect:` lines say.
#[test]
fn routes_check_and_the_loader_agree_over_the_corpus() {
    use std::sync::Arc;

    use ficus_proxy::Loader;
    use ficus_proxy::metrics::Metrics;
    use ficus_proxy::reload::LoadError;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("tests/proxy/routes_corpus");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files.push(root.join("routes.toml"));
    let (mut good, mut bad) = (0, 0);
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expect: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect:"))
            .map(str::trim)
            .collect();
        let name = path.display();

        let output = Command::new(FICUS)
            .args(["routes", "check"])
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let prefix = format!("{name}: ");
        let from_cli: Vec<&str> = stderr
            .lines()
            .map(|line| line.strip_prefix(prefix.as_str()).unwrap_or(line))
            .collect();

        let loader = Loader::new(path, Arc::new(Metrics::default()));
        let (loaded, from_loader) = match loader.load() {
            Ok(_) => (true, Vec::new()),
            Err(LoadError::Invalid { problems, .. }) => (false, problems.0),
            Err(other) => panic!("{name}: {other}"),
        };

        assert_eq!(
            output.status.success(),
            loaded,
            "{name}: check and loader disagree\ncheck: {output:?}\nloader: {from_loader:#?}"
        );
        let shown: Vec<String> = from_loader.iter().map(ToString::to_string).collect();
        assert_eq!(
            from_cli, shown,
            "{name}: the same problems, in the same words"
        );
        if loaded {
            good += 1;
            assert!(
                expect.is_empty() || expect == ["ok"],
                "{name} was accepted; expected {expect:?}"
            );
            continue;
        }
        bad += 1;
        let mut keys: Vec<&str> = from_loader.iter().map(|p| p.key.as_str()).collect();
        let mut expected = expect.clone();
        keys.sort();
        expected.sort();
        assert_eq!(
            keys, expected,
            "{name}: the keys of its problems: {shown:#?}"
        );
    }
    assert!(good >= 4 && bad >= 10, "good {good}, bad {bad}");
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
        .env("FICUS_PROXY__HTTP1", crate::HTTP1.as_str())
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
    let hits_before = monolith.hits();
    let slow = tokio::spawn({
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}/slow?delay_ms=700"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    // In flight for sure: the monolith has it (and holds it for 700 ms).
    monolith.wait_for_hits(hits_before + 1).await;
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
