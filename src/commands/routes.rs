//! `ficus routes check FILE` and `ficus routes flip NAME ...`: both run the proxy's own check
//! (`ficus_proxy::check`), so a file they accept is a file the proxy loads.

use std::path::PathBuf;

use anyhow::Context;
use ficus_proxy::CheckedFile;
use ficus_proxy::check::base_dir;
use ficus_proxy::config::Mode;
use ficus_proxy::edit::{EditError, Flip, flip, write_atomically};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Check a routes file as the proxy would load it (key files included); list every problem
    /// with its key and exit non-zero if there is one.
    Check {
        /// The routes file.
        file: PathBuf,
    },
    /// Change one route in place (comments and layout kept); refuse an edit the proxy would
    /// refuse, saying why. A running proxy picks the change up by itself.
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
            match ficus_proxy::check(&text, base_dir(&file)) {
                Ok(CheckedFile { file: routes, .. }) => {
                    println!(
                        "{}: ok ({} routes, {} upstreams)",
                        file.display(),
                        routes.routes.len(),
                        routes.upstreams.len()
                    );
                    Ok(0)
                }
                Err(problems) => {
                    for problem in &problems.0 {
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
            match flip(&text, &name, &changes, base_dir(&file)) {
                Ok(edited) => {
                    write_atomically(&file, &edited)
                        .with_context(|| format!("writing {}", file.display()))?;
                    println!("{}: route \"{name}\" updated", file.display());
                    Ok(0)
                }
                Err(EditError::Invalid(problems)) => {
                    eprintln!(
                        "{}: route \"{name}\" not changed: the proxy would refuse the edited file:",
                        file.display()
                    );
                    for problem in &problems.0 {
                        eprintln!("{}: {problem}", file.display());
                    }
                    Ok(1)
                }
                Err(error) => {
                    eprintln!("{}: {error}", file.display());
                    Ok(1)
                }
            }
        }
    }
}
