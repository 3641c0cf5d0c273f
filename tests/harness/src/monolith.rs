//! The legacy monolith, in-process on `127.0.0.1:0`, over a database of its own, started with
//! [`ficus_monolith::start`] as `ficus monolith` does.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use ficus_monolith::{AdminAccount, MonolithConfig, Running, SigningKey};

use crate::TestDatabase;

/// One RSA key for every monolith of the test process: generating one takes a moment.
pub fn shared_signing_key() -> Arc<SigningKey> {
    static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(SigningKey::generate().expect("generating an RSA key")))
        .clone()
}

/// A running monolith. Dropping it stops the server and drops its database.
pub struct TestMonolith {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database.
    pub db: TestDatabase,
    /// The bootstrap administrator's email and password.
    pub admin_email: String,
    pub admin_password: String,
    http: reqwest::Client,
    running: Option<Running>,
}

impl TestMonolith {
    /// A monolith with the default configuration and a bootstrap admin.
    pub async fn start() -> Self {
        Self::start_with(MonolithConfig::default()).await
    }

    /// A monolith with `config` (its bootstrap admin is set by the harness).
    pub async fn start_with(config: MonolithConfig) -> Self {
        crate::init_tracing();
        Self::start_on(TestDatabase::new().await, config).await
    }

    /// A monolith over `db` (prepared by the test: settings, extensions), with `config`.
    pub async fn start_on(db: TestDatabase, mut config: MonolithConfig) -> Self {
        crate::init_tracing();
        let admin_email = "admin@example.test".to_owned();
        let admin_password = format!("pw-{}", crate::unique_suffix());
        config.bootstrap_admin = Some(AdminAccount {
            email: admin_email.clone(),
            password: admin_password.clone(),
            display_name: "Ada Admin".to_owned(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let running =
            ficus_monolith::start(db.pool.clone(), shared_signing_key(), config, listener)
                .await
                .expect("starting the monolith");
        Self {
            addr: running.addr,
            db,
            admin_email,
            admin_password,
            http: reqwest::Client::new(),
            running: Some(running),
        }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://127.0.0.1:PORT{path}`
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// An HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Logs in and returns the bearer token; panics unless the login succeeds.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let response = self
            .http
            .post(self.url("/api/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("POST /api/login");
        assert_eq!(response.status(), 200, "login of {email} failed");
        let body: serde_json::Value = response.json().await.expect("a JSON login response");
        body["access_token"]
            .as_str()
            .expect("an access_token")
            .to_owned()
    }

    /// A token of the bootstrap administrator.
    pub async fn admin_token(&self) -> String {
        self.login(&self.admin_email, &self.admin_password).await
    }

    /// Creates a person through the API (as the admin) and returns its JSON.
    pub async fn create_person(
        &self,
        admin_token: &str,
        email: &str,
        name: &str,
        password: Option<&str>,
    ) -> serde_json::Value {
        let mut body = serde_json::json!({ "email": email, "display_name": name });
        if let Some(password) = password {
            body["password"] = password.into();
        }
        let response = self
            .http
            .post(self.url("/api/people"))
            .bearer_auth(admin_token)
            .json(&body)
            .send()
            .await
            .expect("POST /api/people");
        assert_eq!(response.status(), 201, "creating {email}");
        response.json().await.expect("a person")
    }

    /// Stops the server, letting in-flight requests finish.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop().await;
        }
    }
}

impl Drop for TestMonolith {
    fn drop(&mut self) {
        // The server stops before its database is dropped.
        self.running.take();
    }
}
