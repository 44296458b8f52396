//! Property tests of the agent's two readers and writers of YAML: the compose reader
//! (`compose::load`, with includes) and the override renderer (`override_file::render_deploy`);
//! and of what it does to container output: redaction, line splitting and cutting to the wire's
//! budgets (the invariant is in `props/redaction.rs`).
//!
//! They state the same invariants as the fuzz targets in `fuzz/` (`compose_reader`,
//! `override_renderer`, `redactor`), with few enough cases to run in every `cargo test`; the fuzz
//! targets search much longer (`scripts/fuzz.sh`). Nothing here needs Docker.

mod redaction;

use agent::compose::{load, ComposeError};
use agent::override_file::{
    environment_by_service, render_deploy, OverrideError, Owner, PROJECT_ID_LABEL, PROJECT_LABEL,
};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_yaml::Value;
use shared::{EnvKey, ProjectId, ProjectName, Secret, SecretScope, SecretValue, ServiceName};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use uuid::Uuid;

/// Names a YAML reader could take for something other than a string, and some plain ones.
const TRICKY_SERVICES: &[&str] = &[
    "null",
    "true",
    "False",
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "N",
    "0",
    "123",
    "0x10",
    "0o17",
    "1e3",
    "1_000",
    "1.5",
    "2024-01-01",
    "nan",
    "inf",
    "web",
    "web.blue",
    "a-b",
    "9-lives",
];
const TRICKY_KEYS: &[&str] = &[
    "null",
    "NULL",
    "true",
    "Yes",
    "no",
    "On",
    "off",
    "y",
    "Y",
    "n",
    "nan",
    "inf",
    "e",
    "_",
    "__",
    "PATH",
    "DB_PASSWORD",
];

fn service() -> impl Strategy<Value = ServiceName> {
    prop_oneof![
        select(TRICKY_SERVICES).prop_map(str::to_owned),
        "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,12}",
    ]
    .prop_map(|name| ServiceName::parse(name).unwrap())
}

fn env_key() -> impl Strategy<Value = EnvKey> {
    prop_oneof![
        select(TRICKY_KEYS).prop_map(str::to_owned),
        "[A-Za-z_][A-Za-z0-9_]{0,12}",
    ]
    .prop_map(|key| EnvKey::parse(key).unwrap())
}

// ---------------------------------------------------------------------------------------------
// The compose reader
// ---------------------------------------------------------------------------------------------

/// Where the files of a generated project live, under one temporary root: the compose file
/// first, then files it may include, the last one outside the project (as Compose allows).
const LOCATIONS: [&str; 5] = [
    "project/compose.yaml",
    "project/a.yaml",
    "project/sub/b.yml",
    "project/sub/deeper/c.yaml",
    "common/shared.yml",
];

/// One compose file of a generated project.
#[derive(Clone, Debug)]
struct File {
    services: BTreeSet<ServiceName>,
    /// Block style (`services:\n  web: …`) or flow style (`services: {web: …}`).
    flow: bool,
    /// Services built from an anchored `x-base` with a merge key.
    merge: bool,
    /// Files after this one that it includes (indexes into the project's files).
    includes: Vec<usize>,
    /// How the include list is written: plain paths, `path:` mappings or one `path:` list.
    include_form: u8,
}

fn project() -> impl Strategy<Value = Vec<File>> {
    let file = (
        btree_set(service(), 0..4),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        vec(any::<Index>(), 0..3),
    );
    (
        vec(file, 1..=LOCATIONS.len()),
        vec(any::<Index>(), LOCATIONS.len()),
    )
        .prop_map(|(files, parents)| {
            let count = files.len();
            let mut built: Vec<File> = files
                .into_iter()
                .enumerate()
                .map(|(i, (services, flow, merge, include_form, extra))| File {
                    services,
                    flow,
                    merge,
                    // Extra includes only point forward, so there is never a cycle; a file
                    // included from two places is read once.
                    includes: extra
                        .iter()
                        .filter(|_| i + 1 < count)
                        .map(|index| i + 1 + index.index(count - i - 1))
                        .collect(),
                    include_form,
                })
                .collect();
            // Every file but the first is included by one file before it.
            for (child, parent) in (1..count).zip(&parents) {
                let parent = parent.index(child);
                built[parent].includes.push(child);
            }
            for file in &mut built {
                file.includes.sort_unstable();
                file.includes.dedup();
            }
            built
        })
}

