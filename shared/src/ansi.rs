//! A small ANSI escape parser that turns one container log line into styled spans.
//!
//! Containers write colour for a terminal; the dashboard shows their logs in a browser. Rather
//! than pull a terminal emulator into the WASM bundle, this module understands only SGR (colours
//! and text attributes) and strips every other sequence, so cursor moves, line clears and window
//! titles never reach the page as garbage. The input is untrusted bytes from any process, so the
//! parser never panics: malformed or truncated sequences are dropped and parsing resumes.

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// A run of text drawn in one style.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The visible text, with escape sequences and control characters removed.
    pub text: String,
    /// How the text is drawn.
    pub style: Style,
}

/// The SGR attributes the dashboard renders; the default is the terminal's plain text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// Text colour, `None` for the default.
    pub fg: Option<Color>,
    /// Background colour, `None` for the default.
    pub bg: Option<Color>,
    pub bold: bool,
    pub dim: bool,
    pub italic: bool,
    pub underline: bool,
}

/// A colour as the program asked for it: a palette index (0–255) or a 24-bit colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Indexed(u8),
    Rgb(u8, u8, u8),
}

/// The 16 standard colours, tuned to read well on the dashboard's dark log background
/// (black is lifted to a dark grey so black text stays visible).
const PALETTE: [u32; 16] = [
    0x404040, 0xcd3131, 0x0dbc79, 0xe5e510, 0x2472c8, 0xbc3fbc, 0x11a8cd, 0xe5e5e5, //
    0x767676, 0xf14c4c, 0x23d18b, 0xf5f543, 0x3b8eea, 0xd670d6, 0x29b8db, 0xffffff,
];

impl Color {
    /// The colour as a CSS hex value, `#rrggbb`.
    pub fn css(&self) -> String {
        let rgb = match *self {
            Color::Rgb(r, g, b) => u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b),
            Color::Indexed(n) => indexed_rgb(n),
        };
        format!("#{rgb:06x}")
    }
}

/// xterm's 256-colour palette: 16 standard colours, a 6×6×6 cube, then 24 greys.
fn indexed_rgb(n: u8) -> u32 {
    let cube_level = |v: u8| if v == 0 { 0 } else { 55 + 40 * u32::from(v) };
    match n {
        0..=15 => PALETTE[usize::from(n)],
        16..=231 => {
            let i = n - 16;
            cube_level(i / 36) << 16 | cube_level(i / 6 % 6) << 8 | cube_level(i % 6)
        }
        232..=255 => 0x010101 * (8 + 10 * u32::from(n - 232)),
    }
}

impl Style {
    /// The style as an inline CSS declaration list; empty for the default style, so the
    /// dashboard can leave the `style` attribute off plain text.
    pub fn css(&self) -> String {
        let mut declarations = Vec::new();
        if let Some(fg) = self.fg {
            declarations.push(format!("color:{}", fg.css()));
        }
        if let Some(bg) = self.bg {
            declarations.push(format!("background-color:{}", bg.css()));
        }
        let flags = [
            (self.bold, "font-weight:bold"),
            (self.dim, "opacity:0.7"),
            (self.italic, "font-style:italic"),
            (self.underline, "text-decoration:underline"),
        ];
        for (_, declaration) in flags.iter().filter(|(on, _)| *on) {
            declarations.push((*declaration).to_owned());
        }
        declarations.join(";")
    }
}

/// Splits `line` into styled spans. Adjacent text in the same style is merged and no span is
/// empty. Tabs are kept; other control characters and non-SGR sequences are removed.
pub fn parse(line: &str) -> Vec<Span> {
    let bytes = line.as_bytes();
    let mut spans = Vec::new();
    let mut style = Style::default();
    // Escape sequences are ASCII and end on a char boundary, so skipping by byte index is safe.
    let mut resume_at = 0;
    for (i, c) in line.char_indices() {
        if i < resume_at {
            continue;
        }
        if c == '\x1b' {
            resume_at = escape_end(bytes, i + 1, &mut style);
        } else if c == '\t' || !c.is_control() {
            push_char(&mut spans, style, c);
        }
    }
    spans
}

