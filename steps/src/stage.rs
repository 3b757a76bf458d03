//! A stage's templates, read and checked together before any of its stacks deploys. A stack's template that is
//! missing, is not YAML or JSON, or asks for parameters CloudFormation would refuse fails the whole stage before its
//! first stack, instead of failing its own node after the independent stacks of the stage went out (a half-deployed
//! stage). The same checks run at the start of a run for every template that is already there and that nothing
//! upstream can change first, so that a bad template of a later stage stops the run before an earlier stage deploys.
//!
//! What CloudFormation refuses, checked here without AWS: a parameter given that the template does not declare
//! ("Parameters: [X] do not exist in the template"), and a declared parameter with no Default, no value given and no
//! previous value to keep ("Parameters: [X] must have values"); see
//! <https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/parameters-section-structure.html>.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use engine::model::{DeploySpec, StackSpec, Stacks, Step, StepKind};
use tokio::sync::OnceCell;

use crate::assembly;
use crate::aws::aws_reason;
use crate::deploy::{assembly_stack, check_parameters, no_value, resolve_with_env, target};
use crate::template::Template;
use crate::StepCatalog;

/// One stack's template, read and parsed.
#[derive(Debug)]
pub struct StackTemplate {
    pub stack: StackSpec,
    pub template: Template,
}

/// What reading a stage's templates found: the parsed ones, and every problem (sorted, one line each).
#[derive(Debug, Default)]
pub struct StageTemplates {
    pub read: Vec<StackTemplate>,
    pub problems: Vec<String>,
}

impl StageTemplates {
    /// Read and parse the template of every stack in `stacks` (paths relative to `workspace`) and check the
    /// parameters each is given against what it declares. With `only_existing`, a template that is not there is
    /// left for later (it may be produced by a step upstream); otherwise it is a problem.
    pub fn read(stacks: &[StackSpec], workspace: &Path, only_existing: bool) -> StageTemplates {
        let mut out = StageTemplates::default();
        for stack in stacks {
            let path = workspace.join(&stack.template);
            let body = match std::fs::read_to_string(&path) {
                Ok(body) => body,
                Err(e) if only_existing && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.problems.push(format!("stack {}: cannot read template {}: {e}", stack.name, path.display()));
                    continue;
                }
            };
            match Template::parse(&body) {
                Ok(template) => {
                    out.problems.extend(check_parameters(stack, &template, true));
                    out.read.push(StackTemplate { stack: stack.clone(), template });
                }
                Err(e) => out.problems.push(format!("stack {}: template {}: {e}", stack.name, path.display())),
            }
        }
        out.problems.sort();
        out
    }

    /// The stacks of which the template declares parameters with no Default that the pipeline gives no value:
    /// (stack, those parameters). Only a deployed stack's previous values can fill them.
    pub fn needing_previous_values(&self) -> Vec<(&StackSpec, Vec<String>)> {
        self.read
            .iter()
            .filter_map(|t| {
                let names: Vec<String> = t
                    .template
                    .parameters()
                    .into_iter()
                    .filter(|(name, d)| d.default.is_none() && !t.stack.parameters.contains_key(name))
                    .map(|(name, _)| name)
                    .collect();
                (!names.is_empty()).then_some((&t.stack, names))
            })
            .collect()
    }

    /// Check the parameters that only previous values can fill: each stack must exist with a value for them, and
    /// the Deploy must keep previous values (`previous_parameters`). `cfn` reaches the stage's account; called only
    /// when some stack needs it, since it costs a DescribeStacks per such stack.
    pub async fn check_previous_values(&mut self, spec: &DeploySpec, cfn: &aws_sdk_cloudformation::Client) {
        let mut problems = Vec::new();
        for (stack, names) in self.needing_previous_values() {
            let why = if !spec.previous_parameters {
                Some("previous values are not kept (`previous_parameters: false`)".to_string())
            } else {
                match cfn.describe_stacks().stack_name(&stack.name).send().await {
                    Ok(out) => {
                        let deployed: Vec<&str> = out
                            .stacks()
                            .first()
                            .map(|s| s.parameters().iter().filter_map(|p| p.parameter_key()).collect())
                            .unwrap_or_default();
                        let lacking: Vec<&String> = names.iter().filter(|n| !deployed.contains(&n.as_str())).collect();
                        (!lacking.is_empty()).then(|| "the deployed stack has none".to_string())
                    }
                    Err(e)
                        if e.code() == Some("ValidationError")
                            && e.message().unwrap_or_default().contains("does not exist") =>
                    {
                        Some("the stack is new".to_string())
                    }
                    Err(e) => Some(format!("DescribeStacks of {} failed: {}", stack.name, aws_reason(&e))),
                }
            };
            if let Some(why) = why {
                problems.push(no_value(stack, &names, &why));
            }
        }
        self.problems.extend(problems);
        self.problems.sort();
    }

    /// The stage's verdict: `Err` names every problem, and says that none of its stacks was deployed.
    pub fn verdict(&self, stage: &str) -> Result<(), String> {
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(format!(
            "stage {stage} not deployed: {} found in its templates before any of its stacks:\n  - {}",
            if self.problems.len() == 1 {
                "a problem".to_string()
            } else {
                format!("{} problems", self.problems.len())
            },
            self.problems.join("\n  - ")
        ))
    }
}

