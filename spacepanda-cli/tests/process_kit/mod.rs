//! Real processes of the built `spacepanda` binary, driven through stdin and read through
//! stdout, with bounded waits for output (never a fixed sleep).

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// The longest any one wait for output lasts.
pub const BOUND: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spacepanda"));
    command
        .env_remove("SPACEPANDA_HOME")
        .env("RUST_LOG", "warn");
    command
}

/// Runs a one-shot command to its end with `passphrase` (stdin empty).
pub fn run_once(args: &[&str], passphrase: Option<&str>) -> Output {
    let mut command = binary();
    command.args(args).stdin(Stdio::null());
    match passphrase {
        Some(passphrase) => command.env("SPACEPANDA_PASSPHRASE", passphrase),
        None => command.env_remove("SPACEPANDA_PASSPHRASE"),
    };
    command.output().expect("the binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A long-running process (`run`, `serve`) with its output lines as they come.
pub struct Process {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
    errors: Receiver<String>,
}

impl Process {
    pub fn start(name: &str, args: &[&str], passphrase: &str) -> Self {
        let mut child = binary()
            .args(args)
            .env("SPACEPANDA_PASSPHRASE", passphrase)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let lines = forward(child.stdout.take().expect("stdout"));
        let errors = forward(child.stderr.take().expect("stderr"));
        Self {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            errors,
        }
    }

    /// Types a line into the session.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("the process reads its stdin");
        stdin.flush().expect("flush");
    }

    /// Waits for a new line that satisfies `matches` (lines already seen count too when
    /// `since` is 0), at most [`BOUND`]; returns it.
    pub fn wait_for_from(
        &mut self,
        since: usize,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        if let Some(line) = self.seen.iter().skip(since).find(|line| matches(line)) {
            return line.clone();
        }
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("timed out waiting for {what}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("exited while waiting for {what}"))
                }
            }
        }
    }

    /// Waits for a line containing `text`, seen from now on or earlier.
    pub fn wait_for(&mut self, text: &str) -> String {
        self.wait_for_from(0, text, |line| line.contains(text))
    }

    /// Waits for a line containing `text` that comes after everything seen so far.
    pub fn wait_for_next(&mut self, text: &str) -> String {
        let since = self.seen.len();
        self.wait_for_from(since, text, |line| line.contains(text))
    }

    /// Index of the first seen line containing `text`.
    pub fn position(&self, text: &str) -> Option<usize> {
        self.seen.iter().position(|line| line.contains(text))
    }

    /// Panics with everything the process printed.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let errors: Vec<String> = self.errors.try_iter().collect();
        panic!(
            "{}: {why}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name,
            self.seen.join("\n"),
            errors.join("\n")
        );
    }

    /// Kills the process at once (SIGKILL: no shutdown, no flush).
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }

    /// Types `/quit` (or closes stdin) and waits for the exit, bounded.
    pub fn quit(mut self) -> ExitStatus {
        self.say("/quit");
        self.stdin = None;
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                self.fail("did not exit after /quit");
            }
            // Draining output keeps the child from blocking on a full pipe while it exits.
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line);
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward(from: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// `spacepanda init` for `name` in `dir`; the address it created.
pub fn init(dir: &Path, name: &str, passphrase: &str) -> String {
    let output = run_once(
        &[
            "init",
            "--name",
            name,
            "--data-dir",
            dir.to_str().expect("utf-8 path"),
        ],
        Some(passphrase),
    );
    assert!(output.status.success(), "init {name}: {}", stderr(&output));
    let out = stdout(&output);
    out.split_whitespace()
        .nth(1)
        .filter(|address| address.starts_with(&format!("{name}@")))
        .unwrap_or_else(|| panic!("init prints the address: {out}"))
        .to_owned()
}
