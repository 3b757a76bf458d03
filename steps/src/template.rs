//! CloudFormation templates read locally, JSON or YAML (short forms such as `!Ref` and `!GetAtt` read as their
//! long forms, `{"Ref": ...}`), for what can be known without AWS: that the file parses, the parameters it declares
//! (with their `Default`), its resources, and the template-level differences (outputs, parameters, conditions,
//! ...) between a deployed template and a new one. The template anatomy:
//! <https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/template-anatomy.html>.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub value: Value,
}

/// A parameter a template declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Its `Default`, as text; `None`: it has none, so a value must be given (or kept from the deployed stack).
    pub default: Option<String>,
    /// `NoEcho: true`: CloudFormation shows its value as `****`, so a deployed value can never be compared.
    pub no_echo: bool,
}

/// Sections compared key by key in [`Template::section_changes`]; the others are compared whole.
const KEYED_SECTIONS: [&str; 6] = ["Parameters", "Outputs", "Conditions", "Mappings", "Rules", "Resources"];

impl Template {
    /// Parse a template's text: JSON when it starts with `{`, else YAML. Errors say where (line and column).
    pub fn parse(text: &str) -> Result<Template, String> {
        let value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?
        } else {
            yaml(text)?
        };
        if !value.is_object() {
            return Err("not a CloudFormation template: its top level is not a mapping".into());
        }
        Ok(Template { value })
    }

    /// The parameters declared (`Parameters`), by name.
    pub fn parameters(&self) -> BTreeMap<String, Declared> {
        let Some(map) = self.value.get("Parameters").and_then(Value::as_object) else { return BTreeMap::new() };
        map.iter()
            .map(|(name, p)| {
                let default = p.get("Default").filter(|d| !d.is_null()).map(text_of);
                let no_echo = p.get("NoEcho").map(text_of).is_some_and(|v| v.eq_ignore_ascii_case("true"));
                (name.clone(), Declared { default, no_echo })
            })
            .collect()
    }

    /// How many resources it declares.
    pub fn resource_count(&self) -> u64 {
        self.value.get("Resources").and_then(Value::as_object).map_or(0, |r| r.len() as u64)
    }

    /// What differs from `deployed` outside the resources' own changes (which a change set lists): outputs,
    /// parameters, conditions, mappings and rules added, removed or modified, and any other top-level section
    /// (Description, Metadata, Transform, ...) that changed. With `resources`, resources too (for when no change
    /// set can say). Lines like `+ Output QueueArn`, `~ Description`.
    pub fn section_changes(&self, deployed: &Template, resources: bool) -> Vec<String> {
        let (new, old) = (normalized(&self.value), normalized(&deployed.value));
        let empty = Map::new();
        let (new, old) = (new.as_object().unwrap_or(&empty), old.as_object().unwrap_or(&empty));
        let mut changes = Vec::new();
        let mut sections: Vec<&String> = new.keys().chain(old.keys()).collect();
        sections.sort();
        sections.dedup();
        for section in sections {
            if section == "Resources" && !resources {
                continue;
            }
            let (a, b) = (old.get(section), new.get(section));
            if a == b {
                continue;
            }
            if KEYED_SECTIONS.contains(&section.as_str()) {
                let singular = section.strip_suffix('s').unwrap_or(section);
                let (a, b) =
                    (a.and_then(Value::as_object).unwrap_or(&empty), b.and_then(Value::as_object).unwrap_or(&empty));
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    match (a.get(key), b.get(key)) {
                        (None, Some(_)) => changes.push(format!("+ {singular} {key}")),
                        (Some(_), None) => changes.push(format!("- {singular} {key}")),
                        (Some(x), Some(y)) if x != y => changes.push(format!("~ {singular} {key}")),
                        _ => {}
                    }
                }
            } else {
                let mark = match (a, b) {
                    (None, Some(_)) => "+",
                    (Some(_), None) => "-",
                    _ => "~",
                };
                changes.push(format!("{mark} {section}"));
            }
        }
        changes
    }
}

/// A scalar as text (`5` and `"5"` alike), a structure as its JSON.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Every scalar as text, so a template written in JSON and the same in YAML compare equal.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), normalized(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        Value::Null => Value::Null,
        other => Value::String(text_of(other)),
    }
}

/// YAML to JSON, CloudFormation's short forms as their long forms.
fn yaml(text: &str) -> Result<Value, String> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| format!("not valid YAML: {e}"))?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.document.unwrap_or(Value::Null))
}

/// Builds a JSON value from YAML events.
#[derive(Default)]
struct Builder {
    /// Open collections: a sequence, or a mapping with the key waiting for its value; each with its tag.
    stack: Vec<(Open, Option<Tag>, usize)>,
    anchors: HashMap<usize, Value>,
    document: Option<Value>,
    error: Option<String>,
}

enum Open {
    Sequence(Vec<Value>),
    Mapping(Map<String, Value>, Option<String>),
}

