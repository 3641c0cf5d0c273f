//! The command line every service binary has: `<service> [serve]` runs it, `<service> rebuild`
//! empties its views and forgets their offsets (the next start replays the topics from the
//! earliest offset; topics are never deleted). Settings as in [`crate::settings`].

use std::path::PathBuf;
use std::process::ExitCode;

use ficus_telemetry::{Env, ProcessEnv};

use crate::serve::{Service, ServiceError};
use crate::settings::Settings;

#[derive(clap::Parser)]
struct Cli {
    /// A TOML file of the service's settings (`listen`, `store`, `topic_prefix`,
    /// `[kafka] brokers`, `[identity]`, `[views]`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// The views' store: a SQLite file path or a postgres:// URL.
    #[arg(long, global = true)]
    store: Option<String>,
    /// Kafka `bootstrap.servers`.
    #[arg(long, global = true)]
    brokers: Option<String>,
    /// Prefix of the change topics (`<prefix>.public.<table>`).
    #[arg(long, global = true)]
    topic_prefix: Option<String>,
    /// The proxy admin API's JWKS URL.
    #[arg(long, global = true)]
    jwks_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve the API from the views, consuming the change topics (the default).
    Serve,
    /// Drop the views' rows and offsets: the next start replays the topics from the start.
    /// Run it while the service is stopped.
    Rebuild,
}

/// Loads the settings of `service` (`FICUS_<SERVICE>__*` from `env`, the file, the flags).
fn load(service: &Service, cli: &Cli, env: &dyn Env) -> Result<Settings, ServiceError> {
    let settings: Settings = ficus_telemetry::Loader::new(service.name)
        .file(cli.config.as_deref())
        .env(env)
        .flag("listen", "--listen", cli.listen)
        .flag("store", "--store", cli.store.as_ref())
        .flag("kafka.brokers", "--brokers", cli.brokers.as_ref())
        .flag("topic_prefix", "--topic-prefix", cli.topic_prefix.as_ref())
        .flag("identity.jwks_url", "--jwks-url", cli.jwks_url.as_ref())
        .load()
        .map_err(|e| ServiceError::Settings(e.to_string()))?;
    settings
        .validate()
        .map_err(|problems| ServiceError::Settings(problems.join("; ")))?;
    Ok(settings)
}

/// The `main` of a service binary: parse, load settings, run the command.
pub fn main(service: Service) -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    ficus_telemetry::logs::init(&ProcessEnv);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{}: starting the runtime: {error}", service.name);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&service, &cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error}", service.name);
            ExitCode::FAILURE
        }
    }
}

async fn run(service: &Service, cli: &Cli) -> Result<(), ServiceError> {
    let settings = load(service, cli, &ProcessEnv)?;
    match cli.command.as_ref().unwrap_or(&Command::Serve) {
        Command::Serve => {
            let addr = settings.listen.unwrap_or(service.default_listen);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(ServiceError::Listener)?;
            let running = crate::serve::start(service, &settings, listener).await?;
            // On stdout, for scripts and tests that bind port 0.
            println!("{} listening on {}", service.name, running.addr);
            let shutdown = running.shutdown();
            tokio::spawn(async move {
                shutdown_signal().await;
                shutdown.trigger();
            });
            running.wait().await
        }
        Command::Rebuild => {
            let location = settings.store_location(service.name);
            let store = ficus_view::Store::open(&location).await?;
            if let Some(group) = crate::serve::transactional_views(service, &settings) {
                // With the group's place in the transaction topic and its last END.
                ficus_view::rebuild_transactional(&store, &group).await?;
                for spec in &group.views {
                    println!(
                        "{}: view {} emptied; the next start replays {} and {} from their \
                         earliest offsets",
                        service.name, spec.name, spec.topic, group.transaction_topic
                    );
                }
                return Ok(());
            }
            for spec in (service.views)(&settings) {
                ficus_view::rebuild(&store, &spec).await?;
                println!(
                    "{}: view {} emptied; the next start replays {} from its earliest offset",
                    service.name, spec.name, spec.topic
                );
            }
            Ok(())
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
