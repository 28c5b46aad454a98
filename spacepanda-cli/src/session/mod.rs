//! `spacepanda run`: one device on the network, and a chat session read from stdin line by
//! line (so a script can drive it as well as a person). Incoming messages and what happens
//! to the groups are printed as they arrive; logs go to stderr.

mod chat_view;
mod command_line;

use std::collections::BTreeMap;
use std::path::Path;

use core_dht::{Multiaddr, Node, NodeConfig, NodeEvent};
use core_identity::{Directory, SafetyNumber};
use core_mls::{Event, GroupId};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::chat_content::{ChatContent, Received};
use crate::cli_records::CliRecords;
use crate::device_commands::{device_path, open_sealed};
use crate::error::CliError;
use crate::passphrase::{self, Purpose};
use command_line::{HELP, Input};

pub(crate) use chat_view::{clock_time, who};

/// Runs the session until `/quit` or the end of stdin.
pub(crate) async fn run(
    dir: &Path,
    listen: Multiaddr,
    bootstrap: Vec<Multiaddr>,
) -> Result<(), CliError> {
    let path = device_path(dir);
    if !path.exists() {
        return Err(CliError::NoDevice {
            dir: dir.to_owned(),
        });
    }
    let passphrase = passphrase::read(&path.display().to_string(), Purpose::Open)?;
    // The saved bootstrap list is read first (the node needs it to open); this also turns a
    // wrong passphrase or a file in use into its plain message before anything starts.
    let saved = {
        let (path, passphrase) = (path.clone(), passphrase.clone());
        tokio::task::spawn_blocking(move || {
            CliRecords::new(open_sealed(&path, passphrase.as_bytes())?).bootstrap()
        })
        .await
        .map_err(|e| CliError::Io(std::io::Error::other(e)))??
    };
    let given = !bootstrap.is_empty();
    let mut config = NodeConfig::new();
    config.listen = vec![listen];
    config.bootstrap = if given { bootstrap } else { saved };
    let node = Node::open(dir, passphrase.as_bytes(), config.clone())
        .await
        .map_err(|e| match e {
            core_dht::DhtError::Unreachable { .. } => CliError::join(e),
            other => CliError::network(other, &path),
        })?;
    let records = CliRecords::new(node.store().clone());
    if given {
        records.set_bootstrap(&config.bootstrap)?;
    }
    let mut session = Session::new(node, records)?;
    session.start().await;
    let outcome = session.read_loop().await;
    let waiting = session.node.undelivered().await.unwrap_or(0);
    session.node.shutdown().await;
    if waiting > 0 {
        println!("bye; {waiting} envelopes still on their way are kept and sent next time");
    } else {
        println!("bye");
    }
    outcome
}

/// One running session.
struct Session {
    node: Node,
    records: CliRecords,
    names: BTreeMap<GroupId, String>,
    current: Option<GroupId>,
}

impl Session {
    fn new(node: Node, records: CliRecords) -> Result<Self, CliError> {
        let names = records.group_names()?.into_iter().collect();
        Ok(Self {
            node,
            records,
            names,
            current: None,
        })
    }

    fn label(&self, group: &GroupId) -> String {
        match self.names.get(group) {
            Some(name) => format!("#{name}"),
            None => format!("#{group}"),
        }
    }

    async fn start(&mut self) {
        let peer = self.node.dht().peer_id();
        for address in self.node.listen_addresses() {
            println!("listening on {address}/p2p/{peer}");
        }
        match self.node.publish().await {
            Ok(()) => println!("published {} to the network", self.node.device().address()),
            Err(e) => println!("! not published yet ({e}); retried every minute"),
        }
        if let Ok(groups) = self.node.groups().await
            && let [only] = groups.as_slice()
        {
            self.current = Some(only.clone());
        }
        println!(
            "ready: you are {}; /help lists the commands",
            self.node.device().address()
        );
    }

