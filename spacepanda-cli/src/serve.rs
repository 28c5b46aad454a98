//! `spacepanda serve`: an always-on peer with no identity of its own. It routes, stores
//! directory records and holds mailboxes for devices that are offline, in its own sealed
//! file (`serve.redb`), whose node key gives it the same peer id after a restart.

use std::path::Path;

use core_dht::{DhtConfig, DhtHandle, Multiaddr, load_or_create_node_keypair};

use crate::device_commands::{clock, create_sealed, open_sealed};
use crate::error::CliError;
use crate::passphrase::{self, Purpose};

/// The serve node's file in its data directory.
pub(crate) const SERVE_FILE: &str = "serve.redb";

/// Runs until Ctrl-C (or SIGTERM).
pub(crate) async fn run(
    dir: &Path,
    listen: Multiaddr,
    bootstrap: Vec<Multiaddr>,
) -> Result<(), CliError> {
    let path = dir.join(SERVE_FILE);
    let purpose = if path.exists() {
        Purpose::Open
    } else {
        Purpose::Create
    };
    let passphrase = passphrase::read(&path.display().to_string(), purpose)?;
    let store = tokio::task::spawn_blocking(move || match purpose {
        Purpose::Open => open_sealed(&path, passphrase.as_bytes()),
        Purpose::Create => create_sealed(&path, passphrase.as_bytes()),
    })
    .await
    .map_err(|e| CliError::Io(std::io::Error::other(e)))??;
    let keypair = load_or_create_node_keypair(&store, libp2p::identity::Keypair::generate_ed25519)?;
    let dht = DhtHandle::spawn_with_mailboxes(&keypair, DhtConfig::default(), clock(), store)?;
    let address = dht.listen(listen).await?;
    if !bootstrap.is_empty() {
        let peers = dht.join(&bootstrap).await.map_err(CliError::join)?;
        println!("joined the network: {peers} peers known");
    }
    let full = format!("{address}/p2p/{}", dht.peer_id());
    println!("serving at {full}");
    println!("devices join with: spacepanda run --bootstrap {full}");
    stopped().await;
    let usage = dht.mailbox_usage().await;
    dht.shutdown().await;
    match usage {
        Ok(Some(usage)) => println!(
            "stopped; holding {} bytes in {} mailboxes for offline devices",
            usage.bytes, usage.mailboxes
        ),
        _ => println!("stopped"),
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
