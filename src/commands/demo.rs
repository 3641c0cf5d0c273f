//! `ficus demo`: the monolith over a demo database on the services' PostgreSQL, and a guide to
//! what to try. It grows with every issue (proxy, CDC, extracted services).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use sqlx::{Connection, Executor};

/// The demo administrator; printed for the user to log in with.
const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "ficus-demo";
const DATABASE: &str = "ficus_demo";

#[derive(clap::Args)]
pub struct Args {
    /// PostgreSQL server URL (any database on it); the demo makes its own database there.
    #[arg(long, env = "FICUS_TEST_DATABASE_URL")]
    pub postgres_url: String,
    /// Where the monolith listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub monolith_listen: SocketAddr,
    /// Where the proxy listens (the address end users use).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub proxy_listen: SocketAddr,
    /// The proxy's admin API.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub admin_listen: SocketAddr,
    /// The routes file the proxy serves and watches.
    #[arg(long, default_value = "routes.toml")]
    pub routes: PathBuf,
    /// Directory for the demo's key and state.
    #[arg(long, default_value = ".ficus/demo")]
    pub state_dir: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let database_url = ensure_database(&args.postgres_url, DATABASE).await?;
    let monolith_settings = super::monolith::Settings {
        listen: args.monolith_listen,
        database_url,
        key_file: args.state_dir.join("monolith-key.pem"),
        issuer: ficus_monolith::config::DEFAULT_ISSUER.to_owned(),
        audience: ficus_monolith::config::DEFAULT_AUDIENCE.to_owned(),
        token_ttl_secs: 3600,
        admin_email: Some(ADMIN_EMAIL.to_owned()),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
    };
    let monolith = super::monolith::start(&monolith_settings).await?;
    let listeners = ficus_proxy::Listeners {
        client: tokio::net::TcpListener::bind(args.proxy_listen)
            .await
            .with_context(|| format!("listening on {}", args.proxy_listen))?,
        admin: tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("admin listener on {}", args.admin_listen))?,
    };
    let server = ficus_proxy::ServerSettings {
        shutdown_grace: std::time::Duration::from_secs(5),
        ..ficus_proxy::ServerSettings::default()
    };
    let proxy = ficus_proxy::start(&args.routes, server, listeners)?;
    print_guide(args.proxy_listen, args.monolith_listen, args.admin_listen);
    super::shutdown_signal().await;
    // The proxy drains first (its clients are the end users), then the monolith behind it.
    proxy.stop().await;
    monolith.stop().await.context("serving the monolith")
}

/// Creates `name` on the server when missing; returns its URL.
async fn ensure_database(server_url: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = sqlx::PgConnection::connect(server_url)
        .await
        .context("connecting to PostgreSQL (is `scripts/services start` done?)")?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
    }
    admin.close().await.ok();
    let base = server_url.split('?').next().unwrap_or(server_url);
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    Ok(format!("{base}/{name}"))
}

fn print_guide(proxy: SocketAddr, monolith: SocketAddr, admin: SocketAddr) {
    let m = format!("http://{proxy}");
    let a = format!("http://{admin}");
    println!(
        r#"
ficus demo is running. Ctrl-C stops it.

  ficus proxy       {m}        (what end users call; routes.toml decides who answers)
  proxy admin       {a}/routes  {a}/metrics  {a}/.well-known/jwks.json
  monolith          http://{monolith}  (behind the proxy)

Authorization at the edge (routes.toml [auth]: the monolith's tokens, verified by the proxy):
  curl -s {m}/api/people/1                       # 401 from the proxy: no token
  TOKEN=$(curl -s {m}/api/login -H 'content-type: application/json' \
      -d '{{"email":"{ADMIN_EMAIL}","password":"{ADMIN_PASSWORD}"}}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s {m}/api/me -H "authorization: Bearer $TOKEN"   # the identity the monolith received
  curl -s {m}/api/me -H "authorization: Bearer $TOKEN" -H 'x-ficus-subject: 999'   # forged: stripped
  curl -s {m}/metrics -H "authorization: Bearer $TOKEN"  # 403: a route closed at the edge

The legacy app through the proxy:
  curl -s {m}/api/people -H "authorization: Bearer $TOKEN"
  curl -s {m}/api/tasks -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
      -d '{{"title":"Strangle the monolith","assignee_id":1,"tags":["ficus"]}}'
  curl -s "{m}/api/tasks?status=todo" -H "authorization: Bearer $TOKEN"
  curl -s "{m}/api/documents?name=notes.txt" -H "authorization: Bearer $TOKEN" \
      -H 'content-type: text/plain' --data-binary @README.md

Flip a route live (the proxy reloads routes.toml by itself):
  target/debug/ficus routes flip people-read --mode canary --percent 50
  curl -si {m}/api/people/1 -H "authorization: Bearer $TOKEN" -H 'x-user-id: u7' | grep x-ficus
  (canary users are served by ficus-people from its view, `x-ficus-side: extracted`; a
   request it cannot answer falls back to the monolith, counted in {a}/metrics as
   ficus_proxy_fallbacks_total)
  target/debug/ficus routes flip people-read --mode extracted
  target/debug/ficus routes flip people-read --mode monolith
"#
    );
}
