//! `spacepanda`: SpacePanda core in a terminal.
//!
//! One process runs one device, kept in a data directory (`~/.spacepanda` by default) as one
//! sealed redb file. `init` creates the device, `run` joins the network and opens a chat
//! session read from stdin line by line, `serve` runs an always-on peer with no identity of
//! its own, `link` moves the user's identity to a second device, and `demo` runs the whole
//! system over loopback TCP in one process and checks it.
//!
//! Chat goes to stdout; logs go to stderr through `tracing` (`RUST_LOG=info`).

mod chat_content;
mod cli_records;
mod demo;
mod device_commands;
mod error;
mod passphrase;
mod serve;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use core_dht::Multiaddr;

use crate::error::CliError;

#[derive(Parser)]
#[command(
    name = "spacepanda",
    version,
    about = "SpacePanda: end-to-end encrypted group chat over MLS, on a peer-to-peer network",
    after_help = "The passphrase that seals a data directory is read from SPACEPANDA_PASSPHRASE, or asked for \
                  on the terminal; never from an argument. Logs: RUST_LOG=info (to stderr)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DataDir {
    /// The device's directory (default: $SPACEPANDA_HOME, else ~/.spacepanda).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct NetworkArgs {
    /// Where to listen, as a multiaddr.
    #[arg(long, value_name = "ADDR", default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Multiaddr,
    /// A peer to join the network through, ending in /p2p/<peer id> (as `serve` prints it).
    /// Repeat for several. `run` remembers them for next time.
    #[arg(long, value_name = "ADDR")]
    bootstrap: Vec<Multiaddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Create this device's identity: a new user with one device.
    #[command(
        after_help = "Example:\n  SPACEPANDA_PASSPHRASE=… spacepanda init --name alice --data-dir ./alice"
    )]
    Init {
        /// The name others see (1 to 64 characters).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Show this device: its address, fingerprint, the user's devices, key packages.
    #[command(after_help = "Example:\n  spacepanda whoami --data-dir ./alice")]
    Whoami {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Join the network and chat: commands and messages are read from stdin, line by line.
    #[command(
        after_help = "Example:\n  spacepanda run --data-dir ./alice --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…\n\n\
                            In the session:\n  \
                            /create team            create a group (it becomes the current one)\n  \
                            /invite team bob@1a2b3c4d   invite a user by address\n  \
                            /remove team bob        remove a user\n  \
                            /groups  /members team  /safety bob@1a2b3c4d  /open team  /whoami  /help\n  \
                            hello!                  a plain line is sent to the current group\n  \
                            /quit                   (or end of input)"
    )]
    Run {
        #[command(flatten)]
        dir: DataDir,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Run an always-on peer with no identity of its own: routing, records and mailboxes for
    /// the devices that are offline.
    #[command(
        after_help = "Example:\n  spacepanda serve --data-dir ./serve --listen /ip4/127.0.0.1/tcp/4001\n\n\
                            It prints the address others give to --bootstrap, and runs until Ctrl-C."
    )]
    Serve {
        #[command(flatten)]
        dir: DataDir,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Add a second device of the same user: export on a device, import on the new one.
    #[command(
        after_help = "Example:\n  spacepanda link export alice.link --data-dir ./alice-laptop\n  \
                            spacepanda link import alice.link --data-dir ./alice-phone\n\n\
                            The link file is sealed with the passphrase (SPACEPANDA_PASSPHRASE, or asked). Whoever \
                            holds it and the passphrase can add devices as you: delete it once imported."
    )]
    Link {
        #[command(subcommand)]
        action: LinkAction,
    },
    /// Run the whole system over loopback TCP in one process, and check it: serve nodes,
    /// four devices, invitations by address, messages both ways, a device offline and back,
    /// a restart from disk, a removal.
    #[command(after_help = "Example:\n  spacepanda demo --data-dir ./demo-files")]
    Demo {
        /// Keep the files here (must be empty or absent); default: a temporary directory.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LinkAction {
    /// Write this device's identity into a sealed link file.
    Export {
        /// The link file to write (must not exist).
        file: PathBuf,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Create this device from a link file: the same user, a new device.
    Import {
        /// The link file made by `link export`.
        file: PathBuf,
        #[command(flatten)]
        dir: DataDir,
    },
}

impl DataDir {
    fn resolve(&self) -> Result<PathBuf, CliError> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        if let Some(home) = std::env::var_os("SPACEPANDA_HOME") {
            return Ok(PathBuf::from(home));
        }
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".spacepanda"))
            .ok_or(CliError::NoDataDir)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Io)?;
    match command {
        Command::Init { name, dir } => device_commands::init(&dir.resolve()?, &name),
        Command::Whoami { dir } => runtime.block_on(device_commands::whoami(&dir.resolve()?)),
        Command::Run { dir, network } => runtime.block_on(session::run(
            &dir.resolve()?,
            network.listen,
            network.bootstrap,
        )),
        Command::Serve { dir, network } => runtime.block_on(serve::run(
            &dir.resolve()?,
            network.listen,
            network.bootstrap,
        )),
        Command::Link { action } => match action {
            LinkAction::Export { file, dir } => {
                device_commands::link_export(&dir.resolve()?, &file)
            }
            LinkAction::Import { file, dir } => {
                device_commands::link_import(&dir.resolve()?, &file)
            }
        },
        Command::Demo { data_dir } => {
            if runtime.block_on(demo::run(data_dir))? {
                Ok(())
            } else {
                Err(CliError::DemoFailed)
            }
        }
    }
}
