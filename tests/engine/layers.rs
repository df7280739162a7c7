//! The crate's modules form layers, written down as the table in the doc
//! comment of `src/lib.rs`: a module may use modules of its own layer or of
//! lower ones, and no modules use each other in a cycle. This test reads every
//! `src/**/*.rs` file, collects the crate paths each one names (`use crate::…`
//! trees, `crate::x::y` in code, `super::` and `self::` paths, paths through a
//! child module), and fails naming the offending use or the cycle.
//!
//! A reference counts between files (`egress::worker` uses `media::packet`):
//! the layers are checked between top-level modules, cycles both between files
//! and between top-level modules. The crate root only declares the modules and
//! is in no layer. Comments and string literals are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

#[test]
fn the_crate_keeps_the_layers_of_its_lib_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_sources(&src, &src, &mut files);
    let files: Vec<(&str, &str)> = files.iter().map(|(path, text)| (path.as_str(), text.as_str())).collect();
    let problems = check(&files);
    assert!(problems.is_empty(), "the crate's layers (see src/lib.rs) are broken:\n{}", problems.join("\n"));
}

#[test]
fn a_cycle_within_a_layer_is_named() {
    let problems = check(&[
        ("lib.rs", "//! | layer | modules |\n//! |---|---|\n//! | 0 | `a`, `b` |\npub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b.rs", "pub struct B;\nfn f() -> crate::a::A { crate::a::A }\n"),
    ]);
    assert!(problems.iter().any(|p| p == "cycle between files: a -> b -> a"), "{problems:?}");
    assert!(problems.iter().any(|p| p == "cycle between top-level modules: a -> b -> a"), "{problems:?}");
}

#[test]
fn a_cycle_through_a_parent_module_is_named() {
    let problems = check(&[
        ("lib.rs", "//! | 0 | `top` |\npub mod top;\n"),
        ("top/mod.rs", "pub mod child;\nuse child::Child;\npub struct Top;\n"),
        ("top/child.rs", "use super::Top;\npub struct Child;\n"),
    ]);
    assert_eq!(problems, ["cycle between files: top -> top::child -> top"]);
}

#[test]
fn a_use_of_a_higher_layer_is_named() {
    let problems = check(&[
        ("lib.rs", "//! | 1 | `high` |\n//! | 0 | `low` |\npub mod high;\npub mod low;\n"),
        ("high.rs", "pub struct High;\n"),
        ("low.rs", "pub struct Low;\n\nfn f() {\n    let _ = crate::high::High;\n}\n"),
    ]);
    assert_eq!(problems, ["src/low.rs:4: low (layer 0) uses high (layer 1)"]);
}

#[test]
fn every_form_of_path_is_seen() {
    let lib = "//! | 1 | `high` |\n//! | 0 | `low`, `other` |\npub mod high;\npub mod low;\npub mod other;\n";
    let low_uses = |line: &str| {
        check(&[
            ("lib.rs", lib),
            ("high/mod.rs", "pub mod inner;\n"),
            ("high/inner.rs", "pub struct Inner;\n"),
            ("other.rs", "pub struct Other;\n"),
            ("low/mod.rs", "pub mod child;\n"),
            ("low/child.rs", &format!("pub struct Child;\n{line}\n")),
        ])
    };
    for line in [
        "use crate::high::inner::Inner;",
        "use crate::{other::Other, high::{self, inner}};",
        "use crate::high::*;",
        "use super::super::high::inner::Inner;",
        "mod tests { use super::super::super::high::inner; }",
        "fn f() { crate::high::inner::Inner; }",
    ] {
        let problems = low_uses(line);
        assert!(!problems.is_empty(), "{line}");
        for problem in &problems {
            assert!(problem.starts_with("src/low/child.rs:2: low::child (layer 0) uses high"), "{line}: {problems:?}");
        }
    }
    for line in [
        "// use crate::high::inner::Inner;",
        "/* crate::high::inner::Inner */",
        "const S: &str = \"crate::high::inner\";",
        "const C: char = '\"'; use crate::other::Other;",
        "pub(crate) fn f() -> u8 { 0 }",
        "macro_rules! m { () => { $crate::high::inner::Inner } }",
        "mod tests { use super::*; }",
    ] {
        assert_eq!(low_uses(line), Vec::<String>::new(), "{line}");
    }
}

#[test]
fn a_module_outside_the_table_is_named() {
    let problems = check(&[
        ("lib.rs", "//! | 0 | `a`, `gone` |\npub mod a;\npub mod b;\n"),
        ("a.rs", "pub struct A;\n"),
        ("b.rs", "pub struct B;\n"),
    ]);
    assert_eq!(
        problems,
        [
            "src/b.rs: module b is in no layer of the table in src/lib.rs",
            "the table in src/lib.rs names gone, which has no file",
        ]
    );
}

