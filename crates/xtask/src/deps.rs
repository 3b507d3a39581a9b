//! The module graph of a crate's sources (`deps`): which module uses which, checked for cycles and for edges against the layering rules.
//!
//! A module is a file (`foo.rs`, or `foo/mod.rs` for `foo`); its path comes
//! from where the file lies under the source root. An edge A → B means A's
//! code names B: a `crate::…` path, a `super::…` path, or a path that starts
//! with a sibling module's name where a `use` brings it in (`use super::x`,
//! then `x::f`) is already covered by the `super::x` it came from. Comments
//! and string literals are not code. A path resolves to the longest module
//! it names (`crate::arch::mm::Carve` is `arch::mm`).
//!
//! Edges between a module and its own ancestors or descendants are left out:
//! a parent declares its children (`mod x;`) and re-exports from them, and a
//! child uses what its parent holds; that is how Rust modules nest, not a
//! dependency between peers. Every other edge counts, and the graph must be
//! acyclic: no two modules (or longer loops) use each other.
//!
//! Layering rules are given as `layer: allowed, allowed…` lines; a layer is a
//! top-level module, and an edge from one layer to another must be allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// A module path, `::`-separated, empty for the crate root.
pub type Module = String;

/// The graph: every module, and the modules each one uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Graph {
    /// Module → the modules it uses.
    pub edges: BTreeMap<Module, BTreeSet<Module>>,
}

/// The module a source file is, from its path relative to the source root
/// (`main.rs`/`lib.rs` is the root).
pub fn module_of(rel: &Path) -> Module {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    if !matches!(stem, "mod" | "main" | "lib") || !parts.is_empty() && stem != "mod" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// The source with comments, string and character literals blanked out
/// (replaced by spaces, so positions and line breaks stay).
pub fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(end) = raw_string_end(rest) {
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' && char_literal_len(rest).is_some() {
            let end = char_literal_len(rest).expect("checked");
            blank(&mut out, &rest[..end]);
            i += end;
        } else {
            let ch = src[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The length of a raw string literal (`r"…"`, `r#"…"#`) at the start, if one is.
fn raw_string_end(s: &[u8]) -> Option<usize> {
    let s2 = s.strip_prefix(b"b").unwrap_or(s);
    let prefix = s.len() - s2.len();
    let s3 = s2.strip_prefix(b"r")?;
    let hashes = s3.iter().take_while(|&&c| c == b'#').count();
    if s3.get(hashes) != Some(&b'"') {
        return None;
    }
    let body = &s3[hashes + 1..];
    let mut close = vec![b'"'];
    close.extend(std::iter::repeat_n(b'#', hashes));
    let at = body
        .windows(close.len())
        .position(|w| w == close.as_slice())?;
    Some(prefix + 1 + hashes + 1 + at + close.len())
}

/// The length of a character literal at the start (`'a'`, `'\n'`, `'\''`),
/// or `None` for a lifetime (`'a`).
fn char_literal_len(s: &[u8]) -> Option<usize> {
    if s.get(1) == Some(&b'\\') {
        let close = s[2..].iter().position(|&c| c == b'\'')?;
        return Some(close + 3);
    }
    let ch_len = std::str::from_utf8(&s[1..s.len().min(5)])
        .ok()
        .or_else(|| std::str::from_utf8(&s[1..2]).ok())?
        .chars()
        .next()?
        .len_utf8();
    (s.get(1 + ch_len) == Some(&b'\'')).then_some(ch_len + 2)
}

/// The `crate::`/`super::`/`self::` paths in `code` (comments and strings
/// already blanked), as module-path segments resolved from `module`.
pub fn paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if !is_ident(b[i]) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b':')) {
            i += 1;
            continue;
        }
        // A path starts here: read ident(::ident)*, allowing `{` groups to
        // be taken as their prefix only.
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < b.len() && is_ident(b[j]) {
                j += 1;
            }
            if start == j {
                break;
            }
            segs.push(code[start..j].to_string());
            if code[j..].starts_with("::") {
                j += 2;
            } else {
                break;
            }
        }
        i = j.max(i + 1);
        let base: Vec<String> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").map(String::from).collect()
        };
        let resolved = match segs.first().map(String::as_str) {
            Some("crate") | Some("$crate") => segs[1..].to_vec(),
            Some("super") => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let mut p = base.clone();
                for _ in 0..ups {
                    p.pop();
                }
                p.extend(segs[ups..].iter().cloned());
                p
            }
            Some("self") if segs.len() > 1 => {
                let mut p = base.clone();
                p.extend(segs[1..].iter().cloned());
                p
            }
            _ => continue,
        };
        found.push(resolved);
    }
    found
}

