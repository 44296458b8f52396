//! The layers of `server/src` and `app/src`.
//!
//! Each crate's top-level modules (`src/x.rs`, or everything under `src/x/`) sit in numbered
//! layers, top first. A module may use modules of its own layer or of a layer below it, never one
//! above, and the modules never use each other in a cycle. The crate root (`lib.rs`, `main.rs`)
//! sits above every layer: it may use anything and nothing may use it, except the few names of
//! the root that an alias table hands to the module that really owns them.
//!
//! The check reads the sources as tokens, not through the compiler, so it sees what a reader
//! sees: every `crate::x` (in `use` trees, types, expressions, attributes and macro bodies such
//! as `view!` alike) and every `super::x` that climbs to the root. It needs nothing from the
//! server crate and runs with the other integration tests. Doc comments and string literals are
//! not read.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::Path;

// Placing a new module in a table below: it goes in a layer at or above every module it uses
// (the same number or a smaller one) and at or below every module that uses it; among the
// layers that fit, pick the one whose modules are most like it, or add a new layer between two.
// When none fits, the module does two jobs: split it, or move what both sides need further down.

/// The layers of `server/src`, top (1) first.
const SERVER_LAYERS: &[&[&str]] = &[
    // 1. Adapters: turn HTTP requests, sockets, pages and timers into calls on the layers below.
    &[
        "http",
        "ws",
        "dashboard",
        "housekeeping",
        "notifier",
        "security_headers",
        "assets",
        "connections",
        "cluster",
    ],
    // 2. Who is asking: every credential check, sign-in and sessions.
    &["auth", "error_response"],
    // 3. The state the adapters are handed.
    &["state"],
    // 4. The operations the adapters share.
    &["ops"],
    // 5. Services: agent connections, watched log feeds, the secret vault.
    &["hub", "log_feeds", "vault"],
    // 6. The link between replicas that share one PostgreSQL.
    &["relay"],
    // 7. Building blocks: storage, encryption, tokens, configuration, locking.
    &["db", "crypto", "token", "config", "sync"],
];

/// Names of `server/src/lib.rs` that modules may use, each with the module that owns it.
const SERVER_ALIASES: &[(&str, &str)] = &[];

/// The layers of `app/src`, top (1) first.
const APP_LAYERS: &[&[&str]] = &[
    // 1. Pages.
    &["project", "projects", "servers", "auth", "account"],
    // 2. Panels of a page, with their server functions (the Notifications page also has the
    //    Project page's notification panel).
    &[
        "secrets",
        "services",
        "notifications",
        "webhooks",
        "registries",
    ],
    // 3. What the pages share, and the server side of the server functions.
    &["logs", "live", "widgets", "routes", "ssr"],
];

/// Names of `app/src/lib.rs` that modules may use, each with the module that owns it.
const APP_ALIASES: &[(&str, &str)] = &[
    // `crate::call!(method, args…)`, the macro that runs a dashboard call in a server function.
    ("call", "ssr"),
    // The inline `mod ssr` with the `Dashboard` trait that server functions reach.
    ("ssr", "ssr"),
];

#[test]
fn server_modules_form_layers_without_cycles() {
    let rules = Rules {
        src: "server/src",
        layers: SERVER_LAYERS,
        aliases: SERVER_ALIASES,
    };
    assert_layered(&rules, &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

#[test]
fn app_modules_form_layers_without_cycles() {
    let rules = Rules {
        src: "app/src",
        layers: APP_LAYERS,
        aliases: APP_ALIASES,
    };
    assert_layered(
        &rules,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/src"),
    );
}

/// `serde_yaml` is unmaintained (see `deny.toml`): production code reaches it only through the
/// agent's `compose` module, so it can be replaced there alone. Tests anywhere may use it to read
/// back YAML the code wrote (after a `#[cfg(test)]` in their file).
#[test]
fn serde_yaml_is_used_only_behind_the_agents_compose_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut outside = Vec::new();
    for src in ["agent/src", "server/src", "shared/src", "app/src"] {
        for (path, text) in read_sources(&root.join(src)) {
            if src == "agent/src" && (path == "compose.rs" || path.starts_with("compose/")) {
                continue;
            }
            let mut in_tests = false;
            for (number, line) in text.lines().enumerate() {
                let code = line.trim_start();
                in_tests |= code.starts_with("#[cfg(test)]");
                if !in_tests && !code.starts_with("//") && code.contains("serde_yaml") {
                    outside.push(format!("{src}/{path}:{}: {code}", number + 1));
                }
            }
        }
    }
    assert!(
        outside.is_empty(),
        "serde_yaml outside agent::compose:\n{}",
        outside.join("\n")
    );
}

fn assert_layered(rules: &Rules, dir: &Path) {
    let files = read_sources(dir);
    assert!(
        files.iter().any(|(path, _)| path == "lib.rs"),
        "{} has no lib.rs",
        dir.display()
    );
    let problems = rules.check(&files);
    let report: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        problems.is_empty(),
        "the modules of {} break their layers:\n\n{}\n",
        rules.src,
        report.join("\n\n")
    );
}

