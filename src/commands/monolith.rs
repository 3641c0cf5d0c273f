//! `ficus monolith`: serve the legacy app.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ficus_monolith::{AdminAccount, Monolith, MonolithConfig, SigningKey};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "FICUS_MONOLITH__LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the monolith's database (migrations are applied at start).
    #[arg(long, env = "FICUS_MONOLITH__DATABASE_URL")]
    pub database_url: String,
    /// PKCS#8 PEM file of the RS256 signing key; generated there when missing.
    #[arg(
        long,
        env = "FICUS_MONOLITH__KEY_FILE",
        default_value = ".ficus/monolith-key.pem"
    )]
    pub key_file: PathBuf,
    /// `iss` of issued and accepted tokens.
    #[arg(long, env = "FICUS_MONOLITH__ISSUER", default_value = ficus_monolith::config::DEFAULT_ISSUER)]
    pub issuer: String,
    /// `aud` of issued and accepted tokens.
    #[arg(long, env = "FICUS_MONOLITH__AUDIENCE", default_value = ficus_monolith::config::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Lifetime of issued tokens, in seconds.
    #[arg(long, env = "FICUS_MONOLITH__TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,
    /// Email of an administrator ensured at start (with --admin-password).
    #[arg(long, env = "FICUS_MONOLITH__ADMIN_EMAIL", requires = "admin_password")]
    pub admin_email: Option<String>,
    /// Password of that administrator.
    #[arg(long, env = "FICUS_MONOLITH__ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
}

impl Args {
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
pub async fn run(args: Args) -> anyhow::Result<()> {
    let monolith = build(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "monolith serving");
    monolith
        .serve(listener, super::shutdown_signal())
        .await
        .context("serving")
}

pub(crate) async fn build(args: &Args) -> anyhow::Result<Monolith> {
    let key = SigningKey::load_or_generate(&args.key_file)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&args.database_url)
        .await
        .context("connecting to the monolith's database")?;
    Ok(Monolith::new(pool, Arc::new(key), args.config()).await?)
}