/// Builds the graph of the sources under `root`: `files` holds each file's
/// path relative to `root` and its text.
pub fn graph(files: &[(std::path::PathBuf, String)]) -> Graph {
    let modules: BTreeSet<Module> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut g = Graph::default();
    for m in &modules {
        g.edges.entry(m.clone()).or_default();
    }
    for (path, text) in files {
        let from = module_of(path);
        for segs in paths(&from, &code_only(text)) {
            // The longest module the path names.
            let to = (0..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|m| modules.contains(m))
                .unwrap_or_default();
            if !related(&from, &to) {
                g.edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    g
}

/// Whether one module is the other, or an ancestor of it.
fn related(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}::"))
    };
    within(a, b) || within(b, a)
}

/// The graph's cycles: each strongly connected component of more than one
/// module, its modules sorted.
pub fn cycles(g: &Graph) -> Vec<Vec<Module>> {
    // Tarjan's algorithm, iterative over a small graph.
    let names: Vec<&Module> = g.edges.keys().collect();
    let index_of: BTreeMap<&Module, usize> =
        names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let adj: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            g.edges[*n]
                .iter()
                .filter_map(|t| index_of.get(t).copied())
                .collect()
        })
        .collect();
    let n = names.len();
    let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut next, mut out) = (Vec::new(), 0, Vec::new());
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            if *child == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on[v] = true;
            }
            if let Some(&w) = adj[v].get(*child) {
                *child += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = stack.pop().expect("on the stack");
                    on[w] = false;
                    comp.push(names[w].clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    out.push(comp);
                }
            }
        }
    }
    out.sort();
    out
}

/// Layering rules: `layer: allowed allowed…` per line, `#` comments.
/// Returns layer → the layers it may use.
pub fn parse_rules(text: &str) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut rules = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (layer, allowed) = line
            .split_once(':')
            .ok_or_else(|| format!("rules line {}: expected `layer: allowed…`", n + 1))?;
        let allowed = allowed
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        rules.insert(layer.trim().to_string(), allowed);
    }
    Ok(rules)
}

/// Edges from one layer (top-level module) to another that the rules do
/// not allow, as `(from module, to module)`. A layer the rules do not name
/// may use nothing but itself; the crate root is not a layer.
pub fn violations(g: &Graph, rules: &BTreeMap<String, BTreeSet<String>>) -> Vec<(Module, Module)> {
    let layer = |m: &str| m.split("::").next().unwrap_or("").to_string();
    let mut out = Vec::new();
    for (from, tos) in &g.edges {
        let lf = layer(from);
        for to in tos {
            let lt = layer(to);
            if lf.is_empty() || lt.is_empty() || lf == lt {
                continue;
            }
            if !rules.get(&lf).is_some_and(|a| a.contains(&lt)) {
                out.push((from.clone(), to.clone()));
            }
        }
    }
    out
}