/// Every `.rs` file under `dir`, as (path relative to `src`, text).
fn read_sources(src: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_sources(src, &path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let relative = path.strip_prefix(src).unwrap().to_str().unwrap().to_string();
            files.push((relative, fs::read_to_string(&path).unwrap()));
        }
    }
}

/// What is wrong with the crate made of `files` (paths relative to `src`, one
/// of them `lib.rs` with the table); empty when nothing is.
fn check(files: &[(&str, &str)]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((_, lib)) = files.iter().find(|(path, _)| *path == "lib.rs") else {
        return vec!["no src/lib.rs".to_string()];
    };
    let layers = read_layers(lib);
    if layers.is_empty() {
        return vec!["src/lib.rs has no table of layers (rows like `//! | 0 | `sys` | ... |`)".to_string()];
    }
    let modules: BTreeMap<String, &str> = files.iter().map(|(path, _)| (module_of(path), *path)).collect();
    for (module, path) in &modules {
        if !module.is_empty() && !layers.contains_key(top(module)) {
            problems.push(format!("src/{path}: module {} is in no layer of the table in src/lib.rs", top(module)));
        }
    }
    for name in layers.keys() {
        if !modules.contains_key(name) {
            problems.push(format!("the table in src/lib.rs names {name}, which has no file"));
        }
    }

    let mut file_edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut top_edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (path, text) in files {
        let from = module_of(path);
        if from.is_empty() {
            continue;
        }
        for (to, line) in references(&from, text, &modules) {
            let (from_layer, to_layer) = (layers.get(top(&from)), layers.get(top(to)));
            if let (Some(&from_layer), Some(&to_layer)) = (from_layer, to_layer) {
                if to_layer > from_layer {
                    problems
                        .push(format!("src/{path}:{line}: {from} (layer {from_layer}) uses {to} (layer {to_layer})"));
                }
            }
            let from = modules.get_key_value(&from).unwrap().0.as_str();
            file_edges.entry(from).or_default().insert(to);
            if top(from) != top(to) {
                top_edges.entry(top(from)).or_default().insert(top(to));
            }
        }
    }
    problems.dedup();
    if let Some(cycle) = find_cycle(&file_edges) {
        problems.push(format!("cycle between files: {}", cycle.join(" -> ")));
    }
    if let Some(cycle) = find_cycle(&top_edges) {
        problems.push(format!("cycle between top-level modules: {}", cycle.join(" -> ")));
    }
    problems
}

/// The table in `lib.rs`'s doc comment: each row whose first cell is a
/// number gives that layer to the modules named `like_this` in its second.
fn read_layers(lib: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.trim().strip_prefix("//!").map(str::trim).and_then(|row| row.strip_prefix('|')) else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(Ok(layer)), Some(names)) = (cells.first().map(|cell| cell.parse::<usize>()), cells.get(1)) else {
            continue;
        };
        for name in names.split('`').skip(1).step_by(2) {
            layers.insert(name.to_string(), layer);
        }
    }
    layers
}

