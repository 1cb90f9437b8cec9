//! `outpost`: the command-line program. It grows with the replicator, automaton and network
//! issues; for now it plays the SPEC's example plan on real stores (`outpost demo`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "outpost",
    version,
    about = "Embedded, replicated, local-first storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Play the SPEC's example plan (C5): central ASOC, remotes BSOC and CSOC, one day.
    Demo {
        /// Directory for the three stores (default: a new directory under the system's
        /// temporary directory).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { data } => {
            let dir = data.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("outpost-demo-{}", std::process::id()))
            });
            if dir.join("ASOC").exists() {
                eprintln!(
                    "error: {} already holds a demo; choose an empty directory with --data",
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
            match outpost::demo::run(&dir) {
                Ok(transcript) => {
                    print!("{transcript}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