    async fn read_loop(&mut self) -> Result<(), CliError> {
        let mut events = self
            .node
            .take_events()
            .ok_or_else(|| CliError::Io(std::io::Error::other("events taken twice")))?;
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            tokio::select! {
                line = lines.next_line() => match line.map_err(CliError::Io)? {
                    Some(line) => match command_line::parse(&line) {
                        Ok(Input::Quit) => return Ok(()),
                        Ok(input) => {
                            if let Err(e) = self.handle(input).await {
                                println!("! {e}");
                            }
                        }
                        Err(usage) => println!("! {usage}"),
                    },
                    None => return Ok(()),
                },
                Some(event) = events.recv() => self.show(event).await,
            }
        }
    }

    /// The group a user means by `reference`: its name, or the start of its id.
    async fn find_group(&self, reference: &str) -> Result<GroupId, String> {
        let reference = reference.trim_start_matches('#');
        let groups = self.node.groups().await.map_err(|e| e.to_string())?;
        let by_name: Vec<&GroupId> = groups
            .iter()
            .filter(|group| self.names.get(*group).map(String::as_str) == Some(reference))
            .collect();
        let matches: Vec<&GroupId> = if by_name.is_empty() && reference.len() >= 4 {
            groups
                .iter()
                .filter(|group| hex::encode(group.as_slice()).starts_with(reference))
                .collect()
        } else {
            by_name
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(format!("no group called {reference}; /groups lists yours")),
            several => Err(format!(
                "{reference} names {} groups ({}); use the id",
                several.len(),
                several
                    .iter()
                    .map(|group| group.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn current(&self) -> Result<GroupId, String> {
        self.current.clone().ok_or_else(|| {
            "no current group: /create one or /open one (/groups lists them)".to_owned()
        })
    }

    async fn handle(&mut self, input: Input) -> Result<(), String> {
        match input {
            Input::Create(name) => self.create(name).await,
            Input::Invite { group, users } => self.invite(&group, &users).await,
            Input::Remove { group, user } => self.remove(&group, &user).await,
            Input::Groups => self.list_groups().await,
            Input::Members(group) => self.members(group.as_deref()).await,
            Input::Safety(user) => self.safety(&user).await,
            Input::Open(group) => {
                let group = self.find_group(&group).await?;
                println!("* writing to {}", self.label(&group));
                self.current = Some(group);
                Ok(())
            }
            Input::JoinMine => self.join_mine().await,
            Input::Rejoin(group) => {
                let group = self.find_group(&group).await?;
                self.node
                    .rejoin(&group)
                    .await
                    .map_err(|e| format!("could not rejoin {}: {e}", self.label(&group)))
            }
            Input::Whoami => {
                let device = self.node.device();
                let pool = self
                    .node
                    .key_package_status()
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "you are {} (device {}); {} key packages published",
                    device.address(),
                    device.device_id(),
                    pool.published
                );
                Ok(())
            }
            Input::Status => {
                let status = self.node.dht().status().await.map_err(|e| e.to_string())?;
                let waiting = self.node.undelivered().await.map_err(|e| e.to_string())?;
                println!(
                    "network: {} peers connected, {} known; outbox: {waiting} envelopes not yet delivered",
                    status.connected_peers, status.routing_peers
                );
                Ok(())
            }
            Input::Help => {
                println!("{HELP}");
                Ok(())
            }
            Input::Send(text) => {
                let group = self.current()?;
                self.node
                    .send(&group, &ChatContent::Text(text).encode())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            Input::Nothing | Input::Quit => Ok(()),
        }
    }

    async fn create(&mut self, name: String) -> Result<(), String> {
        if name.chars().count() > 64 {
            return Err("a group name has at most 64 characters".into());
        }
        if self.find_group(&name).await.is_ok() {
            return Err(format!("you already have a group called {name}"));
        }
        let group = self.node.create_group().await.map_err(|e| e.to_string())?;
        self.records
            .set_group_name(&group, &name)
            .map_err(|e| e.to_string())?;
        self.names.insert(group.clone(), name.clone());
        println!("* created #{name} (id {group}); invite with /invite {name} NAME@FINGERPRINT");
        self.current = Some(group);
        Ok(())
    }

    async fn invite(&mut self, group: &str, users: &[String]) -> Result<(), String> {
        let group = self.find_group(group).await?;
        let addresses: Vec<&str> = users.iter().map(String::as_str).collect();
        let invitation = self
            .node
            .invite_all(&group, &addresses)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "* invited {} to {}",
            who(&invitation.added),
            self.label(&group)
        );
        for (device, reason) in &invitation.skipped {
            println!("  device {device} was left out: {reason}; invite again later");
        }
        // The newcomers learn the name the group goes by from the inviter.
        if let Some(name) = self.names.get(&group) {
            self.node
                .send(&group, &ChatContent::GroupName(name.clone()).encode())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn remove(&mut self, group: &str, user: &str) -> Result<(), String> {
        let group = self.find_group(group).await?;
        let members = self.node.members(&group).await.map_err(|e| e.to_string())?;
        let mut directory = Directory::new();
        for info in members {
            directory.insert(info.member);
        }
        let resolved = directory.resolve(user).map_err(|e| e.to_string())?;
        if resolved.user_id() == self.node.device().user_id() {
            return Err("that is you; a member removes you, you cannot remove yourself".into());
        }
        self.node
            .remove_user(&group, &resolved.user_id())
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "* removed {} from {}",
            who(resolved.devices()),
            self.label(&group)
        );
        Ok(())
    }

    async fn list_groups(&self) -> Result<(), String> {
        let groups = self.node.groups().await.map_err(|e| e.to_string())?;
        if groups.is_empty() {
            println!("no groups yet: /create NAME");
        }
        for group in groups {
            let members = self.node.members(&group).await.map_err(|e| e.to_string())?;
            let current = if self.current.as_ref() == Some(&group) {
                "  (current)"
            } else {
                ""
            };
            println!(
                "{}  id {group}  {} devices{current}",
                self.label(&group),
                members.len()
            );
        }
        Ok(())
    }

    /// Joins, by external commit, the groups the user's other devices are in.
    async fn join_mine(&mut self) -> Result<(), String> {
        let joined = self
            .node
            .join_own_groups()
            .await
            .map_err(|e| format!("could not ask your other devices: {e}"))?;
        if joined.is_empty() {
            println!(
                "no group to join: your other devices are in none this one is not (or are offline)"
            );
        }
        for group in joined {
            if self.current.is_none() {
                self.current = Some(group.clone());
            }
            println!("* joined {} from your other device", self.label(&group));
        }
        Ok(())
    }

    async fn members(&self, group: Option<&str>) -> Result<(), String> {
        let group = match group {
            Some(group) => self.find_group(group).await?,
            None => self.current()?,
        };
        let me = self.node.device().device_id();
        let my_user = self.node.device().user_id();
        println!("{}:", self.label(&group));
        for info in self.node.members(&group).await.map_err(|e| e.to_string())? {
            // A safety number is between two users: there is none to compare with oneself.
            let trust = if info.member.device_id() == me {
                "(this device)".to_owned()
            } else if info.member.user_id() == my_user {
                "(your other device)".to_owned()
            } else {
                format!("safety number {}", info.safety_number)
            };
            println!(
                "  {}  device {}  {trust}",
                info.member.address(),
                info.member.device_id(),
            );
        }
        Ok(())
    }

    async fn safety(&self, user: &str) -> Result<(), String> {
        // Members already verified in a group come first; the network otherwise.
        let mut directory = Directory::new();
        for group in self.node.groups().await.map_err(|e| e.to_string())? {
            for info in self.node.members(&group).await.map_err(|e| e.to_string())? {
                directory.insert(info.member);
            }
        }
        let (address, key) = match directory.resolve(user) {
            Ok(resolved) => {
                let first = resolved
                    .devices()
                    .first()
                    .ok_or_else(|| format!("{user} has no device"))?;
                (first.address(), *first.identity_public_key())
            }
            Err(_) => {
                let record = self
                    .node
                    .dht()
                    .resolve(user)
                    .await
                    .map_err(|e| e.to_string())?;
                let first = record
                    .user
                    .devices
                    .first()
                    .ok_or_else(|| format!("{user} has no device"))?;
                (first.member.address(), *first.member.identity_public_key())
            }
        };
        let number = SafetyNumber::between(self.node.device().identity_public_key(), &key);
        println!("safety number with {address}: {number}");
        println!(
            "  compare it with them in person or on a call: the same number means no one is in between"
        );
        Ok(())
    }

    /// Shows one event, and acknowledges a message once it is shown.
    async fn show(&mut self, event: NodeEvent) {
        if let NodeEvent::Engine(engine_event) = &event {
            match engine_event.as_ref() {
                Event::Message {
                    group,
                    sender,
                    sent_at,
                    body,
                    delivery,
                    ..
                } => {
                    let (group, sender, sent_at, delivery) =
                        (group.clone(), sender.clone(), *sent_at, *delivery);
                    match ChatContent::decode(body) {
                        Received::Content(ChatContent::Text(text)) => println!(
                            "[{}] {} {}: {text}",
                            clock_time(sent_at),
                            self.label(&group),
                            sender.address()
                        ),
                        Received::Content(ChatContent::GroupName(name)) => {
                            self.learn_name(&group, &name, &sender.address().to_string());
                        }
                        Received::Unreadable { len } => println!(
                            "[{}] {} {}: (a message this version cannot show, {len} bytes)",
                            clock_time(sent_at),
                            self.label(&group),
                            sender.address()
                        ),
                    }
                    if let Err(e) = self.node.ack_delivered(delivery).await {
                        println!("! could not mark a message as read ({e}); it may show again");
                    }
                    return;
                }
                Event::Joined { group, .. } => {
                    let hint = if self.current.is_none() {
                        self.current = Some(group.clone());
                        "what you type goes there now".to_owned()
                    } else {
                        format!(
                            "/open {} to write there",
                            self.label(group).trim_start_matches('#')
                        )
                    };
                    let me = self.node.device().device_id();
                    if let Some(line) = chat_view::describe(&event, &|g| self.label(g), me) {
                        println!("{line}; {hint}");
                    }
                    return;
                }
                Event::RemovedFromGroup { group, .. } if self.current.as_ref() == Some(group) => {
                    self.current = None;
                }
                _ => {}
            }
        }
        let me = self.node.device().device_id();
        let label = |group: &GroupId| self.label(group);
        if let Some(line) = chat_view::describe(&event, &label, me) {
            println!("{line}");
        }
    }

    /// A member said what the group is called: taken if this device has no name for it yet
    /// (a name this device gave is never overwritten by someone else's).
    fn learn_name(&mut self, group: &GroupId, name: &str, by: &str) {
        if self.names.contains_key(group) {
            return;
        }
        let before = self.label(group);
        if let Err(e) = self.records.set_group_name(group, name) {
            println!("! could not save the name of {before} ({e})");
            return;
        }
        self.names.insert(group.clone(), name.to_owned());
        println!("* {before} is called #{name} (named by {by})");
    }
}
