//! Where each value of a pipeline file sits in its text, so that semantic errors found after serde has done its
//! work can still point at `file:line:column`. Paths look like `steps[2].needs[0]` or `steps[0].kind.commands[1]`.

use std::collections::HashMap;

/// A byte range in the source text of one file of the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// Which file: 0 is the file given to runner, `k` the k-th file it includes (see
    /// [`crate::load::Loaded::included`]).
    pub file: u32,
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// A range of the file given to runner.
    pub fn new(start: usize, end: usize) -> Span {
        Span { file: 0, start, end }
    }
}

/// The spans of every value of a RON document, by path.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    spans: HashMap<String, Span>,
}

impl SourceMap {
    /// Index `text`. The text is expected to be valid RON (serde accepted it); on anything unexpected the index
    /// simply stops growing, it never fails.
    pub fn index(text: &str) -> Self {
        let mut scanner = Scanner { text: text.as_bytes(), pos: 0, map: SourceMap::default() };
        scanner.skip_trivia();
        // A document may start with `#![enable(...)]` attributes.
        while scanner.peek() == Some(b'#') {
            while let Some(c) = scanner.peek() {
                scanner.pos += 1;
                if c == b']' {
                    break;
                }
            }
            scanner.skip_trivia();
        }
        let _ = scanner.value(String::new());
        scanner.map
    }

    /// Record where the value at `path` sits (a composed pipeline's map is built from its files' maps).
    pub fn insert(&mut self, path: String, span: Span) {
        self.spans.insert(path, span);
    }