/// Every `.rs` file under `dir`, as (path relative to `dir` with `/` separators, text), sorted
/// by path.
pub fn read_sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()));
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{name}/"), out);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
                out.push((format!("{prefix}{name}"), text));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, "", &mut files);
    files.sort();
    files
}

/// The layering rules of one crate.
pub struct Rules<'a> {
    /// Where the crate's sources are, as messages show it (`"server/src"`).
    pub src: &'a str,
    /// The top-level modules of each layer, top (layer 1) first.
    pub layers: &'a [&'a [&'a str]],
    /// Names defined in the crate root (a macro, an inline module) and the module, real or not,
    /// that stands for each in the graph; that module must be in a layer too.
    pub aliases: &'a [(&'a str, &'a str)],
}

/// A place in a source file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    /// The file, as `Rules::src` joined with its relative path.
    pub file: String,
    /// 1-based.
    pub line: usize,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One way a crate breaks its layers.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// A file that is not valid Rust tokens (an unclosed bracket or string).
    Unreadable { file: String, error: String },
    /// A module that is in no layer; `found` says where it comes from.
    Unlisted { module: String, found: String },
    /// Modules that use each other in a cycle: `modules` starts and ends with the same one, and
    /// `sites[i]` is one place where `modules[i]` uses `modules[i + 1]`.
    Cycle {
        modules: Vec<String>,
        sites: Vec<Site>,
    },
    /// `from` uses `to`, which sits in a layer above it, at each of `sites`.
    Upward {
        from: String,
        from_layer: usize,
        to: String,
        to_layer: usize,
        sites: Vec<Site>,
    },
    /// Modules use `crate::{name}`, an item of the crate root that no alias hands to a module,
    /// at each of `sites`.
    RootImport { name: String, sites: Vec<Site> },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { file, error } => {
                write!(f, "{file} cannot be read as Rust tokens: {error}")
            }
            Problem::Unlisted { module, found } => write!(
                f,
                "module `{module}` ({found}) is in no layer: add it to the layer table in \
                 server/tests/api/layers.rs (the comment there says where it goes)"
            ),
            Problem::Cycle { modules, sites } => {
                write!(f, "cycle: {}", modules.join(" -> "))?;
                for (pair, site) in modules.windows(2).zip(sites) {
                    write!(f, "\n    {} -> {} at {site}", pair[0], pair[1])?;
                }
                Ok(())
            }
            Problem::Upward {
                from,
                from_layer,
                to,
                to_layer,
                sites,
            } => {
                write!(
                    f,
                    "`{from}` (layer {from_layer}) uses `{to}` (layer {to_layer}), \
                     which sits above it:"
                )?;
                for site in sites {
                    write!(f, "\n    {site}")?;
                }
                Ok(())
            }
            Problem::RootImport { name, sites } => {
                write!(
                    f,
                    "`crate::{name}` is an item of the crate root, which no module may use: move \
                     it into a module, or (a macro or an inline module of the root) hand it to its \
                     owner in the alias table in server/tests/api/layers.rs; used at:"
                )?;
                for site in sites {
                    write!(f, "\n    {site}")?;
                }
                Ok(())
            }
        }
    }
}

