//! `runner destroy FILE [STEP]`, like `cdk destroy`: the stacks of a pipeline's Deploy steps (or of one), deleted
//! in reverse dependency order: a stack only once every stack that depends on it is gone (its imports, its
//! `depends_on`, the steps after it), independent ones at once. A stack with termination protection is left as
//! it is, and so is every stack it depends on. The front end asks before calling [`destroy`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use engine::model::StepKind;
use engine::validate::closest;
use petgraph::graph::NodeIndex;
use steps::aws::{Sessions, Target};
use steps::destroy::Deleted;

use crate::pipeline::Planned;

/// One stack to delete.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Its node, `<step>/<stack>`.
    pub node: Arc<str>,
    pub name: String,
    /// `aws://ACCOUNT/REGION`.
    pub environment: String,
    target: Target,
}

/// The stacks to delete, in the order they are deleted (each after those that depend on it).
#[derive(Debug, Clone)]
pub struct Destroy {
    pub stacks: Vec<Stack>,
    /// For each stack, the stacks deleted before it (those that depend on it), by index.
    after: Vec<Vec<usize>>,
}

/// How a stack ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    /// It was not there.
    Absent,
    /// Termination protection is on: left as it is.
    Protected,
    Failed(String),
    /// Not deleted because a stack that depends on it was not.
    Kept(String),
}

impl Outcome {
    fn gone(&self) -> bool {
        matches!(self, Outcome::Deleted | Outcome::Absent)
    }
}

/// What `runner destroy` would delete: the stacks of every Deploy step, or of `step`; `Err` for invalid input (a
/// step that is not a Deploy, stacks only known when the pipeline runs, an account that needs an unset variable).
pub fn plan(planned: &Planned, step: Option<&str>, env: &HashMap<String, String>) -> Result<Destroy, String> {
    let plan = &planned.plan;
    let pipeline = &plan.pipeline.loaded.pipeline;
    let deploys: Vec<usize> =
        (0..pipeline.steps.len()).filter(|&i| matches!(pipeline.steps[i].kind, StepKind::Deploy(_))).collect();
    let chosen: Vec<usize> = match step {
        None => deploys.clone(),
        Some(id) => match deploys.iter().find(|&&i| pipeline.steps[i].id == id) {
            Some(&i) => vec![i],
            None => {
                let hint = closest(id, deploys.iter().map(|&i| pipeline.steps[i].id.as_str()))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(format!("error: `{id}` is not a Deploy step of `{}`{hint}\n", pipeline.name));
            }
        },
    };
    let mut nodes: Vec<NodeIndex> = Vec::new();
    let mut stacks = Vec::new();
    for n in petgraph::algo::toposort(&plan.graph, None).unwrap_or_default().into_iter().rev() {
        let node = &plan.graph[n];
        if !chosen.contains(&node.step) {
            continue;
        }
        let s = &pipeline.steps[node.step];
        let StepKind::Deploy(spec) = &s.kind else { continue };
        let Some(name) = node.part() else {
            return Err(format!(
                "error: the stacks of `{}` are only known once the pipeline ran what makes its cloud assembly; \
                 synthesize it first (`cdk synth`), or give the checkout it is in with --source-dir\n",
                s.id
            ));
        };
        let resolved = steps::deploy::resolve_with_env(spec, env)
            .map_err(|missing| format!("error: `{}` cannot say where its stacks are: {missing}\n", s.id))?;
        let target = steps::deploy::target(&resolved, &pipeline.name, &s.id, planned.catalog.aws_endpoint.as_deref());
        stacks.push(Stack {
            node: node.id.clone(),
            name: name.to_string(),
            environment: format!("aws://{}/{}", resolved.account, resolved.region),
            target,
        });
        nodes.push(n);
    }
    if stacks.is_empty() {
        return Err(format!("error: `{}` deploys no stacks: nothing to destroy\n", pipeline.name));
    }
    // A stack waits for every stack downstream of it (through any step in between).
    let index: HashMap<NodeIndex, usize> = nodes.iter().enumerate().map(|(k, &n)| (n, k)).collect();
    let after = nodes
        .iter()
        .map(|&n| {
            let mut seen = HashSet::new();
            let mut stack = vec![n];
            let mut before = Vec::new();
            while let Some(m) = stack.pop() {
                for d in plan.graph.neighbors_directed(m, petgraph::Direction::Outgoing) {
                    if seen.insert(d) {
                        if let Some(&k) = index.get(&d) {
                            before.push(k);
                        }
                        stack.push(d);
                    }
                }
            }
            before
        })
        .collect();
    Ok(Destroy { stacks, after })
}

/// Delete the stacks: each once those deleted before it are gone, independent ones at once. `done` hears of each
/// stack as it ends. Returns every stack's outcome, in `destroy.stacks`' order.
pub async fn destroy(
    destroy: &Destroy,
    sessions: Arc<Sessions>,
    mut done: impl FnMut(&Stack, &Outcome),
) -> Vec<Outcome> {
    let count = destroy.stacks.len();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
    let mut running: HashSet<usize> = HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        for k in 0..count {
            if outcomes[k].is_some() || running.contains(&k) {
                continue;
            }
            let after = &destroy.after[k];
            if let Some(&blocker) = after.iter().find(|&&j| outcomes[j].as_ref().is_some_and(|o| !o.gone())) {
                let why = format!("{}, which depends on it, is still there", destroy.stacks[blocker].node);
                let outcome = Outcome::Kept(why);
                done(&destroy.stacks[k], &outcome);
                outcomes[k] = Some(outcome);
                continue;
            }
            if after.iter().all(|&j| outcomes[j].is_some()) {
                running.insert(k);
                let (stack, sessions) = (destroy.stacks[k].clone(), Arc::clone(&sessions));
                tasks.spawn(async move {
                    let outcome = match sessions.get(&stack.target).await {
                        Err(e) => Outcome::Failed(e.0),
                        Ok(session) => match steps::destroy::delete_stack(&session, &stack.name).await {
                            Ok(Deleted::Deleted) => Outcome::Deleted,
                            Ok(Deleted::Absent) => Outcome::Absent,
                            Ok(Deleted::Protected) => Outcome::Protected,
                            Err(e) => Outcome::Failed(e),
                        },
                    };
                    (k, outcome)
                });
            }
        }
        let Some(joined) = tasks.join_next().await else { break };
        let (k, outcome) = joined.unwrap_or_else(|e| (usize::MAX, Outcome::Failed(e.to_string())));
        if k == usize::MAX {
            continue;
        }
        running.remove(&k);
        done(&destroy.stacks[k], &outcome);
        outcomes[k] = Some(outcome);
    }
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Failed("never started".into()))).collect()
}
