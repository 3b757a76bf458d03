//! References in a step's fields: `${env:NAME}`, `${steps.<node>.outputs.<KEY>}`, `${ssm:NAME}` (an SSM Parameter
//! Store parameter, read once when the run starts; `${ssm:NAME@REGION}` in another region) and `${param:NAME}` (a
//! pipeline parameter, replaced when the file is read: see [`crate::compose`]). `$${` writes a literal `${`.

use std::collections::{BTreeMap, HashMap};

/// A piece of a field's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Env(&'a str),
    Output {
        node: &'a str,
        key: &'a str,
    },
    /// An SSM Parameter Store parameter.
    Ssm(StoreRef<'a>),
    /// A pipeline parameter left unresolved (only when composing reported it unknown or without a value).
    Param(&'a str),
}

/// `${ssm:NAME}` or `${ssm:NAME@REGION}`: a parameter of SSM Parameter Store (a name or `NAME:VERSION`), in the
/// caller's region unless one is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreRef<'a> {
    pub name: &'a str,
    pub region: Option<&'a str>,
}

impl StoreRef<'_> {
    pub fn to_owned(self) -> ParameterRef {
        ParameterRef { name: self.name.to_string(), region: self.region.map(str::to_string) }
    }
}

/// An owned [`StoreRef`]: what a run resolves before it starts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParameterRef {
    pub name: String,
    pub region: Option<String>,
}

impl std::fmt::Display for ParameterRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.region {
            Some(r) => write!(f, "{}@{r}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Values of the `${ssm:...}` references of a run, read when it starts.
#[derive(Debug, Clone, Default)]
pub struct StoreValues {
    pub values: HashMap<ParameterRef, String>,
}

impl StoreValues {
    pub fn get(&self, r: StoreRef) -> Option<&str> {
        // Keyed by owned refs; a run holds a handful, so a scan beats an allocation per lookup.
        self.values.iter().find(|(k, _)| k.name == r.name && k.region.as_deref() == r.region).map(|(_, v)| v.as_str())
    }
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
                "`${{{inner}}}` is not a known reference: write `${{env:NAME}}`, `${{steps.<id>.outputs.<KEY>}}`, `${{ssm:NAME}}` or `${{param:NAME}}` (or `$${{` for a literal `${{`)"
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
    if let Some(name) = inner.strip_prefix("param:") {
        return is_parameter_name(name).then_some(Piece::Param(name));
    }
    if let Some(rest) = inner.strip_prefix("ssm:") {
        let (name, region) = match rest.rsplit_once('@') {
            Some((name, region)) => (name, Some(region)),
            None => (rest, None),
        };
        // Parameter Store names: letters, digits, `_.-/`; a `:VERSION` or `:LABEL` selector may follow.
        let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/:".contains(c));
        let region_ok = region.is_none_or(|r| {
            !r.is_empty() && r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
        return (name_ok && region_ok).then_some(Piece::Ssm(StoreRef { name, region }));
    }
    let path = inner.strip_prefix("steps.")?;
    let cut = path.rfind(".outputs.")?;
    let (node, key) = (&path[..cut], &path[cut + ".outputs.".len()..]);
    (!node.is_empty() && !key.is_empty()).then_some(Piece::Output { node, key })
}

/// A pipeline parameter's name: letters, digits, `_`, `-` and `.`.
pub fn is_parameter_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// Where substitution looks values up.
pub trait Lookup {
    fn env(&self, name: &str) -> Option<String>;
    fn output(&self, node: &str, key: &str) -> Option<String>;
    /// A Parameter Store value read when the run started; `None` before that (validation, plan).
    fn ssm(&self, _r: StoreRef) -> Option<String> {
        None
    }
}

/// A reference that had no value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Missing {
    Env(String),
    Output { node: String, key: String },
    Ssm(ParameterRef),
    Param(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Env(name) => write!(f, "environment variable `{name}` is not set"),
            Missing::Output { node, key } => write!(f, "step `{node}` has no output `{key}`"),
            Missing::Ssm(r) => write!(f, "SSM parameter `{r}` was not read"),
            Missing::Param(name) => write!(f, "parameter `{name}` has no value"),
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
            Piece::Ssm(r) => match lookup.ssm(r) {
                Some(v) => out.push_str(&v),
                None => missing.push(Missing::Ssm(r.to_owned())),
            },
            Piece::Param(name) => missing.push(Missing::Param(name.to_string())),
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

/// A lookup before any step ran: the environment and the Parameter Store values read at the start.
pub struct BeforeRun<'a> {
    pub env: &'a HashMap<String, String>,
    pub store: &'a StoreValues,
}

impl Lookup for BeforeRun<'_> {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn output(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    fn ssm(&self, r: StoreRef) -> Option<String> {
        self.store.get(r).map(str::to_string)
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
    fn parses_parameter_store_and_pipeline_parameter_references() {
        let p = parse("${ssm:/DataLake/Prod/account_id}/${ssm:/x/y:3@eu-west-1}-${param:environment}").unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Ssm(StoreRef { name: "/DataLake/Prod/account_id", region: None }),
                Piece::Text("/"),
                Piece::Ssm(StoreRef { name: "/x/y:3", region: Some("eu-west-1") }),
                Piece::Text("-"),
                Piece::Param("environment"),
            ]
        );
        assert!(parse("${ssm:}").is_err());
        assert!(parse("${ssm:/a b}").is_err());
        assert!(parse("${ssm:/a@}").is_err());
        assert!(parse("${param:}").is_err());
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
