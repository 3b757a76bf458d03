//! `${env:NAME}` and `${steps.<node>.outputs.<KEY>}` in a step's fields; `$${` writes a literal `${`.

use std::collections::BTreeMap;

/// A piece of a field's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Env(&'a str),
    Output { node: &'a str, key: &'a str },
}

/// A malformed `${...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset of the `$` in the field's text.
    pub offset: usize,
    pub message: String,
}

/// Split a field's text into pieces.
pub fn parse(text: &str) -> Result<Vec<Piece<'_>>, SyntaxError> {
    let mut pieces = Vec::new();
    let mut rest = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if bytes[i..].starts_with(b"$${") {
            pieces.push(Piece::Text(&text[rest..i + 1]));
            i += 3;
            rest = i - 1;
            continue;
        }
        if !bytes[i..].starts_with(b"${") {
            i += 1;
            continue;
        }
        if rest < i {
            pieces.push(Piece::Text(&text[rest..i]));
        }
        let Some(close) = text[i..].find('}') else {
            return Err(SyntaxError { offset: i, message: "`${` is not closed by `}`".into() });
        };
        let inner = &text[i + 2..i + close];
        pieces.push(reference(inner).ok_or_else(|| SyntaxError {
            offset: i,
            message: format!(
                "`${{{inner}}}` is not a known reference: write `${{env:NAME}}` or `${{steps.<id>.outputs.<KEY>}}` (or `$${{` for a literal `${{`)"
            ),
        })?);
        i += close + 1;
        rest = i;
    }
    if rest < text.len() {
        pieces.push(Piece::Text(&text[rest..]));
    }
    Ok(pieces)
}

fn reference(inner: &str) -> Option<Piece<'_>> {
    if let Some(name) = inner.strip_prefix("env:") {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        return ok.then_some(Piece::Env(name));
    }
    let path = inner.strip_prefix("steps.")?;
    let cut = path.rfind(".outputs.")?;
    let (node, key) = (&path[..cut], &path[cut + ".outputs.".len()..]);
    (!node.is_empty() && !key.is_empty()).then_some(Piece::Output { node, key })
}

/// Where substitution looks values up.
pub trait Lookup {
    fn env(&self, name: &str) -> Option<String>;
    fn output(&self, node: &str, key: &str) -> Option<String>;
}

/// A reference that had no value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Missing {
    Env(String),
    Output { node: String, key: String },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Env(name) => write!(f, "environment variable `{name}` is not set"),
            Missing::Output { node, key } => write!(f, "step `{node}` has no output `{key}`"),
        }
    }
}

/// Substitute every reference in `text`. Syntax was checked by validation: a malformed one is left as written.
pub fn render(text: &str, lookup: &dyn Lookup, missing: &mut Vec<Missing>) -> String {
    let Ok(pieces) = parse(text) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Env(name) => match lookup.env(name) {
                Some(v) => out.push_str(&v),
                None => missing.push(Missing::Env(name.to_string())),
            },
            Piece::Output { node, key } => match lookup.output(node, key) {
                Some(v) => out.push_str(&v),
                None => missing.push(Missing::Output { node: node.into(), key: key.into() }),
            },
        }
    }
    out
}

/// Apply `f` to every string (map keys excluded) of a JSON value: how substitution reaches every field of any kind.
pub fn for_each_string(value: &mut serde_json::Value, f: &mut dyn FnMut(&mut String)) {
    match value {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| for_each_string(v, f)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| for_each_string(v, f)),
        _ => {}
    }
}

/// A lookup over the process environment and a table of node outputs.
pub struct Values<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub outputs: &'a dyn Fn(&str) -> Option<&'a BTreeMap<String, String>>,
}

impl Lookup for Values<'_> {
    fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }
    fn output(&self, node: &str, key: &str) -> Option<String> {
        (self.outputs)(node).and_then(|o| o.get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_output_and_escapes() {
        let p = parse("a ${env:HOME} b ${steps.deploy/S3.outputs.BucketName} $${x}").unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Text("a "),
                Piece::Env("HOME"),
                Piece::Text(" b "),
                Piece::Output { node: "deploy/S3", key: "BucketName" },
                Piece::Text(" $"),
                Piece::Text("{x}"),
            ]
        );
    }

    #[test]
    fn rejects_unknown_and_unclosed_references() {
        assert!(parse("${foo}").unwrap_err().message.contains("not a known reference"));
        assert_eq!(parse("ab ${env:X").unwrap_err().offset, 3);
    }

    #[test]
    fn render_collects_every_missing_value() {
        struct L;
        impl Lookup for L {
            fn env(&self, n: &str) -> Option<String> {
                (n == "A").then(|| "1".into())
            }
            fn output(&self, _: &str, _: &str) -> Option<String> {
                None
            }
        }
        let mut missing = vec![];
        let out = render("${env:A}-${env:B}-${steps.x.outputs.Y}", &L, &mut missing);
        assert_eq!(out, "1--");
        assert_eq!(missing.len(), 2);
    }
}
