//! What "the secret does not get out" means for container output, stated once for the property
//! test in `props.rs` and the fuzz target `fuzz/fuzz_targets/redactor.rs` (which includes this
//! file): a [`Case`] writes a secret value into a line in one of the forms the
//! [`Redactor`](agent::redact::Redactor) promises to mask, and [`check`] passes that output
//! through every hand the agent's output goes through and asserts that no form survives.
//!
//! The forms and limits are the ones `agent::redact` documents: the value itself and each line
//! of a multi-line value; base64 (standard or URL-safe, padded or not) on its own, or inside a
//! longer blob, where the one character at each edge that mixes the value with its neighbours
//! may stay visible; percent-encoding with any choice of escaped characters, hex in either case,
//! `+` for space; JSON escaping as any common encoder writes it. The value has at least
//! [`MIN_CHARS`] characters. The text around an encoded value is written as a real program would
//! write it: percent- or JSON-encoded text sits in its own field, so an escape in the text
//! before it cannot swallow the start of the value.

use agent::redact::{Redactor, MIN_CHARS};
use agent::runner::split_output;
use agent::wire::{cut, cut_keeping_end, json_len};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// What values and the text around them are made of, besides any character: what the encoders
/// escape and the decoders read (`%`, `+`, `\`, quotes), line breaks, controls, multi-byte and
/// astral characters, base64.
pub const PIECES: &[&str] = &[
    "%", "%2", "%41", "+", " ", "\\", "\\u", "\\u00", "\\\\", "\"", "/", "=", "&", "?", "~", "\n",
    "\r", "\r\n", "\t", "\x1b[31m", "\u{7f}", "\u{85}", "é", "世界", "🚀", "\u{2028}", "YWJj",
    "==", "-", "_",
];

/// How the value is written into the line.
#[derive(Clone, Debug)]
pub enum Encoding {
    /// As it is.
    Plain,
    /// `head`, the value and `tail` encoded as one blob; with neither, the value on its own.
    Base64 {
        url_safe: bool,
        padded: bool,
        head: Vec<u8>,
        tail: Vec<u8>,
    },
    /// In a query string (`form`: as a form encoder writes it, `+` for space).
    Percent { form: bool },
    /// Inside a JSON string.
    Json,
}

/// One line of container output that shows a secret, and how it reaches the agent.
#[derive(Clone, Debug)]
pub struct Case {
    /// The secret; a `*` becomes `#` (the mask is `***`) and it is padded to [`MIN_CHARS`].
    pub value: String,
    /// A second secret the redactor also knows, which may overlap the first.
    pub decoy: String,
    pub encoding: Encoding,
    /// Raw text before and after the value (or its field).
    pub before: String,
    pub after: String,
    /// Text encoded together with the value in its field (percent, JSON), before and after it.
    pub field_before: String,
    pub field_after: String,
    /// The encoder's choice for each character in turn (escape it or not, hex case), cycled.
    pub choices: Vec<u8>,
    /// Where the pipe splits the output into reads (taken modulo its length).
    pub reads: Vec<usize>,
    /// The runner hands over lines longer than this in pieces.
    pub max_line: usize,
    /// Whether the program ends the line with a newline.
    pub newline: bool,
    /// The budget the line is cut to for the wire.
    pub budget: usize,
}

/// The secret a case is about, as described at [`Case::value`].
pub fn secret(value: &str) -> String {
    let mut secret: String = value
        .chars()
        .map(|c| match c {
            '*' => '#',
            // The replacement character, which a read cut inside a character also shows.
            '\u{fffd}' => '?',
            other => other,
        })
        .collect();
    while secret.chars().count() < MIN_CHARS {
        secret.push('x');
    }
    secret
}

/// The choices of an encoder, in turn.
struct Choices<'a> {
    choices: &'a [u8],
    next: usize,
}

impl Choices<'_> {
    fn next(&mut self) -> u8 {
        let choice = self
            .choices
            .get(self.next % self.choices.len().max(1))
            .copied()
            .unwrap_or(0);
        self.next += 1;
        choice
    }
}

fn hex(byte: u8, upper: bool) -> String {
    if upper {
        format!("%{byte:02X}")
    } else {
        format!("%{byte:02x}")
    }
}

/// `text` percent-encoded: `%`, controls (and `+` in a form) always, other characters as the
/// encoder chooses, a space as `+` or `%20` in a form.
fn percent(text: &str, form: bool, choices: &mut Choices) -> String {
    let mut out = String::new();
    for character in text.chars() {
        let choice = choices.next();
        let upper = choice & 4 != 0;
        if !character.is_ascii() {
            if choice & 1 == 0 {
                let mut utf8 = [0; 4];
                for byte in character.encode_utf8(&mut utf8).bytes() {
                    out.push_str(&hex(byte, upper));
                }
            } else {
                out.push(character);
            }
            continue;
        }
        let byte = character as u8;
        if form && byte == b' ' && choice & 1 == 0 {
            out.push('+');
            continue;
        }
        let must = byte == b'%' || byte.is_ascii_control() || (form && byte == b'+');
        if must || choice & 2 != 0 {
            out.push_str(&hex(byte, upper));
        } else {
            out.push(character);
        }
    }
    out
}

