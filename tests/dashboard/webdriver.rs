//! A real browser for the dashboard's test: Debian's headless Chromium driven by its
//! `chromedriver` over WebDriver (W3C, JSON over HTTP: a session, navigate, find, text,
//! screenshot), with the workspace's HTTP client. Each browser gets its own driver port and a
//! fresh profile directory; dropping it kills the driver, which ends the browser.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// W3C's key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian puts them (`apt-get install chromium chromium-driver`; `scripts/test` does).
fn binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium and chromium-driver \
         (`scripts/test` does it), or point {var} at them",
        path.display()
    );
    path
}

pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a port of its own and a headless Chromium session
    /// (`width` x `height` pixels).
    pub async fn start(width: u32, height: u32) -> Self {
        let chromium = binary("FICUS_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("FICUS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = ficus_testkit::upstream::refused_addr().port();
        let profile =
            std::env::temp_dir().join(format!("ficus-chromium-{}", ficus_testkit::unique_suffix()));
        std::fs::create_dir_all(&profile).expect("a profile directory");
        // A process group of its own: the Chromium it starts joins it, and dropping the
        // browser ends the whole group, even when a failed test never closed the session.
        let driver = Command::new(chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            http,
            base,
            session: String::new(),
            driver,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await;
            if let Ok(response) = status
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // Without these it floods the closed network with requests of its own.
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--no-first-run".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser.profile.display()),
        ];
        let created = browser
            .call(
                reqwest::Method::POST,
                "/session",
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {
                            "binary": chromium.display().to_string(),
                            "args": args,
                        },
                    }},
                })),
            )
            .await
            .expect("a browser session");
        browser.session = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    /// One WebDriver command; its `value`, or the error WebDriver answered.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(body["value"].clone())
        } else {
            Err(body["value"].to_string())
        }
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        )
        .await
        .expect("navigating");
    }

    /// The rendered text of the first element matching `css`; `None` when none matches.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.try_text(css).await.ok()
    }

    /// The rendered text of the first element matching `css`, or what WebDriver said.
    async fn try_text(&self, css: &str) -> Result<String, String> {
        let found = self
            .call(
                reqwest::Method::POST,
                &self.session_path("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        let id = found[ELEMENT]
            .as_str()
            .ok_or_else(|| format!("no element reference in {found}"))?
            .to_owned();
        let text = self
            .call(
                reqwest::Method::GET,
                &self.session_path(&format!("/element/{id}/text")),
                None,
            )
            .await?;
        text.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no text in {text}"))
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.call(
            reqwest::Method::POST,
            &self.session_path("/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await
        .ok()
        .and_then(|found| found.as_array().map(Vec::len))
        .unwrap_or(0)
    }

    /// Waits until the text of `css` satisfies `ok`; returns it and how long it took. Panics
    /// after `timeout`, naming what the page showed.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let text = self.try_text(css).await;
            if let Ok(text) = &text
                && ok(text)
            {
                return (text.clone(), start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "`{css}` showed {text:?} for {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self
            .call(
                reqwest::Method::GET,
                &self.session_path("/screenshot"),
                None,
            )
            .await
            .expect("a screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64 text"))
            .expect("base64 PNG")
    }

    /// Ends the session (the browser quits), then the driver.
    pub async fn close(mut self) {
        let _ = self
            .call(reqwest::Method::DELETE, &self.session_path(""), None)
            .await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
