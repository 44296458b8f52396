//! Agent tokens: 256 random bits shown once, stored only as a SHA-256 hash.
//!
//! A fast hash is right here (unlike passwords): the token has full entropy, so there is nothing
//! to brute-force, and the lookup runs on every agent connection.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// Prefix that makes a leaked token recognisable to secret scanners and people.
const PREFIX: &str = "stg_";
/// Prefix of join tokens, which only register a new agent.
pub const JOIN_PREFIX: &str = "stj_";

/// A token's plaintext; `Debug` hides it.
pub struct Token(String);

impl Token {
    /// 32 random bytes from the OS, URL-safe base64, with the `stg_` prefix.
    pub fn generate() -> Self {
        Self::with_prefix(PREFIX)
    }

    /// A join token (`stj_…`): the same 256 bits, told apart by its prefix.
    pub fn join() -> Self {
        Self::with_prefix(JOIN_PREFIX)
    }

    fn with_prefix(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// What the database keeps: hex SHA-256 of the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenHash(pub String);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        Self(digest.iter().map(|byte| format!("{byte:02x}")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_carry_256_bits() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a.expose(), b.expose());
        let encoded = a.expose().strip_prefix(PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(encoded).unwrap().len(), 32);
        assert_eq!(a.hash(), TokenHash::of(a.expose()));
        assert_eq!(a.hash().0.len(), 64);
    }
}