impl Rules<'_> {
    /// Every way `files` (paths relative to the crate's `src/`, with `/` separators) break
    /// these rules, in a stable order; empty when they keep them.
    pub fn check(&self, files: &[(String, String)]) -> Vec<Problem> {
        let mut problems = Vec::new();
        let layer_of = self.layer_of();
        let modules = self.modules(files);
        let owners = self.aliases.iter().map(|(name, owner)| {
            (
                *owner,
                format!("the owner of `crate::{name}` in the alias table"),
            )
        });
        let mut unlisted: BTreeMap<&str, String> = owners.collect();
        unlisted.extend(
            modules
                .iter()
                .map(|(module, found)| (module.as_str(), found.clone())),
        );
        for (module, found) in unlisted {
            if !layer_of.contains_key(module) {
                problems.push(Problem::Unlisted {
                    module: module.to_string(),
                    found,
                });
            }
        }

        let edges = self.edges(files, &modules, &mut problems);
        for ((from, to), sites) in &edges {
            if let (Some(&from_layer), Some(&to_layer)) =
                (layer_of.get(from.as_str()), layer_of.get(to.as_str()))
            {
                if to_layer < from_layer {
                    problems.push(Problem::Upward {
                        from: from.clone(),
                        from_layer,
                        to: to.clone(),
                        to_layer,
                        sites: sites.clone(),
                    });
                }
            }
        }
        problems.extend(cycles(&edges));
        problems.sort();
        problems
    }

    fn layer_of(&self) -> BTreeMap<&str, usize> {
        let mut layer_of = BTreeMap::new();
        for (index, modules) in self.layers.iter().enumerate() {
            for &module in *modules {
                let earlier = layer_of.insert(module, index + 1);
                assert!(earlier.is_none(), "`{module}` is in two layers");
            }
        }
        layer_of
    }

    /// The crate's modules, its top-level files and directories, each with where it is.
    fn modules(&self, files: &[(String, String)]) -> BTreeMap<String, String> {
        let mut modules = BTreeMap::new();
        for (path, _) in files {
            if let Some(place) = Place::of(path) {
                let found = match path.split_once('/') {
                    Some((directory, _)) => format!("{}/{directory}/", self.src),
                    None => format!("{}/{path}", self.src),
                };
                modules.entry(place.module().to_string()).or_insert(found);
            }
        }
        modules
    }

    /// Which module uses which other one, and where; uses of the root and unreadable files go
    /// to `problems`.
    fn edges(
        &self,
        files: &[(String, String)],
        modules: &BTreeMap<String, String>,
        problems: &mut Vec<Problem>,
    ) -> BTreeMap<(String, String), Vec<Site>> {
        let owner: BTreeMap<&str, &str> = self.aliases.iter().copied().collect();
        let mut edges: BTreeMap<(String, String), Vec<Site>> = BTreeMap::new();
        let mut root_imports: BTreeMap<String, Vec<Site>> = BTreeMap::new();
        for (path, text) in files {
            let Some(place) = Place::of(path) else {
                continue;
            };
            let file = format!("{}/{path}", self.src);
            let tokens: TokenStream = match text.parse() {
                Ok(tokens) => tokens,
                Err(error) => {
                    let line = error.span().start().line;
                    let error = format!("{error} (near line {line})");
                    problems.push(Problem::Unreadable { file, error });
                    continue;
                }
            };
            let mut root_names = Vec::new();
            scan(tokens, &mut place.0.clone(), &mut root_names);
            for (name, line) in root_names {
                let site = Site {
                    file: file.clone(),
                    line,
                };
                let target = if modules.contains_key(&name) {
                    name.as_str()
                } else if let Some(owner) = owner.get(name.as_str()) {
                    owner
                } else {
                    root_imports.entry(name).or_default().push(site);
                    continue;
                };
                if target != place.module() {
                    let key = (place.module().to_string(), target.to_string());
                    edges.entry(key).or_default().push(site);
                }
            }
        }
        for (name, sites) in root_imports {
            problems.push(Problem::RootImport { name, sites });
        }
        edges
    }
}

/// Where a file sits: the module path of its file (`["auth", "github"]` for `auth/github.rs`),
/// or `None` for the crate root (`lib.rs`, `main.rs`).
struct Place(Vec<String>);

impl Place {
    fn of(path: &str) -> Option<Place> {
        if path == "lib.rs" || path == "main.rs" {
            return None;
        }
        let mut modules: Vec<String> = path
            .split('/')
            .map(|part| part.strip_suffix(".rs").unwrap_or(part).to_string())
            .collect();
        if modules.len() > 1 && modules.last().is_some_and(|last| last == "mod") {
            modules.pop();
        }
        Some(Place(modules))
    }

    /// The top-level module the file belongs to.
    fn module(&self) -> &str {
        &self.0[0]
    }
}

