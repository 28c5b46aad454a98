//! `init`, `whoami` and `link`: the device's identity, without a chat session.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use core_dht::{DEVICE_FILE, DhtConfig, DhtHandle};
use core_identity::{DeviceIdentity, DisplayName, IdentityStore};
use core_mls::{MlsClient, MlsConfig, PoolStatus};
use spacepanda_core::{
    Clock, KdfParams, Key, KeyValueStore, RedbStore, SealedStore, SharedStore, SystemClock,
    WriteBatch,
};
use zeroize::Zeroizing;

use crate::cli_records::CliRecords;
use crate::error::CliError;
use crate::passphrase::{self, Purpose};

/// The namespace of a link file's two records.
const LINK_NAMESPACE: &str = "link";
const LINK_IDENTITY: &str = "identity_key";
const LINK_NAME: &str = "display_name";

/// How long `whoami` waits for the network before it shows what it knows locally.
const NETWORK_WAIT: Duration = Duration::from_secs(10);

pub(crate) fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The device file in `dir`.
pub(crate) fn device_path(dir: &Path) -> PathBuf {
    dir.join(DEVICE_FILE)
}

/// Opens an existing sealed file with the passphrase.
pub(crate) fn open_sealed(path: &Path, passphrase: &[u8]) -> Result<SharedStore, CliError> {
    let file = RedbStore::open(path).map_err(|e| CliError::store(e, path))?;
    let sealed = SealedStore::open_with_passphrase(file, passphrase)
        .map_err(|e| CliError::store(e, path))?;
    Ok(Arc::new(sealed))
}

/// Creates a new sealed file (which must not exist) with the passphrase.
pub(crate) fn create_sealed(path: &Path, passphrase: &[u8]) -> Result<SharedStore, CliError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(CliError::Io)?;
    }
    let file = RedbStore::create(path).map_err(|e| CliError::store(e, path))?;
    let sealed = SealedStore::create_with_passphrase(file, passphrase, KdfParams::default())
        .map_err(|e| CliError::store(e, path))?;
    Ok(Arc::new(sealed))
}

/// Runs `set_up` on a new device file; if it fails, the file (which held nothing before) is
/// removed, so that a second try starts clean.
fn create_device<T>(
    dir: &Path,
    set_up: impl FnOnce(&Path) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let path = device_path(dir);
    if path.exists() {
        return Err(CliError::AlreadyInitialized {
            dir: dir.to_owned(),
        });
    }
    let result = set_up(&path);
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result
}

/// The device kept in `dir`, opened with the passphrase (asked if needed), which is returned
/// too for what else it seals.
fn open_device(dir: &Path) -> Result<(SharedStore, DeviceIdentity, Zeroizing<String>), CliError> {
    let path = device_path(dir);
    if !path.exists() {
        return Err(CliError::NoDevice {
            dir: dir.to_owned(),
        });
    }
    let passphrase = passphrase::read(&path.display().to_string(), Purpose::Open)?;
    let store = open_sealed(&path, passphrase.as_bytes())?;
    let device = IdentityStore::new(store.clone(), clock())
        .load()?
        .ok_or_else(|| CliError::NoDevice {
            dir: dir.to_owned(),
        })?;
    Ok((store, device, passphrase))
}

/// Prints a new device's address and what to do next.
fn announce(device: &DeviceIdentity, dir: &Path, how: &str) {
    println!(
        "{how} {} (device {}) in {}",
        device.address(),
        device.device_id(),
        dir.display()
    );
    println!(
        "next: spacepanda run --data-dir {} --bootstrap <the address a `spacepanda serve` prints>",
        dir.display()
    );
}

/// `spacepanda init --name NAME`.
pub(crate) fn init(dir: &Path, name: &str) -> Result<(), CliError> {
    // The name is checked before the passphrase is asked for.
    DisplayName::new(name)?;
    let device = create_device(dir, |path| {
        let passphrase = passphrase::read(&path.display().to_string(), Purpose::Create)?;
        let store = create_sealed(path, passphrase.as_bytes())?;
        let device = IdentityStore::new(store.clone(), clock()).create(name)?;
        // The key package pool is filled now, so that `run` has packages to publish at once.
        MlsClient::open(store, clock(), device.clone(), MlsConfig::default())?;
        Ok(device)
    })?;
    announce(&device, dir, "created");
    Ok(())
}

fn describe_pool(status: &PoolStatus) -> String {
    format!(
        "{} ready to publish, {} published, {} used; last resort {}",
        status.fresh,
        status.published,
        status.consumed + status.claimed,
        if status.last_resort_age.is_some() {
            "ready"
        } else {
            "missing (run to replenish)"
        }
    )
}

