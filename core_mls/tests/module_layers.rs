//! The crate's layers, checked from its source (as rust-analyzer's `tidy` tests check its own):
//! records and pure rules at the bottom, then `client` (the `MlsClient` type and the
//! transaction rule), then the operations, and no import cycle among the modules
//! (docs/ARCHITECTURE.md, "Layers").
//!
//! An import is a path `crate::module…` (or `crate::{module, …}`) in a module's files, test
//! code left out (files named `*_tests.rs`, and a file's text from its first `#[cfg(test)]`).
//! Operations are `impl MlsClient` blocks, so each imports `client` for the type, and `client`
//! imports no operation. `error` and `events` name domain types of every layer and are left
//! out of the cycle check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Records kept in the transaction or in memory, and the pure rules over them.
const RECORDS: &[&str] = &[
    "app_inbox",
    "app_message",
    "branch_order",
    "branch_records",
    "buffer_budget",
    "commit_log",
    "commit_wait",
    "config",
    "deadlines",
    "deferred_sends",
    "engine_crypto",
    "envelope",
    "epoch_buffer",
    "group_id",
    "group_meta",
    "key_package_manager",
    "key_package_validation",
    "member_verification",
    "mls_wire",
    "outbox",
    "outside_window",
    "provider",
    "roster",
    "routing",
    "seen_messages",
    "storage",
];

/// The `impl MlsClient` blocks that drive OpenMLS and the records.
const OPERATIONS: &[&str] = &[
    "buffering",
    "commit_abandonment",
    "commit_policy",
    "competing_commit",
    "delivery",
    "external_commit_branch",
    "external_join",
    "fork_knowledge",
    "fork_resolution",
    "group_manager",
    "group_removal",
    "message_processor",
    "missing_commit",
    "mls_processing",
    "rejoin_advice",
    "sending",
    "signed_context",
    "snapshot_capture",
    "tick",
    "welcome_branches",
    "welcome_handler",
];

/// The `MlsClient` type, its state and the transaction rule.
const CLIENT: &str = "client";

/// Used by every layer: left out of the cycle check.
const SHARED_TYPES: &[&str] = &["error", "events"];

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn every_module_has_a_layer() {
    let graph = import_graph(&source_dir());
    let classified: BTreeSet<&str> = RECORDS
        .iter()
        .chain(OPERATIONS)
        .chain(SHARED_TYPES)
        .copied()
        .chain([CLIENT])
        .collect();
    let unclassified: Vec<&String> = graph
        .keys()
        .filter(|m| !classified.contains(m.as_str()))
        .collect();
    assert!(
        unclassified.is_empty(),
        "modules without a layer (add each to RECORDS or OPERATIONS here, and to \
         docs/ARCHITECTURE.md): {unclassified:?}"
    );
    let missing: Vec<&&str> = classified
        .iter()
        .filter(|m| !graph.contains_key(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "layers name modules that do not exist: {missing:?}"
    );
}

#[test]
fn records_import_no_operation_and_not_the_client() {
    let graph = import_graph(&source_dir());
    let mut upward = Vec::new();
    for record in RECORDS {
        for import in &graph[*record] {
            if import == CLIENT || OPERATIONS.contains(&import.as_str()) {
                upward.push(format!("{record} -> {import}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "records importing a layer above: {upward:?}"
    );
}

#[test]
fn the_client_imports_no_operation() {
    let graph = import_graph(&source_dir());
    let upward: Vec<&String> = graph[CLIENT]
        .iter()
        .filter(|m| OPERATIONS.contains(&m.as_str()))
        .collect();
    assert!(upward.is_empty(), "client imports operations: {upward:?}");
}

#[test]
fn no_import_cycle_among_modules() {
    let mut graph = import_graph(&source_dir());
    for shared in SHARED_TYPES {
        graph.remove(*shared);
    }
    for imports in graph.values_mut() {
        imports.retain(|m| !SHARED_TYPES.contains(&m.as_str()));
    }
    let cycles = cycles(&graph);
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

#[test]
fn the_checks_see_imports_and_cycles() {
    // The parser and the cycle finder, on inputs with a known answer: a check that cannot
    // fail would pass on any crate.
    let source = "use crate::alpha::X;\nuse crate::{beta::{Y, Z}, gamma};\n\
                  fn f() { crate::delta::g(); }\n#[cfg(test)]\nmod tests { use crate::omega; }\n";
    let imports = imports_in(source);
    assert_eq!(
        imports,
        ["alpha", "beta", "delta", "gamma"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(from.into()).or_default().insert(to.into());
        graph.entry(to.into()).or_default();
    }
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_owned(), "b".into(), "c".into()]]
    );
    graph.get_mut("c").unwrap().remove("a");
    assert!(cycles(&graph).is_empty());
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Each top-level module of `src` (a file `m.rs` or a directory `m/`) and the other top-level
/// modules it imports.
fn import_graph(src: &Path) -> Graph {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            files.entry(name).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && name != "lib"
            && !name.ends_with("_tests")
        {
            files.entry(name).or_default().push(path);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .into_iter()
        .map(|(module, paths)| {
            let mut imports = BTreeSet::new();
            for path in paths {
                let source = std::fs::read_to_string(&path).unwrap();
                imports.extend(imports_in(&source));
            }
            imports.retain(|m| *m != module && modules.contains(m));
            (module, imports)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .ends_with("_tests")
        {
            found.push(path);
        }
    }
    found
}

/// The first path segment after every `crate::` in `source`, test code left out.
fn imports_in(source: &str) -> BTreeSet<String> {
    let code = source
        .find("#[cfg(test)]")
        .map_or(source, |test| &source[..test]);
    let mut imports = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the first segment of each path at the group's top level: `{a::{B, C}, d}`
            // names a and d.
            let mut depth = 0usize;
            let mut start = 0;
            for (at, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        first_segment(&group[start..at], &mut imports);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        first_segment(&group[start..at], &mut imports);
                        start = at + 1;
                    }
                    _ => {}
                }
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if is_identifier(&rest[..end]) {
                imports.insert(rest[..end].to_owned());
            }
        }
    }
    imports
}

fn first_segment(path: &str, imports: &mut BTreeSet<String>) {
    let first = path.trim().split("::").next().unwrap_or("");
    if is_identifier(first) {
        imports.insert(first.to_owned());
    }
}

fn is_identifier(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, module: &'g str) {
            let index = self.index.len();
            self.index.insert(module, index);
            self.low.insert(module, index);
            self.stack.push(module);
            for next in &self.graph[module] {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[module].min(self.low[next]);
                    self.low.insert(module, low);
                } else if self.stack.contains(&next) {
                    let low = self.low[module].min(self.index[next]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == self.index[module] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    component.push(top.to_owned());
                    if top == module {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for module in graph.keys() {
        if !walk.index.contains_key(module.as_str()) {
            walk.visit(module);
        }
    }
    walk.found.sort();
    walk.found
}