/// Collects every name of the crate root that `tokens` refer to, with its line: the `x` of
/// `crate::x`, and of `super::…::x` when the `super`s climb from `module` (the module path the
/// tokens sit in) to the root. A `use` group after either yields each of its first names.
fn scan(tokens: TokenStream, module: &mut Vec<String>, out: &mut Vec<(String, usize)>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(group) => {
                scan(group.stream(), module, out);
                i += 1;
            }
            TokenTree::Ident(word) if word == "mod" => match (tokens.get(i + 1), tokens.get(i + 2))
            {
                (Some(TokenTree::Ident(name)), Some(TokenTree::Group(body)))
                    if body.delimiter() == Delimiter::Brace =>
                {
                    module.push(unraw(name));
                    scan(body.stream(), module, out);
                    module.pop();
                    i += 3;
                }
                _ => i += 1,
            },
            TokenTree::Ident(word) if word == "crate" && is_path_separator(&tokens, i + 1) => {
                i = root_names(&tokens, i + 3, out);
            }
            TokenTree::Ident(word) if word == "super" && is_path_separator(&tokens, i + 1) => {
                let mut climbs = 1;
                let mut next = i + 3;
                while is_word(tokens.get(next), "super") && is_path_separator(&tokens, next + 1) {
                    climbs += 1;
                    next += 3;
                }
                i = if climbs == module.len() {
                    root_names(&tokens, next, out)
                } else {
                    next
                };
            }
            _ => i += 1,
        }
    }
}

/// Records the root names that start at `tokens[at]` (a name, a `*`, or a `{ … }` group of
/// them) and returns the index after them.
fn root_names(tokens: &[TokenTree], at: usize, out: &mut Vec<(String, usize)>) -> usize {
    match tokens.get(at) {
        Some(TokenTree::Ident(name)) => {
            out.push((unraw(name), name.span().start().line));
            at + 1
        }
        Some(TokenTree::Punct(star)) if star.as_char() == '*' => {
            out.push(("*".to_string(), star.span().start().line));
            at + 1
        }
        Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => {
            let items: Vec<TokenTree> = group.stream().into_iter().collect();
            for item in items.split(|token| is_punct(token, ',')) {
                root_names(item, 0, out);
            }
            at + 1
        }
        _ => at,
    }
}

/// Whether `tokens[at..]` starts with `::`.
fn is_path_separator(tokens: &[TokenTree], at: usize) -> bool {
    matches!(
        (tokens.get(at), tokens.get(at + 1)),
        (Some(TokenTree::Punct(first)), Some(second))
            if first.as_char() == ':' && first.spacing() == Spacing::Joint && is_punct(second, ':')
    )
}

fn is_punct(token: &TokenTree, char: char) -> bool {
    matches!(token, TokenTree::Punct(punct) if punct.as_char() == char)
}

fn is_word(token: Option<&TokenTree>, word: &str) -> bool {
    matches!(token, Some(TokenTree::Ident(ident)) if ident == word)
}

fn unraw(ident: &proc_macro2::Ident) -> String {
    let name = ident.to_string();
    name.strip_prefix("r#").map(str::to_string).unwrap_or(name)
}