    /// Every indexed path and its span.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Span)> {
        self.spans.iter().map(|(p, s)| (p.as_str(), *s))
    }

    /// The span of the value at `path`, if indexed.
    pub fn get(&self, path: &str) -> Option<Span> {
        self.spans.get(path).copied()
    }

    /// The span of the value at `path`, or of its closest indexed ancestor.
    pub fn nearest(&self, path: &str) -> Option<Span> {
        let mut p = path;
        loop {
            if let Some(span) = self.get(p) {
                return Some(span);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Byte offset in `text` of byte `decoded` of the value of the string literal at `literal` (`"..."` with escapes,
/// or `r#"..."#`): where a part of a string's value is written. `None` when `literal` is not a string literal or
/// `decoded` falls inside an escape.
pub fn literal_offset(text: &str, literal: Span, decoded: usize) -> Option<usize> {
    let src = text.get(literal.start..literal.end)?;
    let bytes = src.as_bytes();
    if bytes.first() == Some(&b'r') {
        let hashes = bytes[1..].iter().take_while(|b| **b == b'#').count();
        let open = hashes + 2;
        let inner = src.len().checked_sub(open + 1 + hashes)?;
        return (decoded <= inner).then_some(literal.start + open + decoded);
    }
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let (mut i, mut out) = (1, 0);
    while out < decoded {
        let c = src.get(i..)?.chars().next()?;
        if c == '"' {
            return None;
        }
        if c != '\\' {
            i += c.len_utf8();
            out += c.len_utf8();
            continue;
        }
        let escape = src.get(i + 1..)?.chars().next()?;
        let (written, value) = match escape {
            'x' => (4, 1),
            'u' if src[i + 2..].starts_with('{') => {
                let close = src[i..].find('}')?;
                let c = char::from_u32(u32::from_str_radix(src.get(i + 3..i + close)?, 16).ok()?)?;
                (close + 1, c.len_utf8())
            }
            'u' => {
                let c = char::from_u32(u32::from_str_radix(src.get(i + 2..i + 6)?, 16).ok()?)?;
                (6, c.len_utf8())
            }
            other => (1 + other.len_utf8(), 1),
        };
        i += written;
        out += value;
    }
    (out == decoded).then_some(literal.start + i)
}

struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
    map: SourceMap,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_trivia(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_ascii_whitespace() => self.pos += 1,
                Some(b'/') if self.text.get(self.pos + 1) == Some(&b'/') => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                Some(b'/') if self.text.get(self.pos + 1) == Some(&b'*') => {
                    let mut depth = 0usize;
                    while self.pos < self.text.len() {
                        if self.text[self.pos..].starts_with(b"/*") {
                            depth += 1;
                            self.pos += 2;
                        } else if self.text[self.pos..].starts_with(b"*/") {
                            depth -= 1;
                            self.pos += 2;
                            if depth == 0 {
                                break;
                            }
                        } else {
                            self.pos += 1;
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn ident(&mut self) -> Option<&str> {
        let start = self.pos;
        if self.text[self.pos..].starts_with(b"r#") && self.text.get(self.pos + 2).is_some_and(|c| *c != b'"') {
            self.pos += 2;
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        (self.pos > start).then(|| std::str::from_utf8(&self.text[start..self.pos]).unwrap_or(""))
    }

    /// Parse one value, record its span under `path`, return its text when it is a plain string (map keys).
    fn value(&mut self, path: String) -> Option<Option<String>> {
        self.skip_trivia();
        let start = self.pos;
        let mut string = None;
        match self.peek()? {
            b'"' => string = Some(self.string()?),
            b'r' if matches!(self.text.get(self.pos + 1), Some(b'"') | Some(b'#')) && self.raw_string_ahead() => {
                string = Some(self.raw_string()?)
            }
            b'\'' => {
                self.pos += 1;
                while let Some(c) = self.peek() {
                    self.pos += 1;
                    if c == b'\\' {
                        self.pos += 1;
                    } else if c == b'\'' {
                        break;
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                self.sequence(&path, b']')?;
            }
            b'{' => {
                self.pos += 1;
                self.map_body(&path)?;
            }
            b'(' => {
                self.pos += 1;
                self.group(&path)?;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                self.ident()?;
                self.skip_trivia();
                if self.peek() == Some(b'(') {
                    self.pos += 1;
                    self.call(&path)?;
                }
            }
            _ => {
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-' | b'_') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                if self.pos == start {
                    return None;
                }
            }
        }
        self.map.spans.insert(path, Span::new(start, self.pos));
        Some(string)
    }

    fn raw_string_ahead(&self) -> bool {
        let mut i = self.pos + 1;
        while self.text.get(i) == Some(&b'#') {
            i += 1;
        }
        self.text.get(i) == Some(&b'"')
    }

    fn string(&mut self) -> Option<String> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => break,
                _ => self.pos += 1,
            }
        }
        let s = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
        self.pos += 1;
        Some(s)
    }

    fn raw_string(&mut self) -> Option<String> {
        self.pos += 1;
        let mut hashes = 0;
        while self.peek() == Some(b'#') {
            hashes += 1;
            self.pos += 1;
        }
        self.pos += 1;
        let start = self.pos;
        loop {
            if self.peek()? == b'"'
                && self.text[self.pos + 1..].iter().take(hashes).filter(|c| **c == b'#').count() == hashes
            {
                let s = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
                self.pos += 1 + hashes;
                return Some(s);
            }
            self.pos += 1;
        }
    }

    fn sequence(&mut self, path: &str, close: u8) -> Option<()> {
        let mut i = 0;
        loop {
            self.skip_trivia();
            if self.peek()? == close {
                self.pos += 1;
                return Some(());
            }
            self.value(format!("{path}[{i}]"))?;
            i += 1;
            self.skip_trivia();
            if self.peek()? == b',' {
                self.pos += 1;
            }
        }
    }

    fn map_body(&mut self, path: &str) -> Option<()> {
        loop {
            self.skip_trivia();
            if self.peek()? == b'}' {
                self.pos += 1;
                return Some(());
            }
            let key = self.value(format!("{path}{{}}"))?.unwrap_or_default();
            self.skip_trivia();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.value(format!("{path}.{key}"))?;
            self.skip_trivia();
            if self.peek()? == b',' {
                self.pos += 1;
            }
        }
    }

    /// The inside of `Name( ... )`. A newtype variant's one value is transparent, as serde sees it (`stacks:
    /// Listed([a, b])` is `{"Listed": [a, b]}`): `a` is at `stacks[0]`, not `stacks[0][0]`; struct fields and the
    /// elements of a longer tuple are as in [`Self::group`].
    fn call(&mut self, path: &str) -> Option<()> {
        self.skip_trivia();
        let save = self.pos;
        if self.is_struct() || self.peek()? == b')' {
            return self.group(path);
        }
        // One value then `)`: transparent (the caller records the whole call's span at `path` after this).
        self.value(path.to_string())?;
        self.skip_trivia();
        if self.peek()? == b',' {
            self.pos += 1;
            self.skip_trivia();
        }
        if self.peek()? == b')' {
            self.pos += 1;
            return Some(());
        }
        self.pos = save;
        self.sequence(path, b')')
    }

    /// Whether a group starts with `name:` (a struct's fields).
    fn is_struct(&mut self) -> bool {
        let save = self.pos;
        let is_struct = match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                self.ident();
                self.skip_trivia();
                self.peek() == Some(b':')
            }
            _ => false,
        };
        self.pos = save;
        is_struct
    }

    /// The inside of `( ... )`: struct fields (`name: value`) or tuple elements.
    fn group(&mut self, path: &str) -> Option<()> {
        self.skip_trivia();
        if !self.is_struct() {
            return self.sequence(path, b')');
        }
        loop {
            self.skip_trivia();
            if self.peek()? == b')' {
                self.pos += 1;
                return Some(());
            }
            let field = self.ident()?.to_string();
            self.skip_trivia();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            let child = if path.is_empty() { field } else { format!("{path}.{field}") };
            self.value(child)?;
            self.skip_trivia();
            if self.peek()? == b',' {
                self.pos += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_fields_list_items_and_variant_fields() {
        let text = r#"Pipeline(
    name: "p", // comment
    steps: [
        Step(id: "a", kind: Shell(commands: ["x", "y"])),
        (id: "b", needs: ["a"], kind: Source(repository: "r", reference: Branch("dev")), env: {"K": "v"}),
    ],
)"#;
        let map = SourceMap::index(text);
        let at = |p: &str| {
            let s = map.get(p).unwrap_or_else(|| panic!("no span for {p}"));
            &text[s.start..s.end]
        };
        assert_eq!(at("name"), "\"p\"");
        assert_eq!(at("steps[0].id"), "\"a\"");
        assert_eq!(at("steps[0].kind.commands[1]"), "\"y\"");
        assert_eq!(at("steps[1].needs[0]"), "\"a\"");
        assert_eq!(at("steps[1].kind.reference"), "Branch(\"dev\")");
        assert_eq!(at("steps[1].env.K"), "\"v\"");
        assert!(at("steps[1]").starts_with("(id: \"b\""));
        assert_eq!(map.nearest("steps[1].timeout").map(|s| s.start), map.get("steps[1]").map(|s| s.start));
    }

    #[test]
    fn a_newtype_variant_s_value_is_at_the_variant_s_path_as_serde_sees_it() {
        let text =
            r#"(kind: Deploy(stacks: Listed([(name: "A"), (name: "1bad", depends_on: ["Cc"])]), role: Arn("x")))"#;
        let map = SourceMap::index(text);
        let at = |p: &str| {
            let s = map.get(p).unwrap_or_else(|| panic!("no span for {p}"));
            &text[s.start..s.end]
        };
        assert_eq!(at("kind.stacks[1].name"), "\"1bad\"");
        assert_eq!(at("kind.stacks[1].depends_on[0]"), "\"Cc\"");
        assert!(at("kind.stacks").starts_with("Listed(["));
        assert_eq!(at("kind.role"), "Arn(\"x\")");
        // A tuple of two keeps its elements' indices.
        let map = SourceMap::index("(t: Pair(\"a\", \"b\"))");
        assert_eq!(map.get("t[1]").map(|s| s.start), Some(14));
    }
}
