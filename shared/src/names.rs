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
    ($(#[$doc:meta])* $name:ident, $check:ident) => {
        name_type!(@define $(#[$doc])* $name, $check, std::convert::identity);
    };
    ($(#[$doc:meta])* $name:ident, $check:ident, trimmed) => {
        name_type!(@define $(#[$doc])* $name, $check, trimmed);
    };
    (@define $(#[$doc:meta])* $name:ident, $check:ident, $prepare:path) => {
        $(#[$doc])*
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
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

name_type!(
    /// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 256 bytes.
    EnvKey,
    check_env_key
);
name_type!(
    /// A Compose service name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 63 bytes.
    ServiceName,
    check_service_name
);
name_type!(
    /// A Compose project name: `[a-z0-9][a-z0-9_-]*`, at most 63 bytes.
    ProjectName,
    check_project_name
);

name_type!(
    /// An agent's name as people see it: trimmed, then 1 to 64 characters, none of them a
    /// control character.
    AgentName,
    check_agent_name,
    trimmed
);
name_type!(
    /// A local account's username: trimmed, then 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
    Login,
    check_login,
    trimmed
);
name_type!(
    /// A project's directory on the agent's host: absolute, at most 4096 bytes, no NUL.
    ProjectPath,
    check_project_path
);
name_type!(
    /// A compose file inside a project's directory: relative, never climbing out with `..`,
    /// 1 to 255 bytes, no NUL.
    ComposeFile,
    check_compose_file
);

fn check_env_key(value: &str) -> Result<(), NameError> {
    const KIND: &str = "environment variable name";
    const RULE: &str = "use letters, digits and '_', not starting with a digit (at most 256)";
    let mut bytes = value.bytes();
    let valid = match bytes.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
        None => false,
    };
    if valid && value.len() <= 256 {
        Ok(())
    } else {
        Err(NameError::new(KIND, value, RULE))
    }
}

fn check_service_name(value: &str) -> Result<(), NameError> {
    const KIND: &str = "service name";
    const RULE: &str =
        "use letters, digits, '_', '.' and '-', starting with a letter or digit (at most 63)";
    let mut bytes = value.bytes();
    let valid = match bytes.next() {
        Some(first) => {
            first.is_ascii_alphanumeric()
                && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    };
    if valid && value.len() <= 63 {
        Ok(())
    } else {
        Err(NameError::new(KIND, value, RULE))
    }
}

fn check_project_name(value: &str) -> Result<(), NameError> {
    const KIND: &str = "project name";
    const RULE: &str =
        "use lowercase letters, digits, '_' and '-', starting with a letter or digit (at most 63)";
    let mut bytes = value.bytes();
    let valid = match bytes.next() {
        Some(first) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && bytes
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        }
        None => false,
    };
    if valid && value.len() <= 63 {
        Ok(())
    } else {
        Err(NameError::new(KIND, value, RULE))
    }
}

fn check_agent_name(value: &str) -> Result<(), NameError> {
    const KIND: &str = "agent name";
    const RULE: &str = "use 1 to 64 printable characters";
    let length = value.chars().count();
    if (1..=64).contains(&length) && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(NameError::new(KIND, value, RULE))
    }
}

fn check_login(value: &str) -> Result<(), NameError> {
    const KIND: &str = "username";
    const RULE: &str = "use 1 to 64 letters, digits, dots, dashes or underscores";
    let valid = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(NameError::new(KIND, value, RULE))
    }
}

fn check_project_path(value: &str) -> Result<(), NameError> {
    const KIND: &str = "path";
    const RULE: &str = "must be an absolute directory on the agent's host, like /srv/shop";
    if value.starts_with('/') && value.len() <= 4096 && !value.contains('\0') {
        Ok(())
    } else {
        Err(NameError::new(KIND, value, RULE))
    }
}

fn check_compose_file(value: &str) -> Result<(), NameError> {
    const KIND: &str = "compose_file";
    const RULE: &str = "must be a file name inside the project directory, like compose.prod.yaml";
    let climbs = value.split('/').any(|part| part == "..");
    let valid = !value.is_empty()
        && !value.starts_with('/')
        && !climbs
        && value.len() <= 255
        && !value.contains('\0');
    if valid {
        Ok(())
    } else {
        Err(NameError::new(KIND, value, RULE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
