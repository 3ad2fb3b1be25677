//! The module graph has no cycles: no file of `src/` reaches itself through
//! `crate::` / `super::` paths (tests and comments aside: a file's
//! `#[cfg(test)] mod tests { ... }` and a module declared `#[cfg(test)] mod
//! name;`), and no top-level
//! module reaches itself through another. A new cycle fails here, naming
//! the files and the paths that tie them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file's module path: `src/stream/feed.rs` is `["stream", "feed"]`,
/// `src/stream/mod.rs` is `["stream"]`, `src/lib.rs` is `[]`.
type ModulePath = Vec<String>;

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

fn module_path(src: &Path, file: &Path) -> ModulePath {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModulePath = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments and its test module.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if !trimmed.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths named at `code[at..]`: `a::b::c`, or with a brace group
/// `a::{b, c::d, e::{f, g}}` each path it holds.
fn paths_at(code: &str, at: usize, prefix: &[String], into: &mut Vec<Vec<String>>) {
    let bytes = code.as_bytes();
    let mut path = prefix.to_vec();
    let mut i = at;
    loop {
        let start = i;
        while i < bytes.len() && is_ident(bytes[i] as char) {
            i += 1;
        }
        if i > start {
            path.push(code[start..i].to_string());
        }
        if code[i..].starts_with("::{") {
            // Each item of the group, up to its matching brace.
            i += 3;
            let mut depth = 1;
            let mut item_start = i;
            while i < bytes.len() && depth > 0 {
                match bytes[i] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
                if (bytes[i] == b',' && depth == 1) || depth == 0 {
                    let item = code[item_start..i].trim();
                    if !item.is_empty() {
                        let offset = code[item_start..i].find(item).unwrap() + item_start;
                        paths_at(code, offset, &path, into);
                    }
                    item_start = i + 1;
                }
                i += 1;
            }
            return;
        }
        if code[i..].starts_with("::") && i > start {
            i += 2;
            continue;
        }
        into.push(path);
        return;
    }
}

/// The files each file names, and the `crate::`/`super::` text that does.
fn file_edges(src: &Path) -> BTreeMap<ModulePath, BTreeMap<ModulePath, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<ModulePath, PathBuf> = files
        .iter()
        .map(|f| (module_path(src, f), f.clone()))
        .collect();
    // Modules declared `#[cfg(test)] mod name;` are tests, in a file of
    // their own.
    let mut test_only: BTreeSet<ModulePath> = BTreeSet::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let mut lines = text.lines().map(str::trim).peekable();
        while let Some(line) = lines.next() {
            if line == "#[cfg(test)]"
                && let Some(name) = lines
                    .peek()
                    .and_then(|next| next.strip_prefix("mod "))
                    .and_then(|rest| rest.strip_suffix(';'))
            {
                let mut child = module.clone();
                child.push(name.to_string());
                test_only.insert(child);
            }
        }
    }
    let mut edges: BTreeMap<ModulePath, BTreeMap<ModulePath, String>> = BTreeMap::new();
    for (module, file) in &modules {
        if test_only.contains(module) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        // The module `super` names from this file (`a/b.rs` and
        // `a/b/mod.rs` alike are module `a::b`).
        let parent: ModulePath = module[..module.len().saturating_sub(1)].to_vec();
        let mut named = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            if at > 0 && is_ident(code.as_bytes()[at - 1] as char) {
                continue;
            }
            paths_at(&code, at + "crate::".len(), &[], &mut named);
        }
        for (at, _) in code.match_indices("super::") {
            if at > 0 && (is_ident(code.as_bytes()[at - 1] as char) || code[..at].ends_with("::")) {
                continue;
            }
            // `super::super::x`: one level up per `super`.
            let mut base = parent.clone();
            let mut rest = at + "super::".len();
            while code[rest..].starts_with("super::") {
                base.pop();
                rest += "super::".len();
            }
            paths_at(&code, rest, &base, &mut named);
        }
        for path in named {
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|prefix| modules.contains_key(prefix));
            if let Some(target) = target
                && target != *module
                && !target.is_empty()
            {
                edges
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_insert_with(|| path.join("::"));
            }
        }
    }
    edges
}

/// The cycles of `edges` (each strongly connected set of two or more).
fn cycles<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Vec<BTreeSet<N>> {
    let reach = |from: &N| -> BTreeSet<N> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(node) = todo.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<N, BTreeSet<N>> = edges.keys().map(|n| (n.clone(), reach(n))).collect();
    let mut found: Vec<BTreeSet<N>> = Vec::new();
    for (node, reached) in &reachable {
        if !reached.contains(node) || found.iter().any(|c| c.contains(node)) {
            continue;
        }
        let cycle: BTreeSet<N> = reached
            .iter()
            .filter(|other| reachable.get(*other).is_some_and(|r| r.contains(node)))
            .cloned()
            .collect();
        found.push(cycle);
    }
    found
}

#[test]
fn no_module_or_file_of_src_reaches_itself_through_its_imports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = file_edges(&src);
    let name = |m: &ModulePath| format!("src/{}", m.join("/"));
    let file_graph: BTreeMap<ModulePath, BTreeSet<ModulePath>> = edges
        .iter()
        .map(|(from, to)| (from.clone(), to.keys().cloned().collect()))
        .collect();
    let mut problems = Vec::new();
    for cycle in cycles(&file_graph) {
        let ties: Vec<String> = cycle
            .iter()
            .flat_map(|from| {
                edges[from]
                    .iter()
                    .filter(|(to, _)| cycle.contains(*to))
                    .map(move |(to, path)| format!("{} -> {} ({path})", name(from), name(to)))
            })
            .collect();
        problems.push(format!("files in a cycle: {}", ties.join(", ")));
    }
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &edges {
        for to in targets.keys() {
            if let (Some(a), Some(b)) = (from.first(), to.first())
                && a != b
            {
                top.entry(a.clone()).or_default().insert(b.clone());
            }
        }
    }
    for cycle in cycles(&top) {
        problems.push(format!("top-level modules in a cycle: {cycle:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The check sees the graph: a known edge is there.
    assert!(
        edges[&vec!["stream".to_string(), "feed".to_string()]]
            .contains_key(&vec!["stream".to_string(), "inbox".to_string()]),
        "{edges:?}"
    );
}

#[test]
fn the_cycle_check_finds_a_cycle_of_three() {
    let graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
        ("a", BTreeSet::from(["b"])),
        ("b", BTreeSet::from(["c"])),
        ("c", BTreeSet::from(["a", "d"])),
        ("d", BTreeSet::new()),
    ]);
    assert_eq!(cycles(&graph), vec![BTreeSet::from(["a", "b", "c"])]);
    let mut named = Vec::new();
    paths_at("a::{b, c::{d, e}}, f", 0, &[], &mut named);
    assert_eq!(
        named,
        vec![vec!["a", "b"], vec!["a", "c", "d"], vec!["a", "c", "e"]]
    );
}