/// `to` relative to the directory `from` (both relative to the same root, without `..`).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

/// Writes the files. Relative include paths start where Compose starts them: from the project
/// directory in the project's own file; in an included file, from the directory of the first
/// file of the `include` entry that named it. A file reached with two different starting points
/// spells its includes as absolute paths.
fn write_project(root: &Path, files: &[File]) {
    let mut bases: Vec<BTreeSet<PathBuf>> = vec![BTreeSet::new(); files.len()];
    bases[0].insert(PathBuf::from("project"));
    for (i, file) in files.iter().enumerate() {
        let here = Path::new(LOCATIONS[i]);
        let mut text = String::new();
        if file.merge {
            text.push_str("x-base: &base\n  image: busybox\n  restart: always\n");
        }
        let body = if file.merge {
            "{<<: *base}"
        } else {
            "{image: busybox}"
        };
        if file.services.is_empty() {
            text.push_str(if file.flow {
                "services: {}\n"
            } else {
                "services:\n"
            });
        } else if file.flow {
            let entries: Vec<String> = file
                .services
                .iter()
                .map(|name| format!("\"{name}\": {body}"))
                .collect();
            text.push_str(&format!("services: {{{}}}\n", entries.join(", ")));
        } else {
            text.push_str("services:\n");
            for name in &file.services {
                text.push_str(&format!("  '{name}': {body}\n"));
            }
        }
        if !file.includes.is_empty() {
            let only_base = (bases[i].len() == 1).then(|| bases[i].first().unwrap().clone());
            let paths: Vec<String> = file
                .includes
                .iter()
                .map(|&j| {
                    let to = Path::new(LOCATIONS[j]);
                    match &only_base {
                        Some(base) => relative(base, to),
                        None => root.join(to),
                    }
                    .display()
                    .to_string()
                })
                .collect();
            text.push_str("include:\n");
            match file.include_form {
                0 => paths
                    .iter()
                    .for_each(|path| text.push_str(&format!("  - {path}\n"))),
                1 => paths
                    .iter()
                    .for_each(|path| text.push_str(&format!("  - path: \"{path}\"\n"))),
                _ => text.push_str(&format!("  - path: [{}]\n", paths.join(", "))),
            }
            let first_dir = Path::new(LOCATIONS[file.includes[0]]).parent().unwrap();
            for &j in &file.includes {
                let entry_dir = match file.include_form {
                    0 | 1 => Path::new(LOCATIONS[j]).parent().unwrap(),
                    _ => first_dir,
                };
                bases[j].insert(entry_dir.to_owned());
            }
        }
        let path = root.join(here);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

/// Compose-file-like text: mostly a `services` mapping whose lines are drawn from names, anchors,
/// aliases, merge keys, tags and flow collections (so a good share of it is valid YAML), with
/// junk spliced in.
fn yaml_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        6 => select(vec![
            "web", "'null'", "\"y\"", "'1e3'", "db.main", "<<", "!!str web", "&k web",
        ])
        .prop_map(str::to_owned),
        6 => "[a-z0-9][a-z0-9._-]{0,6}",
        // Keys the reader must refuse: not a valid name, or not a string at all.
        1 => select(vec!["bad name", "1", "true", "~", "[a]"]).prop_map(str::to_owned),
    ];
    let value = select(vec![
        "{}",
        "{image: x}",
        "&a {image: x}",
        "*a",
        "{<<: *a}",
        "",
        "[1, 2]",
        "!!map {}",
        "null",
        "&b [*a, *a]",
        "{<<: [*a, *a]}",
        "'text'",
        "|\n      block",
    ]);
    let indent = prop_oneof![40 => Just("  "), 1 => Just("    "), 1 => Just(""), 1 => Just("\t")];
    let line =
        (indent, key, value).prop_map(|(indent, key, value)| format!("{indent}{key}: {value}\n"));
    let junk = prop_oneof![
        select(vec![
            "services:\n",
            "include: []\n",
            "include: [x.yml]\n",
            "x-base: &a {image: y}\n",
            "---\n",
            "...\n",
            "%YAML 1.1\n",
            "{",
            "}",
            "[",
            "]",
            ",",
            ": ",
            "\"",
            "'",
            "#",
            "\n",
            "&c",
            "*c",
        ])
        .prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
    ];
    let part = prop_oneof![20 => line, 1 => junk];
    (prop::bool::weighted(0.8), vec(part, 0..10)).prop_map(|(anchored, parts)| {
        let mut text = String::new();
        if anchored {
            text.push_str("x-base: &a {image: busybox}\n");
        }
        text.push_str("services:\n");
        text.push_str(&parts.concat());
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_reader_lists_every_service_of_every_included_file(
        files in project(),
        confined in any::<bool>(),
    ) {
        let root = tempfile::tempdir().unwrap();
        write_project(root.path(), &files);
        let roots = if confined { vec![root.path().to_owned()] } else { Vec::new() };
        let expected: BTreeSet<ServiceName> =
            files.iter().flat_map(|file| file.services.iter().cloned()).collect();

        match load(&root.path().join("project"), None, &roots) {
            Ok(found) => prop_assert_eq!(found.services, expected),
            Err(ComposeError::NoServices { .. }) => prop_assert!(expected.is_empty()),
            Err(error) => return Err(TestCaseError::fail(format!("{error}"))),
        }
    }

    #[test]
    fn any_text_is_read_or_refused_and_what_is_read_is_what_yaml_says(text in yaml_text()) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("compose.yaml"), &text).unwrap();
        let roots = [dir.path().to_owned()];
        let Ok(found) = load(dir.path(), None, &roots) else {
            return Ok(());
        };
        // Accepted: the services are exactly the keys serde_yaml sees, merge keys applied.
        let mut document: Value = serde_yaml::from_str(&text).unwrap();
        document.apply_merge().unwrap();
        let keys: BTreeSet<ServiceName> = document["services"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|key| ServiceName::parse(key.as_str().unwrap()).unwrap())
            .collect();
        prop_assert!(!found.services.is_empty());
        prop_assert_eq!(found.services, keys);
    }
}