/// The graph as text: one line per module that uses others, `a -> b, c`.
pub fn render(g: &Graph) -> String {
    let mut out = String::new();
    let name = |m: &str| {
        if m.is_empty() {
            "(root)".to_string()
        } else {
            m.to_string()
        }
    };
    for (from, tos) in &g.edges {
        if tos.is_empty() {
            continue;
        }
        let list: Vec<String> = tos.iter().map(|t| name(t)).collect();
        let _ = writeln!(out, "{} -> {}", name(from), list.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    }

    #[test]
    fn module_paths() {
        assert_eq!(module_of(Path::new("main.rs")), "");
        assert_eq!(module_of(Path::new("lib.rs")), "");
        assert_eq!(module_of(Path::new("arch/mod.rs")), "arch");
        assert_eq!(
            module_of(Path::new("arch/mm/layout.rs")),
            "arch::mm::layout"
        );
        assert_eq!(module_of(Path::new("logger.rs")), "logger");
        assert_eq!(module_of(Path::new("migrate/tests.rs")), "migrate::tests");
    }

    #[test]
    fn comments_and_strings_are_not_code() {
        let src = "use crate::a; // crate::b\n/* crate::c /* crate::d */ */ let s = \"crate::e\"; let r = r#\"crate::f\"#; let c = '\"'; x::<'a>(crate::g);";
        let code = code_only(src);
        assert_eq!(code.len(), src.len());
        let found: Vec<String> = paths("m", &code)
            .into_iter()
            .map(|p| p.join("::"))
            .collect();
        assert_eq!(found, ["a", "g"]);
    }

    #[test]
    fn paths_resolve_from_their_module() {
        let p = |m: &str, c: &str| -> Vec<String> {
            paths(m, c).into_iter().map(|p| p.join("::")).collect()
        };
        assert_eq!(p("vmm::vcpu", "use super::exit;"), ["vmm::exit"]);
        assert_eq!(
            p("arch::mm::layout", "use super::super::boot::Machine;"),
            ["arch::boot::Machine"]
        );
        assert_eq!(p("vmm", "use self::vm::Vm;"), ["vmm::vm::Vm"]);
        assert_eq!(
            p("init", "crate::arch::cpu::now_ms()"),
            ["arch::cpu::now_ms"]
        );
        assert_eq!(
            p("x", "$crate::arch::console::print"),
            ["arch::console::print"]
        );
        assert!(p("x", "use core::fmt; hvcore::mmio::Bus; self.crate_x").is_empty());
    }

    #[test]
    fn cycles_and_layers() {
        let g = graph(&files(&[
            ("main.rs", "mod a; mod b; mod c;"),
            ("a/mod.rs", "pub mod x; pub use self::x::X;"),
            ("a/x.rs", "use super::y; use crate::b::B;"),
            ("a/y.rs", "use super::x::X;"),
            ("b.rs", "use crate::c;"),
            ("c.rs", "use crate::b::B;"),
        ]));
        assert_eq!(
            g.edges["a"],
            BTreeSet::new(),
            "a parent's use of its child is not an edge"
        );
        assert_eq!(
            g.edges["a::x"],
            ["a::y".to_string(), "b".to_string()].into()
        );
        let c = cycles(&g);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c.contains(&vec!["a::x".to_string(), "a::y".to_string()]));
        assert!(c.contains(&vec!["b".to_string(), "c".to_string()]));

        let rules = parse_rules("# layers\nb: c\nc: a\n").unwrap();
        assert_eq!(
            violations(&g, &rules),
            [
                ("a::x".to_string(), "b".to_string()),
                ("c".to_string(), "b".to_string())
            ]
        );
        assert!(parse_rules("no colon here").is_err());
        assert!(render(&g).contains("a::x -> a::y, b\n"));
    }

    #[test]
    fn an_acyclic_graph_has_no_cycles() {
        let g = graph(&files(&[
            ("lib.rs", ""),
            ("p.rs", "use crate::q;"),
            ("q.rs", "use crate::r::Thing;"),
            ("r.rs", ""),
        ]));
        assert!(cycles(&g).is_empty());
        assert_eq!(render(&g), "p -> q\nq -> r\n");
    }
}
