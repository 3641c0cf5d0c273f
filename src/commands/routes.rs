//! `ficus routes check FILE` and `ficus routes flip NAME ...`.

use std::path::PathBuf;

use anyhow::Context;
use ficus_proxy::config::Mode;
use ficus_proxy::edit::{Flip, flip, write_atomically};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate a routes file; list every problem and exit non-zero if there is one.
    Check {
        /// The routes file.
        file: PathBuf,
    },
    /// Change one route in place (comments and layout kept); refuse an edit that would not
    /// validate. A running proxy picks the change up by itself.
    Flip {
        /// The route's name.
        name: String,
        /// The routes file.
        #[arg(long, default_value = "routes.toml")]
        file: PathBuf,
        /// New mode.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<Mode>,
        /// New canary share, 0..=100.
        #[arg(long)]
        percent: Option<f64>,
        /// New stickiness: header:NAME, cookie:NAME, ip or none.
        #[arg(long)]
        sticky: Option<String>,
        /// New extracted upstream.
        #[arg(long)]
        serve: Option<String>,
        /// Turn fallback to the monolith on or off.
        #[arg(long)]
        fallback: Option<bool>,
    },
}

fn parse_mode(raw: &str) -> Result<Mode, String> {
    match raw {
        "monolith" => Ok(Mode::Monolith),
        "shadow" => Ok(Mode::Shadow),
        "canary" => Ok(Mode::Canary),
        "extracted" => Ok(Mode::Extracted),
        other => Err(format!(
            "`{other}` is not a mode (monolith, shadow, canary, extracted)"
        )),
    }
}

/// Returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            match ficus_proxy::RoutesFile::parse(&text) {
                Ok(routes) => {
                    println!(
                        "{}: ok ({} routes, {} upstreams)",
                        file.display(),
                        routes.routes.len(),
                        routes.upstreams.len()
                    );
                    Ok(0)
                }
                Err(errors) => {
                    for problem in &errors.0 {
                        eprintln!("{}: {problem}", file.display());
                    }
                    Ok(1)
                }
            }
        }
        Command::Flip {
            name,
            file,
            mode,
            percent,
            sticky,
            serve,
            fallback,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let changes = Flip {
                mode,
                percent,
                sticky,
                serve,
                fallback,
            };
            match flip(&text, &name, &changes) {
                Ok(edited) => {
                    write_atomically(&file, &edited)
                        .with_context(|| format!("writing {}", file.display()))?;
                    println!("{}: route \"{name}\" updated", file.display());
                    Ok(0)
                }
                Err(error) => {
                    eprintln!("{}: {error}", file.display());
                    Ok(1)
                }
            }
        }
    }
}
