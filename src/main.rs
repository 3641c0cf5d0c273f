//! `ficus`: the one command-line tool of the toolkit. It only parses, builds and runs; the work
//! lives in the crates (`ficus-proxy`, `ficus-adapters`, `ficus-monolith`, `ficus-parity`), the process plumbing
//! (logs, settings, health, metrics) in `ficus-telemetry`. The process environment is read here
//! only, through `ficus_telemetry::ProcessEnv`, and passed down.

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
    /// Replay a recorded corpus against the monolith and the extracted side, compare the
    /// answers (noise calibrated), write JUnit and HTML reports; exit 1 past the thresholds.
    Parity(commands::parity::Args),
    /// Change-data capture: stream the database's changes into Kafka (run, status, check).
    #[command(subcommand)]
    Cdc(commands::cdc::Command),
    /// Progressive rollout: move routes through a plan (rollout.toml) on parity, error,
    /// latency and view-lag gates; a decision ledger; pause and resume.
    #[command(subcommand)]
    Rollout(commands::rollout::Command),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = ficus_telemetry::ProcessEnv;
    ficus_telemetry::logs::init(&env);
    match cli.command {
        Command::Routes(command) => {
            let code = commands::routes::run(command)?;
            std::process::exit(code);
        }
        Command::Proxy(args) => {
            let settings = commands::proxy::Settings::load(&args, &env)?;
            commands::proxy::runtime(&settings)?.block_on(commands::proxy::run(settings))
        }
        Command::Monolith(args) => {
            let settings = commands::monolith::Settings::load(&args, &env)?;
            runtime()?.block_on(commands::monolith::run(settings))
        }
        Command::Parity(args) => {
            let code = runtime()?.block_on(commands::parity::run(args))?;
            std::process::exit(code);
        }
        Command::Demo(args) => runtime()?.block_on(commands::demo::run(args)),
        Command::Cdc(command) => runtime()?.block_on(commands::cdc::run(command, &env)),
        Command::Rollout(command) => {
            let code = runtime()?.block_on(commands::rollout::run(command))?;
            std::process::exit(code);
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
