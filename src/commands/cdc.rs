//! `ficus cdc`: the change-data adapter (`run`), its state (`status`), a configuration check
//! (`check`). Configuration: a TOML file (`--config`, see `cdc.example.toml`) with
//! `FICUS_CDC__<KEY>` environment overrides (`FICUS_CDC__KAFKA__BROKERS`, ...).

use std::path::PathBuf;

use anyhow::Context;
use ficus_adapters::{CancellationToken, CdcConfig};
use ficus_telemetry::Env;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Stream the database's changes into Kafka until Ctrl-C or SIGTERM. A failure no retry
    /// fixes stops the pipeline but not the process: `/healthz` answers 503 with the cause
    /// until it is stopped, and the exit status is then non-zero.
    Run(ConfigArgs),
    /// Print the running adapter's health (a failure that stopped it, with its cause), the
    /// slot's position and lag, the last heartbeat and the snapshot's state.
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration and exit (0 when valid; the problems with their keys otherwise).
    Check(ConfigArgs),
    /// Benchmark helper: a plain rdkafka producer's rate against a broker.
    #[command(hide = true)]
    BenchProducer {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, default_value_t = 500)]
        size: usize,
        /// One message at a time: print the round trip's p50 and p99 in ms instead of a rate.
        #[arg(long)]
        round_trips: bool,
    },
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// The configuration file (TOML); `FICUS_CDC__<KEY>` variables override its keys.
    #[arg(long, short, env = "FICUS_CDC_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self, env: &dyn Env) -> anyhow::Result<CdcConfig> {
        Ok(CdcConfig::load_from(self.config.as_deref(), env)?)
    }
}

pub async fn run(command: Command, env: &dyn Env) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let config = args.load(env)?;
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                super::shutdown_signal().await;
                trigger.cancel();
            });
            ficus_adapters::run(config, shutdown)
                .await
                .context("ficus cdc run")
        }
        Command::Status { config, json } => {
            let config = config.load(env)?;
            let status = match ficus_adapters::status::gather(&config).await {
                Ok(status) => status,
                Err(error) => {
                    // The database may be what is wrong (authentication...): the adapter's
                    // own report still says so.
                    let adapter = ficus_adapters::status::AdapterState::fetch(&config).await;
                    if json {
                        println!("{}", serde_json::json!({ "adapter": adapter }));
                    } else {
                        print!("{adapter}");
                    }
                    return Err(error.into());
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
            Ok(())
        }
        Command::Check(args) => {
            let config = args.load(env)?;
            println!(
                "configuration valid: slot {}, publication {}, topics {}.<schema>.<table>, broker {}",
                config.slot, config.publication, config.topic_prefix, config.kafka.brokers
            );
            Ok(())
        }
        Command::BenchProducer {
            brokers,
            topic,
            count,
            size,
            round_trips: true,
        } => {
            // The topic exists once a rate run created it; create it with a 1-message run.
            ficus_adapters::bench::produce_raw(&brokers, &topic, 1, size).await?;
            let (p50, p99) = tokio::task::spawn_blocking(move || {
                ficus_adapters::bench::round_trips(&brokers, &topic, count, size)
            })
            .await??;
            println!("{p50:.2} {p99:.2}");
            Ok(())
        }
        Command::BenchProducer {
            brokers,
            topic,
            count,
            size,
            round_trips: false,
        } => {
            let rate = ficus_adapters::bench::produce_raw(&brokers, &topic, count, size).await?;
            println!("{rate:.0}");
            Ok(())
        }
    }
}
