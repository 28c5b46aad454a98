//! `spacepanda demo`: the whole system in one process, over real libp2p on loopback TCP.
//! Serve nodes and four devices (alice on a laptop and a phone, bob, carol), each with its
//! own sealed redb file: key packages found in the DHT, invitations by address, messages
//! both ways, a device offline while messages wait in mailboxes and then back from its file,
//! and a removal. Every step is checked; the exit status says whether all held.

mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use core_dht::{DhtConfig, DhtHandle, Multiaddr, Node, NodeConfig, NodeEvent};
use core_mls::{Event, GroupId};
use spacepanda_core::Timestamp;
use tokio::sync::mpsc;

use crate::chat_content::{ChatContent, Received};
use crate::device_commands::{clock, create_sealed};
use crate::error::CliError;
use crate::serve::SERVE_FILE;
use report::Report;

/// Serve nodes: enough for the five mailbox holders a deposit wants, with the devices.
const SERVE_NODES: usize = 3;
/// The longest the demo waits for any one thing to happen.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

fn passphrase(name: &str) -> String {
    // A stand-in for what a person types, or what an app keeps in the OS keychain.
    format!("demo passphrase of {name}")
}

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0"
        .parse()
        .unwrap_or_else(|_| Multiaddr::empty())
}

/// A text message as the demo's devices keep it.
struct Shown {
    group: GroupId,
    /// The sender's address.
    sender: String,
    /// The sender's clock when it sent it: a conversation view orders by it, since messages
    /// of different senders reach a mailbox in whatever order their deposits land.
    sent_at: Timestamp,
    text: String,
}

/// A device of the demo, as an app would hold it.
struct Device {
    name: &'static str,
    dir: PathBuf,
    node: Option<Node>,
    events: Option<mpsc::UnboundedReceiver<NodeEvent>>,
    /// Text messages, in arrival order.
    received: Vec<Shown>,
    joined: Vec<GroupId>,
    removed_from: Vec<GroupId>,
    /// Devices it saw join by external commit.
    saw_rejoin: usize,
}

impl Device {
    /// A device not opened yet, with its directory under `root`.
    fn new(name: &'static str, root: &std::path::Path) -> Self {
        Self {
            name,
            dir: root.join(name),
            node: None,
            events: None,
            received: Vec::new(),
            joined: Vec::new(),
            removed_from: Vec::new(),
            saw_rejoin: 0,
        }
    }

    fn node(&self) -> Result<&Node, CliError> {
        self.node
            .as_ref()
            .ok_or_else(|| CliError::Io(std::io::Error::other(format!("{} is offline", self.name))))
    }

    fn address(&self) -> Result<String, CliError> {
        Ok(self.node()?.device().address().to_string())
    }

    /// Takes what the node reported, the way an app would: records messages, then
    /// acknowledges them.
    async fn pump(&mut self) -> Result<(), CliError> {
        let mut messages = Vec::new();
        if let Some(events) = self.events.as_mut() {
            while let Ok(event) = events.try_recv() {
                let NodeEvent::Engine(event) = event else {
                    continue;
                };
                match *event {
                    Event::Message {
                        group,
                        sender,
                        sent_at,
                        body,
                        delivery,
                        ..
                    } => {
                        let text = match ChatContent::decode(&body) {
                            Received::Content(ChatContent::Text(text)) => text,
                            other => format!("{other:?}"),
                        };
                        self.received.push(Shown {
                            group,
                            sender: sender.address().to_string(),
                            sent_at,
                            text,
                        });
                        messages.push(delivery);
                    }
                    Event::Joined { group, .. } | Event::Rejoined { group, .. } => {
                        self.joined.push(group)
                    }
                    Event::RemovedFromGroup { group, .. } => self.removed_from.push(group),
                    Event::DeviceRejoined { .. } => self.saw_rejoin += 1,
                    _ => {}
                }
            }
        }
        for delivery in messages {
            self.node()?.ack_delivered(delivery).await?;
        }
        Ok(())
    }

    fn has(&self, text: &str) -> bool {
        self.received.iter().any(|shown| shown.text == text)
    }
}

