//! Reads criterion's `target/criterion/<group>/<function>/<parameter>/new/estimates.json` files
//! and prints markdown tables of medians.
//!
//! - MLS table (groups `mls` and `peer`): one row per operation and size, the median of every
//!   `mls` backend (`raw`, `mem`, `redb`, `sealed`, ...) with its ratio to `raw`, the mls-rs
//!   median from the `peer` group next to raw (`raw / mlsrs`: above 1 means raw OpenMLS is
//!   slower), and the seed latency target from PERFORMANCE.md with a pass (✓) / fail (✗) mark on
//!   every median it applies to.
//! - Other groups (e.g. `store`): median per parameter and the ratio to the `raw` (or `mem`)
//!   baseline of the same function and size.
//!
//! With `--svg <file>` it also writes a plot of latency against group size (log-log), one panel
//! per operation, one line per backend, the target as a dashed line.
//!
//! Usage: `cargo run -p spacepanda-benches --bin bench_report -- [criterion dir] [--svg plot.svg] > table.md`

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod plot;

/// (group, function) → parameter → median in nanoseconds.
type Medians = BTreeMap<(String, String), BTreeMap<String, f64>>;

/// Operation order and seed targets (PERFORMANCE.md), in nanoseconds.
const OPS: [(&str, Option<f64>); 9] = [
    ("create_group", Some(50e6)),
    ("key_package", None),
    ("add_member", Some(20e6)),
    ("add_members_10", Some(100e6)),
    ("remove_member", Some(15e6)),
    ("encrypt_1k", Some(5e6)),
    ("decrypt_1k", Some(3e6)),
    ("process_commit", Some(30e6)),
    ("join", None),
];
/// Column order of the known backends of group `mls`; unknown ones follow alphabetically.
const BACKEND_ORDER: [&str; 4] = ["raw", "mem", "redb", "sealed"];
const PEER: &str = "mlsrs";
/// Criterion group of the sustained rates; one iteration is one operation.
const THROUGHPUT: &str = "throughput";
/// Seed throughput targets per group (the top of PERFORMANCE.md's ranges), operations per second,
/// by function-name prefix, the first match counting. Batched receive has issue 20's target
/// (2000 messages received per second at 100 members, sealed).
const RATE_TARGETS: [(&str, f64); 3] = [
    ("messages_received_batched", 2000.0),
    ("messages", 100.0),
    ("commits", 50.0),
];
/// Markers between which `--write` replaces the generated part of a markdown file.
const BEGIN: &str = "<!-- bench_report:begin -->";
const END: &str = "<!-- bench_report:end -->";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut root = PathBuf::from("target/criterion");
    let mut svg = None;
    let mut write = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--svg" => svg = Some(PathBuf::from(args.next().ok_or("--svg needs a file name")?)),
            "--write" => {
                write = Some(PathBuf::from(
                    args.next().ok_or("--write needs a markdown file")?,
                ));
            }
            _ => root = PathBuf::from(arg),
        }
    }
    let medians = read_medians(&root)?;
    let mls = MlsTable::new(&medians);
    let mut report = String::new();
    if !mls.rows.is_empty() {
        report.push_str(&mls.markdown());
        report.push('\n');
    }
    let rates = throughput_table(&medians);
    if !rates.is_empty() {
        report.push_str(&rates);
        report.push('\n');
    }
    let others = other_groups(&medians);
    if !others.is_empty() {
        report.push_str("### Other groups\n\n");
        report.push_str(&others);
    }
    match &write {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            std::fs::write(path, replace_generated(&text, &report)?)?;
            eprintln!("updated {}", path.display());
        }
        None => print!("{report}"),
    }
    if let Some(path) = svg {
        std::fs::write(&path, mls.svg())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn read_medians(root: &Path) -> Result<Medians, Box<dyn std::error::Error>> {
    let mut rows = Medians::new();
    for group in subdirs(root)? {
        for function in subdirs(&group)? {
            for parameter in subdirs(&function)? {
                let estimates = parameter.join("new").join("estimates.json");
                if !estimates.is_file() {
                    continue;
                }
                let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&estimates)?)?;
                let Some(median) = json
                    .pointer("/median/point_estimate")
                    .and_then(serde_json::Value::as_f64)
                else {
                    continue;
                };
                rows.entry((name(&group), name(&function)))
                    .or_default()
                    .insert(name(&parameter), median);
            }
        }
    }
    Ok(rows)
}