impl Builder {
    fn push_value(&mut self, value: Value, mark: Marker) {
        match self.stack.last_mut() {
            None => {
                if self.document.is_none() {
                    self.document = Some(value);
                }
            }
            Some((Open::Sequence(items), _, _)) => items.push(value),
            Some((Open::Mapping(map, key), _, _)) => match key.take() {
                None => {
                    let k = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    if map.contains_key(&k) && self.error.is_none() {
                        self.error = Some(format!(
                            "not valid YAML: the key `{k}` appears twice in one mapping (line {} column {})",
                            mark.line(),
                            mark.col() + 1
                        ));
                    }
                    *key = Some(k);
                }
                Some(k) => {
                    map.insert(k, value);
                }
            },
        }
    }
}

/// `!Ref X` -> `{"Ref": X}`, `!GetAtt A.B` -> `{"Fn::GetAtt": ["A", "B"]}`, `!Condition C` -> `{"Condition": C}`,
/// `!Sub ...` (and every other `!Name`) -> `{"Fn::Name": ...}`; YAML's own `!!` tags change nothing.
fn long_form(tag: Option<Tag>, value: Value) -> Value {
    let Some(tag) = tag.filter(|t| t.handle == "!" && !t.suffix.is_empty()) else { return value };
    let value = match (tag.suffix.as_str(), value) {
        ("GetAtt", Value::String(s)) => match s.split_once('.') {
            Some((a, b)) => Value::Array(vec![Value::String(a.into()), Value::String(b.into())]),
            None => Value::String(s),
        },
        (_, v) => v,
    };
    let key = match tag.suffix.as_str() {
        "Ref" | "Condition" => tag.suffix.clone(),
        other => format!("Fn::{other}"),
    };
    Value::Object(Map::from_iter([(key, value)]))
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == TScalarStyle::Plain;
                let value = if plain && tag.is_none() && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else if plain && tag.is_none() && matches!(text.as_str(), "true" | "True" | "TRUE") {
                    Value::Bool(true)
                } else if plain && tag.is_none() && matches!(text.as_str(), "false" | "False" | "FALSE") {
                    Value::Bool(false)
                } else {
                    Value::String(text)
                };
                let value = long_form(tag, value);
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value, mark);
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.push_value(value, mark);
            }
            Event::SequenceStart(anchor, tag) => self.stack.push((Open::Sequence(Vec::new()), tag, anchor)),
            Event::MappingStart(anchor, tag) => self.stack.push((Open::Mapping(Map::new(), None), tag, anchor)),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((open, tag, anchor)) = self.stack.pop() else { return };
                let value = match open {
                    Open::Sequence(items) => Value::Array(items),
                    Open::Mapping(map, _) => Value::Object(map),
                };
                let value = long_form(tag, value);
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value, mark);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_short_forms_read_as_their_long_forms() {
        let t = Template::parse(
            "Parameters:\n  Env:\n    Type: String\n    Default: dev\n  Secret:\n    Type: String\n    NoEcho: true\n  Size:\n    Type: Number\n    Default: 5\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Sub '${Env}-q'\nOutputs:\n  Arn:\n    Value: !GetAtt Q.Arn\n  Name:\n    Value: !Ref Q\n",
        )
        .unwrap();
        assert_eq!(t.value["Outputs"]["Arn"]["Value"], serde_json::json!({"Fn::GetAtt": ["Q", "Arn"]}));
        assert_eq!(t.value["Outputs"]["Name"]["Value"], serde_json::json!({"Ref": "Q"}));
        assert_eq!(t.value["Resources"]["Q"]["Properties"]["QueueName"], serde_json::json!({"Fn::Sub": "${Env}-q"}));
        let p = t.parameters();
        assert_eq!(p["Env"], Declared { default: Some("dev".into()), no_echo: false });
        assert_eq!(p["Secret"], Declared { default: None, no_echo: true });
        assert_eq!(p["Size"].default.as_deref(), Some("5"));
        assert_eq!(t.resource_count(), 1);
    }

    #[test]
    fn template_level_changes_are_listed_by_section() {
        let old = Template::parse(
            r#"{"Description": "a", "Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"A": {"Value": 1}}}"#,
        )
        .unwrap();
        let new = Template::parse("Description: b\nResources:\n  Q:\n    Type: AWS::SQS::Queue\nOutputs:\n  A:\n    Value: 1\n  B:\n    Value: !Ref Q\n").unwrap();
        assert_eq!(new.section_changes(&old, false), ["~ Description", "+ Output B"]);
        assert!(old.section_changes(&old, true).is_empty());
        assert_eq!(old.section_changes(&new, false), ["~ Description", "- Output B"]);
    }

    #[test]
    fn bad_templates_say_where() {
        let e = Template::parse("Resources:\n  Q: [unclosed\n").unwrap_err();
        assert!(e.contains("not valid YAML") && e.contains("line"), "{e}");
        assert!(Template::parse("{\"Resources\": ").unwrap_err().contains("not valid JSON"));
        assert!(Template::parse("- a\n- b\n").unwrap_err().contains("top level is not a mapping"));
        assert!(Template::parse("A: 1\nA: 2\n").unwrap_err().contains("appears twice"));
    }
}
