//! `ficus`: the one command-line tool of the toolkit. It only parses, builds and runs; the work
//! lives in the crates (`ficus-monolith` today; the proxy, CDC and parity as their issues land).

mod commands;

// The proxy's request path allocates small, short-lived buffers; mimalloc serves those with
// less CPU than the system allocator (measured: see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Strangle a legacy monolith one route at a time.
#[derive(Parser)]
#[command(name = "ficus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the routing proxy in front of the monolith (routes.toml, reloaded live).
    Proxy(commands::proxy::Args),
    /// Check or edit a routes file.
    #[command(subcommand)]
    Routes(commands::routes::Command),
    /// Serve the legacy monolith (the app the demo and the tests strangle).
    Monolith(commands::monolith::Args),
    /// Run the demo: the monolith over a demo database, with what to open and curl.
    Demo(commands::demo::Args),
    /// Change-data capture: stream the database's changes into Kafka (run, status, check).
    #[command(subcommand)]
    Cdc(commands::cdc::Command),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Routes(command) => {
            let code = commands::routes::run(command)?;
            std::process::exit(code);
        }
        Command::Proxy(args) => {
            let settings = commands::proxy::Settings::load(&args)?;
            commands::proxy::runtime(&settings)?.block_on(commands::proxy::run(settings))
        }
        Command::Monolith(args) => runtime()?.block_on(commands::monolith::run(args)),
        Command::Demo(args) => runtime()?.block_on(commands::demo::run(args)),
        Command::Cdc(command) => runtime()?.block_on(commands::cdc::run(command)),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr (stdout is for what a command prints), colored only on a terminal.
    let stderr = std::io::stderr();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&stderr))
        .init();
}