/// `spacepanda whoami`.
pub(crate) async fn whoami(dir: &Path) -> Result<(), CliError> {
    let dir_owned = dir.to_owned();
    let (device, status, bootstrap) = tokio::task::spawn_blocking(move || {
        let (store, device, _) = open_device(&dir_owned)?;
        let bootstrap = CliRecords::new(store.clone()).bootstrap()?;
        let engine = MlsClient::open(store, clock(), device.clone(), MlsConfig::default())?;
        Ok::<_, CliError>((device, engine.key_package_status()?, bootstrap))
    })
    .await
    .map_err(|e| CliError::Io(std::io::Error::other(e)))??;
    println!("address       {}", device.address());
    println!("fingerprint   {}", device.user_id().fingerprint());
    println!("user id       {}", device.user_id());
    println!("this device   {}", device.device_id());
    println!("key packages  {}", describe_pool(&status));
    if bootstrap.is_empty() {
        println!("devices       this one (run once with --bootstrap to list the others)");
        return Ok(());
    }
    // A node of its own, with a throwaway peer id: the device's node may be running.
    let dht = DhtHandle::spawn(
        &libp2p::identity::Keypair::generate_ed25519(),
        DhtConfig::default(),
        clock(),
    )?;
    let lookup = async {
        dht.join(&bootstrap).await?;
        dht.lookup_user(&device.user_id()).await
    };
    match tokio::time::timeout(NETWORK_WAIT, lookup).await {
        Ok(Ok(record)) => {
            println!("devices       {} on the network:", record.devices.len());
            for entry in &record.devices {
                let marker = if entry.member.device_id() == device.device_id() {
                    " (this one)"
                } else {
                    ""
                };
                println!("              {}{marker}", entry.member.device_id());
            }
        }
        Ok(Err(e)) => println!("devices       the network did not say ({e})"),
        Err(_) => println!("devices       the network did not answer in {NETWORK_WAIT:?}"),
    }
    dht.shutdown().await;
    Ok(())
}

/// `spacepanda link export FILE`.
pub(crate) fn link_export(dir: &Path, file: &Path) -> Result<(), CliError> {
    if file.exists() {
        return Err(CliError::FileExists {
            path: file.to_owned(),
        });
    }
    // The device's passphrase seals the link file too: the new device asks for it.
    let (store, device, passphrase) = open_device(dir)?;
    let exported = IdentityStore::new(store, clock()).export_identity_key()?;
    let written = (|| {
        let link = create_sealed(file, passphrase.as_bytes())?;
        let mut batch = WriteBatch::new();
        batch
            .put(
                LINK_NAMESPACE,
                Key::from_segment(LINK_IDENTITY),
                exported.to_vec(),
            )
            .put(
                LINK_NAMESPACE,
                Key::from_segment(LINK_NAME),
                device.display_name().as_str().as_bytes().to_vec(),
            );
        link.apply(batch)?;
        Ok::<_, CliError>(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(file);
    }
    written?;
    println!(
        "wrote {}: import it on the new device with `spacepanda link import {}`, then delete it",
        file.display(),
        file.display()
    );
    Ok(())
}

/// `spacepanda link import FILE`.
pub(crate) fn link_import(dir: &Path, file: &Path) -> Result<(), CliError> {
    if !file.exists() {
        return Err(CliError::NotALinkFile {
            path: file.to_owned(),
            reason: "it does not exist".into(),
        });
    }
    let device = create_device(dir, |path| {
        let passphrase = passphrase::read(&file.display().to_string(), Purpose::Open)?;
        let link = open_sealed(file, passphrase.as_bytes()).map_err(|e| match e {
            CliError::Store(store) => CliError::NotALinkFile {
                path: file.to_owned(),
                reason: store.to_string(),
            },
            other => other,
        })?;
        let read = |name: &str| -> Result<Zeroizing<Vec<u8>>, CliError> {
            link.get(LINK_NAMESPACE, &Key::from_segment(name))?
                .map(Zeroizing::new)
                .ok_or_else(|| CliError::NotALinkFile {
                    path: file.to_owned(),
                    reason: format!("its {name} record is missing"),
                })
        };
        let exported = read(LINK_IDENTITY)?;
        let name =
            String::from_utf8(read(LINK_NAME)?.to_vec()).map_err(|_| CliError::NotALinkFile {
                path: file.to_owned(),
                reason: "its display name is not text".into(),
            })?;
        let store = create_sealed(path, passphrase.as_bytes())?;
        let device = IdentityStore::new(store.clone(), clock()).import(&exported, &name)?;
        MlsClient::open(store, clock(), device.clone(), MlsConfig::default())?;
        Ok(device)
    })?;
    announce(&device, dir, "linked");
    println!("members add this device by inviting the user's address again");
    Ok(())
}
