//! The dashboard's ANSI parser (`shared::ansi::parse`) on any log line a container can print.
//!
//! It never panics; the text it returns holds no escape byte and no control character but tab;
//! no span is empty and neighbouring spans differ in style; every character it shows was in the
//! line, in the same order (it strips, never invents); a line without escapes or controls comes
//! back whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::ansi::parse;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let spans = parse(&line);

    let mut input = line.chars();
    for (i, span) in spans.iter().enumerate() {
        assert!(!span.text.is_empty(), "an empty span from {line:?}");
        if i > 0 {
            assert_ne!(
                spans[i - 1].style,
                span.style,
                "unmerged spans from {line:?}"
            );
        }
        for shown in span.text.chars() {
            assert!(
                shown == '\t' || !shown.is_control(),
                "{shown:?} reached the page from {line:?}"
            );
            assert!(
                input.any(|seen| seen == shown),
                "{shown:?} was not in {line:?} at that place"
            );
        }
        // The CSS the dashboard puts in the page is built from the style alone.
        let _ = span.style.css();
    }

    if !line.chars().any(|c| c != '\t' && c.is_control()) {
        let text: String = spans.iter().map(|span| span.text.as_str()).collect();
        assert_eq!(text, line, "plain text changed");
    }
});
