//! Masking secret values in text that leaves the host.
//!
//! Every line the agent sends or stores (deploy output, a failing service's last lines,
//! container logs) passes a [`Redactor`] built from the values it must hide, which replaces each
//! occurrence by `***`. Programs rarely print a secret only as itself, so a value is found as:
//!
//! - itself, and each line of a multi-line value (output is read line by line), without the
//!   `\r` a line reader drops from a `\r\n`;
//! - base64, standard or URL-safe alphabet, padded or not: encoded on its own, and inside a
//!   longer blob (`user:password` in a Basic auth header) at each of the three byte alignments.
//!   Inside a blob only the characters that depend on the value alone are masked: at each edge
//!   the one character that mixes the value with its neighbours stays visible, carrying at most
//!   4 bits of the value;
//! - percent-encoded: whichever characters the encoder chose to escape, hex in either case,
//!   `+` for space;
//! - JSON-escaped, as serde_json, `JSON.stringify` or an ASCII-only encoder write it inside a
//!   string: `\"`, `\\`, `\/`, `\b \f \n \r \t`, `\uXXXX` in either case, surrogate pairs.
//!
//! How, in linear time: one Aho-Corasick automaton holds the values and their base64 forms and
//! scans a line once. Percent- and JSON-encoded text is not listed variant by variant: a line
//! that contains `%`, `+` or `\` is also decoded into a view that remembers where each byte
//! came from, the same automaton scans the view, and what it finds is mapped back onto the
//! line. A text that starts with `\` is decoded both ways: a reader that cuts a long line
//! searches it again from a little before the cut, which may fall inside an escaped `\\`.
//! Occurrences that overlap or touch are merged and masked as one, so two values that share
//! characters leave nothing of either.
//!
//! The minimum: a value shorter than [`MIN_CHARS`] (4) characters is never masked; it would
//! mangle ordinary output while hiding nothing a guess would not find. From 4 characters a value
//! is masked in every form above. The dashboard still flags values shorter than 6 characters as
//! not reliably redactable: so short a value turns up by chance in unrelated output (which is
//! then masked too), and its encoded forms are as short as 4 characters.
//!
//! Not covered: any other transformation of a value (hex, gzip, double-escaped JSON, base64
//! wrapped across lines, a value cut in two by the program itself).
//!
//! In memory: the values and their encoded forms are held as `Zeroizing` buffers while the
//! automaton is built, and wiped when it is. The automaton keeps the patterns in its own
//! tables, in a form `aho-corasick` offers no way to wipe: those copies live as long as the
//! [`Redactor`] (a deploy or a log stream) and are freed, not wiped.

use aho_corasick::AhoCorasick;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use std::fmt;
use std::ops::Range;
use zeroize::Zeroizing;

/// Values with fewer characters than this are not masked.
pub const MIN_CHARS: usize = 4;
const MASK: &[u8] = b"***";
/// The most bytes one byte of a value takes once encoded: a control character as `\u001b`.
const WIDEST_ENCODING: usize = 6;

/// Replaces secret values, in every form listed in the module documentation, with `***`.
///
/// Cheap to clone (the automaton is shared).
#[derive(Clone, Default)]
pub struct Redactor {
    matcher: Matcher,
    /// Longest span of a line that one occurrence can cover.
    widest: usize,
}

#[derive(Clone, Default)]
enum Matcher {
    /// No value long enough to mask.
    #[default]
    Nothing,
    Patterns(AhoCorasick),
    /// The automaton could not be built: every line is masked whole rather than sent in clear.
    Everything,
}

