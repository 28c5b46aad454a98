//! `dht/mailbox_100`: deposits for an offline device and its fetch when it comes back.

use super::*;

/// Where one round of `mailbox_100` went.
pub(super) struct MailboxRound {
    /// The 100 calls to `send` returned.
    sent: Duration,
    /// From the first `send` until the sender's outbox was empty (all deposited).
    pub(super) deposit: Duration,
    /// `Node::open` of the recipient returned: store, engine, network node, join, and the
    /// first mailbox fetch (`Node::open` fetches before it takes pushes).
    open: Duration,
    /// From the call to `Node::open` until the 100th message was taken from its events.
    pub(super) fetch: Duration,
    /// The fetch at open missed some and an explicit `fetch_mailbox` was needed.
    fetched_again: bool,
    /// Time spent in `Node::undelivered` while waiting for the outbox to empty.
    deposit_polling: Duration,
    /// CPU used during `deposit` and during `fetch`.
    deposit_cpu: CpuUse,
    fetch_cpu: CpuUse,
}

/// `mailbox_100`: five serve nodes, a sender and a recipient in a two-member group.
pub(super) struct Mailbox {
    _dir: TempDir,
    serves: Vec<Serve>,
    sender: RunningDevice,
    recipient: Option<RunningDevice>,
    recipient_dir: PathBuf,
    recipient_config: NodeConfig,
    group: GroupId,
    seen: SeenReceiver,
    seen_tx: SeenSender,
    rounds: Vec<MailboxRound>,
    sent: u64,
}

pub(super) async fn start_mailbox(rng: &mut ChaCha20Rng) -> Mailbox {
    let dir = tempfile::tempdir().expect("temporary directory");
    let started = Instant::now();
    let serves = start_serves(rng, dir.path()).await;
    let bootstrap: Vec<Multiaddr> = serves.iter().map(Serve::dial).collect();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut devices = Vec::with_capacity(2);
    for (i, name) in ["sender", "recipient"].into_iter().enumerate() {
        let path = dir.path().join(name);
        seed_device(&path, name, rng);
        let device = open_device(&path, node_config(name, &bootstrap), i, seen_tx.clone()).await;
        device.node.publish().await.expect("records published");
        devices.push(device);
    }
    let recipient = devices.pop().expect("recipient");
    let sender = devices.pop().expect("sender");
    let group = sender.node.create_group().await.expect("group created");
    sender
        .node
        .invite(&group, &recipient.node.device().address().to_string())
        .await
        .expect("recipient invited");
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some((1, Seen::Joined(g)))) if g == group => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the recipient did not join"),
        }
    }
    flushed(&sender.node, POLL).await;
    flushed(&recipient.node, POLL).await;
    eprintln!(
        "dht/mailbox_100: {SERVES} serve nodes and 2 devices up, 2-member group built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Mailbox {
        recipient_dir: dir.path().join("recipient"),
        _dir: dir,
        serves,
        sender,
        recipient: Some(recipient),
        recipient_config: node_config("recipient", &bootstrap),
        group,
        seen,
        seen_tx,
        rounds: Vec::new(),
        sent: 0,
    }
}