// ---------------------------------------------------------------------------------------------
// The override renderer
// ---------------------------------------------------------------------------------------------

/// Values full of what YAML, Compose and terminals treat specially.
fn secret_value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        select(vec![
            "$", "$$", "${HOME}", "$HOME", "$${X}", "\"", "'", "\\", "\\n", "\n", "\r\n", "\r",
            "\t", " ", "# ", ": ", "- ", "&a", "*a", "!!str", "%", "@", "`", "|", ">", "{", "}",
            "[", "]", "~", "null", "true", "0x10", "\0", "\x1b[31m", "\x7f", "\u{85}", "\u{a0}",
            "\u{2028}", "\u{2029}", "\u{feff}", "\u{fffe}", "\u{ffff}", "é", "世界", "🚀",
        ])
        .prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
    ];
    vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// Services, and secrets scoped globally, to one of them, or (rarely) to a service the project
/// does not define.
fn services_and_secrets() -> impl Strategy<Value = (BTreeSet<ServiceName>, Vec<Secret>)> {
    #[derive(Clone, Debug)]
    enum Scope {
        Global,
        Known(Index),
        Any(ServiceName),
    }
    let scope = prop_oneof![
        5 => Just(Scope::Global),
        4 => any::<Index>().prop_map(Scope::Known),
        1 => service().prop_map(Scope::Any),
    ];
    let secrets = vec((env_key(), secret_value(), scope), 0..8);
    (btree_set(service(), 1..5), secrets).prop_map(|(services, secrets)| {
        let known: Vec<ServiceName> = services.iter().cloned().collect();
        let secrets = secrets
            .into_iter()
            .map(|(key, value, scope)| Secret {
                key,
                value: SecretValue::new(value),
                scope: match scope {
                    Scope::Global => SecretScope::Global,
                    Scope::Known(index) => SecretScope::Service(index.get(&known).clone()),
                    Scope::Any(service) => SecretScope::Service(service),
                },
            })
            .collect();
        (services, secrets)
    })
}

/// Service → variable → value, as plain strings.
type Environment = BTreeMap<String, BTreeMap<String, String>>;

/// Why the secrets must be refused: the key of the first secret in the way.
#[derive(Debug, PartialEq)]
enum Refusal {
    UnknownService(String),
    Duplicate(String),
}

