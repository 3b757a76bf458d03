//! Errors and warnings about a pipeline file, rendered for people: `file:line:column`, the line, a caret.
//!
//! Rendering holds for any text and any span: line ends `\n`, `\r\n` or a lone `\r`, tabs, multi-byte characters,
//! a span past the end of the file or inside a character. What it quotes is bounded: a line is shown as a window
//! of at most [`LINE_WINDOW`] characters around the caret, a message or label at most [`MAX_MESSAGE`] characters,
//! and control characters are shown as `\u{fffd}`, so a 50 MB file on one line gives a few lines of output.

use std::borrow::Cow;
use std::fmt;

use crate::source_map::Span;

/// The most characters of a source line a diagnostic shows.
pub const LINE_WINDOW: usize = 300;
/// The most characters of a message (or label) a diagnostic shows.
pub const MAX_MESSAGE: usize = 600;
/// The most characters of a name (an id, a path, a found token) quoted inside a message.
pub const MAX_QUOTED: usize = 80;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// Where in the file; `None` when the finding is about the file as a whole.
    pub span: Option<Span>,
    /// Shown after the caret, e.g. `did you mean `build`?`.
    pub label: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic { severity: Severity::Error, message: message.into(), span, label: None }
    }

    pub fn warning(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic { severity: Severity::Warning, message: message.into(), span, label: None }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Render against the file's name and text.
    pub fn render(&self, file: &str, text: &str) -> String {
        let mut out = String::new();
        let word = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!("{word}: {}\n", elide(&self.message, MAX_MESSAGE)));
        let label = self.label.as_deref().map(|l| elide(l, MAX_MESSAGE));
        let Some(span) = self.span else {
            out.push_str(&format!("  --> {file}\n"));
            if let Some(label) = &label {
                out.push_str(&format!("  = {label}\n"));
            }
            return out;
        };
        let start = floor_boundary(text, span.start);
        let end = floor_boundary(text, span.end).max(start);
        let (line_start, line_end) = line_bounds(text, start);
        // A span starting on the `\n` of a `\r\n` is shown at the end of its line.
        let start = start.min(line_end);
        let (line, col) = line_col(text, start);
        let number = line.to_string();
        let pad = " ".repeat(number.len());
        out.push_str(&format!("{pad}--> {file}:{line}:{col}\n"));
        out.push_str(&format!("{pad} |\n"));

        // The window of the line shown: the whole line when short, else around the caret.
        let line_text = &text[line_start..line_end];
        let chars = line_text.chars().count();
        let caret_at = col - 1;
        let caret_len = text[start..end.min(line_end)].chars().count().max(1);
        let (from, to) = if chars <= LINE_WINDOW {
            (0, chars)
        } else {
            let from = caret_at.saturating_sub(LINE_WINDOW / 3).min(chars.saturating_sub(LINE_WINDOW));
            (from, (from + LINE_WINDOW).min(chars))
        };
        let shown: String = line_text.chars().skip(from).take(to - from).map(printable).collect();
        let (before, after) = (if from > 0 { "…" } else { "" }, if to < chars { "…" } else { "" });
        out.push_str(&format!("{number} | {before}{}{after}\n", shown.trim_end()));
        let indent: String = before
            .chars()
            .chain(line_text.chars().skip(from).take(caret_at.saturating_sub(from)))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let width = caret_len.min((to + 1).saturating_sub(caret_at.max(from))).max(1);
        let label = label.map(|l| format!(" {l}")).unwrap_or_default();
        out.push_str(&format!("{pad} | {indent}{}{label}\n", "^".repeat(width)));
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `text` for a message: at most `max` characters (the middle elided, both ends kept, as a name's start and end
/// say most about it), control characters shown as `\u{fffd}` so that nothing quoted can move the cursor.
pub fn elide(text: &str, max: usize) -> Cow<'_, str> {
    let count = text.chars().count();
    let clean = !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
    if count <= max && clean {
        return Cow::Borrowed(text);
    }
    if count <= max {
        return Cow::Owned(text.chars().map(|c| if c == '\n' { c } else { printable(c) }).collect());
    }
    let head = max * 2 / 3;
    let tail = max.saturating_sub(head + 1);
    let mut out: String = text.chars().take(head).map(printable).collect();
    out.push_str(&format!("…({} characters)…", count - head - tail));
    out.extend(text.chars().skip(count - tail).map(printable));
    Cow::Owned(out)
}

/// A character as shown in a quoted line: tabs kept (the caret line copies them), other controls replaced.
fn printable(c: char) -> char {
    if c.is_control() && c != '\t' {
        '\u{fffd}'
    } else {
        c
    }
}

/// The largest char boundary at or before `offset`, within the text.
fn floor_boundary(text: &str, offset: usize) -> usize {
    let mut i = offset.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Whether a line ends at byte `i` of `bytes`: `\n`, or a `\r` not followed by `\n`.
fn breaks_at(bytes: &[u8], i: usize) -> bool {
    bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
}

/// Byte range of the line holding `offset` (a char boundary), its line end (`\n`, `\r\n`, `\r`) excluded. An
/// offset on a line end belongs to the line it ends.
fn line_bounds(text: &str, offset: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let is_end = |b: &u8| *b == b'\n' || *b == b'\r';
    let mut start = 0;
    let mut before = &bytes[..offset];
    while let Some(i) = before.iter().rposition(is_end) {
        if breaks_at(bytes, i) {
            start = i + 1;
            break;
        }
        before = &before[..i];
    }
    let mut end = bytes.len();
    let mut from = offset;
    while let Some(i) = bytes[from..].iter().position(is_end) {
        if breaks_at(bytes, from + i) {
            end = from + i;
            break;
        }
        from += i + 1;
    }
    if end > start && bytes[end - 1] == b'\r' && bytes.get(end) == Some(&b'\n') {
        end -= 1;
    }
    (start, end)
}

/// 1-based line and column (in characters) of a byte offset, as an editor shows them: lines end with `\n`,
/// `\r\n` or a lone `\r`; an offset past the end or inside a character is taken at the character's start.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_boundary(text, offset);
    let bytes = text.as_bytes();
    let line = 1 + (0..offset).filter(|&i| breaks_at(bytes, i)).count();
    let (start, _) = line_bounds(text, offset);
    (line, text[start..offset].chars().filter(|&c| c != '\r').count() + 1)
}

/// Byte offset of a 1-based line and column (in characters) as RON counts them (lines end at `\n`; a `\r` is a
/// character of its line); clamps to the text.
pub fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    let line_text = &text[start..text[start..].find('\n').map_or(text.len(), |i| start + i)];
    start + line_text.char_indices().nth(col.saturating_sub(1)).map_or(line_text.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_position_line_and_caret_under_the_span() {
        let text = "a\n  needs: [\"sourc\"],\n";
        let start = text.find("\"sourc\"").unwrap();
        let d = Diagnostic::error("unknown", Some(Span::new(start, start + 7))).with_label("did you mean");
        let out = d.render("p.ron", text);
        assert!(out.contains("--> p.ron:2:11"), "{out}");
        assert!(out.contains("2 |   needs: [\"sourc\"],"), "{out}");
        assert!(out.contains("  |           ^^^^^^^ did you mean"), "{out}");
    }

    /// The caret line's carets sit under the `expected` characters of the shown source line.
    fn caret_under(out: &str, expected: &str) {
        let lines: Vec<&str> = out.lines().collect();
        let source = lines.iter().position(|l| l.contains(" | ") && !l.trim_start().starts_with('|')).unwrap();
        let shown = lines[source].split_once(" | ").unwrap().1;
        let caret = lines[source + 1].split_once(" | ").unwrap().1;
        let at = caret.chars().position(|c| c == '^').unwrap();
        let width = caret.chars().filter(|c| *c == '^').count();
        let under: String = shown.chars().skip(at).take(width).collect();
        assert_eq!(under, expected, "{out}");
    }

    #[test]
    fn every_span_of_every_line_end_renders_without_panicking() {
        let texts = ["//\r\n", "a\r\nb\r\n", "a\rb\rc", "\r", "\n\n", "", "é\r\n\tü\r", "x\n\r\n\r\r\ny"];
        for text in texts {
            for start in 0..=text.len() + 2 {
                for end in 0..=text.len() + 2 {
                    let d = Diagnostic::error("m", Some(Span::new(start, end))).with_label("l");
                    let out = d.render("p.ron", text);
                    assert!(out.contains("--> p.ron:"), "{out}");
                    let (line, col) = line_col(text, start);
                    assert!(line >= 1 && col >= 1);
                }
            }
        }
    }

    #[test]
    fn crlf_and_cr_lines_are_numbered_as_an_editor_numbers_them() {
        let crlf = "Pipeline(\r\n  name: \"p\", // c\r\n  stray\r\n)";
        let start = crlf.find("stray").unwrap();
        let out = Diagnostic::error("m", Some(Span::new(start, start + 5))).render("p.ron", crlf);
        assert!(out.contains("--> p.ron:3:3"), "{out}");
        assert!(!out.contains('\r'), "{out:?}");
        caret_under(&out, "stray");
        let cr = "one\rtwo\rthree";
        let start = cr.find("three").unwrap();
        let out = Diagnostic::error("m", Some(Span::new(start, cr.len()))).render("p.ron", cr);
        assert!(out.contains("--> p.ron:3:1"), "{out}");
        caret_under(&out, "three");
        // A span on the `\n` of a `\r\n` is at the end of its line.
        let at = "ab\r\n".find('\n').unwrap();
        assert_eq!(line_col("ab\r\n", at), (1, 3));
    }

    #[test]
    fn tabs_and_multi_byte_characters_keep_the_caret_under_its_token() {
        let text = "\tnéeds: [\"ü\", \"sourc\"]";
        let start = text.find("\"sourc\"").unwrap();
        let out = Diagnostic::error("m", Some(Span::new(start, start + 7))).render("p.ron", text);
        assert!(out.contains("--> p.ron:1:15"), "{out}");
        assert!(out.lines().last().unwrap().starts_with("  | \t"), "{out}");
        caret_under(&out, "\"sourc\"");
    }

    #[test]
    fn a_span_at_or_past_the_end_of_the_file_is_shown_at_its_end() {
        let text = "Pipeline(\n  name: \"p\",";
        let out = Diagnostic::error("m", Some(Span::new(text.len() + 10, text.len() + 20))).render("p", text);
        assert!(out.contains("--> p:2:13"), "{out}");
        assert!(out.contains("2 |   name: \"p\","), "{out}");
    }

    #[test]
    fn a_long_line_is_shown_as_a_window_around_the_caret() {
        let text = format!("{}TOKEN{}", "x".repeat(50_000), "y".repeat(50_000));
        let start = text.find("TOKEN").unwrap();
        let out = Diagnostic::error("m", Some(Span::new(start, start + 5))).render("p.ron", &text);
        assert!(out.len() < 1_000, "{} bytes", out.len());
        assert!(out.contains("--> p.ron:1:50001"), "{out}");
        caret_under(&out, "TOKEN");
    }

    #[test]
    fn long_messages_and_control_characters_are_bounded() {
        let message = format!("found `{}\u{1b}[2J`", "g".repeat(1_000_000));
        let out = Diagnostic::error(message, None).render("p.ron", "");
        assert!(out.len() < 2 * MAX_MESSAGE, "{} bytes", out.len());
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert_eq!(elide("short", 10), "short");
        let long = "a".repeat(30);
        let elided = elide(&long, 12);
        assert!(elided.starts_with("aaaaaaaa…(19 characters)…aaa"), "{elided}");
    }

    #[test]
    fn offsets_and_positions_round_trip() {
        let text = "ab\ncdé f\n";
        let off = offset_of(text, 2, 4);
        assert_eq!(&text[off..off + 1], " ");
        assert_eq!(line_col(text, off), (2, 4));
    }
}
