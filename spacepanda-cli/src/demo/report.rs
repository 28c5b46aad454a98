//! The demo's narration, checks and timings table.

use std::time::{Duration, Instant};

/// What the demo said, checked and timed.
pub(crate) struct Report {
    started: Instant,
    checks: Vec<(String, bool)>,
    /// In the order the operations first happened.
    timings: Vec<(&'static str, Vec<Duration>)>,
}

impl Report {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            checks: Vec::new(),
            timings: Vec::new(),
        }
    }

    /// A line of the story, stamped with the time since the start.
    pub(crate) fn say(&self, line: &str) {
        println!("[{:>6.2}s] {line}", self.started.elapsed().as_secs_f64());
    }

    pub(crate) fn check(&mut self, what: &str, held: bool) {
        self.say(&format!(
            "  check: {what} … {}",
            if held { "ok" } else { "FAILED" }
        ));
        self.checks.push((what.to_owned(), held));
    }

    pub(crate) fn time(&mut self, operation: &'static str, took: Duration) {
        match self
            .timings
            .iter_mut()
            .find(|(known, _)| *known == operation)
        {
            Some((_, samples)) => samples.push(took),
            None => self.timings.push((operation, vec![took])),
        }
    }

    /// Prints the table and the verdict; true when every check held.
    pub(crate) fn finish(&self) -> bool {
        println!("\ntimings (this machine, loopback TCP, sealed redb files)");
        println!(
            "{:<48} {:>5} {:>12} {:>12}",
            "operation", "count", "median", "max"
        );
        for (operation, samples) in &self.timings {
            let mut sorted = samples.clone();
            sorted.sort();
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
            let max = sorted.last().copied().unwrap_or_default();
            println!(
                "{operation:<48} {:>5} {:>10.1}ms {:>10.1}ms",
                sorted.len(),
                median.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
        let failed: Vec<&String> = self
            .checks
            .iter()
            .filter(|(_, held)| !held)
            .map(|(what, _)| what)
            .collect();
        println!("\nfinished in {:.1}s", self.started.elapsed().as_secs_f64());
        if failed.is_empty() {
            println!("all {} checks held", self.checks.len());
            true
        } else {
            println!("{} of {} checks FAILED:", failed.len(), self.checks.len());
            for what in failed {
                println!("  - {what}");
            }
            false
        }
    }
}
