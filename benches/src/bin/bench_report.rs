//! Reads criterion's `target/criterion/<group>/<function>/<parameter>/new/estimates.json` files
//! and prints a markdown table of medians, with the ratio to the `raw` (or `mem`) baseline of
//! the same function and size where one was measured.
//!
//! Usage: `cargo run -p spacepanda-benches --bin bench_report [criterion dir] > table.md`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/criterion"), PathBuf::from);
    let mut rows: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for group in subdirs(&root)? {
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
    println!("| benchmark | parameter | median | vs baseline |");
    println!("|---|---|---|---|");
    for ((group, function), params) in &rows {
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
            println!(
                "| {group}/{function} | {parameter} | {} | {ratio} |",
                human(*median)
            );
        }
    }
    Ok(())
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