/// Runs the scenario; true when every check held.
pub(crate) async fn run(data_dir: Option<PathBuf>) -> Result<bool, CliError> {
    let temp;
    let dir: &Path = match &data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(CliError::Io)?;
            if std::fs::read_dir(dir)
                .map_err(CliError::Io)?
                .next()
                .is_some()
            {
                return Err(CliError::Io(std::io::Error::other(format!(
                    "{} is not empty; the demo starts from scratch",
                    dir.display()
                ))));
            }
            dir
        }
        None => {
            temp = tempfile::tempdir().map_err(CliError::Io)?;
            temp.path()
        }
    };
    let mut report = Report::new();
    report.say(&format!(
        "SpacePanda demo: real libp2p on loopback TCP; every node's files are in {}",
        dir.display()
    ));
    let serves = start_serves(dir, &mut report).await?;
    let bootstrap = serves.first().map(|(_, address)| address.clone());
    let mut demo = Demo {
        report,
        bootstrap: bootstrap.into_iter().collect(),
        devices: Vec::new(),
        dir: dir.to_owned(),
    };
    let outcome = demo.scenario().await;
    for device in &mut demo.devices {
        if let Some(node) = device.node.take() {
            node.shutdown().await;
        }
    }
    for (serve, _) in serves {
        serve.shutdown().await;
    }
    outcome?;
    Ok(demo.report.finish())
}

/// Serve nodes, each on its own sealed file, joined through the first.
async fn start_serves(
    dir: &Path,
    report: &mut Report,
) -> Result<Vec<(DhtHandle, Multiaddr)>, CliError> {
    report.say(&format!(
        "starting {SERVE_NODES} serve nodes: peers with no identity that route, keep directory records and hold mailboxes"
    ));
    let mut serves: Vec<(DhtHandle, Multiaddr)> = Vec::new();
    for index in 0..SERVE_NODES {
        let name = format!("serve-{index}");
        let path = dir.join(&name).join(SERVE_FILE);
        let secret = passphrase(&name);
        let store = tokio::task::spawn_blocking(move || create_sealed(&path, secret.as_bytes()))
            .await
            .map_err(|e| CliError::Io(std::io::Error::other(e)))??;
        let keypair = core_dht::load_or_create_node_keypair(
            &store,
            libp2p::identity::Keypair::generate_ed25519,
        )?;
        let dht = DhtHandle::spawn_with_mailboxes(&keypair, DhtConfig::default(), clock(), store)?;
        let bound = dht.listen(loopback()).await?;
        let address: Multiaddr = format!("{bound}/p2p/{}", dht.peer_id())
            .parse()
            .map_err(|e| CliError::Io(std::io::Error::other(format!("{e}"))))?;
        if let Some((_, first)) = serves.first() {
            dht.join(std::slice::from_ref(first))
                .await
                .map_err(CliError::join)?;
        }
        report.say(&format!("  {name} at {address}"));
        serves.push((dht, address));
    }
    Ok(serves)
}

struct Demo {
    report: Report,
    bootstrap: Vec<Multiaddr>,
    devices: Vec<Device>,
    dir: PathBuf,
}

const ALICE_LAPTOP: usize = 0;
const ALICE_PHONE: usize = 1;
const BOB: usize = 2;
const CAROL: usize = 3;
const BOB_TABLET: usize = 4;

impl Demo {
    fn device(&mut self, index: usize) -> Result<&mut Device, CliError> {
        self.devices
            .get_mut(index)
            .ok_or_else(|| CliError::Io(std::io::Error::other("no such device")))
    }

    fn node(&self, index: usize) -> Result<&Node, CliError> {
        self.devices
            .get(index)
            .ok_or_else(|| CliError::Io(std::io::Error::other("no such device")))?
            .node()
    }

    fn config(&self, name: Option<&str>) -> NodeConfig {
        let mut config = NodeConfig::new();
        config.display_name = name.map(str::to_owned);
        config.listen = vec![loopback()];
        config.bootstrap = self.bootstrap.clone();
        config
    }

