//! `ficus monolith`: serve the legacy app. Settings from an optional file, `FICUS_MONOLITH__*`
//! environment variables and flags (through `ficus_telemetry::config::Loader`); started with
//! [`ficus_monolith::start`], as the tests do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ficus_monolith::{AdminAccount, MonolithConfig, SigningKey};
use ficus_telemetry::Env;
use serde::Deserialize;

#[derive(clap::Args)]
pub struct Args {
    /// A TOML file of monolith settings (the keys below, with underscores: `database_url`, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// PostgreSQL URL of the monolith's database (migrations are applied at start).
    #[arg(long)]
    pub database_url: Option<String>,
    /// PKCS#8 PEM file of the RS256 signing key; generated there when missing
    /// [default: .ficus/monolith-key.pem].
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// `iss` of issued and accepted tokens.
    #[arg(long)]
    pub issuer: Option<String>,
    /// `aud` of issued and accepted tokens.
    #[arg(long)]
    pub audience: Option<String>,
    /// Lifetime of issued tokens, in seconds [default: 3600].
    #[arg(long)]
    pub token_ttl_secs: Option<u64>,
    /// Email of an administrator ensured at start (with --admin-password).
    #[arg(long)]
    pub admin_email: Option<String>,
    /// Password of that administrator (better: `FICUS_MONOLITH__ADMIN_PASSWORD`).
    #[arg(long)]
    pub admin_password: Option<String>,
}

/// The monolith's process settings (section `monolith`: `FICUS_MONOLITH__<KEY>`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the monolith's database.
    pub database_url: String,
    /// The RS256 signing key (PKCS#8 PEM), generated when missing.
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
    /// `iss` of issued and accepted tokens.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud` of issued and accepted tokens.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Lifetime of issued tokens, in seconds.
    #[serde(default = "default_token_ttl_secs")]
    pub token_ttl_secs: u64,
    /// An administrator ensured at start: email and password come together.
    #[serde(default)]
    pub admin_email: Option<String>,
    #[serde(default)]
    pub admin_password: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_key_file() -> PathBuf {
    PathBuf::from(".ficus/monolith-key.pem")
}
fn default_issuer() -> String {
    ficus_monolith::config::DEFAULT_ISSUER.to_owned()
}
fn default_audience() -> String {
    ficus_monolith::config::DEFAULT_AUDIENCE.to_owned()
}
fn default_token_ttl_secs() -> u64 {
    3600
}

impl Settings {
    /// Defaults, then the file, then `FICUS_MONOLITH__*` from `env`, then flags.
    pub fn load(args: &Args, env: &dyn Env) -> anyhow::Result<Self> {
        let settings: Settings = ficus_telemetry::Loader::new("monolith")
            .file(args.config.as_deref())
            .env(env)
            .flag("listen", "--listen", args.listen)
            .flag("database_url", "--database-url", args.database_url.as_ref())
            .flag(
                "key_file",
                "--key-file",
                args.key_file.as_ref().map(|p| p.display()),
            )
            .flag("issuer", "--issuer", args.issuer.as_ref())
            .flag("audience", "--audience", args.audience.as_ref())
            .flag("token_ttl_secs", "--token-ttl-secs", args.token_ttl_secs)
            .flag("admin_email", "--admin-email", args.admin_email.as_ref())
            .flag(
                "admin_password",
                "--admin-password",
                args.admin_password.as_ref(),
            )
            .load()
            .context("monolith settings")?;
        if settings.admin_email.is_some() != settings.admin_password.is_some() {
            anyhow::bail!(
                "monolith settings: admin_email and admin_password: give both or neither"
            );
        }
        Ok(settings)
    }

    fn config(&self) -> MonolithConfig {
        MonolithConfig {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            bootstrap_admin: self
                .admin_email
                .as_ref()
                .zip(self.admin_password.as_ref())
                .map(|(email, password)| AdminAccount {
                    email: email.clone(),
                    password: password.clone(),
                    display_name: "Administrator".to_owned(),
                }),
            ..MonolithConfig::default()
        }
    }
}

/// Starts the monolith and serves until Ctrl-C or SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let running = start(&settings).await?;
    let shutdown = running.shutdown();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        shutdown.trigger();
    });
    running.wait().await.context("serving")
}

/// Loads the key, connects to the database, binds the listener and starts the monolith.
pub(crate) async fn start(settings: &Settings) -> anyhow::Result<ficus_monolith::Running> {
    let key = SigningKey::load_or_generate(&settings.key_file)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&settings.database_url)
        .await
        .context("connecting to the monolith's database")?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    Ok(ficus_monolith::start(pool, Arc::new(key), settings.config(), listener).await?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn args() -> Args {
        Args {
            config: None,
            listen: None,
            database_url: None,
            key_file: None,
            issuer: None,
            audience: None,
            token_ttl_secs: None,
            admin_email: None,
            admin_password: None,
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_database_url_is_required_and_named() {
        let error = format!(
            "{:#}",
            Settings::load(&args(), &HashMap::new()).unwrap_err()
        );
        assert!(error.contains("FICUS_MONOLITH__DATABASE_URL"), "{error}");
    }

    #[test]
    fn environment_then_flags() {
        let env = env(&[
            ("FICUS_MONOLITH__DATABASE_URL", "postgres://env/db"),
            ("FICUS_MONOLITH__TOKEN_TTL_SECS", "60"),
            ("FICUS_MONOLITH__ADMIN_EMAIL", "a@example.com"),
            ("FICUS_MONOLITH__ADMIN_PASSWORD", "pw"),
        ]);
        let mut flags = args();
        flags.database_url = Some("postgres://flag/db".to_owned());
        let settings = Settings::load(&flags, &env).unwrap();
        assert_eq!(settings.database_url, "postgres://flag/db");
        assert_eq!(settings.token_ttl_secs, 60);
        assert_eq!(settings.listen, default_listen());
        let config = settings.config();
        assert_eq!(config.token_ttl, Duration::from_secs(60));
        assert_eq!(config.bootstrap_admin.unwrap().email, "a@example.com");
    }

    #[test]
    fn an_admin_email_without_a_password_is_refused() {
        let env = env(&[
            ("FICUS_MONOLITH__DATABASE_URL", "postgres://env/db"),
            ("FICUS_MONOLITH__ADMIN_EMAIL", "a@example.com"),
        ]);
        let error = Settings::load(&args(), &env).unwrap_err().to_string();
        assert!(error.contains("admin_password"), "{error}");
    }
}