/// The cycles among the modules: for each group of modules that reach one another, shortest
/// cycles until every edge inside the group is in one of them, each starting from its
/// alphabetically first module.
fn cycles(edges: &BTreeMap<(String, String), Vec<Site>>) -> Vec<Problem> {
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().insert(to);
    }
    let reachable_from = |start: &str| -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([start]);
        while let Some(module) = queue.pop_front() {
            for &to in next.get(module).into_iter().flatten() {
                if seen.insert(to) {
                    queue.push_back(to);
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&str, BTreeSet<&str>> = next
        .keys()
        .map(|&module| (module, reachable_from(module)))
        .collect();
    let leads_to = |module: &str, target: &str| {
        reachable
            .get(module)
            .is_some_and(|set| set.contains(target))
    };

    let mut covered: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut found: BTreeSet<Vec<&str>> = BTreeSet::new();
    for (from, to) in edges.keys() {
        let (from, to) = (from.as_str(), to.as_str());
        if covered.contains(&(from, to)) || !leads_to(to, from) {
            continue;
        }
        // The shortest way from `to` back to `from`, through modules that lead back too.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([to]);
        while let Some(module) = queue.pop_front() {
            if module == from {
                break;
            }
            for &step in next.get(module).into_iter().flatten() {
                if step != to
                    && !parent.contains_key(step)
                    && (step == from || leads_to(step, from))
                {
                    parent.insert(step, module);
                    queue.push_back(step);
                }
            }
        }
        let mut backwards = vec![from];
        while let Some(&module) = backwards.last().and_then(|last| parent.get(last)) {
            backwards.push(module);
        }
        // `backwards` runs from `from` to `to`; the cycle is the edge, then the way back.
        let mut cycle = vec![from];
        cycle.extend(backwards.into_iter().rev());
        for pair in cycle.windows(2) {
            covered.insert((pair[0], pair[1]));
        }
        cycle.pop();
        let first = (0..cycle.len()).min_by_key(|&at| cycle[at]).unwrap_or(0);
        cycle.rotate_left(first);
        found.insert(cycle);
    }

    found
        .into_iter()
        .map(|mut cycle| {
            cycle.push(cycle[0]);
            let sites = cycle
                .windows(2)
                .map(|pair| edges[&(pair[0].to_string(), pair[1].to_string())][0].clone())
                .collect();
            Problem::Cycle {
                modules: cycle.into_iter().map(str::to_string).collect(),
                sites,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks files given as (path under `src/`, lines).
    fn check(
        layers: &[&[&str]],
        aliases: &[(&str, &str)],
        files: &[(&str, &[&str])],
    ) -> Vec<Problem> {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(path, lines)| (path.to_string(), lines.join("\n")))
            .collect();
        Rules {
            src: "src",
            layers,
            aliases,
        }
        .check(&files)
    }

    fn site(file: &str, line: usize) -> Site {
        Site {
            file: file.to_string(),
            line,
        }
    }

    fn upward(from: (&str, usize), to: (&str, usize), sites: &[Site]) -> Problem {
        Problem::Upward {
            from: from.0.to_string(),
            from_layer: from.1,
            to: to.0.to_string(),
            to_layer: to.1,
            sites: sites.to_vec(),
        }
    }

    #[test]
    fn a_cycle_is_reported_with_its_path() {
        let problems = check(
            &[&["a", "b", "c"]],
            &[],
            &[
                ("lib.rs", &["pub mod a;", "pub mod b;", "pub mod c;"]),
                ("a.rs", &["//! A.", "", "use crate::b::B;"]),
                ("b/mod.rs", &["mod inner;"]),
                (
                    "b/inner.rs",
                    &["fn f() {", "    super::super::c::f();", "}"],
                ),
                ("c.rs", &["use super::a;"]),
            ],
        );
        assert_eq!(
            problems,
            [Problem::Cycle {
                modules: ["a", "b", "c", "a"].map(String::from).to_vec(),
                sites: vec![
                    site("src/a.rs", 3),
                    site("src/b/inner.rs", 2),
                    site("src/c.rs", 1)
                ],
            }]
        );
        assert_eq!(
            problems[0].to_string(),
            [
                "cycle: a -> b -> c -> a",
                "    a -> b at src/a.rs:3",
                "    b -> c at src/b/inner.rs:2",
                "    c -> a at src/c.rs:1",
            ]
            .join("\n")
        );
    }

    #[test]
    fn every_edge_of_a_tangle_is_shown_in_some_cycle() {
        let problems = check(
            &[&["a", "b", "c"]],
            &[],
            &[
                ("a.rs", &["use crate::b;"]),
                ("b.rs", &["use crate::{a, c};"]),
                ("c.rs", &["use crate::b;"]),
            ],
        );
        let cycles: Vec<String> = problems
            .iter()
            .filter_map(|problem| problem.to_string().lines().next().map(str::to_string))
            .collect();
        assert_eq!(cycles, ["cycle: a -> b -> a", "cycle: b -> c -> b"]);
    }

    #[test]
    fn an_upward_import_is_reported_with_file_and_line() {
        let problems = check(
            &[&["top"], &["low", "base"]],
            &[],
            &[
                ("top.rs", &["use crate::base::Base;"]),
                ("base.rs", &[]),
                (
                    "low.rs",
                    &[
                        "//! Low.",
                        "",
                        "use crate::top::Top;",
                        "",
                        "fn f() -> crate::top::Top {",
                        "    crate::base::make()",
                        "}",
                    ],
                ),
            ],
        );
        assert_eq!(
            problems,
            [upward(
                ("low", 2),
                ("top", 1),
                &[site("src/low.rs", 3), site("src/low.rs", 5)]
            )]
        );
        assert_eq!(
            problems[0].to_string(),
            "`low` (layer 2) uses `top` (layer 1), which sits above it:\n    \
             src/low.rs:3\n    src/low.rs:5"
        );
    }

    #[test]
    fn a_grouped_use_yields_both_edges() {
        let problems = check(
            &[&["a", "b"], &["low"]],
            &[],
            &[
                ("a.rs", &[]),
                ("b.rs", &[]),
                (
                    "low.rs",
                    &["use crate::{", "    a,", "    b::{C, D},", "};"],
                ),
            ],
        );
        assert_eq!(
            problems,
            [
                upward(("low", 2), ("a", 1), &[site("src/low.rs", 2)]),
                upward(("low", 2), ("b", 1), &[site("src/low.rs", 3)]),
            ]
        );
    }

    #[test]
    fn a_path_inside_a_macro_body_is_seen() {
        let problems = check(
            &[&["top"], &["low"]],
            &[],
            &[
                ("top.rs", &[]),
                (
                    "low.rs",
                    &[
                        "fn f() {",
                        "    tracing::info!(name = %crate::top::name(), \"seen\");",
                        "    view! { <crate::top::Row /> }",
                        "}",
                    ],
                ),
            ],
        );
        assert_eq!(
            problems,
            [upward(
                ("low", 2),
                ("top", 1),
                &[site("src/low.rs", 2), site("src/low.rs", 3)]
            )]
        );
    }

    #[test]
    fn an_unknown_module_is_reported() {
        let problems = check(
            &[&["known"]],
            &[],
            &[("known.rs", &[]), ("stray/mod.rs", &["use crate::known;"])],
        );
        assert_eq!(
            problems,
            [Problem::Unlisted {
                module: "stray".to_string(),
                found: "src/stray/".to_string(),
            }]
        );
        assert_eq!(
            problems[0].to_string(),
            "module `stray` (src/stray/) is in no layer: add it to the layer table in \
             server/tests/api/layers.rs (the comment there says where it goes)"
        );
    }

    #[test]
    fn an_item_of_the_root_may_be_used_only_through_an_alias() {
        let lib: &[&str] = &[
            "pub mod page;",
            "mod ssr {}",
            "macro_rules! call { () => {} }",
            "pub struct Root;",
        ];
        let page: &[&str] = &[
            "use crate::ssr::Session;",
            "fn f() {",
            "    crate::call!(viewer);",
            "}",
            "fn g(_: crate::Root) {}",
        ];
        let aliases = &[("call", "ssr"), ("ssr", "ssr")];
        let problems = check(
            &[&["page"], &["ssr"]],
            aliases,
            &[("lib.rs", lib), ("page.rs", page)],
        );
        assert_eq!(
            problems,
            [Problem::RootImport {
                name: "Root".to_string(),
                sites: vec![site("src/page.rs", 5)],
            }]
        );

        // The aliases make edges to `ssr` like any other: here they point up.
        let problems = check(
            &[&["ssr"], &["page"]],
            aliases,
            &[("lib.rs", lib), ("page.rs", &page[..4])],
        );
        assert_eq!(
            problems,
            [upward(
                ("page", 2),
                ("ssr", 1),
                &[site("src/page.rs", 1), site("src/page.rs", 3)]
            )]
        );
    }

    #[test]
    fn super_reaches_the_root_only_from_the_top_of_a_module() {
        // Inside `low`: its test module and its own files, none of which leaves it.
        let problems = check(
            &[&["top"], &["low"]],
            &[],
            &[
                ("top.rs", &[]),
                (
                    "low/mod.rs",
                    &[
                        "mod part;",
                        "#[cfg(test)]",
                        "mod tests {",
                        "    use super::*;",
                        "}",
                    ],
                ),
                (
                    "low/part.rs",
                    &["use super::Shared;", "pub(super) fn f() {}"],
                ),
            ],
        );
        assert_eq!(problems, []);

        let problems = check(
            &[&["top"], &["low"]],
            &[],
            &[
                ("top.rs", &[]),
                (
                    "low.rs",
                    &[
                        "#[cfg(test)]",
                        "mod tests {",
                        "    use super::super::top::Top;",
                        "}",
                    ],
                ),
            ],
        );
        assert_eq!(
            problems,
            [upward(("low", 2), ("top", 1), &[site("src/low.rs", 3)])]
        );
    }
}
