//! `spacepanda`: the command-line face of SpacePanda core.
//!
//! `spacepanda demo` runs several devices in one process, each on its own encrypted database
//! file, through a network that shuffles and duplicates every envelope, and checks that they
//! converge. It exits with status 0 only if every check held.

mod demo;
mod demo_network;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spacepanda",
    version,
    about = "SpacePanda core: end-to-end encrypted group messaging over MLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the end-to-end demo: alice (two devices), bob and carol in one group.
    Demo {
        /// Keep the devices' database files here (must be empty or absent); default: a
        /// temporary directory removed afterwards.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Seed of the network's shuffling and duplication.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { data_dir, seed } => match demo::run(data_dir, seed) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("demo failed: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
