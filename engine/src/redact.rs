//! Secret values (SecureString parameters read for a run) kept out of everything a run shows or writes: log lines,
//! progress, errors, outputs, the run record, the fingerprints, the files of outputs. Each occurrence becomes
//! `***`, as a token of a Source does.

use std::borrow::Cow;

use crate::event::{Event, EventKind};
use crate::step::Outputs;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Replaces the secrets of a run.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret holding another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// The secrets it masks.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        Cow::Owned(out)
    }

    /// Redact a string in place.
    pub fn scrub(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.redact(text) {
            *text = clean;
        }
    }

    /// Redact every value of a node's outputs.
    pub fn outputs(&self, outputs: &mut Outputs) {
        if self.is_empty() {
            return;
        }
        outputs.values_mut().for_each(|v| self.scrub(v));
    }

    /// Redact every text an event carries.
    pub fn event(&self, event: &mut Event) {
        if self.is_empty() {
            return;
        }
        match &mut event.kind {
            EventKind::Log { line, .. } => self.scrub(line),
            EventKind::Progress { message, .. } => self.scrub(message),
            EventKind::NodeRetrying { reason, .. } => self.scrub(reason),
            EventKind::ApprovalRequested { message, .. } => self.scrub(message),
            EventKind::NodeFinished { outputs, error, .. } => {
                self.outputs(outputs);
                if let Some(e) = error {
                    self.scrub(e);
                }
            }
            EventKind::RunRestarting { reason, .. } => self.scrub(reason),
            // Parts made at run time describe themselves from resolved fields.
            EventKind::NodesAdded { nodes, .. } => {
                for n in nodes {
                    if let Cow::Owned(clean) = self.redact(&n.description) {
                        n.description = clean.into();
                    }
                }
            }
            EventKind::RunStarted { .. } | EventKind::NodeStarted { .. } | EventKind::RunFinished { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_of_every_secret_is_masked_longest_first() {
        let r = Redactor::new(vec!["abc".into(), "abcdef".into(), String::new()]);
        assert_eq!(r.redact("x abcdef y abc z"), "x *** y *** z");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        let mut outputs = Outputs::new();
        outputs.insert("K".into(), "pre-abc".into());
        r.outputs(&mut outputs);
        assert_eq!(outputs["K"], "pre-***");
    }
}
