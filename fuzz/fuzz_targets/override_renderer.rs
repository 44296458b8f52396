//! The override renderer a deploy uses (`agent::override_file::render_deploy`, which
//! `stagely-agent render` prints too) on random secrets, service names and owners.
//!
//! Whatever the values hold, the rendered file read back with serde_yaml gives exactly the
//! environment each service should get (a global secret in every service, a scoped one in its
//! own service only, where it wins over a global one with the same key), one line per variable,
//! and every `$` doubled as Compose expects, so interpolation gives each value back byte for
//! byte; every service, with secrets or not, carries the owner's labels (the project's name, and
//! its id when there is one). A scope naming an unknown service, or the same key and scope twice,
//! is refused with the error that says so. The masked rendering has the same shape and labels
//! and shows no value.
#![no_main]

use agent::override_file::{
    environment_by_service, render_deploy, OverrideError, Owner, PROJECT_ID_LABEL, PROJECT_LABEL,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_yaml::Value;
use shared::{EnvKey, ProjectId, ProjectName, Secret, SecretScope, SecretValue, ServiceName};
use std::collections::{BTreeMap, BTreeSet};

/// Names a YAML reader could take for something other than a string, and a few plain ones.
/// Those a name type refuses are skipped for it.
const TRICKY_NAMES: &[&str] = &[
    "null",
    "Null",
    "NULL",
    "true",
    "True",
    "false",
    "FALSE",
    "yes",
    "Yes",
    "no",
    "NO",
    "on",
    "On",
    "off",
    "OFF",
    "y",
    "Y",
    "n",
    "N",
    "0",
    "1",
    "00",
    "123",
    "0x10",
    "0o17",
    "0b1",
    "1e3",
    "1E3",
    "1_000",
    "1.5",
    "2024-01-01",
    "nan",
    "NaN",
    "inf",
    "Infinity",
    "e",
    "_",
    "__",
    "web",
    "web.blue",
    "a-b",
    "9-lives",
    "DB_PASSWORD",
];

/// Pieces that mean something to YAML, to Compose or to a terminal, spliced into values.
const TRICKY_PIECES: &[&str] = &[
    "$",
    "$$",
    "${HOME}",
    "$HOME",
    "$${X}",
    "\"",
    "'",
    "\\",
    "\\n",
    "\n",
    "\r\n",
    "\r",
    "\t",
    " ",
    "# ",
    ": ",
    "- ",
    "&a",
    "*a",
    "!!str",
    "%",
    "@",
    "`",
    "|",
    ">",
    "{",
    "}",
    "[",
    "]",
    ",",
    "?",
    "~",
    "\0",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{2029}",
    "\u{feff}",
    "\u{fffe}",
    "\u{ffff}",
    "\u{10ffff}",
    "é",
    "世界",
    "🚀",
];

const SERVICE_FIRST: &[u8] = b"abcxyzABZ019";
const SERVICE_REST: &[u8] = b"abcxyzABZ019_.-";
const KEY_FIRST: &[u8] = b"abcxyzABCXYZ_";
const KEY_REST: &[u8] = b"abcxyzABCXYZ019_";
const PROJECT_FIRST: &[u8] = b"abcxyz019";
const PROJECT_REST: &[u8] = b"abcxyz019_-";

#[derive(Debug)]
struct Input {
    services: BTreeSet<ServiceName>,
    secrets: Vec<Secret>,
    project: ProjectName,
    project_id: Option<ProjectId>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut services = BTreeSet::new();
        for _ in 0..u.int_in_range(1..=5)? {
            services.insert(name(u, SERVICE_FIRST, SERVICE_REST, ServiceName::parse)?);
        }
        let known: Vec<ServiceName> = services.iter().cloned().collect();
        let mut secrets = Vec::new();
        for _ in 0..u.int_in_range(0..=8)? {
            let key = name(u, KEY_FIRST, KEY_REST, EnvKey::parse)?;
            let scope = match u.int_in_range(0..=9)? {
                0..=4 => SecretScope::Global,
                5..=8 => SecretScope::Service(u.choose(&known)?.clone()),
                _ => {
                    SecretScope::Service(name(u, SERVICE_FIRST, SERVICE_REST, ServiceName::parse)?)
                }
            };
            secrets.push(Secret {
                key,
                value: SecretValue::new(value(u)?),
                scope,
            });
        }
        let project = name(u, PROJECT_FIRST, PROJECT_REST, ProjectName::parse)?;
        let project_id = if u.arbitrary()? {
            Some(ProjectId(uuid::Uuid::from_bytes(u.arbitrary()?)))
        } else {
            None
        };
        Ok(Input {
            services,
            secrets,
            project,
            project_id,
        })
    }
}

/// A valid name: one of [`TRICKY_NAMES`] the type accepts, or one spelled from the alphabets.
fn name<T, E>(
    u: &mut Unstructured,
    first: &[u8],
    rest: &[u8],
    parse: fn(String) -> Result<T, E>,
) -> arbitrary::Result<T> {
    if u.ratio(1, 3)? {
        if let Ok(name) = parse(u.choose(TRICKY_NAMES)?.to_string()) {
            return Ok(name);
        }
    }
    let mut spelled = String::from(*u.choose(first)? as char);
    for _ in 0..u.int_in_range(0..=7)? {
        spelled.push(*u.choose(rest)? as char);
    }
    Ok(parse(spelled).unwrap_or_else(|_| unreachable!("the alphabets only spell valid names")))
}

fn value(u: &mut Unstructured) -> arbitrary::Result<String> {
    let mut value = String::new();
    for _ in 0..u.int_in_range(0..=12)? {
        if u.ratio(1, 2)? {
            value.push_str(u.choose(TRICKY_PIECES)?);
        } else {
            value.push(char::arbitrary(u)?);
        }
    }
    Ok(value)
}