impl Mailbox {
    /// One round: the recipient goes offline (not timed); the sender sends 100 messages and
    /// its outbox empties into the mailbox holders (`deposit`); the recipient is opened again
    /// from its data directory and fetches them at open (`fetch`).
    pub(super) async fn round(&mut self) -> &MailboxRound {
        self.recipient
            .take()
            .expect("recipient online")
            .close()
            .await;
        while self.seen.try_recv().is_ok() {}

        let sender = &self.sender.node;
        let mut ids = HashSet::with_capacity(MAILBOX_MESSAGES);
        let cpu = Cpu::now();
        let start = Instant::now();
        for _ in 0..MAILBOX_MESSAGES {
            self.sent += 1;
            ids.insert(
                sender
                    .send(&self.group, &body(self.sent))
                    .await
                    .expect("send"),
            );
        }
        let sent = start.elapsed();
        let deposit_polling = flushed(sender, DEPOSIT_POLL).await;
        let deposit = start.elapsed();
        let deposit_cpu = Cpu::now().since(cpu);

        let cpu = Cpu::now();
        let start = Instant::now();
        let recipient = open_device(
            &self.recipient_dir,
            self.recipient_config.clone(),
            1,
            self.seen_tx.clone(),
        )
        .await;
        let open = start.elapsed();
        let mut got = HashSet::with_capacity(MAILBOX_MESSAGES);
        let mut last = Duration::ZERO;
        let mut fetched_again = false;
        // The fetch at open is what is measured; should it miss some, one explicit fetch
        // (flagged in the report) rather than waiting for the periodic one.
        let mut deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while got.len() < ids.len() {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some((1, Seen::Message(m, at)))) => {
                    if ids.contains(&m) && got.insert(m) {
                        last = last.max(at.saturating_duration_since(start));
                    }
                }
                Ok(Some((i, Seen::Delayed(reason)))) => log_delayed(i, &reason),
                Ok(Some(_)) => {}
                Ok(None) => unreachable!("the benchmark holds a sender of the channel"),
                Err(_) if !fetched_again => {
                    fetched_again = true;
                    eprintln!(
                        "dht/mailbox_100: the fetch at open brought {} of {}; fetching again",
                        got.len(),
                        ids.len()
                    );
                    let summary = recipient.node.fetch_mailbox().await;
                    eprintln!("dht/mailbox_100: explicit fetch: {summary:?}");
                    deadline = tokio::time::Instant::now() + BOUND;
                }
                Err(_) => panic!(
                    "the recipient got {} of {} messages from its mailbox",
                    got.len(),
                    ids.len()
                ),
            }
        }
        let fetch_cpu = Cpu::now().since(cpu);
        self.recipient = Some(recipient);
        self.rounds.push(MailboxRound {
            sent,
            deposit,
            open,
            fetch: last,
            fetched_again,
            deposit_polling,
            deposit_cpu,
            fetch_cpu,
        });
        self.rounds.last().expect("just pushed")
    }

    pub(super) fn report(&self) {
        if self.rounds.is_empty() {
            return;
        }
        let n = self.rounds.len() as u32;
        let mean =
            |f: fn(&MailboxRound) -> Duration| ms(self.rounds.iter().map(f).sum::<Duration>() / n);
        let mut deposits: Vec<Duration> = self.rounds.iter().map(|r| r.deposit).collect();
        let mut fetches: Vec<Duration> = self.rounds.iter().map(|r| r.fetch).collect();
        eprintln!(
            "dht/mailbox_100: {} rounds (warm-ups included; each id runs its own), means: 100 \
             sends returned {:.0} ms, outbox empty {:.0} ms (of which {:.0} ms polling it; CPU: \
             this process {:.0} ms, other processes {:.0} ms); the recipient's Node::open \
             returned {:.0} ms, 100th message {:.0} ms (CPU: this process {:.0} ms, other \
             processes {:.0} ms); {} rounds needed an explicit fetch",
            self.rounds.len(),
            mean(|r| r.sent),
            mean(|r| r.deposit),
            mean(|r| r.deposit_polling),
            mean(|r| r.deposit_cpu.process),
            mean(|r| r.deposit_cpu.others),
            mean(|r| r.open),
            mean(|r| r.fetch),
            mean(|r| r.fetch_cpu.process),
            mean(|r| r.fetch_cpu.others),
            self.rounds.iter().filter(|r| r.fetched_again).count(),
        );
        eprintln!(
            "dht/mailbox_100/deposit (all rounds): {}",
            summary(&mut deposits)
        );
        eprintln!(
            "dht/mailbox_100/fetch (all rounds): {}",
            summary(&mut fetches)
        );
    }

    pub(super) async fn shutdown(self) {
        self.sender.close().await;
        if let Some(recipient) = self.recipient {
            recipient.close().await;
        }
        for serve in &self.serves {
            serve.dht.shutdown().await;
        }
    }
}