/// At the start of a run, before anything deploys: the templates of every Deploy in `steps` that are already in its
/// workspace and that nothing upstream of it can change first (no Shell before it, no Source still to clone), each
/// read and checked, its parameters too; `env` substitutes `${env:...}`. A Deploy whose target or stacks need step
/// outputs, or whose templates are produced upstream, is checked by its stage's first node instead. Each problem
/// names its step.
pub async fn check_at_start(
    catalog: &StepCatalog,
    steps: &[Step],
    base_dir: &Path,
    pipeline: &str,
    env: &HashMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let StepKind::Deploy(written) = &step.kind else { continue };
        let Ok(spec) = resolve_with_env(written, env) else { continue };
        let Some(workspace) = catalog.settled_workspace(steps, i, base_dir) else { continue };
        let (stacks, target_spec) = match &spec.stacks {
            Stacks::Listed(list) => (list.clone(), spec.clone()),
            Stacks::Assembly { dir, stage } => {
                let Some(root) = assembly::at_plan_time(dir, || Some(workspace.clone())) else { continue };
                match assembly::load_stage(&root, stage) {
                    Ok(stage) => {
                        let all: Vec<(DeploySpec, StackSpec)> =
                            stage.stacks.iter().map(|a| assembly_stack(&spec, a)).collect();
                        let Some(first) = all.first().map(|(s, _)| s.clone()) else { continue };
                        (all.into_iter().map(|(_, s)| s).collect(), first)
                    }
                    Err(e) => {
                        problems.push(format!("`{}`: {e}", step.id));
                        continue;
                    }
                }
            }
        };
        // A Deploy to several accounts or regions: a new stack is new in each target on its own.
        for deploy_target in crate::deploy::targets(&target_spec) {
            let target_spec = crate::deploy::for_target(&target_spec, &deploy_target);
            let spec = crate::deploy::for_target(&spec, &deploy_target);
            let mut read = StageTemplates::read(&stacks, &workspace, true);
            if !read.needing_previous_values().is_empty() {
                let target = target(&target_spec, pipeline, &step.id, catalog.aws_endpoint.as_deref());
                match catalog.aws.get(&target).await {
                    Ok(session) => read.check_previous_values(&spec, &session.cloudformation()).await,
                    Err(e) => read.problems.push(e.to_string()),
                }
            }
            if let Err(e) = read.verdict(&step.id) {
                problems.push(format!("`{}`: {e}", step.id));
                // The templates are the same for every target: one report says it.
                break;
            }
        }
    }
    problems
}