fn push_char(spans: &mut Vec<Span>, style: Style, c: char) {
    match spans.last_mut() {
        Some(last) if last.style == style => last.text.push(c),
        _ => spans.push(Span {
            text: c.to_string(),
            style,
        }),
    }
}

/// Reads the sequence after an ESC at `at`, applies it if it is SGR, and returns where text
/// resumes. A lone ESC consumes nothing more.
fn escape_end(bytes: &[u8], at: usize, style: &mut Style) -> usize {
    match bytes.get(at) {
        Some(b'[') => csi_end(bytes, at + 1, style),
        // OSC, DCS, SOS, PM and APC all carry a string up to a terminator.
        Some(b']' | b'P' | b'X' | b'^' | b'_') => string_end(bytes, at + 1),
        // Two-byte escapes (`ESC 7`, `ESC =`), optionally after intermediates (`ESC ( B`).
        _ => {
            let end = run_end(bytes, at, 0x20..=0x2f);
            match bytes.get(end) {
                Some(0x30..=0x7e) => end + 1,
                _ => end,
            }
        }
    }
}

/// A CSI sequence is parameter bytes, intermediate bytes and one final byte. When a byte outside
/// that grammar interrupts it, the sequence is dropped and parsing resumes at that byte, so a new
/// ESC there starts a new sequence.
fn csi_end(bytes: &[u8], at: usize, style: &mut Style) -> usize {
    let params_end = run_end(bytes, at, 0x30..=0x3f);
    let final_at = run_end(bytes, params_end, 0x20..=0x2f);
    match bytes.get(final_at) {
        Some(b'm') if final_at == params_end => {
            let params = &bytes[at..params_end];
            // `<`..`?` mark private sequences (`ESC[>4;2m` sets a keyboard mode, not a colour).
            if !params.iter().any(|b| (b'<'..=b'?').contains(b)) {
                apply_sgr(params, style);
            }
            final_at + 1
        }
        Some(0x40..=0x7e) => final_at + 1,
        _ => final_at,
    }
}

/// Finds the end of a string sequence: BEL, or ST (`ESC \`). Another ESC aborts the string and
/// is parsed afresh; a missing terminator swallows the rest of the line.
fn string_end(bytes: &[u8], at: usize) -> usize {
    let rest = bytes.get(at..).unwrap_or_default();
    match rest.iter().position(|&b| b == BEL || b == ESC) {
        None => bytes.len(),
        Some(i) if rest[i] == BEL => at + i + 1,
        Some(i) if rest.get(i + 1) == Some(&b'\\') => at + i + 2,
        Some(i) => at + i,
    }
}

fn run_end(bytes: &[u8], at: usize, range: std::ops::RangeInclusive<u8>) -> usize {
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest.iter().take_while(|b| range.contains(b)).count()
}

/// Applies SGR parameters in order. A parameter that is not a plain number (too large, or the
/// colon sub-parameter form) is skipped, as are unknown codes.
fn apply_sgr(params: &[u8], style: &mut Style) {
    let mut codes = params.split(|&b| b == b';').map(number);
    while let Some(code) = codes.next() {
        let Some(code) = code else { continue };
        match code {
            0 => *style = Style::default(),
            1 => style.bold = true,
            2 => style.dim = true,
            3 => style.italic = true,
            4 => style.underline = true,
            22 => (style.bold, style.dim) = (false, false),
            23 => style.italic = false,
            24 => style.underline = false,
            30..=37 => style.fg = Some(Color::Indexed((code - 30) as u8)),
            90..=97 => style.fg = Some(Color::Indexed((code - 90 + 8) as u8)),
            40..=47 => style.bg = Some(Color::Indexed((code - 40) as u8)),
            100..=107 => style.bg = Some(Color::Indexed((code - 100 + 8) as u8)),
            38 => style.fg = extended_color(&mut codes).or(style.fg),
            48 => style.bg = extended_color(&mut codes).or(style.bg),
            39 => style.fg = None,
            49 => style.bg = None,
            _ => {}
        }
    }
}