/// Prints no value, not even a piece of the automaton.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Redactor");
        match &self.matcher {
            Matcher::Nothing => debug.field("patterns", &0),
            Matcher::Patterns(automaton) => debug.field("patterns", &automaton.patterns_len()),
            Matcher::Everything => debug.field("masks", &"whole lines"),
        };
        debug.finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor for `values`; values shorter than [`MIN_CHARS`] characters are ignored.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut longest = 0;
        for value in values {
            let value = Zeroizing::new(value.into());
            // Output is redacted line by line, so a multi-line value (a PEM key) is also matched
            // by each of its lines; the whole value still matters in its encoded forms. A line
            // reader drops the `\r` of a `\r\n`, so a value ending in `\r` is also matched
            // without it.
            let lines = (value.contains('\n') || value.ends_with('\r'))
                .then(|| value.lines().map(|line| line.trim_end_matches('\r')));
            for text in std::iter::once(value.as_str()).chain(lines.into_iter().flatten()) {
                if text.chars().count() < MIN_CHARS {
                    continue;
                }
                longest = longest.max(text.len());
                patterns.push(Zeroizing::new(text.as_bytes().to_vec()));
                patterns.extend(base64_forms(text.as_bytes()));
            }
        }
        patterns.retain(|pattern| pattern.len() >= MIN_CHARS);
        patterns.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
        patterns.dedup();
        if patterns.is_empty() {
            return Self::default();
        }
        let matcher = match AhoCorasick::new(patterns.iter().map(|pattern| pattern.as_slice())) {
            Ok(automaton) => Matcher::Patterns(automaton),
            Err(error) => {
                // The error names sizes and limits, never a pattern.
                tracing::warn!(%error, "too many secret values to search for; masking whole lines");
                Matcher::Everything
            }
        };
        Self {
            matcher,
            widest: longest * WIDEST_ENCODING,
        }
    }

    /// `line` with every occurrence masked.
    pub fn redact(&self, line: &str) -> String {
        self.redact_part(line.as_bytes(), 0..line.len())
    }

    /// How many bytes of a line one occurrence (in any form) can span. A reader that cuts an
    /// endless line in pieces scans this much of what it already handed over again with the
    /// next piece, so an occurrence that straddles the cut is still found whole.
    pub fn widest_occurrence(&self) -> usize {
        self.widest
    }

    /// `text[part]` with every occurrence masked, searching all of `text`: the bytes around
    /// `part` are context, so an occurrence that crosses an edge of `part` is masked up to it.
    /// Bytes that are not UTF-8 are replaced.
    pub fn redact_part(&self, text: &[u8], part: Range<usize>) -> String {
        let mut out = Vec::with_capacity(part.len());
        let mut done = part.start;
        for found in self.occurrences(text) {
            let start = found.start.max(part.start);
            let end = found.end.min(part.end);
            if start >= end {
                if found.start >= part.end {
                    break;
                }
                continue;
            }
            out.extend_from_slice(&text[done..start]);
            out.extend_from_slice(MASK);
            done = end;
        }
        out.extend_from_slice(&text[done..part.end]);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Where occurrences are in `text`: sorted, disjoint, touching ones merged.
    fn occurrences(&self, text: &[u8]) -> Vec<Range<usize>> {
        let automaton = match &self.matcher {
            Matcher::Patterns(automaton) => automaton,
            Matcher::Nothing => return Vec::new(),
            Matcher::Everything if text.is_empty() => return Vec::new(),
            Matcher::Everything => return std::iter::once(0..text.len()).collect(),
        };
        let mut found: Vec<Range<usize>> = automaton
            .find_overlapping_iter(text)
            .map(|hit| hit.range())
            .collect();
        for view in Decoded::views(text) {
            found.extend(
                automaton
                    .find_overlapping_iter(&view.bytes)
                    .map(|hit| view.source(hit.range())),
            );
        }
        merge(found)
    }
}

/// The base64 forms of `value`: encoded on its own, and the part of its encoding that depends on
/// the value alone when it sits at each of the three byte alignments of a longer blob.
/// Each buffer is sized up front and wiped when dropped: one that grew would leave a copy behind.
fn base64_forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let encoded = |engine: &base64::engine::GeneralPurpose, bytes: &[u8]| {
        Zeroizing::new(engine.encode(bytes).into_bytes())
    };
    let mut forms = vec![
        encoded(&STANDARD, value),
        encoded(&STANDARD_NO_PAD, value),
        encoded(&URL_SAFE, value),
        encoded(&URL_SAFE_NO_PAD, value),
    ];
    for shift in 0..3 {
        let mut blob = Zeroizing::new(Vec::with_capacity(shift + value.len()));
        blob.resize(shift, 0u8);
        blob.extend_from_slice(value);
        let encoded = encoded(&STANDARD_NO_PAD, &blob);
        // Character i encodes bits 6i..6i+6 of the blob; the value holds bits
        // 8·shift..8·(shift+len). Characters entirely inside are the same whatever surrounds it.
        let first = (8 * shift).div_ceil(6);
        let end = 8 * (shift + value.len()) / 6;
        if end > first {
            let inner = &encoded[first..end];
            let mut url_safe = Zeroizing::new(inner.to_vec());
            for byte in url_safe.iter_mut() {
                *byte = match *byte {
                    b'+' => b'-',
                    b'/' => b'_',
                    other => other,
                };
            }
            forms.push(url_safe);
            forms.push(Zeroizing::new(inner.to_vec()));
        }
    }
    forms
}