/// What each service should receive, or the key of the first secret that must be refused.
type Environment = BTreeMap<String, BTreeMap<String, String>>;

/// Service → label → value.
type Labels = BTreeMap<String, BTreeMap<String, String>>;

/// Every service carries the project's name, and its id when there is one.
fn expected_labels(input: &Input) -> Labels {
    let mut labels = BTreeMap::from([(PROJECT_LABEL.to_owned(), input.project.to_string())]);
    if let Some(id) = input.project_id {
        labels.insert(PROJECT_ID_LABEL.to_owned(), id.0.to_string());
    }
    input
        .services
        .iter()
        .map(|service| (service.to_string(), labels.clone()))
        .collect()
}

#[derive(Debug, PartialEq)]
enum Refusal {
    UnknownService(String),
    Duplicate(String),
}

fn expected(input: &Input) -> Result<Environment, Refusal> {
    let mut seen = BTreeSet::new();
    for secret in &input.secrets {
        if let SecretScope::Service(service) = &secret.scope {
            if !input.services.contains(service) {
                return Err(Refusal::UnknownService(secret.key.to_string()));
            }
        }
        if !seen.insert((&secret.key, &secret.scope)) {
            return Err(Refusal::Duplicate(secret.key.to_string()));
        }
    }
    let mut environment = Environment::new();
    for service in &input.services {
        let mut variables = BTreeMap::new();
        for pass_scoped in [false, true] {
            for secret in &input.secrets {
                let applies = match &secret.scope {
                    SecretScope::Global => !pass_scoped,
                    SecretScope::Service(scoped) => pass_scoped && scoped == service,
                };
                if applies {
                    variables.insert(secret.key.to_string(), secret.value.expose().to_owned());
                }
            }
        }
        if !variables.is_empty() {
            environment.insert(service.to_string(), variables);
        }
    }
    Ok(environment)
}

/// What Compose makes of a value in the file: `$$` is one `$`; any other `$` would start an
/// interpolation, which must never happen to a secret.
fn interpolated(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '$' {
            assert_eq!(
                chars.next(),
                Some('$'),
                "a lone $ in {value:?} would be interpolated"
            );
        }
        out.push(c);
    }
    out
}

/// A string of the file, or a panic naming what is not one.
fn as_text<'a>(value: &'a Value, what: &str, text: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} {value:?} is not read as a string\n{text}"))
}

/// The file as a reader sees it, each value and label passed through `read_value`: every
/// service's labels, and the environment of those that have one.
fn read_back(text: &str, read_value: impl Fn(&str) -> String) -> (Labels, Environment) {
    let parsed: Value =
        serde_yaml::from_str(text).unwrap_or_else(|error| panic!("not YAML: {error}\n{text}"));
    let services = parsed["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("`services` is not a mapping\n{text}"));
    let mut labels = Labels::new();
    let mut environment = Environment::new();
    for (service, definition) in services {
        let service = as_text(service, "service", text);
        let read = |section: &str| {
            let entries = definition.get(section)?;
            let entries = entries
                .as_mapping()
                .unwrap_or_else(|| panic!("{service}'s {section} is not a mapping\n{text}"));
            let read: BTreeMap<String, String> = entries
                .iter()
                .map(|(key, value)| {
                    let key = as_text(key, "key", text).to_owned();
                    (key, read_value(as_text(value, "value", text)))
                })
                .collect();
            Some(read)
        };
        let service_labels =
            read("labels").unwrap_or_else(|| panic!("{service} has no labels\n{text}"));
        labels.insert(service.to_owned(), service_labels);
        if let Some(variables) = read("environment") {
            environment.insert(service.to_owned(), variables);
        }
    }
    (labels, environment)
}

fuzz_target!(|input: Input| {
    let want = expected(&input);
    let labels = expected_labels(&input);
    let owner = Owner {
        project: &input.project,
        project_id: input.project_id,
    };
    let environment = match (
        environment_by_service(&input.services, &input.secrets),
        want,
    ) {
        (Ok(environment), Ok(want)) => {
            let text = render_deploy(&input.services, &environment, &owner, false);
            assert_eq!(
                read_back(&text, interpolated),
                (labels.clone(), want.clone()),
                "\n{}",
                text.as_str()
            );
            let variables: usize = want.values().map(BTreeMap::len).sum();
            // `name:`, `labels:`, the project label and perhaps the id label.
            let label_lines = input.services.len() * (3 + usize::from(input.project_id.is_some()));
            assert_eq!(
                text.lines().count(),
                2 + label_lines + want.len() + variables,
                "not one line per entry\n{}",
                text.as_str()
            );
            (environment, want)
        }
        (Err(OverrideError::UnknownService { key, .. }), Err(Refusal::UnknownService(want))) => {
            assert_eq!(key.as_str(), want);
            return;
        }
        (Err(OverrideError::DuplicateSecret { key, .. }), Err(Refusal::Duplicate(want))) => {
            assert_eq!(key.as_str(), want);
            return;
        }
        (got, want) => panic!("got {got:?}, expected {want:?}"),
    };

    let (environment, want) = environment;
    let masked = render_deploy(&input.services, &environment, &owner, true);
    let shape: Environment = want
        .iter()
        .map(|(service, variables)| {
            let stars = variables.keys().map(|key| (key.clone(), "***".to_owned()));
            (service.clone(), stars.collect())
        })
        .collect();
    assert_eq!(
        read_back(&masked, str::to_owned),
        (labels, shape),
        "\n{}",
        masked.as_str()
    );
});
