//! Validated names that end up in a database row, a compose file or a process argv.
//!
//! Each has a `parse` that enforces the rule of the tool that finally consumes it (the shell's
//! rule for environment variables, Compose's rules for service and project names, the agent's
//! rules for a project's directory and compose file), so an unchecked string never reaches those
//! places. Names a person types into a form (agent names, logins) are trimmed first.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused; the message is meant to be shown to a person as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} is not valid: {rule}")]
pub struct NameError {
    /// What kind of name it was ("environment variable name", "service name", ...).
    pub kind: &'static str,
    /// The refused input (truncated when long).
    pub value: String,
    /// The rule it broke, phrased for a person.
    pub rule: &'static str,
}

impl NameError {
    fn new(kind: &'static str, value: &str, rule: &'static str) -> Self {
        let value = value.chars().take(80).collect();
        Self { kind, value, rule }
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $rule:ident, $check:ident) => {
        name_type!(@define $(#[$doc])* $name, $rule, $check, std::convert::identity);
    };
    ($(#[$doc:meta])* $name:ident, $rule:ident, $check:ident, trimmed) => {
        name_type!(@define $(#[$doc])* $name, $rule, $check, trimmed);
    };
    (@define $(#[$doc:meta])* $name:ident, $rule:ident, $check:ident, $prepare:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The rule, as the check enforces it and the API's JSON Schema states it.
            pub const RULE: &'static NameRule = &$rule;

            /// Checks `value` against the rule and wraps it.
            pub fn parse(value: impl Into<String>) -> Result<Self, NameError> {
                let value = $prepare(value.into());
                $check(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $rule.json_schema()
            }
        }
    };
}

/// `value` without leading and trailing whitespace, reusing its allocation when there is none.
fn trimmed(value: String) -> String {
    if value.trim().len() == value.len() {
        value
    } else {
        value.trim().to_string()
    }
}

/// A kind of name's rule, stated once: its check enforces it, and the API's JSON Schema states
/// it (`pattern`, `minLength`, `maxLength`) from the same constants. The checks are plain code
/// (this crate builds for wasm32 and carries no regex engine); the tests hold every pattern to
/// its check, on tables of names and on random ones.
#[derive(Debug)]
pub struct NameRule {
    /// What kind of name it is ("environment variable name", "service name", ...).
    pub kind: &'static str,
    /// The rule, phrased for a person: error messages and the schema's description say it.
    pub rule: &'static str,
    /// The whole input as a regular expression, anchored, in the syntax ECMA-262 (JSON Schema),
    /// Python and Rust's `regex` read alike: character classes spelled out, no `\s` or `\p`.
    /// For a trimmed name it allows the whitespace around and bounds the length itself.
    pub pattern: &'static str,
    /// The most bytes (UTF-8) the name may have; for a trimmed name, the most characters once
    /// trimmed. Every name has at least one character.
    pub max_len: usize,
    /// Whitespace around the input is removed before the rule applies.
    pub trimmed: bool,
}

/// What Rust's `str::trim` removes (Unicode `White_Space`), as a regex character class.
macro_rules! white_space {
    () => {
        r"[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    };
}

/// What Rust's `str::trim` removes, as a regex character class (see [`NameRule::pattern`]).
pub const WHITE_SPACE: &str = white_space!();

/// A string of only whitespace (or none), which some optional names take for "none given".
pub const BLANK_PATTERN: &str = concat!("^", white_space!(), "*$");

impl NameRule {
    /// The JSON Schema of the name as the API reads it.
    #[cfg(feature = "schema")]
    pub fn json_schema(&self) -> schemars::Schema {
        let mut schema = schemars::json_schema!({
            "type": "string",
            "pattern": self.pattern,
            "description": format!("{}: {}", self.kind, self.rule),
        });
        if !self.trimmed {
            schema.insert("minLength".into(), 1.into());
            schema.insert("maxLength".into(), self.max_len.into());
        }
        schema
    }

    fn refuse(&self, value: &str) -> NameError {
        NameError::new(self.kind, value, self.rule)
    }
}

/// [`EnvKey`]: the shell's rule.
pub const ENV_KEY: NameRule = NameRule {
    kind: "environment variable name",
    rule: "use letters, digits and '_', not starting with a digit (at most 256)",
    pattern: "^[A-Za-z_][A-Za-z0-9_]*$",
    max_len: 256,
    trimmed: false,
};

/// [`ServiceName`]: Compose's rule.
pub const SERVICE_NAME: NameRule = NameRule {
    kind: "service name",
    rule: "use letters, digits, '_', '.' and '-', starting with a letter or digit (at most 63)",
    pattern: "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
    max_len: 63,
    trimmed: false,
};

/// [`ProjectName`]: Compose's rule.
pub const PROJECT_NAME: NameRule = NameRule {
    kind: "project name",
    rule:
        "use lowercase letters, digits, '_' and '-', starting with a letter or digit (at most 63)",
    pattern: "^[a-z0-9][a-z0-9_-]*$",
    max_len: 63,
    trimmed: false,
};

/// Whitespace around, then 1 to 64 characters, none of them a control character: the first
/// and last are neither whitespace nor control, and up to 62 that are not control lie between.
macro_rules! printable_64 {
    () => {
        concat!(
            "^",
            white_space!(),
            "*",
            r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
            r"(?:[^\x00-\x1f\x7f-\x9f]{0,62}",
            r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?",
            white_space!(),
            "*$"
        )
    };
}

/// [`AgentName`]: whitespace around, then 1 to 64 characters, none of them a control character.
pub const AGENT_NAME: NameRule = NameRule {
    kind: "agent name",
    rule: "use 1 to 64 printable characters",
    pattern: printable_64!(),
    max_len: 64,
    trimmed: true,
};

/// [`ChannelName`]: the rule of agent names.
pub const CHANNEL_NAME: NameRule = NameRule {
    kind: "channel name",
    rule: "use 1 to 64 printable characters",
    pattern: printable_64!(),
    max_len: 64,
    trimmed: true,
};

/// [`Login`]: whitespace around, then 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
pub const LOGIN: NameRule = NameRule {
    kind: "username",
    rule: "use 1 to 64 letters, digits, dots, dashes or underscores",
    pattern: concat!(
        "^",
        white_space!(),
        "*[A-Za-z0-9._-]{1,64}",
        white_space!(),
        "*$"
    ),
    max_len: 64,
    trimmed: true,
};

/// [`ProjectPath`]: what the agent accepts as a project's directory.
pub const PROJECT_PATH: NameRule = NameRule {
    kind: "path",
    rule: "must be an absolute directory on the agent's host, like /srv/shop (at most 4096 bytes)",
    pattern: r"^/[^\x00]*$",
    max_len: 4096,
    trimmed: false,
};

/// [`ComposeFile`]: a relative path whose parts are never `..`.
pub const COMPOSE_FILE: NameRule = NameRule {
    kind: "compose_file",
    rule: "must be a file name inside the project directory, like compose.prod.yaml \
           (at most 255 bytes)",
    // Parts separated by '/': the first not empty (not absolute), none of them "..".
    pattern: concat!(
        r"^(?:[^/\x00.][^/\x00]*|\.|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)",
        r"(?:/(?:[^/\x00.][^/\x00]*|\.?|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+))*$"
    ),
    max_len: 255,
    trimmed: false,
};

/// [`RegistryHost`]: an image registry as image references name it (`ghcr.io`,
/// `registry.example.com:5000`), lowercase, without a scheme or a path.
pub const REGISTRY_HOST: NameRule = NameRule {
    kind: "registry",
    rule: "must be a registry host name as image names use it, like ghcr.io or \
           registry.example.com:5000: lowercase letters, digits, '.' and '-', then an optional \
           ':port' (at most 253 bytes)",
    pattern: r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?$",
    max_len: 253,
    trimmed: false,
};

/// [`RegistryUsername`]: a registry account name; HTTP basic authentication ends it at the
/// first ':'.
pub const REGISTRY_USERNAME: NameRule = NameRule {
    kind: "registry username",
    rule: "use 1 to 256 printable ASCII characters other than space and ':'",
    pattern: r"^[!-9;-~]+$",
    max_len: 256,
    trimmed: false,
};

name_type!(
    /// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 256 bytes.
    EnvKey,
    ENV_KEY,
    check_env_key
);
name_type!(
    /// A Compose service name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 63 bytes.
    ServiceName,
    SERVICE_NAME,
    check_service_name
);
name_type!(
    /// A Compose project name: `[a-z0-9][a-z0-9_-]*`, at most 63 bytes.
    ProjectName,
    PROJECT_NAME,
    check_project_name
);

name_type!(
    /// An agent's name as people see it: trimmed, then 1 to 64 characters, none of them a
    /// control character.
    AgentName,
    AGENT_NAME,
    check_agent_name,
    trimmed
);
name_type!(
    /// A notification channel's name: trimmed, then 1 to 64 characters, none of them a control
    /// character.
    ChannelName,
    CHANNEL_NAME,
    check_channel_name,
    trimmed
);
name_type!(
    /// A local account's username: trimmed, then 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
    Login,
    LOGIN,
    check_login,
    trimmed
);
name_type!(
    /// A project's directory on the agent's host: absolute, at most 4096 bytes, no NUL.
    ProjectPath,
    PROJECT_PATH,
    check_project_path
);
name_type!(
    /// A compose file inside a project's directory: relative, never climbing out with `..`,
    /// 1 to 255 bytes, no NUL.
    ComposeFile,
    COMPOSE_FILE,
    check_compose_file
);

name_type!(
    /// An image registry host as image references name it: `ghcr.io`, `localhost:5000`.
    RegistryHost,
    REGISTRY_HOST,
    check_registry_host
);
name_type!(
    /// A registry account name: printable ASCII without spaces or ':'.
    RegistryUsername,
    REGISTRY_USERNAME,
    check_registry_username
);

fn check_env_key(value: &str) -> Result<(), NameError> {
    let mut bytes = value.bytes();
    let valid = match bytes.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
        None => false,
    };
    if valid && value.len() <= ENV_KEY.max_len {
        Ok(())
    } else {
        Err(ENV_KEY.refuse(value))
    }
}

fn check_service_name(value: &str) -> Result<(), NameError> {
    let mut bytes = value.bytes();
    let valid = match bytes.next() {
        Some(first) => {
            first.is_ascii_alphanumeric()
                && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    };
    if valid && value.len() <= SERVICE_NAME.max_len {
        Ok(())
    } else {
        Err(SERVICE_NAME.refuse(value))
    }
}

fn check_project_name(value: &str) -> Result<(), NameError> {
    let mut bytes = value.bytes();
    let valid = match bytes.next() {
        Some(first) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && bytes
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        }
        None => false,
    };
    if valid && value.len() <= PROJECT_NAME.max_len {
        Ok(())
    } else {
        Err(PROJECT_NAME.refuse(value))
    }
}

fn check_agent_name(value: &str) -> Result<(), NameError> {
    check_printable(&AGENT_NAME, value)
}

fn check_channel_name(value: &str) -> Result<(), NameError> {
    check_printable(&CHANNEL_NAME, value)
}

/// 1 to `rule.max_len` characters, none of them a control character.
fn check_printable(rule: &NameRule, value: &str) -> Result<(), NameError> {
    let length = value.chars().count();
    if (1..=rule.max_len).contains(&length) && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(rule.refuse(value))
    }
}

fn check_login(value: &str) -> Result<(), NameError> {
    let valid = (1..=LOGIN.max_len).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(LOGIN.refuse(value))
    }
}

fn check_project_path(value: &str) -> Result<(), NameError> {
    if value.starts_with('/') && value.len() <= PROJECT_PATH.max_len && !value.contains('\0') {
        Ok(())
    } else {
        Err(PROJECT_PATH.refuse(value))
    }
}

fn check_compose_file(value: &str) -> Result<(), NameError> {
    let climbs = value.split('/').any(|part| part == "..");
    let valid = !value.is_empty()
        && !value.starts_with('/')
        && !climbs
        && value.len() <= COMPOSE_FILE.max_len
        && !value.contains('\0');
    if valid {
        Ok(())
    } else {
        Err(COMPOSE_FILE.refuse(value))
    }
}

fn check_registry_host(value: &str) -> Result<(), NameError> {
    let (host, port) = match value.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && host
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && host
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
    });
    if host_ok && port_ok && value.len() <= REGISTRY_HOST.max_len {
        Ok(())
    } else {
        Err(REGISTRY_HOST.refuse(value))
    }
}

fn check_registry_username(value: &str) -> Result<(), NameError> {
    let valid = (1..=REGISTRY_USERNAME.max_len).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if valid {
        Ok(())
    } else {
        Err(REGISTRY_USERNAME.refuse(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every rule with the check of its type, as `Ok(stored value)` or the error.
    #[allow(clippy::type_complexity)]
    const RULES: [(&NameRule, fn(&str) -> Result<String, NameError>); 10] = [
        (&ENV_KEY, |v| EnvKey::parse(v).map(String::from)),
        (&CHANNEL_NAME, |v| ChannelName::parse(v).map(String::from)),
        (&SERVICE_NAME, |v| ServiceName::parse(v).map(String::from)),
        (&PROJECT_NAME, |v| ProjectName::parse(v).map(String::from)),
        (&AGENT_NAME, |v| AgentName::parse(v).map(String::from)),
        (&LOGIN, |v| Login::parse(v).map(String::from)),
        (&PROJECT_PATH, |v| ProjectPath::parse(v).map(String::from)),
        (&COMPOSE_FILE, |v| ComposeFile::parse(v).map(String::from)),
        (&REGISTRY_HOST, |v| RegistryHost::parse(v).map(String::from)),
        (&REGISTRY_USERNAME, |v| {
            RegistryUsername::parse(v).map(String::from)
        }),
    ];

    /// What a JSON Schema validator says of `value`: the pattern, and the length in characters
    /// for a name that is not trimmed.
    fn schema_accepts(rule: &NameRule, value: &str) -> bool {
        let pattern = regex::Regex::new(rule.pattern).expect(rule.kind);
        let chars = value.chars().count();
        pattern.is_match(value) && (rule.trimmed || (1..=rule.max_len).contains(&chars))
    }

    /// Whether the schema and the check must agree on `value`: always, except that the limits
    /// of paths count bytes, which a schema cannot; its `maxLength` counts characters, and the
    /// description says bytes. The two agree on every value of at most a quarter of the limit
    /// in characters, and on every ASCII one.
    fn comparable(rule: &NameRule, value: &str) -> bool {
        rule.trimmed || value.is_ascii() || value.chars().count() * 4 <= rule.max_len
    }

    fn assert_schema_states_the_check(
        rule: &NameRule,
        check: fn(&str) -> Result<String, NameError>,
        value: &str,
    ) {
        if comparable(rule, value) {
            assert_eq!(
                schema_accepts(rule, value),
                check(value).is_ok(),
                "{} {value:?}: the pattern {} and the check disagree",
                rule.kind,
                rule.pattern
            );
        }
    }

    #[test]
    fn each_pattern_states_its_check_on_the_edges() {
        let edges = [
            "",
            " ",
            "a",
            "A",
            "_",
            "1",
            "-",
            ".",
            "..",
            "...",
            "/",
            "//",
            "/a",
            "a/",
            "./a",
            "../a",
            "a/..",
            "a/../b",
            "a/..b",
            "a/.b",
            ".a",
            "..a",
            "a b",
            " a ",
            "\ta\n",
            "a\tb",
            "a\u{7}b",
            "\u{85}a\u{a0}",
            "\u{3000}名前\u{3000}",
            "\u{feff}",
            "a\u{2028}b",
            "a\0b",
            "a\n",
            "shop\n",
            "Shop",
            "shop_2-prod",
            "web-1.blue_x",
            "DB_PASSWORD",
            "9LIVES",
            "A=B",
            "Ä",
            "ä",
            "compose.prod.yaml",
            "/srv/my shop/",
        ];
        let long: Vec<String> = [1, 62, 63, 64, 65, 254, 255, 256, 257, 4095, 4096, 4097]
            .into_iter()
            .flat_map(|n| {
                [
                    "a".repeat(n),
                    format!("/{}", "a".repeat(n - 1)),
                    format!(" {} ", "ä".repeat(n)),
                ]
            })
            .collect();
        for (rule, check) in RULES {
            for value in edges.iter().copied().chain(long.iter().map(String::as_str)) {
                assert_schema_states_the_check(rule, check, value);
            }
        }
    }

    /// Characters near every rule's edges, and any character now and then.
    fn name_like() -> impl Strategy<Value = String> {
        let interesting = prop_oneof![
            prop::sample::select(vec![
                'a', 'z', 'A', 'Z', '0', '9', '_', '-', '.', '/', ' ', '\t', '\n', '\0', '\u{7}',
                '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{3000}', '\u{feff}', 'ä', '名',
            ]),
            any::<char>(),
        ];
        prop::collection::vec(interesting, 0..80).prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn each_pattern_states_its_check_on_any_name(value in name_like()) {
            for (rule, check) in RULES {
                assert_schema_states_the_check(rule, check, &value);
            }
        }
    }

    #[test]
    fn what_each_pattern_generates_its_check_accepts() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for (rule, check) in RULES {
            let unanchored = rule.pattern.trim_start_matches('^').trim_end_matches('$');
            let strategy = proptest::string::string_regex(unanchored).expect(rule.kind);
            runner
                .run(&strategy, |value| {
                    assert_schema_states_the_check(rule, check, &value);
                    Ok(())
                })
                .unwrap();
        }
    }

    #[test]
    fn env_keys_follow_the_shell_rule() {
        for good in ["A", "_X", "DB_PASSWORD", "a1"] {
            assert!(EnvKey::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "Ä", "A=B"] {
            let err = EnvKey::parse(bad).unwrap_err();
            assert_eq!(err.kind, "environment variable name", "{bad}");
        }
    }

    #[test]
    fn service_and_project_names_follow_compose() {
        assert!(ServiceName::parse("web-1.blue_x").is_ok());
        assert!(ServiceName::parse("-web").is_err());
        assert!(ProjectName::parse("shop_2-prod").is_ok());
        assert!(ProjectName::parse("Shop").is_err());
        assert!(ProjectName::parse("a".repeat(64)).is_err());
    }

    #[test]
    fn invalid_names_are_refused_when_deserializing() {
        let err = serde_json::from_str::<EnvKey>("\"9LIVES\"").unwrap_err();
        assert!(
            err.to_string().contains("environment variable name"),
            "{err}"
        );
    }

    #[test]
    fn agent_names_are_trimmed_then_one_to_64_printable_characters() {
        let long = "ä".repeat(64);
        for (input, stored) in [
            ("web-1", "web-1"),
            ("  web-1 ", "web-1"),
            ("\tBüro Server\n", "Büro Server"),
            (long.as_str(), long.as_str()),
        ] {
            let name = AgentName::parse(input).unwrap();
            assert_eq!(name, stored, "{input:?}");
        }
        let too_long = "a".repeat(65);
        for (input, why) in [
            ("", "empty"),
            ("  \t ", "only whitespace"),
            (too_long.as_str(), "65 characters"),
            ("web\u{7}1", "a control character inside"),
        ] {
            let error = AgentName::parse(input).unwrap_err();
            assert_eq!(error.kind, "agent name", "{why}");
            assert!(error.to_string().contains("1 to 64"), "{why}: {error}");
        }
    }

    #[test]
    fn logins_are_trimmed_then_ascii_letters_digits_dots_dashes_underscores() {
        for (input, stored) in [
            ("alice", "alice"),
            (" a.b_c-9 ", "a.b_c-9"),
            (&"x".repeat(64), &"x".repeat(64)),
        ] {
            assert_eq!(Login::parse(input).unwrap(), stored, "{input:?}");
        }
        for (input, why) in [
            ("", "empty"),
            ("   ", "only spaces"),
            (&"x".repeat(65), "65 characters"),
            ("al ice", "a space inside"),
            ("alice@example.com", "an @"),
            ("jürgen", "a non-ASCII letter"),
        ] {
            let error = Login::parse(input).unwrap_err();
            assert_eq!(error.kind, "username", "{why}");
            assert_eq!(
                error.rule, "use 1 to 64 letters, digits, dots, dashes or underscores",
                "{why}"
            );
        }
    }

    #[test]
    fn project_paths_are_absolute() {
        for good in [
            "/",
            "/srv/shop",
            "/srv/my shop/",
            &format!("/{}", "a".repeat(4095)),
        ] {
            assert_eq!(ProjectPath::parse(good).unwrap(), good, "{good:?}");
        }
        for (input, why) in [
            ("", "empty"),
            ("srv/shop", "relative"),
            (" /srv/shop", "a leading space"),
            (&format!("/{}", "a".repeat(4096)), "4097 bytes"),
            ("/srv/\0shop", "a NUL"),
        ] {
            let error = ProjectPath::parse(input).unwrap_err();
            assert_eq!(error.kind, "path", "{why}");
            assert!(error.to_string().contains("absolute"), "{why}: {error}");
        }
    }

    #[test]
    fn compose_files_stay_inside_the_project() {
        for good in [
            "compose.yaml",
            "deploy/compose.prod.yaml",
            "..compose.yaml",
            "./compose.yaml",
            &"c".repeat(255),
        ] {
            assert_eq!(ComposeFile::parse(good).unwrap(), good, "{good:?}");
        }
        for (input, why) in [
            ("", "empty"),
            ("/etc/compose.yaml", "absolute"),
            ("../compose.yaml", "climbs out"),
            ("deploy/../../compose.yaml", "climbs out in the middle"),
            ("deploy/..", "ends with .."),
            (&"c".repeat(256), "256 bytes"),
            ("compose\0.yaml", "a NUL"),
        ] {
            let error = ComposeFile::parse(input).unwrap_err();
            assert_eq!(error.kind, "compose_file", "{why}");
            assert!(
                error.to_string().contains("inside the project"),
                "{why}: {error}"
            );
        }
    }

    #[test]
    fn trimmed_names_are_trimmed_when_deserializing_and_serialize_as_plain_strings() {
        let name: AgentName = serde_json::from_str("\"  web-1 \"").unwrap();
        assert_eq!(name.as_str(), "web-1");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"web-1\"");
        let path: ProjectPath = serde_json::from_str("\"/srv/shop\"").unwrap();
        assert_eq!(serde_json::to_string(&path).unwrap(), "\"/srv/shop\"");
        let error = serde_json::from_str::<ComposeFile>("\"../up.yml\"").unwrap_err();
        assert!(error.to_string().contains("inside the project"), "{error}");
    }

    #[test]
    fn names_compare_with_string_slices() {
        let name = ServiceName::parse("web").unwrap();
        assert!(name == "web");
        assert!(name == *"web");
        assert!(name != "db");
    }
}