/// A cycle in `edges` as the names along it (the first one again at the end),
/// found by a depth-first search from each name in order.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|&on_path| on_path == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for &next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|&node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// `egress/worker.rs` -> `egress::worker`; `ingest/mod.rs` -> `ingest`; `lib.rs` -> "".
fn module_of(path: &str) -> String {
    let path = path.strip_suffix(".rs").unwrap_or(path);
    let path = path.strip_suffix("/mod").unwrap_or(path);
    if path == "lib" {
        String::new()
    } else {
        path.replace('/', "::")
    }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

/// The other files' modules that the file of module `module` refers to, with
/// the line of each reference.
fn references<'m>(module: &str, text: &str, modules: &'m BTreeMap<String, &str>) -> Vec<(&'m str, usize)> {
    let tokens = tokens(&blank_comments_and_strings(text));
    let mut found = Vec::new();
    // The module the code at hand is in: the file's, then any inline `mod name { ... }`.
    let mut scope: Vec<String> = module.split("::").map(String::from).collect();
    let mut inline: Vec<(usize, usize)> = Vec::new(); // (brace depth inside, scope length before)
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let (token, line) = (tokens[i].0.as_str(), tokens[i].1);
        let next = |k: usize| tokens.get(i + k).map(|(token, _)| token.as_str());
        let starts_path = i == 0 || !matches!(tokens[i - 1].0.as_str(), "::" | "$");
        match token {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|&(inside, _)| inside == depth) {
                    let (_, before) = inline.pop().unwrap();
                    scope.truncate(before);
                }
                depth -= 1;
            }
            "mod" if next(2) == Some("{") => {
                inline.push((depth + 1, scope.len()));
                scope.push(next(1).unwrap().to_string());
            }
            _ => {}
        }
        if starts_path && next(1) == Some("::") && is_identifier(token) {
            let (base, start): (Vec<String>, usize) = match token {
                "crate" => (Vec::new(), i + 2),
                "self" => (scope.clone(), i + 2),
                "super" => {
                    let mut ups = 0;
                    while tokens.get(i + 2 * ups).map(|(token, _)| token.as_str()) == Some("super")
                        && tokens.get(i + 2 * ups + 1).map(|(token, _)| token.as_str()) == Some("::")
                    {
                        ups += 1;
                    }
                    (scope[..scope.len().saturating_sub(ups)].to_vec(), i + 2 * ups)
                }
                // A path through a child module of the code at hand.
                _ => (scope.clone(), i),
            };
            let mut leaves = Vec::new();
            let end = use_tree(&tokens, start, base, &mut leaves);
            for leaf in leaves {
                if let Some(to) = longest_module(&leaf, modules) {
                    if to != module {
                        found.push((to, line));
                    }
                }
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

/// Reads the path (or `use` tree) starting at `tokens[i]` below `prefix` and
/// puts each full path it names in `leaves`; returns where it ends.
fn use_tree(tokens: &[(String, usize)], mut i: usize, mut prefix: Vec<String>, leaves: &mut Vec<Vec<String>>) -> usize {
    loop {
        match tokens.get(i).map(|(token, _)| token.as_str()) {
            Some("{") => {
                i += 1;
                while let Some(token) = tokens.get(i).map(|(token, _)| token.as_str()) {
                    match token {
                        "}" => return i + 1,
                        "," => i += 1,
                        "self" => {
                            leaves.push(prefix.clone());
                            i += 1;
                        }
                        _ => i = use_tree(tokens, i, prefix.clone(), leaves).max(i + 1),
                    }
                }
                return i;
            }
            Some(token) if is_identifier(token) => {
                prefix.push(token.to_string());
                i += 1;
                if tokens.get(i).map(|(token, _)| token.as_str()) == Some("::") {
                    i += 1;
                    continue;
                }
                leaves.push(prefix);
                return i;
            }
            // `*`, or the end of the path.
            _ => {
                leaves.push(prefix);
                return i;
            }
        }
    }
}

/// The longest prefix of `path` that is a file's module.
fn longest_module<'m>(path: &[String], modules: &'m BTreeMap<String, &str>) -> Option<&'m str> {
    (1..=path.len()).rev().find_map(|len| modules.get_key_value(&path[..len].join("::")).map(|(name, _)| name.as_str()))
}

fn is_identifier(token: &str) -> bool {
    token.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::` and single punctuation characters, each with its line.
fn tokens(text: &str) -> Vec<(String, usize)> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(&c) = chars.peek().filter(|c| c.is_alphanumeric() || **c == '_') {
                word.push(c);
                chars.next();
            }
            tokens.push((word, line));
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            tokens.push(("::".to_string(), line));
        } else if !c.is_whitespace() {
            tokens.push((c.to_string(), line));
        }
    }
    tokens
}

/// `text` with comments, string literals and character literals blanked
/// (newlines kept, so lines keep their numbers).
fn blank_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i..].starts_with(&['/', '*']) {
                    nesting += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i..].starts_with(&['*', '/']) {
                    nesting -= 1;
                    out.push_str("  ");
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if rest[0] == 'r' && matches!(rest.get(1), Some('"' | '#')) && (i == 0 || !is_word(chars[i - 1])) {
            // A raw string: r"...", r#"..."#.
            let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                out.push(rest[0]);
                i += 1;
                continue;
            }
            let mut end = i + 2 + hashes;
            while end < chars.len() && !(chars[end] == '"' && chars[end + 1..].iter().take(hashes).all(|&c| c == '#')) {
                end += 1;
            }
            let end = (end + 1 + hashes).min(chars.len());
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if rest[0] == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let skip = if chars[i] == '\\' { 2 } else { 1 };
                out.extend(chars[i..(i + skip).min(chars.len())].iter().map(|&c| blank(c)));
                i += skip;
            }
            out.push(' ');
            i += 1;
        } else if rest[0] == '\'' && (rest.get(1) == Some(&'\\') || rest.get(2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\''), not a lifetime.
            let len = if rest[1] == '\\' {
                rest.get(3..).and_then(|tail| tail.iter().position(|&c| c == '\'')).map_or(2, |p| p + 4)
            } else {
                3
            };
            out.extend(std::iter::repeat_n(' ', len));
            i += len;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}
