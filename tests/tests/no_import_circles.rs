//! No import circles among the files of any library crate: every file
//! (module) names the modules it uses through `crate::` and `super::`
//! paths, and those uses must form no cycle, so each file can be read
//! knowing only the files below it. Unit-test modules (`#[cfg(test)] mod
//! tests`, last in a file) are left out: a test may use anything.
//!
//! The check reads the source as text: a path is resolved to the longest
//! prefix that is a module file, and grouped imports
//! (`crate::a::{b, c::d}`) to each member.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The library crates checked: (source folder, files that are not part of
/// the library).
const CRATES: &[(&str, &[&str])] = &[
    ("engine/src", &[]),
    ("net/src", &[]),
    ("fhir/src", &[]),
    ("vigil/src", &["main.rs", "ops.rs"]),
    ("testkit/src", &[]),
];

/// Module path of a source file relative to its crate's `src`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its unit tests and comments.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::b::{c, d::e}` after a `crate::` or `super::` at `start`: the paths
/// it names, each as segments.
fn paths_at(code: &str, start: usize) -> Vec<Vec<String>> {
    let rest = &code[start..];
    let mut head = Vec::new();
    let mut seg = String::new();
    for (i, ch) in rest.char_indices() {
        if ch.is_alphanumeric() || ch == '_' {
            seg.push(ch);
        } else if rest[i..].starts_with("::") {
            if !seg.is_empty() {
                head.push(std::mem::take(&mut seg));
            }
        } else if ch == ':' {
            continue;
        } else if ch == '{' && seg.is_empty() {
            let end = rest[i..].find('}').map_or(rest.len(), |e| i + e);
            return rest[i + 1..end]
                .split(',')
                .map(|m| {
                    let mut p = head.clone();
                    p.extend(
                        m.split("::")
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty() && s != "{"),
                    );
                    p
                })
                .collect();
        } else {
            break;
        }
    }
    if !seg.is_empty() {
        head.push(seg);
    }
    vec![head]
}

/// The modules `module` (in a crate with `modules`) uses.
fn uses(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // `super` is the parent module, whether the file is `x.rs` or `x/mod.rs`.
    let mut parent: Vec<String> = module
        .split("::")
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    parent.pop();
    for (anchor, base) in [("crate::", Vec::<String>::new()), ("super::", parent)] {
        for (i, _) in code.match_indices(anchor) {
            if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for p in paths_at(code, i + anchor.len()) {
                let mut full = base.clone();
                full.extend(p);
                for k in (1..=full.len()).rev() {
                    let m = full[..k].join("::");
                    if modules.contains(&m) {
                        out.insert(m);
                        break;
                    }
                }
            }
        }
    }
    out.remove(module);
    out
}

/// Strongly connected components of more than one module.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// The use graph of the crate whose sources are in `src`.
fn graph(src: &Path, skip: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = vigil_testkit::source::rust_files(src);
    files.retain(|f| {
        let rel = f.strip_prefix(src).expect("under src");
        !skip.iter().any(|s| rel == Path::new(s))
    });
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f.strip_prefix(src).expect("under src")))
        .collect();
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(src).expect("under src");
            let m = module_of(rel);
            let text = std::fs::read_to_string(f).expect("read a source file");
            let used = uses(&m, &code(&text), &modules);
            (m, used)
        })
        .collect()
}

#[test]
fn no_library_crate_has_an_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut edges = 0;
    for (dir, skip) in CRATES {
        let g = graph(&root.join(dir), skip);
        assert!(g.len() > 3, "{dir}: only {} modules read", g.len());
        edges += g.values().map(BTreeSet::len).sum::<usize>();
        for c in circles(&g) {
            found.push(format!("{dir}: {}", c.join(" -> ")));
        }
    }
    assert!(edges > 100, "only {edges} uses read: the parser is broken");
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_a_circle_and_resolves_paths() {
    let modules: BTreeSet<String> = ["a", "b", "b::c", "d"].map(str::to_owned).into();
    assert_eq!(
        uses(
            "a",
            "use crate::b::c::Thing;\nfn f() { crate::d::g(); }",
            &modules
        ),
        ["b::c", "d"].map(str::to_owned).into()
    );
    assert_eq!(
        uses(
            "b::c",
            "use super::{Thing, c::Other};\nuse crate::{a, d::X};",
            &modules
        ),
        ["a", "b", "d"].map(str::to_owned).into()
    );
    assert!(uses("a", &code("// crate::d::g()"), &modules).is_empty());
    assert_eq!(
        code("x\n// crate::d\n#[cfg(test)]\nmod tests { crate::b }"),
        "x\n"
    );
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_owned()].into());
    g.insert("b".into(), ["c".to_owned()].into());
    g.insert("c".into(), ["a".to_owned()].into());
    g.insert("d".into(), ["a".to_owned()].into());
    assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
    g.insert("c".into(), BTreeSet::new());
    assert!(circles(&g).is_empty());
}
