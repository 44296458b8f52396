//! Container output that shows a secret, through every hand the agent passes it: the
//! `agent::redact::Redactor`, the runner's line reader (`agent::runner::split_output`, the code
//! `run` reads pipes with) and the wire's cuts (`agent::wire::{cut, cut_keeping_end}`).
//!
//! From the input: a secret value (at least 4 characters) and a second one, the text around
//! it, how the program writes it (as it is; base64, standard or URL-safe, padded or not, on its
//! own or at any offset of a blob; percent-encoded, with or without `+` for space; JSON-escaped)
//! with the encoder's choice for each character, where the pipe splits the output into reads,
//! how long a piece of a line may be, and the budget it is cut to. Nothing panics; no form of the
//! value the redactor promises to mask reaches any output, also when the pieces of a cut line
//! are read together; with nothing to mask, the reader hands over the lines as printed. The
//! invariant is stated once, in `agent/tests/engine/props/redaction.rs`, for this target and the
//! property test alike.
#![no_main]

#[path = "../../agent/tests/engine/props/redaction.rs"]
mod redaction;

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use redaction::{check, Case, Encoding, PIECES};

const ALPHANUMERIC: &[u8] = b"abcxyzABCXYZ0189";

/// Text made of [`PIECES`], runs of letters and digits, and any character.
fn text(u: &mut Unstructured, most_pieces: usize) -> arbitrary::Result<String> {
    let mut text = String::new();
    for _ in 0..u.int_in_range(0..=most_pieces)? {
        match u.int_in_range(0..=5)? {
            0..=2 => text.push_str(u.choose(PIECES)?),
            3 | 4 => {
                for _ in 0..u.int_in_range(1..=6)? {
                    text.push(char::from(*u.choose(ALPHANUMERIC)?));
                }
            }
            _ => text.push(char::arbitrary(u)?),
        }
    }
    Ok(text)
}

fn bytes(u: &mut Unstructured, most: usize) -> arbitrary::Result<Vec<u8>> {
    (0..u.int_in_range(0..=most)?)
        .map(|_| u.arbitrary())
        .collect()
}

#[derive(Debug)]
struct Input(Case);

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let value = text(u, 8)?;
        let decoy = text(u, 3)?;
        let encoding = match u.int_in_range(0..=3)? {
            0 => Encoding::Plain,
            1 => Encoding::Base64 {
                url_safe: u.arbitrary()?,
                padded: u.arbitrary()?,
                head: bytes(u, 5)?,
                tail: bytes(u, 3)?,
            },
            2 => Encoding::Percent {
                form: u.arbitrary()?,
            },
            _ => Encoding::Json,
        };
        let case = Case {
            value,
            decoy,
            encoding,
            before: text(u, 5)?,
            after: text(u, 5)?,
            field_before: text(u, 3)?,
            field_after: text(u, 3)?,
            choices: bytes(u, 24)?,
            reads: (0..u.int_in_range(0..=6)?)
                .map(|_| u.arbitrary::<u16>().map(usize::from))
                .collect::<arbitrary::Result<_>>()?,
            max_line: if u.ratio(1, 8)? {
                64 * 1024
            } else {
                u.int_in_range(1..=96)?
            },
            newline: u.arbitrary()?,
            budget: u.int_in_range(0..=512)?,
        };
        Ok(Input(case))
    }
}

fuzz_target!(|input: Input| check(&input.0));
