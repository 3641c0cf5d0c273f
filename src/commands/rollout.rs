//! `ficus rollout run|status|pause|resume|check`: the progressive rollout controller
//! (`ficus-rollout`) over a plan, `rollout.toml` beside routes.toml.

use std::path::PathBuf;

use anyhow::Context;
use ficus_rollout::{Controller, Plan, set_paused};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Move the planned routes step by step on evidence (parity, errors, latency, view lag),
    /// rolling back when a gate fails; every decision goes to the ledger.
    Run {
        /// The plan.
        #[arg(long, default_value = "rollout.toml")]
        plan: PathBuf,
        /// Serve `/metrics`, `/healthz` and `/readyz` here (e.g. 127.0.0.1:9903).
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Where each planned route stands and why (the ledger and live readings).
    Status {
        #[arg(long, default_value = "rollout.toml")]
        plan: PathBuf,
    },
    /// Stop the controller from moving a route (it stays where it is) until `resume`.
    Pause {
        route: String,
        #[arg(long, default_value = "rollout.toml")]
        plan: PathBuf,
        /// Why, for the ledger.
        #[arg(long, default_value = "paused by a person")]
        reason: String,
    },
    /// Let the controller move a paused (or rolled back) route again, with a fresh window.
    Resume {
        route: String,
        #[arg(long, default_value = "rollout.toml")]
        plan: PathBuf,
        #[arg(long, default_value = "resumed by a person")]
        reason: String,
    },
    /// Check a plan; list every problem with its key.
    Check {
        #[arg(long, default_value = "rollout.toml")]
        plan: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<Plan, i32> {
    Plan::load(path).map_err(|problems| {
        for problem in &problems.0 {
            eprintln!("{}: {problem}", path.display());
        }
        1
    })
}

fn person() -> String {
    std::env::var("USER").unwrap_or_else(|_| "a person".to_owned())
}

/// Returns the process exit code.
pub async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Check { plan } => {
            let loaded = match load(&plan) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            println!("{}: ok ({} routes)", plan.display(), loaded.routes.len());
            Ok(0)
        }
        Command::Status { plan } => {
            let plan = match load(&plan) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            print!("{}", ficus_rollout::status::report(&plan).await?);
            Ok(0)
        }
        Command::Pause {
            route,
            plan,
            reason,
        } => pause(&plan, &route, true, &reason),
        Command::Resume {
            route,
            plan,
            reason,
        } => pause(&plan, &route, false, &reason),
        Command::Run { plan, admin_listen } => {
            let plan = match load(&plan) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            let registry = ficus_telemetry::MetricsRegistry::new();
            let metrics = ficus_rollout::metrics::RolloutMetrics::register(&registry);
            let health = ficus_telemetry::Health::new();
            if let Some(addr) = admin_listen {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener {addr}"))?;
                let admin = ficus_telemetry::Admin::new(health.clone()).metrics(registry);
                tracing::info!(addr = %listener.local_addr()?, "admin listening");
                tokio::spawn(admin.serve(listener, super::shutdown_signal()));
            }
            let controller = Controller::new(plan, metrics)?;
            health.set_ready(true);
            controller.run(super::shutdown_signal()).await?;
            Ok(0)
        }
    }
}

fn pause(plan: &std::path::Path, route: &str, paused: bool, reason: &str) -> anyhow::Result<i32> {
    let plan = match load(plan) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let entry = set_paused(&plan, route, paused, reason, &person())?;
    println!(
        "{route}: {} at {} ({})",
        if paused { "paused" } else { "resumed" },
        entry.step,
        plan.controller.ledger_file.display()
    );
    Ok(0)
}