/// A size suffix (`10`, `1000-full`) ordered by size, sparse before full.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Size {
    members: u64,
    suffix: String,
}

impl Size {
    fn parse(text: &str) -> Self {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        Self {
            members: digits.parse().unwrap_or(u64::MAX),
            suffix: text.to_owned(),
        }
    }

    fn is_sparse(&self) -> bool {
        self.suffix.chars().all(|c| c.is_ascii_digit())
    }
}

struct MlsRow {
    function: String,
    size: Size,
    target: Option<f64>,
    /// backend → median (ns); `mlsrs` comes from the `peer` group.
    medians: BTreeMap<String, f64>,
}

struct MlsTable {
    backends: Vec<String>,
    rows: Vec<MlsRow>,
}

impl MlsTable {
    fn new(medians: &Medians) -> Self {
        let mut cells: BTreeMap<(String, Size), BTreeMap<String, f64>> = BTreeMap::new();
        let mut backends = BTreeSet::new();
        for ((group, function), params) in medians {
            let from_peer = match group.as_str() {
                "mls" => false,
                "peer" => true,
                _ => continue,
            };
            for (parameter, median) in params {
                let (backend, size) = parameter.split_once('-').unwrap_or((parameter, ""));
                if !from_peer {
                    backends.insert(backend.to_owned());
                }
                cells
                    .entry((function.clone(), Size::parse(size)))
                    .or_default()
                    .insert(backend.to_owned(), *median);
            }
        }
        let mut backends: Vec<String> = backends.into_iter().collect();
        backends.sort_by_key(|b| {
            (
                BACKEND_ORDER
                    .iter()
                    .position(|k| k == b)
                    .unwrap_or(BACKEND_ORDER.len()),
                b.clone(),
            )
        });
        let rank = |function: &str| {
            OPS.iter()
                .position(|(f, _)| *f == function)
                .unwrap_or(OPS.len())
        };
        let mut rows: Vec<MlsRow> = cells
            .into_iter()
            .map(|((function, size), medians)| MlsRow {
                target: OPS
                    .iter()
                    .find(|(f, _)| *f == function)
                    .and_then(|(_, t)| *t),
                function,
                size,
                medians,
            })
            .collect();
        rows.sort_by(|a, b| (rank(&a.function), &a.size).cmp(&(rank(&b.function), &b.size)));
        Self { backends, rows }
    }

