//! The layering of `tcptrace/src`, checked on the source: `cli.rs`
//! imports nothing of the crate, no command imports another command, the
//! layers below the commands never import upwards, and the module graph
//! has no cycle. A new arrow that breaks one of these fails here, naming
//! the file and the import.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The commands: each is a consumer, never a library for another one.
const COMMANDS: &[&str] = &[
    "trace", "top", "diagnose", "snapshot", "stress", "tune", "exporter", "replay",
];

/// Layers from the top; a module may import its own layer or lower ones.
const LAYERS: &[(&str, &[&str])] = &[
    ("entry", &["app"]),
    (
        "commands",
        &[
            "trace",
            "top",
            "diagnose",
            "snapshot",
            "stress",
            "tune",
            "exporter",
            "replay",
            "filter_args",
            "cli",
        ],
    ),
    (
        "pipeline",
        &[
            "session",
            "stop",
            "tracer",
            "tc",
            "recorder",
            "decode",
            "aggregate",
            "summary",
            "tally",
            "sink",
            "html_report",
            "diagnosis",
            "ranking",
            "record",
        ],
    ),
    (
        "facts",
        &[
            "host",
            "kernel",
            "event",
            "origin",
            "counts",
            "timefmt",
            "text_table",
            "error",
            "safe_file",
        ],
    ),
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

/// Source files below `dir`, without test-only files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("tests.rs" | "testing.rs")
            )
        {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/host/netns.rs` -> [host, netns].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The code of a file without its `#[cfg(test)] mod tests` and comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b...` and `super::...` path a file names, resolved to
/// the first segment under the crate root, with the text that named it.
fn imports(module: &[String], code: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        for first in first_segments(&code[at + "crate::".len()..]) {
            found.insert((first, format!("crate::{}", snippet(&code[at + 7..]))));
        }
    }
    for (at, _) in code.match_indices("super::") {
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        // super:: inside a top-level module's child stays in that module.
        if module.len() >= 2 {
            found.insert((module[0].clone(), "super::".into()));
        }
    }
    found
}

/// First path segments after `crate::`: `a::x` -> [a]; `{a::x, b}` -> [a, b].
fn first_segments(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(inner) = rest.strip_prefix('{') {
        // Top-level items of the group: split at depth-0 commas.
        let mut depth = 0;
        let mut items = vec![String::new()];
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(String::new());
                    continue;
                }
                _ => {}
            }
            items.last_mut().unwrap().push(c);
        }
        items
            .iter()
            .map(|item| ident(item))
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        vec![ident(rest)]
    }
}

fn snippet(rest: &str) -> String {
    rest.chars()
        .take_while(|c| !matches!(c, ';' | '\n' | '(' | ' '))
        .collect()
}

/// A file's module path and what it imports: (top-level module, import text).
type Imports = (Vec<String>, BTreeSet<(String, String)>);

/// Every source file (path under src/) with its imports.
fn graph() -> BTreeMap<String, Imports> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let module = module_of(&src, &file);
            if module.is_empty() {
                return None; // lib.rs and main.rs declare and call the root.
            }
            let text = fs::read_to_string(&file).unwrap();
            let found = imports(&module, &code(&text));
            let rel = file.strip_prefix(&src).unwrap().display().to_string();
            Some((rel, (module, found)))
        })
        .collect()
}

#[test]
fn cli_imports_nothing_of_the_crate() {
    let graph = graph();
    let (_, found) = &graph["cli.rs"];
    assert!(found.is_empty(), "cli.rs imports {found:?}");
}

#[test]
fn no_command_imports_another_command() {
    let mut wrong = Vec::new();
    for (file, (module, found)) in graph() {
        for (target, text) in found {
            if COMMANDS.contains(&module[0].as_str())
                && COMMANDS.contains(&target.as_str())
                && target != module[0]
            {
                wrong.push(format!("{file}: {text}"));
            }
        }
    }
    assert!(wrong.is_empty(), "commands importing commands: {wrong:#?}");
}

#[test]
fn layers_import_downwards_only() {
    let mut wrong = Vec::new();
    for (file, (module, found)) in graph() {
        let from = layer_of(&module[0]);
        for (target, text) in found {
            if target != module[0] && layer_of(&target) < from {
                wrong.push(format!("{file}: {text}"));
            }
            // Only the commands' own argument handling reads the CLI.
            if target == "cli" && from != layer_of("cli") && module[0] != "app" {
                wrong.push(format!("{file}: {text}"));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports: {wrong:#?}");
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, found) in graph.values() {
        for (target, _) in found {
            if *target != module[0] {
                edges
                    .entry(module[0].clone())
                    .or_default()
                    .insert(target.clone());
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}
