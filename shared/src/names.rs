//! Validated names that end up in a database row, a compose file or a process argv.
//!
//! Each has a `parse` that enforces the rule of the tool that finally consumes it (the shell's
//! rule for environment variables, Compose's rules for service and project names), so an
//! unchecked string never reaches those places.

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
        $(#[$doc])*
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the rule and wraps it.
            pub fn parse(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
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
    };
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
}