/// What each service must receive, worked out from the rule in the docs rather than the code:
/// a global secret reaches every service, a scoped one only its own, where it wins.
fn expected(services: &BTreeSet<ServiceName>, secrets: &[Secret]) -> Result<Environment, Refusal> {
    let mut seen = BTreeSet::new();
    for secret in secrets {
        if let SecretScope::Service(service) = &secret.scope {
            if !services.contains(service) {
                return Err(Refusal::UnknownService(secret.key.to_string()));
            }
        }
        if !seen.insert((&secret.key, &secret.scope)) {
            return Err(Refusal::Duplicate(secret.key.to_string()));
        }
    }
    let mut environment = Environment::new();
    for service in services {
        let global = secrets.iter().filter(|s| s.scope == SecretScope::Global);
        let own = secrets
            .iter()
            .filter(|s| matches!(&s.scope, SecretScope::Service(scoped) if scoped == service));
        let variables: BTreeMap<String, String> = global
            .chain(own)
            .map(|s| (s.key.to_string(), s.value.expose().to_owned()))
            .collect();
        if !variables.is_empty() {
            environment.insert(service.to_string(), variables);
        }
    }
    Ok(environment)
}

/// What Compose makes of a value in the file: `$$` is one `$`; any other `$` would start an
/// interpolation, which must never happen to a secret.
fn interpolated(value: &str) -> Result<String, TestCaseError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '$' {
            prop_assert_eq!(chars.next(), Some('$'), "a lone $ in {:?}", value);
        }
        out.push(c);
    }
    Ok(out)
}

/// A project name a deploy could be labelled with, some of them words YAML reads as other types.
fn project_name() -> impl Strategy<Value = ProjectName> {
    prop_oneof![
        select(vec![
            "null",
            "true",
            "no",
            "y",
            "123",
            "0x10",
            "1e3",
            "2024-01-01",
            "shop"
        ])
        .prop_map(str::to_owned),
        "[a-z0-9][a-z0-9_-]{0,62}",
    ]
    .prop_map(|name| ProjectName::parse(name).unwrap())
}

/// Service → label → value, as plain strings.
type Labels = BTreeMap<String, BTreeMap<String, String>>;

/// The labels every service of a deploy for `owner` must carry: the project's name, and its id
/// when there is one.
fn expected_labels(services: &BTreeSet<ServiceName>, owner: &Owner) -> Labels {
    let mut labels = BTreeMap::from([(PROJECT_LABEL.to_owned(), owner.project.to_string())]);
    if let Some(id) = owner.project_id {
        labels.insert(PROJECT_ID_LABEL.to_owned(), id.0.to_string());
    }
    services
        .iter()
        .map(|service| (service.to_string(), labels.clone()))
        .collect()
}

/// A string of the rendered file read as text, or the reason it is not one.
fn as_text<'a>(value: &'a Value, what: &str, text: &str) -> Result<&'a str, TestCaseError> {
    value
        .as_str()
        .ok_or_else(|| TestCaseError::fail(format!("{what} {value:?} is not a string\n{text}")))
}