/// Sorts `ranges` and merges those that overlap or touch.
fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_unstable_by_key(|range| range.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// A line with one kind of escaping undone, and where in the line each of its bytes came from.
struct Decoded {
    bytes: Vec<u8>,
    /// For each byte of `bytes`, the bytes of the line it was decoded from.
    sources: Vec<Range<usize>>,
}

impl Decoded {
    /// The views worth scanning for `text`: none for a line without `%`, `+` or `\`.
    fn views(text: &[u8]) -> Vec<Decoded> {
        let mut views = Vec::new();
        if text.contains(&b'%') {
            views.push(Self::percent(text, false));
        }
        if text.contains(&b'+') {
            views.push(Self::percent(text, true));
        }
        if text.contains(&b'\\') {
            views.push(Self::json(text, 0));
            // A reader's context starts anywhere in a line, also inside a run of backslashes,
            // where the first may be the second half of an escaped one (`\\`): then the next
            // backslash starts an escape, so the text is read that way too.
            if text.first() == Some(&b'\\') {
                views.push(Self::json(text, 1));
            }
        }
        views
    }

    fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            sources: Vec::with_capacity(capacity),
        }
    }

    fn push(&mut self, bytes: &[u8], source: Range<usize>) {
        for byte in bytes {
            self.bytes.push(*byte);
            self.sources.push(source.clone());
        }
    }

    /// The bytes of the line that `range` of the view was decoded from.
    fn source(&self, range: Range<usize>) -> Range<usize> {
        self.sources[range.start].start..self.sources[range.end - 1].end
    }

    /// `%XX` (either case) decoded; `+` read as a space when `plus_is_space` (form encoding).
    fn percent(text: &[u8], plus_is_space: bool) -> Self {
        let mut view = Self::with_capacity(text.len());
        let mut at = 0;
        while at < text.len() {
            let byte = text[at];
            if byte == b'%' {
                if let Some(decoded) = text.get(at + 1..at + 3).and_then(hex) {
                    view.push(&[decoded as u8], at..at + 3);
                    at += 3;
                    continue;
                }
            }
            let byte = if plus_is_space && byte == b'+' {
                b' '
            } else {
                byte
            };
            view.push(&[byte], at..at + 1);
            at += 1;
        }
        view
    }

    /// JSON string escapes decoded from byte `from` on (the bytes before it are kept as they
    /// are); anything that is not a valid escape is kept as it is.
    fn json(text: &[u8], from: usize) -> Self {
        let mut view = Self::with_capacity(text.len());
        let from = from.min(text.len());
        for at in 0..from {
            view.push(&text[at..at + 1], at..at + 1);
        }
        let mut at = from;
        while at < text.len() {
            if text[at] == b'\\' {
                if let Some((decoded, used)) = json_escape(&text[at..]) {
                    let mut utf8 = [0u8; 4];
                    view.push(decoded.encode_utf8(&mut utf8).as_bytes(), at..at + used);
                    at += used;
                    continue;
                }
            }
            view.push(&text[at..at + 1], at..at + 1);
            at += 1;
        }
        view
    }
}

/// The character a JSON escape at the start of `text` stands for, and its length.
fn json_escape(text: &[u8]) -> Option<(char, usize)> {
    let decoded = match text.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let unit = hex(text.get(2..6)?)?;
            if !(0xD800..0xDC00).contains(&unit) {
                return Some((char::from_u32(unit)?, 6));
            }
            // A high surrogate counts only with the low one that must follow it.
            if text.get(6..8)? != b"\\u" {
                return None;
            }
            let low = hex(text.get(8..12)?)?;
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            return Some((char::from_u32(code)?, 12));
        }
        _ => return None,
    };
    Some((decoded, 2))
}