/// `text` JSON-escaped: `"`, `\` and controls always, others as the encoder chooses (`\/`,
/// `\u00e9`, surrogate pairs); short escapes or `\uXXXX`, hex in either case.
fn json(text: &str, choices: &mut Choices) -> String {
    let mut out = String::new();
    for character in text.chars() {
        let choice = choices.next();
        let short = match character {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let must = matches!(character, '"' | '\\') || u32::from(character) < 0x20;
        let escaped = must || choice & 1 != 0;
        let as_units = choice & 2 != 0;
        match short {
            Some(short) if escaped && !as_units => out.push_str(short),
            _ if escaped && (as_units || must) => {
                let mut units = [0; 2];
                for unit in character.encode_utf16(&mut units).iter() {
                    if choice & 4 != 0 {
                        out.push_str(&format!("\\u{unit:04X}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
            _ => out.push(character),
        }
    }
    out
}

/// The line as the program prints it (without its newline), where the value ends in it, and
/// the forms of the value in it that must not survive redaction.
fn written(case: &Case, value: &str) -> (String, usize, Vec<String>) {
    let mut choices = Choices {
        choices: &case.choices,
        next: 0,
    };
    let (field, shown) = match &case.encoding {
        Encoding::Plain => {
            let mut forms = vec![value.to_owned()];
            if value.contains('\n') {
                let lines = value.split('\n').map(|line| line.trim_end_matches('\r'));
                forms.extend(
                    lines
                        .filter(|line| line.chars().count() >= MIN_CHARS)
                        .map(str::to_owned),
                );
            }
            let line = format!("{}{value}", case.before);
            let end = line.len();
            return (format!("{line}{}", case.after), end, forms);
        }
        Encoding::Base64 {
            url_safe,
            padded,
            head,
            tail,
        } => {
            let engine = match (url_safe, padded) {
                (false, true) => STANDARD,
                (false, false) => STANDARD_NO_PAD,
                (true, true) => URL_SAFE,
                (true, false) => URL_SAFE_NO_PAD,
            };
            let blob = engine.encode([head.as_slice(), value.as_bytes(), tail].concat());
            let shown = if head.is_empty() && tail.is_empty() {
                blob.clone()
            } else {
                // The characters whose 6 bits all come from the value.
                let first = (8 * head.len()).div_ceil(6);
                let end = 8 * (head.len() + value.len()) / 6;
                blob[first..end].to_owned()
            };
            (blob, shown)
        }
        Encoding::Percent { form } => {
            let before = percent(&case.field_before, *form, &mut choices);
            let shown = percent(value, *form, &mut choices);
            let after = percent(&case.field_after, *form, &mut choices);
            (format!("={before}{shown}{after}&"), shown)
        }
        Encoding::Json => {
            let before = json(&case.field_before, &mut choices);
            let shown = json(value, &mut choices);
            let after = json(&case.field_after, &mut choices);
            (format!("\"{before}{shown}{after}\""), shown)
        }
    };
    let (before, after) = match case.encoding {
        // Outside a JSON string a backslash is not an escape, but it reads as one.
        Encoding::Json => (
            case.before.replace('\\', "/"),
            case.after.replace('\\', "/"),
        ),
        _ => (case.before.clone(), case.after.clone()),
    };
    let line = format!("{before}{field}{after}");
    (line, usize::MAX, vec![shown])
}

/// What the runner's reader must hand over from `output`: each line without its `\n` or
/// `\r\n`, in pieces of `max_line` bytes or of the longest span an occurrence can take, if
/// that is more (an empty line as one empty piece), each piece masked as `redact_part` masks it
/// with the whole line around it. Cutting a line and reading it in pieces must mask no less
/// ([`shows_no_more`]); it may mask more, where the context kept at a cut starts inside a run of
/// backslashes and is also read with the other pairing.
fn pieces_of_whole_lines(output: &[u8], max_line: usize, redactor: &Redactor) -> Vec<String> {
    let piece = max_line.max(redactor.widest_occurrence()).max(1);
    let mut pieces = Vec::new();
    let mut rest = output;
    while !rest.is_empty() {
        let (line, text_end) = match rest.iter().position(|&byte| byte == b'\n') {
            Some(newline) => {
                let crlf = newline > 0 && rest[newline - 1] == b'\r';
                (&rest[..=newline], newline - usize::from(crlf))
            }
            None => (rest, rest.len()),
        };
        rest = &rest[line.len()..];
        if text_end == 0 {
            pieces.push(String::new());
        }
        let mut start = 0;
        while start < text_end {
            let end = text_end.min(start + piece);
            pieces.push(redactor.redact_part(line, start..end));
            start = end;
        }
    }
    pieces
}

/// Whether `piece` shows nothing that `reference`, the same piece of the line masked with the
/// whole line as context, does not: what is left of it once masks are taken out is what is left
/// of `reference`, or a part of it (in order).
fn shows_no_more(piece: &str, reference: &str) -> bool {
    let left = reference.replace("***", "");
    let mut left = left.chars();
    piece
        .replace("***", "")
        .chars()
        .all(|shown| left.any(|c| c == shown))
}

fn assert_hidden(output: &str, forms: &[String], step: &str, case: &Case) {
    for form in forms {
        assert!(
            !output.contains(form.as_str()),
            "{step} let {form:?} through: {output:?}\n{case:#?}"
        );
    }
}

/// Runs `case` through the redactor, the runner's line splitting and the wire's cuts, asserting
/// that no form of the value gets through any of them (and that none panics).
pub fn check(case: &Case) {
    let value = secret(&case.value);
    let (line, value_end, forms) = written(case, &value);
    let redactor = Redactor::new([value.as_str(), case.decoy.as_str()]);

    // The redactor on the line as a whole.
    let redacted = redactor.redact(&line);
    assert_hidden(&redacted, &forms, "redact", case);

    // The runner's reader, with the output arriving in the case's reads: a line reader drops
    // the `\r` of a `\r\n`, so a value ending in `\r` there is shown without it.
    let mut output = line.clone().into_bytes();
    if case.newline {
        output.push(b'\n');
    }
    let mut shown_forms = forms.clone();
    if output.get(value_end) == Some(&b'\n') && !value.contains('\n') {
        if let Some(shown) = value.strip_suffix('\r') {
            if shown.chars().count() >= MIN_CHARS {
                shown_forms.push(shown.to_owned());
            }
        }
    }
    let mut cuts: Vec<usize> = case
        .reads
        .iter()
        .map(|at| at % (output.len() + 1))
        .collect();
    cuts.extend([0, output.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    let reads: Vec<&[u8]> = cuts.windows(2).map(|at| &output[at[0]..at[1]]).collect();
    assert_eq!(
        split_output(&reads, case.max_line, &Redactor::default()),
        pieces_of_whole_lines(&output, case.max_line, &Redactor::default()),
        "with nothing to mask, the reader does not hand over the lines as printed"
    );
    let lines = split_output(&reads, case.max_line, &redactor);
    let whole = pieces_of_whole_lines(&output, case.max_line, &redactor);
    assert_eq!(lines.len(), whole.len(), "pieces of other sizes\n{case:#?}");
    for (piece, reference) in lines.iter().zip(&whole) {
        assert!(
            shows_no_more(piece, reference),
            "the reader shows {piece:?} where redacting the whole line shows {reference:?}\n\
             {case:#?}"
        );
    }
    for piece in &lines {
        assert_hidden(piece, &shown_forms, "the runner's reader", case);
    }
    if !line.contains('\n') {
        // One line, handed over in pieces: read together, they still show nothing.
        assert_hidden(&lines.concat(), &shown_forms, "the pieces of a line", case);
    }

    // Cut to a budget for the wire: what is kept is a prefix or a suffix of the redacted line,
    // the count of what was left out is right, and it fits when the budget has room for the
    // marker.
    let marker_room = json_len(&format!("… {} bytes cut", redacted.len())) + 2;
    let cuts = [
        ("cut", cut(&redacted, case.budget)),
        ("cut_keeping_end", cut_keeping_end(&redacted, case.budget)),
    ];
    for (name, bounded) in cuts {
        assert!(
            json_len(&bounded) <= case.budget.max(marker_room),
            "{name} went over {} bytes: {}",
            case.budget,
            json_len(&bounded)
        );
        if bounded == redacted {
            continue;
        }
        let (kept, left_out) = if name == "cut" {
            let (kept, marker) = bounded.rsplit_once("… ").expect("a marker at the end");
            assert!(redacted.starts_with(kept), "{name} kept what was not there");
            (kept, marker.strip_suffix(" bytes cut"))
        } else {
            let (marker, kept) = bounded.split_once('\n').expect("a marker at the start");
            assert!(redacted.ends_with(kept), "{name} kept what was not there");
            (
                kept,
                marker
                    .strip_prefix("… ")
                    .and_then(|m| m.strip_suffix(" bytes cut")),
            )
        };
        let left_out: usize = left_out
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("{name} wrote no count: {bounded:?}"));
        assert_eq!(kept.len() + left_out, redacted.len(), "{name} miscounted");
        assert_hidden(kept, &forms, name, case);
    }
}
