//! The layering rule of [`super`], checked on the sources: every `super::` and
//! `crate::dataplane::` path in a data-plane file must name its own layer or a lower one,
//! and no data-plane file may name the control plane or the runtime. Unit-test files
//! (`tests.rs`) are exempt.

use std::path::Path;

/// The layers, bottom first (the order of `dataplane.rs`).
const LAYERS: [&str; 14] = [
    "h1",
    "io",
    "tls",
    "upstream",
    "error",
    "route",
    "assign",
    "accesslog",
    "worker",
    "request",
    "record",
    "session",
    "h2",
    "conn",
];

/// What the data plane must never import.
const ABOVE: [&str; 7] = [
    "crate::control",
    "crate::rollout",
    "crate::judge",
    "crate::admin",
    "crate::runtime",
    "crate::demo",
    "crate::cli",
];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// The first identifier of each path that starts at `prefix` in `text`, e.g.
/// `super::{a, b::c}` -> `a`, `b`.
fn targets(text: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let group = if let Some(inner) = after.strip_prefix('{') {
            inner.split('}').next().unwrap_or("")
        } else {
            after
        };
        for item in group.split(',') {
            let name: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
            if !after.starts_with('{') {
                break;
            }
        }
        rest = after;
    }
    found
}

/// Module path of a data-plane file below `dataplane/`: `session/exchange.rs` ->
/// `["session", "exchange"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dataplane");
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(
        all.len() > 20,
        "found only {} files under {}",
        all.len(),
        root.display()
    );
    let mut wrong = Vec::new();
    for path in all {
        let rel = path.strip_prefix(&root).unwrap().to_path_buf();
        let module = module_path(&rel);
        // Unit tests may check a layer through the ones above it (a parse error's status).
        if module[0] == "layers" || module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let own = rank(&module[0]).unwrap_or_else(|| panic!("{} is in no layer", rel.display()));
        let text = std::fs::read_to_string(&path).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for forbidden in ABOVE {
            if code.contains(&format!("{forbidden}::")) || code.contains(&format!("{forbidden};")) {
                wrong.push(format!("{} uses {forbidden}", rel.display()));
            }
        }
        let mut named: Vec<String> = targets(&code, "crate::dataplane::");
        // `super::` from `a/b.rs` names a child of `a`; from `a.rs`, a layer.
        if module.len() == 1 {
            named.extend(targets(&code, "super::"));
        }
        named.extend(targets(&code, "super::super::"));
        for name in named {
            if let Some(r) = rank(&name)
                && r > own
            {
                wrong.push(format!("{} ({}) uses {name}", rel.display(), module[0]));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn the_rule_catches_what_it_should() {
    assert_eq!(
        targets("use super::{io::buf, record};", "super::"),
        ["io", "record"]
    );
    assert_eq!(
        targets("crate::dataplane::session::run(x)", "crate::dataplane::"),
        ["session"]
    );
    assert_eq!(
        module_path(Path::new("session/exchange.rs")),
        ["session", "exchange"]
    );
    assert!(rank("conn") > rank("session") && rank("record") < rank("session"));
}