/// The rendered file as serde_yaml reads it, each value and label passed through `read_value`:
/// the services' labels, and the environment of those that have one.
fn read_back(
    text: &str,
    read_value: impl Fn(&str) -> Result<String, TestCaseError>,
) -> Result<(Labels, Environment), TestCaseError> {
    let parsed: Value = serde_yaml::from_str(text)
        .map_err(|error| TestCaseError::fail(format!("not YAML: {error}\n{text}")))?;
    let mut labels = Labels::new();
    let mut environment = Environment::new();
    let services = parsed["services"].as_mapping();
    prop_assert!(services.is_some(), "`services` is not a mapping\n{}", text);
    for (service, definition) in services.unwrap() {
        let service = as_text(service, "service", text)?;
        let read = |section: &str| -> Result<Option<BTreeMap<String, String>>, TestCaseError> {
            let Some(entries) = definition.get(section) else {
                return Ok(None);
            };
            let entries = entries.as_mapping();
            prop_assert!(entries.is_some(), "{} is not a mapping\n{}", section, text);
            let mut read = BTreeMap::new();
            for (key, value) in entries.unwrap() {
                let value = read_value(as_text(value, "value", text)?)?;
                read.insert(as_text(key, "key", text)?.to_owned(), value);
            }
            Ok(Some(read))
        };
        let Some(service_labels) = read("labels")? else {
            return Err(TestCaseError::fail(format!(
                "{service} has no labels\n{text}"
            )));
        };
        labels.insert(service.to_owned(), service_labels);
        if let Some(variables) = read("environment")? {
            environment.insert(service.to_owned(), variables);
        }
    }
    Ok((labels, environment))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_rendered_override_gives_each_service_exactly_its_secrets_and_the_owner_labels(
        (services, secrets) in services_and_secrets(),
        project in project_name(),
        project_id in proptest::option::of(any::<u128>()),
    ) {
        let owner = Owner {
            project: &project,
            project_id: project_id.map(|id| ProjectId(Uuid::from_u128(id))),
        };
        let labels = expected_labels(&services, &owner);
        let placed = environment_by_service(&services, &secrets);
        let environment = match (placed, expected(&services, &secrets)) {
            (Ok(environment), Ok(want)) => {
                let text = render_deploy(&services, &environment, &owner, false);
                prop_assert_eq!(
                    read_back(&text, interpolated)?,
                    (labels.clone(), want.clone()),
                    "\n{}",
                    text.as_str()
                );
                let variables: usize = want.values().map(BTreeMap::len).sum();
                // `name:`, `labels:`, the project label and perhaps the id label.
                let label_lines = services.len() * (3 + usize::from(project_id.is_some()));
                prop_assert_eq!(
                    text.lines().count(),
                    2 + label_lines + want.len() + variables,
                    "not one line per entry\n{}",
                    text.as_str()
                );
                (environment, want)
            }
            (Err(OverrideError::UnknownService { key, .. }), Err(Refusal::UnknownService(want)))
            | (Err(OverrideError::DuplicateSecret { key, .. }), Err(Refusal::Duplicate(want))) => {
                prop_assert_eq!(key.as_str(), want);
                return Ok(());
            }
            (got, want) => {
                return Err(TestCaseError::fail(format!("got {got:?}, expected {want:?}")));
            }
        };

        // Masked, the file has the same shape and labels, and every value is `***`.
        let (environment, want) = environment;
        let masked = render_deploy(&services, &environment, &owner, true);
        let stars: Environment = want
            .iter()
            .map(|(service, variables)| {
                let keys = variables.keys().map(|key| (key.clone(), "***".to_owned()));
                (service.clone(), keys.collect())
            })
            .collect();
        prop_assert_eq!(read_back(&masked, |value| Ok(value.to_owned()))?, (labels, stars));
    }
}

// ---------------------------------------------------------------------------------------------
// Container output: redaction, line splitting, cuts
// ---------------------------------------------------------------------------------------------

/// Text full of what the encoders escape and the decoders read ([`redaction::PIECES`]), plain
/// letters and digits, and any character.
fn output_text(pieces: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => select(redaction::PIECES).prop_map(str::to_owned),
        2 => "[a-zA-Z0-9]{1,6}",
        1 => any::<char>().prop_map(String::from),
    ];
    vec(piece, pieces).prop_map(|pieces| pieces.concat())
}

fn output_case() -> impl Strategy<Value = redaction::Case> {
    use redaction::Encoding;
    let encoding = prop_oneof![
        Just(Encoding::Plain),
        (
            any::<bool>(),
            any::<bool>(),
            vec(any::<u8>(), 0..6),
            vec(any::<u8>(), 0..4),
        )
            .prop_map(|(url_safe, padded, head, tail)| Encoding::Base64 {
                url_safe,
                padded,
                head,
                tail,
            }),
        any::<bool>().prop_map(|form| Encoding::Percent { form }),
        Just(Encoding::Json),
    ];
    let around = (
        output_text(0..6),
        output_text(0..6),
        output_text(0..4),
        output_text(0..4),
    );
    let delivery = (
        vec(any::<usize>(), 0..6),
        prop_oneof![1usize..96, Just(64 * 1024)],
        any::<bool>(),
        0usize..256,
    );
    (
        output_text(1..8),
        output_text(0..4),
        encoding,
        around,
        vec(any::<u8>(), 0..24),
        delivery,
    )
        .prop_map(
            |(value, decoy, encoding, around, choices, delivery)| redaction::Case {
                value,
                decoy,
                encoding,
                before: around.0,
                after: around.1,
                field_before: around.2,
                field_after: around.3,
                choices,
                reads: delivery.0,
                max_line: delivery.1,
                newline: delivery.2,
                budget: delivery.3,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn a_secret_in_container_output_is_masked_in_every_promised_form_however_it_arrives(
        case in output_case(),
    ) {
        redaction::check(&case);
    }
}
