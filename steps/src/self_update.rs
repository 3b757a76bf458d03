//! The SelfUpdate step: the pipeline's own definition lives in the source it clones. When the definition found
//! there differs from the one the run started from, it is validated and the run restarts from it (completed
//! steps whose definitions did not change are reused); at most once per run.

use std::path::Path;
use std::sync::Arc;

use engine::event::Stream;
use engine::model::{Pipeline, SelfUpdateSpec};
use engine::step::{NodeContext, NodeSuccess, Outputs, Restart, StepError, StepRunner};

/// What the run knows about its own definition.
#[derive(Debug, Clone, Default)]
pub struct SelfUpdateSettings {
    /// The definition the run (or its restart) started from.
    pub current: Option<Arc<Pipeline>>,
    /// The run already restarted once.
    pub restarted: bool,
}

pub fn describe(spec: &SelfUpdateSpec) -> String {
    format!("restart the run if {} changed in the source", spec.pipeline)
}

pub fn check(spec: &SelfUpdateSpec) -> Vec<(String, String)> {
    if spec.pipeline.trim().is_empty() {
        vec![("pipeline".into(), "empty `pipeline` path".into())]
    } else {
        Vec::new()
    }
}

/// What differs between two definitions, for people: `step `lint` added; step `build` changed`.
pub fn differences(old: &Pipeline, new: &Pipeline) -> String {
    let mut parts = Vec::new();
    for s in &new.steps {
        match old.steps.iter().find(|o| o.id == s.id) {
            None => parts.push(format!("step `{}` added", s.id)),
            Some(o) if o != s => parts.push(format!("step `{}` changed", s.id)),
            Some(_) => {}
        }
    }
    for o in &old.steps {
        if !new.steps.iter().any(|s| s.id == o.id) {
            parts.push(format!("step `{}` removed", o.id));
        }
    }
    if old.defaults != new.defaults {
        parts.push("defaults changed".into());
    }
    if old.name != new.name {
        parts.push(format!("name changed to `{}`", new.name));
    }
    parts.join("; ")
}

pub struct SelfUpdateStep {
    pub spec: SelfUpdateSpec,
    pub settings: SelfUpdateSettings,
    /// Checks the new definition as `runner validate` would.
    pub catalog: crate::StepCatalog,
}

#[async_trait::async_trait]
impl StepRunner for SelfUpdateStep {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        let path = ctx.workspace.join(&self.spec.pipeline);
        let loaded = engine::load::load(&path).map_err(|e| {
            StepError::invalid(format!("the pipeline definition in the source is not valid:\n{}", e.render()))
        })?;
        let env = |name: &str| std::env::var(name).ok();
        let valid = engine::validate::validate(loaded, &self.catalog, &env).map_err(|invalid| {
            StepError::invalid(format!("the pipeline definition in the source is not valid:\n{}", invalid.render()))
        })?;
        let new = &valid.loaded.pipeline;
        let mut outputs = Outputs::new();
        let Some(current) = &self.settings.current else {
            return Err(StepError::invalid("the run's own definition is unknown"));
        };
        if **current == *new {
            ctx.events.log(Stream::Runner, format!("{} is unchanged: no restart", display(&path))).await;
            outputs.insert("CHANGED".into(), "false".into());
            return Ok(NodeSuccess { outputs, ..Default::default() });
        }
        let reason = differences(current, new);
        if self.settings.restarted {
            return Err(StepError::invalid(format!(
                "the pipeline definition changed again after the run restarted ({reason}); a run restarts at most once"
            )));
        }
        ctx.events
            .log(Stream::Runner, format!("{} changed ({reason}): restarting the run from it", display(&path)))
            .await;
        outputs.insert("CHANGED".into(), "true".into());
        let restart = Restart { path: path.clone(), text: valid.loaded.text.clone(), reason };
        Ok(NodeSuccess { outputs, restart: Some(restart), ..Default::default() })
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
