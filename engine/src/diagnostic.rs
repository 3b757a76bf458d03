//! Errors and warnings about a pipeline file, rendered for people: `file:line:column`, the line, a caret.

use std::fmt;

use crate::source_map::Span;

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
        out.push_str(&format!("{word}: {}\n", self.message));
        let Some(span) = self.span else {
            out.push_str(&format!("  --> {file}\n"));
            if let Some(label) = &self.label {
                out.push_str(&format!("  = {label}\n"));
            }
            return out;
        };
        let (line, col) = line_col(text, span.start);
        let line_text = text.lines().nth(line - 1).unwrap_or("");
        let number = line.to_string();
        let pad = " ".repeat(number.len());
        out.push_str(&format!("{pad}--> {file}:{line}:{col}\n"));
        out.push_str(&format!("{pad} |\n"));
        out.push_str(&format!("{number} | {}\n", line_text.trim_end()));
        let line_start = span.start - (col_byte_offset(text, span.start));
        let line_end = line_start + line_text.len();
        let width = text[span.start.min(line_end)..span.end.clamp(span.start, line_end)].chars().count().max(1);
        let indent: String = line_text.chars().take(col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        let label = self.label.as_deref().map(|l| format!(" {l}")).unwrap_or_default();
        out.push_str(&format!("{pad} | {indent}{}{label}\n", "^".repeat(width)));
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn col_byte_offset(text: &str, offset: usize) -> usize {
    let before = &text[..offset.min(text.len())];
    offset - before.rfind('\n').map_or(0, |i| i + 1)
}

/// Byte offset of a 1-based line and column (in characters); clamps to the text.
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
        let d = Diagnostic::error("unknown", Some(Span { start, end: start + 7 })).with_label("did you mean");
        let out = d.render("p.ron", text);
        assert!(out.contains("--> p.ron:2:11"), "{out}");
        assert!(out.contains("2 |   needs: [\"sourc\"],"), "{out}");
        assert!(out.contains("  |           ^^^^^^^ did you mean"), "{out}");
    }

    #[test]
    fn offsets_and_positions_round_trip() {
        let text = "ab\ncdé f\n";
        let off = offset_of(text, 2, 4);
        assert_eq!(&text[off..off + 1], " ");
        assert_eq!(line_col(text, off), (2, 4));
    }
}