    fn markdown(&self) -> String {
        let mut out = String::from(
            "### MLS operations (groups `mls` and `peer`)\n\n\
             Median per backend; `× raw` / `× mlsrs` are its ratios to raw OpenMLS on its \
             memory storage and to mls-rs (above 1: slower); `raw / mlsrs` above 1 means raw \
             OpenMLS is slower than mls-rs. ✓ / ✗: meets / \
             misses the seed target. Sizes: members before the operation; `-full` = filled \
             tree, otherwise sparse (batch-added).\n\n",
        );
        let mut header = String::from("| op | size | target |");
        let mut rule = String::from("|---|---|---|");
        for backend in &self.backends {
            header.push_str(&format!(" {backend} |"));
            rule.push_str("---|");
            if backend == "raw" {
                header.push_str(&format!(" {PEER} (peer) | raw / {PEER} |"));
                rule.push_str("---|---|");
            } else {
                header.push_str(&format!(" {backend} × raw / × {PEER} |"));
                rule.push_str("---|");
            }
        }
        if !self.backends.iter().any(|b| b == "raw") {
            header.push_str(&format!(" {PEER} (peer) |"));
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for row in &self.rows {
            let target = row
                .target
                .map_or_else(|| String::from("—"), |t| format!("< {}", human(t)));
            let mut line = format!("| {} | {} | {target} |", row.function, row.size.suffix);
            let raw = row.medians.get("raw").copied();
            let peer = row.medians.get(PEER).copied();
            for backend in &self.backends {
                let median = row.medians.get(backend.as_str()).copied();
                line.push_str(&format!(" {} |", cell(median, row.target)));
                if backend == "raw" {
                    line.push_str(&format!(
                        " {} | {} |",
                        cell(peer, row.target),
                        ratio(raw, peer)
                    ));
                } else {
                    line.push_str(&format!(
                        " {} / {} |",
                        ratio(median, raw),
                        ratio(median, peer)
                    ));
                }
            }
            if !self.backends.iter().any(|b| b == "raw") {
                line.push_str(&format!(" {} |", cell(peer, row.target)));
            }
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

fn cell(median: Option<f64>, target: Option<f64>) -> String {
    match (median, target) {
        (None, _) => String::from("—"),
        (Some(m), None) => human(m),
        (Some(m), Some(t)) => format!("{} {}", human(m), if m < t { "✓" } else { "✗" }),
    }
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> String {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => format!("{:.2}×", n / d),
        _ => String::from("—"),
    }
}

/// The table for every group except `mls` / `peer`.
fn other_groups(medians: &Medians) -> String {
    let mut out = String::new();
    let rows: Vec<_> = medians
        .iter()
        .filter(|((group, _), _)| !["mls", "peer", THROUGHPUT].contains(&group.as_str()))
        .collect();
    if rows.is_empty() {
        return out;
    }
    out.push_str("| benchmark | parameter | median | vs baseline |\n|---|---|---|---|\n");
    for ((group, function), params) in rows {
        for (parameter, median) in params {
            let (backend, size) = parameter.split_once('-').unwrap_or((parameter, ""));
            let baseline = ["raw", "mem"]
                .iter()
                .filter(|b| **b != backend)
                .find_map(|b| {
                    let id = if size.is_empty() {
                        (*b).to_owned()
                    } else {
                        format!("{b}-{size}")
                    };
                    params.get(&id).map(|v| (*b, *v))
                });
            let ratio = baseline.map_or(String::from("—"), |(b, v)| {
                format!("{:.2}× {b}", median / v)
            });
            let _ = writeln!(
                out,
                "| {group}/{function} | {parameter} | {} | {ratio} |",
                human(*median)
            );
        }
    }
    out
}

/// `text` with the part between [`BEGIN`] and [`END`] replaced by `generated`.
fn replace_generated(text: &str, generated: &str) -> Result<String, String> {
    let start = text
        .find(BEGIN)
        .ok_or_else(|| format!("no {BEGIN} line to write after"))?;
    let end = text
        .find(END)
        .filter(|end| *end > start)
        .ok_or_else(|| format!("no {END} line after {BEGIN}"))?;
    let (before, _) = text.split_at(start + BEGIN.len());
    let (_, after) = text.split_at(end);
    Ok(format!("{before}\n\n{generated}\n{after}"))
}

/// The `throughput` group: one row per function, one rate column per backend.
fn throughput_table(medians: &Medians) -> String {
    let rows: Vec<_> = medians
        .iter()
        .filter(|((group, _), _)| group == THROUGHPUT)
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut backends: Vec<String> = rows
        .iter()
        .flat_map(|(_, params)| params.keys().cloned())
        .collect();
    backends.sort_by_key(|p| {
        let backend = p.split_once('-').map_or(p.as_str(), |(b, _)| b);
        (
            BACKEND_ORDER
                .iter()
                .position(|k| *k == backend)
                .unwrap_or(BACKEND_ORDER.len()),
            p.clone(),
        )
    });
    backends.dedup();
    let mut out = String::from(
        "### Throughput (group `throughput`)\n\n\
         Sustained operations per second of one group (1 / median time per operation); ✓ / ✗: \
         reaches / misses the top of the seed range.\n\n| function | target |",
    );
    for backend in &backends {
        out.push_str(&format!(" {backend} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(backends.len()));
    out.push('\n');
    for ((_, function), params) in rows {
        let target = RATE_TARGETS
            .iter()
            .find(|(prefix, _)| function.starts_with(prefix))
            .map(|(_, t)| *t);
        let shown = target.map_or_else(|| String::from("—"), |t| format!("≥ {t:.0}/s"));
        let mut line = format!("| {function} | {shown} |");
        for backend in &backends {
            let cell = match params.get(backend) {
                Some(nanos) if *nanos > 0.0 => {
                    let rate = 1e9 / nanos;
                    let mark = match target {
                        Some(t) if rate >= t => " ✓",
                        Some(_) => " ✗",
                        None => "",
                    };
                    format!("{rate:.0}/s{mark}")
                }
                _ => String::from("—"),
            };
            line.push_str(&format!(" {cell} |"));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

fn subdirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "report") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn human(nanos: f64) -> String {
    if nanos >= 1e6 {
        format!("{:.2} ms", nanos / 1e6)
    } else if nanos >= 1e3 {
        format!("{:.1} µs", nanos / 1e3)
    } else {
        format!("{nanos:.0} ns")
    }
}