/// Reads the rest of `38;5;n` or `38;2;r;g;b`; `None` when truncated or out of range. The
/// values are consumed either way so they are not mistaken for codes of their own.
fn extended_color(codes: &mut impl Iterator<Item = Option<u16>>) -> Option<Color> {
    let byte = |v: Option<u16>| v.and_then(|v| u8::try_from(v).ok());
    match codes.next()?? {
        5 => byte(codes.next()?).map(Color::Indexed),
        2 => {
            let (r, g, b) = (codes.next()?, codes.next()?, codes.next()?);
            Some(Color::Rgb(byte(r)?, byte(g)?, byte(b)?))
        }
        _ => None,
    }
}

/// An SGR parameter; empty means 0, as terminals read it.
fn number(param: &[u8]) -> Option<u16> {
    param.iter().try_fold(0u16, |n, &b| {
        let digit = b.is_ascii_digit().then(|| u16::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style {
        fg: None,
        bg: None,
        bold: false,
        dim: false,
        italic: false,
        underline: false,
    };
    const BOLD: Style = Style {
        bold: true,
        ..PLAIN
    };

    const fn fg(n: u8) -> Style {
        Style {
            fg: Some(Color::Indexed(n)),
            ..PLAIN
        }
    }

    fn span(text: &str, style: Style) -> Span {
        Span {
            text: text.to_owned(),
            style,
        }
    }

    /// The style of the single span `line` parses to.
    fn style_of(line: &str) -> Style {
        let spans = parse(line);
        assert_eq!(spans.len(), 1, "{line:?} gave {spans:?}");
        spans[0].style
    }

    fn text_of(line: &str) -> String {
        parse(line).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn plain_text_is_one_unstyled_span() {
        assert_eq!(parse("hello world"), [span("hello world", PLAIN)]);
        assert_eq!(parse(""), []);
    }

    #[test]
    fn a_reset_ends_the_colour() {
        let expected = [span("red", fg(1)), span(" plain", PLAIN)];
        assert_eq!(parse("\x1b[31mred\x1b[0m plain"), expected);
        assert_eq!(parse("\x1b[31mred\x1b[m plain"), expected);
    }

    #[test]
    fn several_parameters_in_one_sequence_all_apply() {
        let all = Style {
            bold: true,
            dim: true,
            italic: true,
            underline: true,
            ..fg(2)
        };
        assert_eq!(
            style_of("\x1b[1;2;3;4;32;44mx"),
            Style {
                bg: Some(Color::Indexed(4)),
                ..all
            }
        );
    }

    #[test]
    fn off_codes_clear_only_their_attribute() {
        assert_eq!(
            style_of("\x1b[1;2;3;31m\x1b[22mx"),
            Style {
                italic: true,
                ..fg(1)
            }
        );
        assert_eq!(style_of("\x1b[3;4;31m\x1b[23;24mx"), fg(1));
        assert_eq!(style_of("\x1b[31;42;1m\x1b[39;49mx"), BOLD);
    }

    #[test]
    fn bright_colours_are_palette_entries_8_to_15() {
        assert_eq!(
            style_of("\x1b[91;107mx"),
            Style {
                bg: Some(Color::Indexed(15)),
                ..fg(9)
            }
        );
    }

    #[test]
    fn indexed_and_truecolour_forms_set_fg_and_bg() {
        let style = style_of("\x1b[38;5;208;48;2;1;2;3mx");
        assert_eq!(
            (style.fg, style.bg),
            (Some(Color::Indexed(208)), Some(Color::Rgb(1, 2, 3)))
        );
    }

    #[test]
    fn malformed_extended_colours_are_ignored() {
        for line in [
            "\x1b[38;5mx",
            "\x1b[38;5;256mx",
            "\x1b[38;2;1;2mx",
            "\x1b[38;2;1;999;3mx",
            "\x1b[38;9mx",
            "\x1b[38:5:196mx",
            "\x1b[99999999999mx",
        ] {
            assert_eq!(style_of(line), PLAIN, "{line:?}");
        }
        // The bad colour's values are consumed, and later codes still apply.
        assert_eq!(style_of("\x1b[38;5;300;1mx"), BOLD);
        assert_eq!(style_of("\x1b[32;38;5mx"), fg(2));
    }

    #[test]
    fn adjacent_text_in_the_same_style_is_merged() {
        assert_eq!(
            parse("\x1b[31ma\x1b[31mb\x1b[1m\x1b[22mc"),
            [span("abc", fg(1))]
        );
        assert_eq!(parse("\x1b[31m\x1b[0m\x1b[1m"), [], "no empty spans");
    }

    #[test]
    fn other_csi_sequences_are_stripped() {
        assert_eq!(
            parse("\x1b[2K\x1b[1Aup\x1b[?25h 50%"),
            [span("up 50%", PLAIN)]
        );
        assert_eq!(
            style_of("\x1b[>4;2mx"),
            PLAIN,
            "private sequence ending in m"
        );
    }

    #[test]
    fn osc_sequences_are_stripped_with_either_terminator() {
        assert_eq!(
            text_of("\x1b]0;title\x07a\x1b]8;;http://x\x1b\\b\x1b]8;;\x1b\\"),
            "ab"
        );
        // An unterminated OSC swallows the rest of the line but a new sequence ends it.
        assert_eq!(parse("\x1b]0;title\x1b[31mred"), [span("red", fg(1))]);
        assert_eq!(text_of("a\x1b]0;never ends"), "a");
    }

    #[test]
    fn lone_escapes_and_controls_are_dropped_but_tabs_kept() {
        let line = "a\x1b\x1b[31mb\tc\r\x08\x00\x7f\x1b";
        assert_eq!(parse(line), [span("a", PLAIN), span("b\tc", fg(1))]);
        assert_eq!(text_of("\x1b(B\x1b7x\x1b8"), "x");
    }

    #[test]
    fn a_truncated_sequence_drops_only_itself() {
        assert_eq!(text_of("ab\x1b[3"), "ab");
        assert_eq!(parse("\x1b[31\x1b[32mgreen"), [span("green", fg(2))]);
        assert_eq!(parse("\x1b[31é"), [span("é", PLAIN)]);
    }

    #[test]
    fn non_ascii_text_survives_next_to_sequences() {
        assert_eq!(
            parse("\x1b[1mgrün ✓\x1b[0m日本"),
            [span("grün ✓", BOLD), span("日本", PLAIN)]
        );
    }

    #[test]
    fn colours_render_as_css_hex() {
        for (color, css) in [
            (Color::Indexed(1), "#cd3131"),
            (Color::Indexed(16), "#000000"),
            (Color::Indexed(110), "#87afd7"),
            (Color::Indexed(196), "#ff0000"),
            (Color::Indexed(231), "#ffffff"),
            (Color::Indexed(232), "#080808"),
            (Color::Indexed(255), "#eeeeee"),
            (Color::Rgb(1, 2, 255), "#0102ff"),
        ] {
            assert_eq!(color.css(), css, "{color:?}");
        }
    }

    #[test]
    fn style_css_lists_each_attribute_and_is_empty_by_default() {
        assert_eq!(Style::default().css(), "");
        assert_eq!(
            style_of("\x1b[1;31mx").css(),
            "color:#cd3131;font-weight:bold"
        );
        let css = style_of("\x1b[2;3;4;48;2;0;0;16mx").css();
        assert_eq!(
            css,
            "background-color:#000010;opacity:0.7;font-style:italic;text-decoration:underline"
        );
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        let pieces = [
            "\x1b", "[", "]", ";", ":", "38", "5", "2", "256", "m", "\x07", "\\", "?", "é", "x",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift64: deterministic, so a failure reproduces.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        for _ in 0..5_000 {
            let len = next() % 24;
            let pieced: String = (0..len).map(|_| pieces[next() % pieces.len()]).collect();
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            for input in [pieced, String::from_utf8_lossy(&bytes).into_owned()] {
                let text: String = parse(&input).into_iter().map(|s| s.text).collect();
                assert!(
                    !text.contains(|c: char| c.is_control() && c != '\t'),
                    "{input:?}"
                );
            }
        }
        let full = "\x1b[1;38;2;10;20;30;48;5;100mA\x1b]8;;u\x1b\\é\x1b[0m";
        for end in (0..=full.len()).filter(|&end| full.is_char_boundary(end)) {
            parse(&full[..end]);
        }
    }
}