    /// Opens (or reopens) a device's node from its directory.
    async fn open(&mut self, index: usize, config: NodeConfig) -> Result<Duration, CliError> {
        let (name, dir) = {
            let device = self.device(index)?;
            (device.name, device.dir.clone())
        };
        let started = Instant::now();
        let node = Node::open(&dir, passphrase(name).as_bytes(), config).await?;
        let took = started.elapsed();
        node.publish().await?;
        let device = self.device(index)?;
        device.events = node.take_events();
        device.node = Some(node);
        Ok(took)
    }

    /// Waits until `done` holds for the devices (pumping their events), at most
    /// [`STEP_LIMIT`]; returns whether it did, and how long it took.
    async fn wait_for(
        &mut self,
        done: impl Fn(&[Device]) -> bool,
    ) -> Result<(bool, Duration), CliError> {
        let started = Instant::now();
        while started.elapsed() < STEP_LIMIT {
            for device in &mut self.devices {
                device.pump().await?;
            }
            if done(&self.devices) {
                return Ok((true, started.elapsed()));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok((false, started.elapsed()))
    }

    /// `from` sends `text`; waits until every device in `to` has it.
    async fn message(
        &mut self,
        from: usize,
        group: &GroupId,
        text: &str,
        to: &[usize],
    ) -> Result<bool, CliError> {
        let started = Instant::now();
        self.node(from)?
            .send(group, &ChatContent::Text(text.to_owned()).encode())
            .await?;
        let (held, _) = self
            .wait_for(|devices| {
                to.iter()
                    .all(|index| devices.get(*index).is_some_and(|device| device.has(text)))
            })
            .await?;
        self.report.time(
            "message fan-out (send → every member has it)",
            started.elapsed(),
        );
        Ok(held)
    }

    async fn scenario(&mut self) -> Result<(), CliError> {
        self.open_devices().await?;
        let group = self.invite_everyone().await?;
        self.talk(&group).await?;
        self.offline_and_back(&group).await?;
        self.new_device_joins(&group).await?;
        self.remove_carol(&group).await
    }

    async fn open_devices(&mut self) -> Result<(), CliError> {
        self.report.say(
            "opening four devices, each a Node with its own sealed redb file; each publishes its user record and key packages in the DHT",
        );
        for (name, display_name) in [
            ("alice-laptop", "alice"),
            ("alice-phone", "alice"),
            ("bob", "bob"),
            ("carol", "carol"),
        ] {
            self.devices.push(Device::new(name, &self.dir));
            let index = self.devices.len() - 1;
            let mut config = self.config(Some(display_name));
            if index == ALICE_PHONE {
                // The phone is linked: it imports the laptop's identity key.
                config.link = Some(self.node(ALICE_LAPTOP)?.export_identity_key()?);
            }
            let took = self.open(index, config).await?;
            self.report
                .time("open a device (join, fetch, publish)", took);
            let node = self.node(index)?;
            self.report.say(&format!(
                "  {name:<12} is {}  (device {})",
                node.device().address(),
                node.device().device_id()
            ));
        }
        let same_user = self.node(ALICE_LAPTOP)?.device().user_id()
            == self.node(ALICE_PHONE)?.device().user_id();
        self.report.check(
            "alice's laptop and phone are one user with two devices",
            same_user,
        );
        Ok(())
    }

    async fn invite_everyone(&mut self) -> Result<GroupId, CliError> {
        let bob = self
            .devices
            .get(BOB)
            .map(Device::address)
            .transpose()?
            .unwrap_or_default();
        let carol = self
            .devices
            .get(CAROL)
            .map(Device::address)
            .transpose()?
            .unwrap_or_default();
        let alice = self
            .devices
            .get(ALICE_LAPTOP)
            .map(Device::address)
            .transpose()?
            .unwrap_or_default();
        let laptop = self.node(ALICE_LAPTOP)?;
        let started = Instant::now();
        let record = laptop.dht().resolve(&bob).await?;
        let packages = match record.user.devices.first() {
            Some(device) => laptop
                .dht()
                .lookup_key_packages(&record.user.user_id, &device.member.device_id())
                .await?
                .key_packages
                .len(),
            None => 0,
        };
        self.report.time(
            "lookup (address → user record → key packages)",
            started.elapsed(),
        );
        self.report.say(&format!(
            "alice looks {bob} up in the DHT: {} device(s), {packages} key packages offered",
            record.user.devices.len()
        ));
        self.report
            .check("bob's key packages are found in the DHT", packages > 0);

        let laptop = self.node(ALICE_LAPTOP)?;
        let group = laptop.create_group().await?;
        self.report.say(&format!(
            "alice creates group {group} and invites {bob}, {carol} and her own phone ({alice}) by address, in one commit"
        ));
        let started = Instant::now();
        let invitation = laptop
            .invite_all(&group, &[bob.as_str(), carol.as_str(), alice.as_str()])
            .await?;
        self.report.time(
            "invite 3 users by address (lookups + commit)",
            started.elapsed(),
        );
        self.report.check(
            "the invitation added bob, carol and alice's phone",
            invitation.added.len() == 3 && invitation.skipped.is_empty(),
        );
        let (joined, took) = self
            .wait_for(|devices| {
                [ALICE_PHONE, BOB, CAROL].iter().all(|index| {
                    devices
                        .get(*index)
                        .is_some_and(|device| device.joined.contains(&group))
                })
            })
            .await?;
        self.report.time("Welcome delivered to every invitee", took);
        self.report.check(
            "every invitee joined from its Welcome, pushed over the network",
            joined,
        );
        Ok(group)
    }

    async fn talk(&mut self, group: &GroupId) -> Result<(), CliError> {
        self.report.say("alice writes; bob answers");
        let held = self
            .message(
                ALICE_LAPTOP,
                group,
                "hello from alice",
                &[ALICE_PHONE, BOB, CAROL],
            )
            .await?;
        self.report
            .check("alice's message reached bob, carol and her own phone", held);
        let held = self
            .message(
                BOB,
                group,
                "hi alice, bob here",
                &[ALICE_LAPTOP, ALICE_PHONE, CAROL],
            )
            .await?;
        self.report
            .check("bob's answer reached alice's two devices and carol", held);
        let sender = self
            .devices
            .get(CAROL)
            .and_then(|carol| {
                carol
                    .received
                    .iter()
                    .find(|shown| shown.text == "hi alice, bob here")
            })
            .map(|shown| shown.sender.clone());
        let bob = self.devices.get(BOB).map(Device::address).transpose()?;
        self.report.check(
            "carol sees bob's message signed by bob's address",
            sender == bob,
        );
        Ok(())
    }

    async fn offline_and_back(&mut self, group: &GroupId) -> Result<(), CliError> {
        self.report
            .say("bob's device goes offline (its node stops; nothing is kept in memory)");
        if let Some(node) = self.device(BOB)?.node.take() {
            node.shutdown().await;
        }
        self.device(BOB)?.events = None;
        let waiting = [
            (ALICE_LAPTOP, "bob, are you there? (1)"),
            (CAROL, "bob, carol here (2)"),
            (ALICE_LAPTOP, "we will wait for you (3)"),
        ];
        for (from, text) in waiting {
            let others: Vec<usize> = [ALICE_LAPTOP, ALICE_PHONE, CAROL]
                .into_iter()
                .filter(|index| *index != from)
                .collect();
            self.message(from, group, text, &others).await?;
        }
        let mut all_deposited = true;
        for index in [ALICE_LAPTOP, CAROL] {
            let started = Instant::now();
            loop {
                let pending = self.node(index)?.undelivered().await?;
                if pending == 0 {
                    break;
                }
                if started.elapsed() > STEP_LIMIT {
                    all_deposited = false;
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        self.report.say(
            "the senders could not reach bob, so the envelopes went to bob's mailbox: copies held by the peers closest to it",
        );
        self.report.check(
            "every envelope for bob is deposited in mailboxes",
            all_deposited,
        );

        self.report
            .say("bob's device comes back: its process reopens the sealed file from disk and fetches its mailbox");
        let started = Instant::now();
        let config = self.config(None);
        self.open(BOB, config).await?;
        let expected: Vec<&str> = waiting.iter().map(|(_, text)| *text).collect();
        let (held, _) = self
            .wait_for(|devices| {
                devices
                    .get(BOB)
                    .is_some_and(|bob| expected.iter().all(|text| bob.has(text)))
            })
            .await?;
        self.report.time(
            "mailbox fetch: back online (open, fetch, decrypt)",
            started.elapsed(),
        );
        self.report
            .check("bob got the 3 messages that waited for him", held);
        let mut waited: Vec<&Shown> = self
            .devices
            .get(BOB)
            .map(|bob| {
                bob.received
                    .iter()
                    .filter(|shown| {
                        shown.group == *group && expected.contains(&shown.text.as_str())
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Each sender deposits one envelope after the other, so its messages arrive in the
        // order it sent them; two senders' deposits race, so across senders only the
        // senders' clocks give the order.
        let alices: Vec<&str> = waited
            .iter()
            .filter(|shown| shown.text != waiting[1].1)
            .map(|shown| shown.text.as_str())
            .collect();
        self.report.check(
            "each sender's messages arrived in the order it sent them",
            alices == [waiting[0].1, waiting[2].1],
        );
        waited.sort_by_key(|shown| shown.sent_at);
        let shown: Vec<&str> = waited.iter().map(|shown| shown.text.as_str()).collect();
        self.report.check(
            "shown in the order they were sent (by the senders' clocks)",
            shown == expected,
        );
        let held = self
            .message(
                BOB,
                group,
                "back, thanks!",
                &[ALICE_LAPTOP, ALICE_PHONE, CAROL],
            )
            .await?;
        self.report
            .check("bob, restarted from disk, writes to the group again", held);
        Ok(())
    }

    /// A new device of bob's, linked and invited by nobody, joins bob's groups by external
    /// commit with a GroupInfo his other device serves.
    async fn new_device_joins(&mut self, group: &GroupId) -> Result<(), CliError> {
        self.report.say(
            "bob links a tablet; nobody invites it: it asks bob's device for his groups and joins each by external commit",
        );
        self.devices.push(Device::new("bob-tablet", &self.dir));
        let mut config = self.config(Some("bob"));
        config.link = Some(self.node(BOB)?.export_identity_key()?);
        self.open(BOB_TABLET, config).await?;
        let started = Instant::now();
        let joined = self.node(BOB_TABLET)?.join_own_groups().await?;
        self.report
            .time("a new device joins by external commit", started.elapsed());
        self.report.check(
            "bob's tablet joined the group by itself",
            joined.contains(group),
        );
        // What a member encrypted before it took the tablet's commit is not for the tablet.
        let (told, _) = self
            .wait_for(|devices| {
                [ALICE_LAPTOP, ALICE_PHONE, BOB, CAROL]
                    .iter()
                    .all(|i| devices.get(*i).is_some_and(|d| d.saw_rejoin > 0))
            })
            .await?;
        self.report
            .check("every member device is told that bob's tablet joined", told);
        let held = self
            .message(
                ALICE_LAPTOP,
                group,
                "welcome, tablet",
                &[ALICE_PHONE, BOB, CAROL, BOB_TABLET],
            )
            .await?;
        self.report
            .check("the next message reaches bob's tablet too", held);
        Ok(())
    }

    async fn remove_carol(&mut self, group: &GroupId) -> Result<(), CliError> {
        let carol = self.node(CAROL)?.device().user_id();
        self.report.say("alice removes carol from the group");
        self.node(ALICE_LAPTOP)?.remove_user(group, &carol).await?;
        let (removed, _) = self
            .wait_for(|devices| {
                devices
                    .get(CAROL)
                    .is_some_and(|carol| carol.removed_from.contains(group))
            })
            .await?;
        self.report
            .check("carol's device learns it was removed", removed);
        let held = self
            .message(
                ALICE_LAPTOP,
                group,
                "a secret carol must not read",
                &[ALICE_PHONE, BOB, BOB_TABLET],
            )
            .await?;
        self.report
            .check("the members after the removal get the next message", held);
        let leaked = self
            .devices
            .get(CAROL)
            .is_some_and(|carol| carol.has("a secret carol must not read"));
        self.report
            .check("carol cannot read what was sent after her removal", !leaked);
        Ok(())
    }
}