/// The number written by hex digits (either case), or `None`.
fn hex(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |number, digit| {
        Some(number * 16 + char::from(*digit).to_digit(16)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_a_multi_line_secret_is_redacted() {
        let key = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n-----END KEY-----";
        let redactor = Redactor::new([key]);
        assert_eq!(
            redactor.redact("MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX"),
            "***"
        );
        // The whole key on one line, as a JSON logger writes it.
        assert_eq!(
            redactor.redact(
                r#"{"key":"-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n-----END KEY-----"}"#
            ),
            r#"{"key":"***"}"#
        );
    }

    /// Its base64 has `+` and `/` inside a blob, and a URL encoder escapes `~` or `?` in it.
    const HORSE: &str = "correct-horse~battery?";
    /// Its base64 on its own has `+` and `/`.
    const ARROWS: &str = "key>>>value???";

    #[test]
    fn every_encoded_form_of_a_value_is_masked() {
        let special = r#"p@ss w/rd+"q"\.*[x]$ ü"#;
        let controls = "tab\there\u{1b}[0m\nnext line";
        let redactor = Redactor::new([HORSE, ARROWS, special, controls]);
        // (form, line as printed, line as sent)
        let cases = [
            ("plain", "pw=correct-horse~battery? ok", "pw=*** ok"),
            (
                "regex characters are literal",
                r#"x p@ss w/rd+"q"\.*[x]$ ü y"#,
                "x *** y",
            ),
            (
                "regex characters do not act as a pattern",
                r#"p@ss w/rd+"q"\XX[x]$ ü"#,
                r#"p@ss w/rd+"q"\XX[x]$ ü"#,
            ),
            (
                "base64 on its own",
                "Y29ycmVjdC1ob3JzZX5iYXR0ZXJ5Pw==",
                "***",
            ),
            (
                "base64 on its own, unpadded",
                "v=Y29ycmVjdC1ob3JzZX5iYXR0ZXJ5Pw;",
                "v=***;",
            ),
            ("base64 with + and /", "a2V5Pj4+dmFsdWU/Pz8=", "***"),
            (
                "url-safe base64, unpadded",
                "[a2V5Pj4-dmFsdWU_Pz8]",
                "[***]",
            ),
            (
                "base64 at offset 0 of a blob",
                "Y29ycmVjdC1ob3JzZX5iYXR0ZXJ5PyE=",
                "***yE=",
            ),
            (
                "base64 at offset 1 of a blob",
                "Basic dWNvcnJlY3QtaG9yc2V+YmF0dGVyeT8h",
                "Basic dW***8h",
            ),
            (
                "base64 at offset 2 of a blob",
                "dXNjb3JyZWN0LWhvcnNlfmJhdHRlcnk/IQ==",
                "dXN***IQ==",
            ),
            (
                "user:password in basic auth",
                "Authorization: Basic dXNyOmNvcnJlY3QtaG9yc2V+YmF0dGVyeT8h",
                "Authorization: Basic dXNyOm***8h",
            ),
            (
                "url-safe base64 at offset 1",
                "t=dWNvcnJlY3QtaG9yc2V-YmF0dGVyeT8h",
                "t=dW***8h",
            ),
            (
                "url-safe base64 at offset 2",
                "t=dXNjb3JyZWN0LWhvcnNlfmJhdHRlcnk_IQ",
                "t=dXN***IQ",
            ),
            (
                "percent-encoded, upper-case hex",
                "GET /?pw=correct-horse~battery%3F HTTP/1.1",
                "GET /?pw=*** HTTP/1.1",
            ),
            (
                "percent-encoded, lower-case hex",
                "GET /?pw=correct-horse%7ebattery%3f HTTP/1.1",
                "GET /?pw=*** HTTP/1.1",
            ),
            (
                "percent-encoded everything",
                "u=p%40ss%20w%2Frd%2B%22q%22%5C.*%5Bx%5D%24%20%C3%BC&x",
                "u=***&x",
            ),
            (
                "form-encoded, + for space",
                "u=p%40ss+w%2frd%2b%22q%22%5c.%2a%5bx%5d%24+%c3%bc&x",
                "u=***&x",
            ),
            (
                "percent-encoded as encodeURIComponent does",
                "u=p%40ss%20w%2Frd%2B%22q%22%5C.*%5Bx%5D%24%20%C3%BC",
                "u=***",
            ),
            (
                "json-escaped as serde_json writes it",
                r#"{"pw":"p@ss w/rd+\"q\"\\.*[x]$ ü"}"#,
                r#"{"pw":"***"}"#,
            ),
            (
                "json-escaped with \\/ and ASCII only",
                r#"{"pw":"p@ss w\/rd+\"q\"\\.*[x]$ \u00fc"}"#,
                r#"{"pw":"***"}"#,
            ),
            (
                "json-escaped with upper-case \\u",
                r#"{"pw":"p@ss w\/rd+\"q\"\\.*[x]$ \u00FC"}"#,
                r#"{"pw":"***"}"#,
            ),
            (
                "json-escaped control characters",
                r#"{"v":"tab\there\u001b[0m\nnext line"}"#,
                r#"{"v":"***"}"#,
            ),
            (
                "json-escaped control characters, upper-case hex",
                r#"{"v":"tab\u0009here\u001B[0m\nnext line"}"#,
                r#"{"v":"***"}"#,
            ),
        ];
        for (form, line, expected) in cases {
            assert_eq!(redactor.redact(line), expected, "{form}");
        }
    }

    #[test]
    fn debug_output_shows_no_value() {
        let redactor = Redactor::new(["correct-horse~battery?"]);
        let printed = format!("{redactor:?}");
        assert!(!printed.contains("horse"), "{printed}");
        assert!(!printed.contains("Y29yc"), "{printed}");
    }

    /// Not a test: prints how fast lines are redacted.
    /// `cargo test --release -p agent --lib redaction_throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "a benchmark; run it explicitly"]
    fn redaction_throughput() {
        use std::time::Instant;
        let values: Vec<String> = (0..50)
            .map(|n| format!("s3cr3t/value+{n:02}-{}", "x".repeat(20)))
            .collect();
        let started = Instant::now();
        let redactor = Redactor::new(values.iter().map(String::as_str));
        let built = started.elapsed();
        let lines = [
            "2026-01-01T00:00:00Z web-1 GET /health 200 0.3ms".to_string(),
            r#"{"level":"info","msg":"connected to \"db\" at postgres://app@db:5432/app","ts":1}"#
                .to_string(),
            format!("GET /login?next=%2Fhome&token={}&x=1 HTTP/1.1", values[7]),
            format!("#12 [web 3/5] RUN echo {} | base64", values[3]),
        ];
        let rounds = 50_000;
        let bytes: usize = lines.iter().map(String::len).sum::<usize>() * rounds;
        let started = Instant::now();
        let mut masked = 0;
        for _ in 0..rounds {
            for line in &lines {
                masked += std::hint::black_box(redactor.redact(line)).len();
            }
        }
        let elapsed = started.elapsed();
        println!(
            "{} values: built in {built:?}; {} lines, {:.1} MB in {elapsed:?}: {:.0} MB/s, {:.2} µs per line ({masked} bytes out)",
            values.len(),
            rounds * lines.len(),
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / (rounds * lines.len()) as f64,
        );
    }

    #[test]
    fn overlapping_and_nested_values_are_masked_whole() {
        let redactor = Redactor::new(["abcdef12", "ef12ghij", "secret", "my-secret-value"]);
        let cases = [
            ("two values that overlap", "xx abcdef12ghij xx", "xx *** xx"),
            ("a value inside another", "my-secret-value", "***"),
            ("the shorter one alone", "a secret here", "a *** here"),
            ("back to back", "abcdef12abcdef12", "***"),
        ];
        for (case, line, expected) in cases {
            assert_eq!(redactor.redact(line), expected, "{case}");
        }
    }

    #[test]
    fn a_value_ending_in_a_carriage_return_is_masked_at_the_end_of_a_crlf_line() {
        // Pasted from a file with Windows line ends; printed with `\r\n`, the reader drops the
        // `\r` and the line shows the value without it.
        let redactor = Redactor::new(["hunter22\r", "two-lines\r\nsecond\r"]);
        assert_eq!(redactor.redact("password=hunter22"), "password=***");
        assert_eq!(redactor.redact("second"), "***");
        assert_eq!(redactor.redact("mid hunter22\r line"), "mid *** line");
    }

    #[test]
    fn a_json_escaped_value_is_masked_when_the_text_starts_inside_a_run_of_backslashes() {
        let redactor = Redactor::new(["\u{1}\u{2}\u{3}\u{4}"]);
        // A reader's context that starts at the second backslash of an escaped one (`\\`),
        // right before the value: that backslash is not the start of an escape.
        let text = br#"\\u0001\u0002\u0003\u0004 tail"#;
        assert_eq!(redactor.redact_part(text, 1..text.len()), "*** tail");
        // Two escaped backslashes and the value, the text starting at each of them.
        let line = br#"x\\\\\u0001\u0002\u0003\u0004 tail"#;
        for start in 1..=5 {
            let shown = redactor.redact_part(&line[start..], 5 - start..line.len() - start);
            assert_eq!(shown, "*** tail", "the text starting at {start}");
        }
    }

    #[test]
    fn values_shorter_than_four_characters_are_left_alone() {
        let redactor = Redactor::new(["abc", "ü-ö"]);
        assert_eq!(redactor.redact("abc ü-ö YWJj"), "abc ü-ö YWJj");
    }
}