/// The checks of the stages of one run, each made once: every stack node of a stage asks, the first one checks,
/// the others (running at the same time, or later) get its verdict.
#[derive(Debug, Default)]
pub struct StageChecks {
    verdicts: Mutex<HashMap<String, Arc<OnceCell<Verdict>>>>,
}

/// A stage's verdict and the node that checked it.
#[derive(Debug, Clone)]
struct Verdict {
    node: String,
    result: Result<(), String>,
}

impl StageChecks {
    /// The verdict for stage `key` (a Deploy step and its target) as node `node` sees it: from `check` the first
    /// time it is asked; a refused stage's other nodes point at the node whose log says why.
    pub async fn once<F, Fut>(&self, key: String, node: &str, check: F) -> Result<(), String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let cell = Arc::clone(self.verdicts.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default());
        let verdict = cell.get_or_init(|| async { Verdict { node: node.to_string(), result: check().await } }).await;
        match &verdict.result {
            Err(_) if verdict.node != node => {
                Err(format!("not deployed: its stage's templates were refused (see `{}`)", verdict.node))
            }
            result => result.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn stack(name: &str, template: &str, parameters: &[(&str, &str)]) -> StackSpec {
        StackSpec {
            name: name.into(),
            template: template.into(),
            parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            tags: BTreeMap::new(),
            capabilities: Vec::new(),
            termination_protection: false,
            notification_arns: None,
            depends_on: Vec::new(),
        }
    }

    #[test]
    fn every_template_of_the_stage_is_read_and_every_problem_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.yaml"), "Parameters:\n  Env:\n    Type: String\nResources: {}\n").unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "Resources:\n  Q: [unclosed\n").unwrap();
        let stacks = [
            stack("Good", "good.yaml", &[("Env", "dev"), ("Typo", "x")]),
            stack("Bad", "bad.yaml", &[]),
            stack("Gone", "gone.yaml", &[]),
        ];
        let read = StageTemplates::read(&stacks, dir.path(), false);
        assert_eq!(read.read.len(), 1);
        assert_eq!(read.problems.len(), 3, "{:?}", read.problems);
        let verdict = read.verdict("Prod").unwrap_err();
        assert!(verdict.starts_with("stage Prod not deployed: 3 problems"), "{verdict}");
        assert!(verdict.contains("stack Bad: template"), "{verdict}");
        assert!(verdict.contains("stack Gone: cannot read template"), "{verdict}");
        assert!(verdict.contains("parameter `Typo` is given"), "{verdict}");

        let existing = StageTemplates::read(&stacks, dir.path(), true);
        assert_eq!(existing.problems.len(), 2, "a template not there yet is left for later: {:?}", existing.problems);
    }

    #[test]
    fn parameters_without_default_or_value_are_the_ones_needing_previous_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.yaml"),
            "Parameters:\n  A:\n    Type: String\n  B:\n    Type: String\n    Default: b\n  C:\n    Type: String\nResources: {}\n",
        )
        .unwrap();
        let read = StageTemplates::read(&[stack("S", "t.yaml", &[("C", "c")])], dir.path(), false);
        let needing = read.needing_previous_values();
        assert_eq!(needing.len(), 1);
        assert_eq!(needing[0].1, ["A"]);
        assert!(read.verdict("S").is_ok());
    }

    #[tokio::test]
    async fn a_stage_is_checked_once_and_every_stack_gets_its_verdict() {
        let checks = StageChecks::default();
        let counted = std::sync::atomic::AtomicUsize::new(0);
        for node in ["deploy/A", "deploy/B", "deploy/A"] {
            let verdict = checks
                .once("deploy@1/r".into(), node, || async {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Err("bad".to_string())
                })
                .await;
            let expected = if node == "deploy/A" {
                "bad".to_string()
            } else {
                "not deployed: its stage's templates were refused (see `deploy/A`)".to_string()
            };
            assert_eq!(verdict, Err(expected));
        }
        assert_eq!(counted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
