//! The Deploy step: a stage of CloudFormation stacks in one account and region, reached through STS AssumeRole.
//! Each stack is its own node (`<step>/<stack>`). New stacks are created with CreateStack; existing ones are
//! updated through a change set (an empty one means `unchanged`, nothing executed) or directly (`method: Direct`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{
    Capability, ChangeSetStatus, ChangeSetType, OnFailure, Parameter, Stack, StackStatus, Tag,
};
use aws_sdk_cloudformation::Client as Cfn;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use engine::diagnostic::{elide, MAX_QUOTED};
use engine::event::{Status, Stream};
use engine::model::{DeployMethod, DeployRole, DeploySpec, StackSpec, Stacks, Step, StepKind};
use engine::step::{Expansion, NodeContext, NodeSuccess, Outputs, Part, StepError, StepRunner, StopSignal};
use engine::subst;
use sha2::{Digest, Sha256};

use crate::assembly;
use crate::aws::{aws_reason, AttemptLog, Session, Sessions, Target, DEFAULT_QUALIFIER};
use crate::stage::{StageChecks, StageTemplates};
use crate::template::Template;

/// A CreateStack, CreateChangeSet or UpdateStack request with what all three say of the stack, from its
/// [`StackRequest`]: name, parameters, tags, capabilities, notification ARNs, execution role and template. A macro:
/// the SDK's three builders share these methods but no trait.
macro_rules! stack_request {
    ($builder:expr, $name:expr, $request:expr, $template:expr) => {{
        let request: &StackRequest = $request;
        let req = $builder
            .stack_name($name)
            .set_parameters(Some(request.sdk_parameters()))
            .set_tags(Some(request.sdk_tags()))
            .set_capabilities(Some(request.capabilities.iter().map(|c| Capability::from(c.as_str())).collect()))
            .set_notification_arns(request.notification_arns.as_ref().map(|n| n.iter().cloned().collect()))
            .set_role_arn(request.role.clone());
        match $template {
            TemplateSource::Body(b) => req.template_body(b),
            TemplateSource::Url(u) => req.template_url(u),
        }
    }};
}

/// CloudFormation's limit for a template passed in the request body.
pub const TEMPLATE_BODY_LIMIT: usize = 51_200;

/// Accounts checked at once by the preflight.
const PREFLIGHT_CHECKS_AT_ONCE: usize = 16;

const CAPABILITIES: [&str; 3] = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"];

fn stacks(spec: &DeploySpec) -> &[StackSpec] {
    match &spec.stacks {
        Stacks::Listed(s) => s,
        Stacks::Assembly { .. } => &[],
    }
}

/// Kind-specific problems of a Deploy step.
pub fn check(spec: &DeploySpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let templated = |s: &str| s.contains("${");
    check_targets(spec, &mut problems);
    let list = stacks(spec);
    match &spec.stacks {
        Stacks::Listed(l) if l.is_empty() => {
            problems.push(("stacks".into(), "a Deploy needs at least one stack".into()));
        }
        Stacks::Listed(_) => {}
        Stacks::Assembly { dir, stage } => {
            if dir.trim().is_empty() {
                problems.push(("stacks.dir".into(), "empty assembly `dir`".into()));
            }
            if stage.trim().is_empty() {
                problems.push(("stacks.stage".into(), "empty `stage`".into()));
            }
        }
    }
    let names: HashSet<&str> = list.iter().map(|s| s.name.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, stack) in list.iter().enumerate() {
        let at = |field: &str| format!("stacks[{i}].{field}");
        let valid = valid_stack_name(&stack.name);
        let outputs = |s: &str| s.contains("${steps.");
        if outputs(&stack.name) || stack.depends_on.iter().any(|d| outputs(d)) {
            problems.push((
                at("name"),
                format!(
                    "stack name `{}` uses a step output: a stack name is its node's id, known when planning; use \
                     `${{env:...}}` (substituted when planning) instead",
                    elide(&stack.name, MAX_QUOTED)
                ),
            ));
        } else if !valid && !templated(&stack.name) {
            let message = match engine::validate::too_long("stack name", &stack.name) {
                Some(too_long) => too_long,
                None => format!(
                    "stack name `{}` must start with a letter and use only letters, digits and `-`",
                    elide(&stack.name, MAX_QUOTED)
                ),
            };
            problems.push((at("name"), message));
        }
        if !seen.insert(stack.name.as_str()) {
            problems.push((at("name"), format!("duplicate stack `{}` in this stage", stack.name)));
        }
        if stack.template.trim().is_empty() {
            problems.push((at("template"), "empty `template` path".into()));
        }
        for (j, dep) in stack.depends_on.iter().enumerate() {
            if dep == &stack.name {
                problems.push((format!("stacks[{i}].depends_on[{j}]"), format!("stack `{dep}` depends on itself")));
            } else if !names.contains(dep.as_str()) {
                let hint = engine::validate::closest(dep, names.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                problems.push((
                    format!("stacks[{i}].depends_on[{j}]"),
                    format!(
                        "stack `{}` depends on `{}`, which is not a stack of this stage{hint}",
                        elide(&stack.name, MAX_QUOTED),
                        elide(dep, MAX_QUOTED)
                    ),
                ));
            }
        }
        for (j, cap) in stack.capabilities.iter().enumerate() {
            if !CAPABILITIES.contains(&cap.as_str()) {
                problems.push((
                    format!("stacks[{i}].capabilities[{j}]"),
                    format!("unknown capability `{cap}`: use one of {}", CAPABILITIES.join(", ")),
                ));
            }
        }
    }
    // Cycles of `depends_on`, spelled out, at the entry that closes each.
    let position: HashMap<&str, usize> = list.iter().enumerate().rev().map(|(i, s)| (s.name.as_str(), i)).collect();
    let depends_on = |i: usize| list[i].depends_on.iter().filter_map(|d| position.get(d.as_str()).copied()).collect();
    for cycle in engine::validate::find_cycles(list.len(), depends_on) {
        let (start, closing) = (cycle[0], cycle[1]);
        let j = list[start].depends_on.iter().position(|d| position.get(d.as_str()) == Some(&closing)).unwrap_or(0);
        let spelled = engine::validate::spell_cycle(cycle.iter().rev().map(|&i| list[i].name.as_str()));
        problems.push((format!("stacks[{start}].depends_on[{j}]"), format!("cycle in depends_on: {spelled}")));
    }
    if let DeployRole::Arn(arn) = &spec.role {
        if !templated(arn) && !arn.starts_with("arn:") {
            problems.push(("role".into(), format!("role `{arn}` is not an ARN")));
        }
    }
    problems
}

/// `account` / `accounts` and `region` / `regions`: one of each, well formed, no account or region twice, and a
/// single target for an assembly (whose stacks name their own).
fn check_targets(spec: &DeploySpec, problems: &mut Vec<(String, String)>) {
    let templated = |s: &str| s.contains("${");
    let account_id = |a: &str| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit());
    match (spec.account.is_empty(), spec.accounts.is_empty()) {
        (false, false) => problems.push(("accounts".into(), "give `account` or `accounts`, not both".into())),
        (true, true) => problems.push(("account".into(), "a Deploy needs an `account` (or `accounts`)".into())),
        (false, true) if !account_id(&spec.account) && !templated(&spec.account) => {
            problems.push(("account".into(), format!("account `{}` is not a 12-digit AWS account id", spec.account)))
        }
        _ => {}
    }
    let mut seen = HashSet::new();
    for (i, entry) in spec.accounts.iter().enumerate() {
        if templated(entry) {
            continue;
        }
        let ids = split_list(std::slice::from_ref(entry));
        if ids.is_empty() {
            problems.push((format!("accounts[{i}]"), "empty entry in `accounts`".into()));
        }
        for id in ids {
            if !account_id(&id) {
                problems.push((format!("accounts[{i}]"), format!("account `{id}` is not a 12-digit AWS account id")));
            } else if !seen.insert(id.clone()) {
                problems.push((format!("accounts[{i}]"), format!("account `{id}` is listed twice")));
            }
        }
    }
    match (spec.region.trim().is_empty(), spec.regions.is_empty()) {
        (false, false) => problems.push(("regions".into(), "give `region` or `regions`, not both".into())),
        (true, true) => problems.push(("region".into(), "a Deploy needs a `region` (or `regions`)".into())),
        _ => {}
    }
    let mut seen = HashSet::new();
    for (i, entry) in spec.regions.iter().enumerate() {
        if templated(entry) {
            continue;
        }
        for region in split_list(std::slice::from_ref(entry)) {
            if !seen.insert(region.clone()) {
                problems.push((format!("regions[{i}]"), format!("region `{region}` is listed twice")));
            }
        }
    }
    let several = spec.accounts.len() > 1 || spec.regions.len() > 1 || targets(spec).len() > 1;
    if several && matches!(spec.stacks, Stacks::Assembly { .. }) {
        problems.push((
            if spec.accounts.is_empty() { "regions" } else { "accounts" }.into(),
            "the stacks of an assembly name their own account and region: deploy each stage with its own Deploy \
             (`account` and `region`)"
                .into(),
        ));
    }
}

/// One account and region a Deploy deploys its stacks to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeployTarget {
    pub account: String,
    pub region: String,
}

/// The values of `accounts` or `regions` entries: each may hold several, separated by commas or whitespace.
fn split_list(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .flat_map(|e| e.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every account and region the Deploy deploys to, each once, in the order written: every account in every
/// region.
pub fn targets(spec: &DeploySpec) -> Vec<DeployTarget> {
    let accounts = if spec.accounts.is_empty() { vec![spec.account.clone()] } else { split_list(&spec.accounts) };
    let regions = if spec.regions.is_empty() { vec![spec.region.clone()] } else { split_list(&spec.regions) };
    let mut seen = HashSet::new();
    let mut list = Vec::with_capacity(accounts.len() * regions.len());
    for account in &accounts {
        for region in &regions {
            let t = DeployTarget { account: account.clone(), region: region.clone() };
            if seen.insert(t.clone()) {
                list.push(t);
            }
        }
    }
    list
}

/// How the nodes of each target are named: `<label>/<stack>`, the label being the account when all targets share
/// a region, the region when they share an account, else `<account>-<region>`. One target: no label (`<stack>`).
fn target_labels(targets: &[DeployTarget]) -> Vec<String> {
    if targets.len() <= 1 {
        return vec![String::new(); targets.len()];
    }
    let one_region = targets.iter().all(|t| t.region == targets[0].region);
    let one_account = targets.iter().all(|t| t.account == targets[0].account);
    targets
        .iter()
        .map(|t| match (one_region, one_account) {
            (true, _) => t.account.clone(),
            (false, true) => t.region.clone(),
            _ => format!("{}-{}", t.account, t.region),
        })
        .collect()
}

/// The Deploy as the nodes of one target see it: that account and region.
pub fn for_target(spec: &DeploySpec, target: &DeployTarget) -> DeploySpec {
    DeploySpec {
        account: target.account.clone(),
        accounts: Vec::new(),
        region: target.region.clone(),
        regions: Vec::new(),
        ..spec.clone()
    }
}

/// The Deploy of the target a node part names, and the part's stack: `<target>/<stack>` with several targets,
/// `<stack>` with one.
pub fn split_part<'a>(spec: &DeploySpec, part: &'a str) -> Result<(DeploySpec, &'a str), String> {
    let targets = targets(spec);
    if targets.len() <= 1 {
        return Ok((targets.first().map_or_else(|| spec.clone(), |t| for_target(spec, t)), part));
    }
    let labels = target_labels(&targets);
    let (label, stack) = part.split_once('/').ok_or_else(|| format!("`{part}` names no target of this Deploy"))?;
    let k =
        labels.iter().position(|l| l == label).ok_or_else(|| format!("`{label}` is not a target of this Deploy"))?;
    Ok((for_target(spec, &targets[k]), stack))
}

/// Whether the targets are only known once the step's fields are resolved (a list from `${env:...}` or
/// `${ssm:...}`): then the nodes of each target are added when the step runs.
fn targets_known_at_run_time(spec: &DeploySpec) -> bool {
    spec.accounts.iter().chain(&spec.regions).any(|e| e.contains("${"))
}

/// The nodes of a Deploy of listed stacks: one per stack, or per target and stack.
fn listed_parts(spec: &DeploySpec) -> Vec<Part> {
    let targets = targets(spec);
    let labels = target_labels(&targets);
    let mut parts = Vec::with_capacity(targets.len() * stacks(spec).len());
    for (target, label) in targets.iter().zip(&labels) {
        let name = |stack: &str| if label.is_empty() { stack.to_string() } else { format!("{label}/{stack}") };
        let spec = for_target(spec, target);
        for s in stacks(&spec) {
            parts.push(Part {
                name: name(&s.name),
                needs: s.depends_on.iter().map(|d| name(d)).collect(),
                description: describe_stack(&spec, s),
                ..Default::default()
            });
        }
    }
    parts
}

/// The role a Deploy assumes, if any.
pub fn role_arn(spec: &DeploySpec) -> Option<String> {
    let q = spec.qualifier.as_deref().unwrap_or(DEFAULT_QUALIFIER);
    match &spec.role {
        DeployRole::Bootstrap => Some(crate::aws::role_arn(
            &spec.region,
            &spec.account,
            &format!("cdk-{q}-deploy-role-{a}-{r}", a = spec.account, r = spec.region),
        )),
        DeployRole::Arn(arn) => Some(arn.clone()),
        DeployRole::Caller => None,
    }
}

fn assets_bucket(spec: &DeploySpec) -> String {
    let q = spec.qualifier.as_deref().unwrap_or(DEFAULT_QUALIFIER);
    spec.assets_bucket.clone().unwrap_or_else(|| format!("cdk-{q}-assets-{}-{}", spec.account, spec.region))
}

/// What `plan` says.
pub fn describe(spec: &DeploySpec, part: Option<&str>) -> String {
    if let Stacks::Assembly { dir, stage } = &spec.stacks {
        let to = format!("aws://{}/{}", spec.account, spec.region);
        return match part {
            Some(p) => format!("deploy stack {p} of stage {stage} ({dir}) to {to}, as the roles its manifest names"),
            None => format!("deploy the stacks of stage {stage} of the cloud assembly {dir} to {to}"),
        };
    }
    let (spec, name) = match part.map(|p| split_part(spec, p)) {
        Some(Ok((spec, name))) => (std::borrow::Cow::Owned(spec), Some(name)),
        _ => (std::borrow::Cow::Borrowed(spec), None),
    };
    let to = format!("aws://{}/{}", spec.account, spec.region);
    let stacks = stacks(&spec);
    match name.and_then(|p| stacks.iter().find(|s| s.name == p)) {
        Some(stack) => describe_stack(&spec, stack),
        None if targets_known_at_run_time(&spec) => {
            let list: Vec<&str> = spec.accounts.iter().chain(&spec.regions).map(String::as_str).collect();
            format!("deploy {} stacks to each target of {}", stacks.len(), list.join(", "))
        }
        None => {
            let targets = targets(&spec);
            if targets.len() > 1 {
                let shown: Vec<String> =
                    targets.iter().take(3).map(|t| format!("aws://{}/{}", t.account, t.region)).collect();
                let more = if targets.len() > 3 { format!(" and {} more", targets.len() - 3) } else { String::new() };
                format!(
                    "deploy {} stacks to each of {} targets: {}{more}",
                    stacks.len(),
                    targets.len(),
                    shown.join(", ")
                )
            } else {
                format!("deploy {} stacks to {to}", stacks.len())
            }
        }
    }
}

/// Whether a stack name is one CloudFormation accepts: a letter, then letters, digits and `-`, at most 128
/// characters (<https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_CreateStack.html>).
pub fn valid_stack_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The spec with each `${env:...}` substituted where `env` has every variable a field names and the field needs
/// no step output; other fields are left as written (they are substituted when the node runs).
pub fn with_env_known(spec: &DeploySpec, env: &dyn Fn(&str) -> Option<String>) -> DeploySpec {
    let Ok(mut value) = serde_json::to_value(spec) else { return spec.clone() };
    let lookup = EnvFn(env);
    subst::for_each_string(&mut value, &mut |s| {
        if s.contains("${") {
            let mut missing = Vec::new();
            let rendered = subst::render(s, &lookup, &mut missing);
            if missing.is_empty() {
                *s = rendered;
            }
        }
    });
    serde_json::from_value(value).unwrap_or_else(|_| spec.clone())
}

/// Substitution from a lookup function, environment only.
struct EnvFn<'a>(&'a dyn Fn(&str) -> Option<String>);

impl subst::Lookup for EnvFn<'_> {
    fn env(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }
    fn output(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// What `plan` says of one listed stack of a Deploy to one target. Whether the stack exists is only known when it
/// runs (or with `plan --diff`): it says both ways.
fn describe_stack(spec: &DeploySpec, stack: &StackSpec) -> String {
    let how = match spec.method {
        DeployMethod::ChangeSet => "created with CreateStack if new, else updated by change set",
        DeployMethod::Direct => "created with CreateStack if new, else updated with UpdateStack",
    };
    let role = role_arn(spec).map_or("the caller's credentials".to_string(), |r| format!("role {r}"));
    let to = format!("aws://{}/{}", spec.account, spec.region);
    format!("deploy stack {} ({}) to {to}: {how}, as {role}", stack.name, stack.template)
}

/// One node per stack (per target and stack with several targets), ordered by `depends_on`; targets listed with
/// `${ssm:...}` or a `${env:...}` not set now are known when the step runs. Stack names are node ids: their
/// `${env:...}` are substituted now, from `env`, and the result must be a name CloudFormation accepts (else an error
/// showing it). An assembly's stacks: known now when the assembly is in the step's workspace and nothing upstream can
/// change it before the step runs (`workspace` says where, or `None`), else when the node runs (after the step that
/// synthesizes it).
pub fn expand(
    spec: &DeploySpec,
    workspace: impl FnOnce() -> Option<std::path::PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expansion, String> {
    let written = spec;
    let spec = &with_env_known(spec, env);
    if let Stacks::Assembly { dir, stage } = &spec.stacks {
        if spec.account.contains("${") || spec.region.contains("${") || stage.contains("${") {
            return Ok(Expansion::AtRunTime);
        }
        let Some(root) = assembly::at_plan_time(dir, workspace) else {
            return Ok(Expansion::AtRunTime);
        };
        let stage = assembly::load_stage(&root, stage)?;
        return Ok(Expansion::Parts(assembly_parts(spec, &stage)?));
    }
    for (s, raw) in stacks(spec).iter().zip(stacks(written)) {
        if s.name.contains("${") {
            let mut missing = Vec::new();
            subst::render(&raw.name, &EnvFn(env), &mut missing);
            let why: Vec<String> = missing.iter().map(ToString::to_string).collect();
            return Err(format!(
                "stack name `{}`: {}; a stack name is its node's id, so it is substituted when planning",
                raw.name,
                why.join("; ")
            ));
        }
        if !valid_stack_name(&s.name) {
            return Err(format!(
                "stack name `{}` (from `{}`) is not one CloudFormation accepts: it must start with a letter, use \
                 only letters, digits and `-`, and have at most 128 characters",
                s.name, raw.name
            ));
        }
    }
    if targets_known_at_run_time(spec) {
        return Ok(Expansion::AtRunTime);
    }
    Ok(Expansion::Parts(listed_parts(spec)))
}

/// The nodes of an assembly stage's stacks; every stack must be for this Deploy's account and region.
fn assembly_parts(spec: &DeploySpec, stage: &assembly::Stage) -> Result<Vec<Part>, String> {
    if stage.stacks.is_empty() {
        return Err(format!("stage {} of the cloud assembly has no stacks", stage.name));
    }
    for s in &stage.stacks {
        if s.account != spec.account || s.region != spec.region {
            return Err(format!(
                "stack {} of stage {} is for aws://{}/{}, but this Deploy is for aws://{}/{}",
                s.stack_name, stage.name, s.account, s.region, spec.account, spec.region
            ));
        }
    }
    Ok(stage
        .stacks
        .iter()
        .map(|s| Part {
            name: s.stack_name.clone(),
            needs: s.depends_on.clone(),
            description: describe(spec, Some(&s.stack_name)),
            // Its template and assets: it waits for the nodes publishing them, not the whole stage's Publish.
            consumes: Some(s.assets.clone()),
            ..Default::default()
        })
        .collect())
}

/// STS session name `runner-<pipeline>-<step>`, within STS's charset and 64 characters.
pub fn session_name(pipeline: &str, step: &str) -> String {
    let raw = format!("runner-{pipeline}-{step}");
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) { c } else { '-' }).take(64).collect()
}

/// The session target of a Deploy.
pub fn target(spec: &DeploySpec, pipeline: &str, step: &str, endpoint: Option<&str>) -> Target {
    Target {
        account: spec.account.clone(),
        region: spec.region.clone(),
        role: role_arn(spec),
        external_id: spec.external_id.clone(),
        session_name: session_name(pipeline, step),
        endpoint: endpoint.map(str::to_string),
    }
}

/// Before the first stack of a run: every Deploy's role (and every Publish's of files declared in the pipeline)
/// can be assumed and acts in its account, for every target of the Deploy. Fields are resolved against the
/// environment and the Parameter Store values read for the run; a Deploy whose target depends on step outputs is
/// checked when it runs.
pub async fn preflight(
    steps: &[Step],
    pipeline: &str,
    endpoint: Option<&str>,
    env: &HashMap<String, String>,
    store: &subst::StoreValues,
    sessions: &Arc<Sessions>,
) -> Vec<String> {
    let mut targets = Vec::new();
    for step in steps {
        if let StepKind::Publish(spec) = &step.kind {
            if let Some(t) = crate::publish::preflight_target(spec, pipeline, &step.id, endpoint, env) {
                targets.push((step.id.clone(), t));
            }
            continue;
        }
        let StepKind::Deploy(spec) = &step.kind else { continue };
        let mut missing = Vec::new();
        let lookup = subst::BeforeRun { env, store };
        let mut resolve = |s: &str| subst::render(s, &lookup, &mut missing);
        let mut resolved = spec.clone();
        resolved.account = resolve(&spec.account);
        resolved.accounts = spec.accounts.iter().map(|a| resolve(a)).collect();
        resolved.region = resolve(&spec.region);
        resolved.regions = spec.regions.iter().map(|r| resolve(r)).collect();
        if let DeployRole::Arn(arn) = &spec.role {
            resolved.role = DeployRole::Arn(resolve(arn));
        }
        resolved.external_id = spec.external_id.as_deref().map(&mut resolve);
        resolved.qualifier = spec.qualifier.as_deref().map(&mut resolve);
        let endpoint = endpoint.map(&mut resolve);
        if missing.is_empty() {
            for t in self::targets(&resolved) {
                let spec = for_target(&resolved, &t);
                targets.push((step.id.clone(), target(&spec, pipeline, &step.id, endpoint.as_deref())));
            }
        }
    }
    let mut checks = tokio::task::JoinSet::new();
    let mut unique = HashSet::new();
    // Bounded: a Deploy to a hundred accounts must not open a hundred STS connections at once.
    let limit = Arc::new(tokio::sync::Semaphore::new(PREFLIGHT_CHECKS_AT_ONCE));
    for (id, t) in targets {
        if unique.insert(t.clone()) {
            // Sessions are cached by target: the checked ones are reused by the stacks.
            let sessions = Arc::clone(sessions);
            let limit = Arc::clone(&limit);
            checks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                sessions.get(&t).await.err().map(|e| format!("`{id}`: {e}"))
            });
        }
    }
    let mut errors = Vec::new();
    while let Some(r) = checks.join_next().await {
        if let Ok(Some(e)) = r {
            errors.push(e);
        }
    }
    errors.sort();
    errors
}

/// Substitution before the run: the environment only; step outputs are not known yet.
struct EnvOnly<'a>(&'a HashMap<String, String>);

impl subst::Lookup for EnvOnly<'_> {
    fn env(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn output(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// The spec with every `${env:...}` substituted; `Err` lists what needs step outputs (known only when it runs).
pub fn resolve_with_env(spec: &DeploySpec, env: &HashMap<String, String>) -> Result<DeploySpec, String> {
    resolve_with(spec, &EnvOnly(env))
}

/// [`resolve_with_env`] with the `${ssm:...}` values read for a run (or a preview) too.
pub fn resolve_before_run(
    spec: &DeploySpec,
    env: &HashMap<String, String>,
    store: &subst::StoreValues,
) -> Result<DeploySpec, String> {
    resolve_with(spec, &subst::BeforeRun { env, store })
}

fn resolve_with(spec: &DeploySpec, lookup: &dyn subst::Lookup) -> Result<DeploySpec, String> {
    let mut value = serde_json::to_value(spec).map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    subst::for_each_string(&mut value, &mut |s| {
        if s.contains("${") {
            *s = subst::render(s, lookup, &mut missing);
        }
    });
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
        return Err(list.join("; "));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// How a parameter the template declares gets its value in one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterValue {
    /// Given by the pipeline (or the assembly's manifest).
    Given(String),
    /// Not given: the deployed stack's value is kept (`UsePreviousValue`, with `previous_parameters`); the value.
    Previous(String),
    /// Not given: the template's `Default` (not sent: CloudFormation applies it).
    Default(String),
}

/// What one deployment asks of CloudFormation for a stack, whole: the template, the value of every parameter the
/// template declares (given, kept from the deployed stack, or its Default), tags, capabilities, notification ARNs,
/// execution role and termination protection. CreateStack, CreateChangeSet and UpdateStack are built from it, and
/// the up-to-date shortcut and `plan --diff` compare it with the deployed stack, so all three agree.
#[derive(Debug, Clone)]
pub struct StackRequest {
    pub body: String,
    pub template: Template,
    pub parameters: BTreeMap<String, ParameterValue>,
    /// Declared `NoEcho`: CloudFormation shows `****`, so their deployed values cannot be compared.
    no_echo: BTreeSet<String>,
    pub tags: BTreeMap<String, String>,
    pub capabilities: BTreeSet<String>,
    /// `None`: a deployed stack keeps its topics (the request leaves NotificationARNs out).
    pub notification_arns: Option<BTreeSet<String>>,
    /// The execution role (`RoleARN`); `None`: a deployed stack keeps its role.
    pub role: Option<String>,
    pub termination_protection: bool,
}

/// What can be checked of a stack's parameters without AWS (CloudFormation refuses both): parameters given that
/// the template does not declare, and (unless `previous` may keep a deployed value) declared parameters with no
/// value and no Default.
pub fn check_parameters(stack: &StackSpec, template: &Template, previous: bool) -> Vec<String> {
    let declared = template.parameters();
    let mut problems = Vec::new();
    for name in stack.parameters.keys().filter(|n| !declared.contains_key(*n)) {
        let hint = engine::validate::closest(name, declared.keys().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        let names: Vec<&str> = declared.keys().map(String::as_str).collect();
        let declares =
            if names.is_empty() { "it declares none".to_string() } else { format!("it declares {}", names.join(", ")) };
        problems.push(format!(
            "stack {}: parameter `{name}` is given, but template {} does not declare it ({declares}){hint}",
            stack.name, stack.template
        ));
    }
    if !previous {
        for (name, d) in &declared {
            if d.default.is_none() && !stack.parameters.contains_key(name) {
                problems.push(format!(
                    "stack {}: parameter `{name}` of template {} has no Default and is not given a value",
                    stack.name, stack.template
                ));
            }
        }
    }
    problems
}

/// "stack S: parameter `P` of template T has no Default and no value given, and {why}: CloudFormation would refuse
/// it", for the declared parameters `names` of `stack` that nothing fills.
pub fn no_value(stack: &StackSpec, names: &[String], why: &str) -> String {
    format!(
        "stack {}: parameter{} `{}` of template {} ha{} no Default and no value given, and {why}: CloudFormation \
         would refuse it",
        stack.name,
        if names.len() == 1 { "" } else { "s" },
        names.join("`, `"),
        stack.template,
        if names.len() == 1 { "s" } else { "ve" },
    )
}

impl StackRequest {
    /// The request for `stack` from its template's text, given what is deployed (`None`: a new stack). Errors: a
    /// template that does not parse, a parameter given that it does not declare, or one with no value at all.
    pub fn new(spec: &DeploySpec, stack: &StackSpec, body: String, deployed: Option<&Stack>) -> Result<Self, String> {
        let template = Template::parse(&body).map_err(|e| format!("template {}: {e}", stack.template))?;
        let problems = check_parameters(stack, &template, true);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let kept: HashMap<&str, &str> = deployed
            .filter(|_| spec.previous_parameters)
            .map(|d| d.parameters().iter().filter_map(|p| Some((p.parameter_key()?, p.parameter_value()?))).collect())
            .unwrap_or_default();
        let mut parameters = BTreeMap::new();
        let mut no_echo = BTreeSet::new();
        let mut missing = Vec::new();
        for (name, declared) in template.parameters() {
            let value = match (stack.parameters.get(&name), kept.get(name.as_str()), &declared.default) {
                (Some(v), _, _) => ParameterValue::Given(v.clone()),
                (None, Some(v), _) => ParameterValue::Previous(v.to_string()),
                (None, None, Some(d)) => ParameterValue::Default(d.clone()),
                (None, None, None) => {
                    missing.push(name);
                    continue;
                }
            };
            if declared.no_echo {
                no_echo.insert(name.clone());
            }
            parameters.insert(name, value);
        }
        if !missing.is_empty() {
            let deployed = if deployed.is_none() {
                "the stack is new"
            } else if spec.previous_parameters {
                "the deployed stack has none"
            } else {
                "previous values are not kept (`previous_parameters: false`)"
            };
            return Err(no_value(stack, &missing, deployed));
        }
        Ok(StackRequest {
            body,
            template,
            parameters,
            no_echo,
            tags: stack.tags.clone(),
            capabilities: stack.capabilities.iter().cloned().collect(),
            notification_arns: stack.notification_arns.as_ref().map(|n| n.iter().cloned().collect()),
            role: spec.execution_role.clone(),
            termination_protection: stack.termination_protection,
        })
    }

    /// The request's parameters: given values, `UsePreviousValue` for kept ones, nothing for Defaults.
    fn sdk_parameters(&self) -> Vec<Parameter> {
        self.parameters
            .iter()
            .filter_map(|(k, v)| match v {
                ParameterValue::Given(v) => Some(Parameter::builder().parameter_key(k).parameter_value(v).build()),
                ParameterValue::Previous(_) => {
                    Some(Parameter::builder().parameter_key(k).use_previous_value(true).build())
                }
                ParameterValue::Default(_) => None,
            })
            .collect()
    }

    fn sdk_tags(&self) -> Vec<Tag> {
        self.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
    }

    /// What a deployment of this request would change in `deployed` besides its template: parameters (given or
    /// defaulted values that differ), tags added, removed or changed, capabilities, notification ARNs, execution
    /// role, termination protection. Lines like `~ Parameter Env: staging -> dev (its Default)`; a `?` line is
    /// something that cannot be compared (a NoEcho parameter). Empty: nothing but the template can differ.
    pub fn differences(&self, deployed: &Stack) -> Vec<String> {
        let mut lines = Vec::new();
        let params: HashMap<&str, &str> =
            deployed.parameters().iter().filter_map(|p| Some((p.parameter_key()?, p.parameter_value()?))).collect();
        for (name, value) in &self.parameters {
            let (value, how) = match value {
                ParameterValue::Previous(_) => continue,
                ParameterValue::Given(v) => (v, ""),
                ParameterValue::Default(v) => (v, " (its Default)"),
            };
            let now = params.get(name.as_str()).copied();
            if self.no_echo.contains(name) {
                lines.push(format!("? Parameter {name}: NoEcho, its deployed value cannot be compared"));
            } else if now != Some(value.as_str()) {
                lines.push(format!("~ Parameter {name}: {} -> {value}{how}", now.unwrap_or("(none)")));
            }
        }
        let tags: BTreeMap<&str, &str> = deployed.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))).collect();
        for (k, v) in &self.tags {
            match tags.get(k.as_str()) {
                None => lines.push(format!("+ Tag {k}={v}")),
                Some(old) if old != v => lines.push(format!("~ Tag {k}: {old} -> {v}")),
                Some(_) => {}
            }
        }
        for k in tags.keys().filter(|k| !self.tags.contains_key(**k)) {
            lines.push(format!("- Tag {k}"));
        }
        let list = |set: &BTreeSet<String>| {
            if set.is_empty() {
                "none".to_string()
            } else {
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        // Capabilities only acknowledge what a template needs; they are compared with what the stack reports it
        // was deployed with, when it reports any (moto reports none ever).
        let capabilities: BTreeSet<String> = deployed.capabilities().iter().map(|c| c.as_str().to_string()).collect();
        if !capabilities.is_empty() && capabilities != self.capabilities {
            lines.push(format!("~ Capabilities: {} -> {}", list(&capabilities), list(&self.capabilities)));
        }
        if let Some(arns) = &self.notification_arns {
            let now: BTreeSet<String> = deployed.notification_arns().iter().cloned().collect();
            if &now != arns {
                lines.push(format!("~ Notification ARNs: {} -> {}", list(&now), list(arns)));
            }
        }
        if let Some(role) = &self.role {
            if deployed.role_arn() != Some(role.as_str()) {
                lines.push(format!("~ Execution role: {} -> {role}", deployed.role_arn().unwrap_or("none")));
            }
        }
        let protected = deployed.enable_termination_protection().unwrap_or(false);
        if protected != self.termination_protection {
            let on_off = |b: bool| if b { "on" } else { "off" };
            lines.push(format!(
                "~ Termination protection: {} -> {}",
                on_off(protected),
                on_off(self.termination_protection)
            ));
        }
        lines
    }
}

/// A stack settled in a state a change set can start from and the shortcut can trust.
fn settled(stack: &Stack) -> bool {
    matches!(
        stack.stack_status(),
        Some(StackStatus::CreateComplete | StackStatus::UpdateComplete | StackStatus::ImportComplete)
    )
}

/// What `plan --diff` found for one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackDiff {
    pub node: String,
    pub target: String,
    /// `false`: the stack does not exist yet.
    pub exists: bool,
    /// One line per change: the change set's resource changes (`+ Add    Bucket (AWS::S3::Bucket)`), then the
    /// template's other sections (`+ Output QueueArn`) and the rest of the request (`~ Tag team: a -> b`). Empty:
    /// a run would change nothing.
    pub changes: Vec<String>,
}

/// `plan --diff` for one stack: create a change set from the same request a run would make (CREATE for a new
/// stack, UPDATE otherwise), read its resource changes, and delete it (and the REVIEW_IN_PROGRESS stack a CREATE
/// change set leaves) without executing. For an existing stack, what the change set does not list is added: the
/// template's other sections against the deployed template (GetTemplate), and parameters, tags, capabilities,
/// notification ARNs, role and termination protection against the deployed stack. So "no changes" means a run
/// would change nothing.
pub async fn diff(
    spec: &DeploySpec,
    stack: &StackSpec,
    workspace: &std::path::Path,
    session: &Session,
    node: &str,
) -> Result<StackDiff, String> {
    let path = workspace.join(&stack.template);
    let body = std::fs::read_to_string(&path).map_err(|e| {
        format!("cannot read template {} ({e}); if an upstream step builds it, run that step first", path.display())
    })?;
    let cfn = session.cloudformation();
    let deployed =
        match cfn.describe_stacks().stack_name(&stack.name).send().await {
            Ok(out) => out.stacks().first().cloned().filter(|s| {
                !matches!(s.stack_status(), Some(StackStatus::ReviewInProgress | StackStatus::DeleteComplete))
            }),
            Err(e) if e.message().unwrap_or_default().contains("does not exist") => None,
            Err(e) => return Err(format!("DescribeStacks of {} failed: {}", stack.name, aws_reason(&e))),
        };
    let exists = deployed.is_some();
    let request = StackRequest::new(spec, stack, body, deployed.as_ref())?;
    if request.body.len() > TEMPLATE_BODY_LIMIT {
        return Err(format!(
            "template {} is over the {TEMPLATE_BODY_LIMIT}-byte body limit: --diff previews only smaller templates",
            path.display()
        ));
    }
    let millis = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
    let name = format!("{DIFF_CHANGE_SET_PREFIX}{millis}");
    let kind = if exists { ChangeSetType::Update } else { ChangeSetType::Create };
    let req =
        stack_request!(cfn.create_change_set(), &stack.name, &request, TemplateSource::Body(request.body.clone()))
            .change_set_name(&name)
            .change_set_type(kind);
    let target = format!("aws://{}/{}", spec.account, spec.region);
    let mut changes = Vec::new();
    let created = req.send().await;
    let result = match created {
        Err(e) if no_changes(e.message().unwrap_or_default()) => Ok(()),
        Err(e) => Err(format!("CreateChangeSet for {} failed: {}", stack.name, aws_reason(&e))),
        Ok(_) => {
            let mut delay = Duration::from_millis(100);
            loop {
                let cs = cfn.describe_change_set().stack_name(&stack.name).change_set_name(&name).send().await;
                match cs {
                    Err(e) => break Err(format!("DescribeChangeSet failed: {}", aws_reason(&e))),
                    Ok(cs) => match cs.status() {
                        Some(ChangeSetStatus::CreateComplete) => {
                            changes.extend(cs.changes().iter().filter_map(|c| c.resource_change()).map(|r| {
                                let action = r.action().map(|a| a.as_str()).unwrap_or("?");
                                let mark = match action {
                                    "Add" => "+",
                                    "Remove" => "-",
                                    _ => "~",
                                };
                                let replacement = match r.replacement().map(|x| x.as_str()) {
                                    Some("True") => ", replacement: yes",
                                    Some("Conditional") => ", replacement: maybe",
                                    _ => "",
                                };
                                format!(
                                    "{mark} {action:<6} {} ({}{replacement})",
                                    r.logical_resource_id().unwrap_or("?"),
                                    r.resource_type().unwrap_or("?")
                                )
                            }));
                            break Ok(());
                        }
                        Some(ChangeSetStatus::Failed) => {
                            let reason = cs.status_reason().unwrap_or_default();
                            break if no_changes(reason) {
                                Ok(())
                            } else {
                                Err(format!("change set failed: {reason}"))
                            };
                        }
                        _ => {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    },
                }
            }
        }
    };
    // Leave nothing behind: the change set, and the empty stack a CREATE change set made.
    let _ = cfn.delete_change_set().stack_name(&stack.name).change_set_name(&name).send().await;
    if !exists {
        let _ = cfn.delete_stack().stack_name(&stack.name).send().await;
    }
    result?;
    if let Some(deployed) = &deployed {
        let listed_resources = !changes.is_empty();
        let original = cfn
            .get_template()
            .stack_name(&stack.name)
            .template_stage(aws_sdk_cloudformation::types::TemplateStage::Original)
            .send()
            .await
            .map_err(|e| format!("GetTemplate of {} failed: {}", stack.name, aws_reason(&e)))?;
        let old_body = original.template_body().unwrap_or_default();
        if old_body != request.body {
            match Template::parse(old_body) {
                // Resources too when the change set listed none: a template change it did not show is still one.
                Ok(old) => {
                    let sections = request.template.section_changes(&old, !listed_resources);
                    if sections.is_empty() && !listed_resources {
                        changes.push("~ Template (formatting only: the same sections)".to_string());
                    }
                    changes.extend(sections);
                }
                Err(e) => changes.push(format!("~ Template (the deployed one cannot be read: {e})")),
            }
        }
        changes.extend(request.differences(deployed));
    }
    Ok(StackDiff { node: node.to_string(), target, exists, changes })
}

/// A Deploy step's node, ready to run one stack.
pub struct DeployStep {
    pub spec: DeploySpec,
    pub endpoint: Option<String>,
    pub sessions: Arc<Sessions>,
    /// The run's stage checks: a stage's templates are all checked before the first of its stacks deploys.
    pub stage_checks: Arc<StageChecks>,
}

#[async_trait::async_trait]
impl StepRunner for DeployStep {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        if let Stacks::Assembly { dir, stage } = &self.spec.stacks {
            return self.run_assembly(ctx, dir, stage).await;
        }
        let Some(part) = ctx.part.as_deref() else {
            // Targets listed from the environment or Parameter Store: known now, one node each.
            let mut problems = Vec::new();
            check_targets(&self.spec, &mut problems);
            if let Some((_, problem)) = problems.first() {
                return Err(StepError::invalid(problem.clone()));
            }
            let parts = listed_parts(&self.spec);
            ctx.events
                .log(Stream::Runner, format!("{} targets: {} nodes", targets(&self.spec).len(), parts.len()))
                .await;
            return Ok(NodeSuccess { expansion: parts, ..Default::default() });
        };
        let (spec, name) = split_part(&self.spec, part).map_err(StepError::invalid)?;
        let stack = stacks(&spec)
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| StepError::invalid(format!("no stack `{name}` in this stage")))?;
        let target = target(&spec, &ctx.pipeline, &ctx.step, self.endpoint.as_deref());
        let session = self.sessions.get(&target).await.map_err(|e| StepError::failed(e.to_string()))?;
        self.check_stage(ctx, &ctx.step, stacks(&self.spec), &target).await?;
        let deployment = StackDeployment {
            spec: &spec,
            stack,
            session: &session,
            cfn: session.cloudformation(),
            ctx,
            template_url: None,
        };
        deployment.run().await
    }
}

impl DeployStep {
    /// Every template of the stage (`stacks`, named `stage` in messages) read and checked before the first of its
    /// stacks deploys, once per run: a bad one fails every node of the stage, none of them deployed.
    /// Parameters only a deployed stack's previous values can fill are checked through `target` (DescribeStacks).
    async fn check_stage(
        &self,
        ctx: &NodeContext,
        stage: &str,
        stacks: &[StackSpec],
        target: &Target,
    ) -> Result<(), StepError> {
        let key = format!("{}@{}/{}", ctx.step, self.spec.account, self.spec.region);
        let node = match &ctx.part {
            Some(part) => format!("{}/{part}", ctx.step),
            None => ctx.step.clone(),
        };
        self.stage_checks
            .once(key, &node, || async {
                let mut read = StageTemplates::read(stacks, &ctx.workspace, false);
                if !read.needing_previous_values().is_empty() {
                    let session = self.sessions.get(target).await.map_err(|e| e.to_string())?;
                    read.check_previous_values(&self.spec, &session.cloudformation()).await;
                }
                read.verdict(stage)
            })
            .await
            .map_err(StepError::invalid)
    }

    /// A stage of a cloud assembly: the step's own node expands into the stacks; a stack's node deploys it
    /// through the roles its manifest names, from its published template.
    async fn run_assembly(&self, ctx: &NodeContext, dir: &str, stage: &str) -> Result<NodeSuccess, StepError> {
        let root = ctx.workspace.join(dir);
        let stage = assembly::load_stage(&root, stage).map_err(StepError::invalid)?;
        for w in &stage.warnings {
            ctx.events.log(Stream::Runner, format!("warning: {w}")).await;
        }
        let all: Vec<(DeploySpec, StackSpec)> = stage.stacks.iter().map(|a| assembly_stack(&self.spec, a)).collect();
        if let Some((spec, _)) = all.first() {
            let stacks: Vec<StackSpec> = all.iter().map(|(_, s)| s.clone()).collect();
            let target = target(spec, &ctx.pipeline, &ctx.step, self.endpoint.as_deref());
            self.check_stage(ctx, &stage.name, &stacks, &target).await?;
        }
        let Some(name) = ctx.part.as_deref() else {
            let parts = assembly_parts(&self.spec, &stage).map_err(StepError::invalid)?;
            let nested = if stage.nested.is_empty() {
                String::new()
            } else {
                format!(", with those of its nested stages {}", stage.nested.join(", "))
            };
            ctx.events
                .log(
                    Stream::Runner,
                    format!("stage {} of {} has {} stacks{nested}", stage.name, root.display(), parts.len()),
                )
                .await;
            return Ok(NodeSuccess { expansion: parts, ..Default::default() });
        };
        let artifact = stage.stacks.iter().find(|s| s.stack_name == name).ok_or_else(|| {
            StepError::invalid(format!("no stack `{name}` in stage {} of {}", stage.name, root.display()))
        })?;
        assembly_parts(&self.spec, &stage).map_err(StepError::invalid)?;
        let (spec, stack) = assembly_stack(&self.spec, artifact);
        let target = target(&spec, &ctx.pipeline, &ctx.step, self.endpoint.as_deref());
        let session = self.sessions.get(&target).await.map_err(|e| StepError::failed(e.to_string()))?;
        check_bootstrap_version(&session, artifact).await?;
        let template_url = match &artifact.template_object_url {
            Some(url) => Some(published_template(&session, artifact, url).await?),
            None => None,
        };
        let deployment = StackDeployment {
            spec: &spec,
            stack: &stack,
            session: &session,
            cfn: session.cloudformation(),
            ctx,
            template_url,
        };
        deployment.run().await
    }
}

/// The Deploy as one assembly stack sees it (the manifest's roles unless the step names its own) and the stack.
pub fn assembly_stack(spec: &DeploySpec, artifact: &assembly::StackArtifact) -> (DeploySpec, StackSpec) {
    let mut spec = spec.clone();
    if spec.role == DeployRole::Bootstrap {
        if let Some(role) = &artifact.assume_role_arn {
            spec.role = DeployRole::Arn(role.clone());
        }
    }
    if spec.execution_role.is_none() {
        spec.execution_role = artifact.execution_role_arn.clone();
    }
    let stack = StackSpec {
        name: artifact.stack_name.clone(),
        template: artifact.template_file.display().to_string(),
        parameters: artifact.parameters.clone(),
        tags: artifact.tags.clone(),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        termination_protection: artifact.termination_protection,
        notification_arns: artifact.notification_arns.clone(),
        depends_on: artifact.depends_on.clone(),
    };
    (spec, stack)
}

/// For `plan --diff`: the Deploy and stack of node part `part`, reading the assembly in `workspace`.
pub fn stack_for_diff(
    spec: &DeploySpec,
    part: &str,
    workspace: &std::path::Path,
) -> Result<(DeploySpec, StackSpec), String> {
    match &spec.stacks {
        Stacks::Listed(_) => {
            let (spec, name) = split_part(spec, part)?;
            let stack =
                stacks(&spec).iter().find(|s| s.name == name).cloned().ok_or_else(|| format!("no stack `{name}`"))?;
            Ok((spec, stack))
        }
        Stacks::Assembly { dir, stage } => {
            let stage = assembly::load_stage(&workspace.join(dir), stage)?;
            let artifact = stage
                .stacks
                .iter()
                .find(|s| s.stack_name == part)
                .ok_or_else(|| format!("no stack `{part}` in stage {}", stage.name))?;
            Ok(assembly_stack(spec, artifact))
        }
    }
}

/// For `plan --diff` of a Deploy whose stacks are known only when it runs: the stacks of its stage in the cloud
/// assembly a previous synth left at `dir` (relative to `workspace`), per target, each with the spec a run would
/// deploy it with, and where the assembly is. `Err`: no assembly there yet, or a stage or target it does not hold.
pub fn assembly_stacks_for_diff(
    spec: &DeploySpec,
    workspace: &std::path::Path,
) -> Result<(std::path::PathBuf, Vec<(DeploySpec, StackSpec)>), String> {
    let Stacks::Assembly { dir, stage } = &spec.stacks else {
        return Err("its stacks are listed, not read from a cloud assembly".to_string());
    };
    let root = workspace.join(dir);
    let stage = assembly::load_stage(&root, stage)?;
    let mut stacks = Vec::new();
    for target in targets(spec) {
        let spec = for_target(spec, &target);
        assembly_parts(&spec, &stage)?;
        stacks.extend(stage.stacks.iter().map(|artifact| assembly_stack(&spec, artifact)));
    }
    Ok((root, stacks))
}

/// The stack's `requiresBootstrapStackVersion` against the account's bootstrap version parameter in SSM.
async fn check_bootstrap_version(session: &Session, stack: &assembly::StackArtifact) -> Result<(), StepError> {
    let (Some(required), Some(parameter)) = (stack.requires_bootstrap_version, &stack.bootstrap_version_parameter)
    else {
        return Ok(());
    };
    let hint = format!(
        "bootstrap it: `runner bootstrap aws://{a}/{r} --trust <deployment account>` (or `cdk bootstrap`)",
        a = stack.account,
        r = stack.region
    );
    let ssm = aws_sdk_ssm::Client::new(&session.config);
    let out = ssm.get_parameter().name(parameter).send().await.map_err(|e| {
        if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) {
            StepError::failed(format!(
                "account {} is not bootstrapped in {}: SSM parameter {parameter} does not exist; {hint}",
                stack.account, stack.region
            ))
        } else {
            StepError::failed(format!(
                "cannot read the bootstrap version {parameter} of account {}: {}",
                stack.account,
                aws_reason(&e)
            ))
        }
    })?;
    let value = out.parameter().and_then(|p| p.value()).unwrap_or_default();
    let version: u64 = value.trim().parse().map_err(|_| {
        StepError::failed(format!(
            "the bootstrap version {parameter} of account {} is `{value}`, not a number",
            stack.account
        ))
    })?;
    if version < required {
        return Err(StepError::failed(format!(
            "stack {} needs bootstrap version {required}, but account {} has version {version} ({parameter}); {hint}",
            stack.stack_name, stack.account
        )));
    }
    Ok(())
}

/// The template's URL for CloudFormation (path style under a custom endpoint), once it is seen published.
async fn published_template(
    session: &Session,
    stack: &assembly::StackArtifact,
    url: &str,
) -> Result<String, StepError> {
    let Some((bucket, key)) = url.strip_prefix("s3://").and_then(|r| r.split_once('/')) else {
        return Err(StepError::invalid(format!(
            "stack {} has a stackTemplateAssetObjectUrl that is not s3://BUCKET/KEY: {url}",
            stack.stack_name
        )));
    };
    if let Err(e) = session.s3().head_object().bucket(bucket).key(key).send().await {
        if e.as_service_error().is_some_and(|s| s.is_not_found()) {
            return Err(StepError::failed(format!(
                "the template of stack {} is not published at {url}: publish the stage's assets first (a Publish \
                 step with `assets: Assembly(...)` that this Deploy needs)",
                stack.stack_name
            )));
        }
        return Err(StepError::failed(format!(
            "cannot check the published template of stack {} at {url}: {}",
            stack.stack_name,
            aws_reason(&e)
        )));
    }
    Ok(template_url(session.endpoint().as_deref(), bucket, key, &stack.region))
}

/// Where a template goes in the request.
enum TemplateSource {
    Body(String),
    Url(String),
}

/// How waiting for a stack ended.
struct StackEnd {
    status: StackStatus,
    failures: Vec<String>,
}

/// One stack being deployed by one node.
struct StackDeployment<'a> {
    spec: &'a DeploySpec,
    stack: &'a StackSpec,
    session: &'a Session,
    cfn: Cfn,
    ctx: &'a NodeContext,
    /// The template's URL when it is already in S3 (an assembly's published template).
    template_url: Option<String>,
}

impl StackDeployment<'_> {
    fn name(&self) -> &str {
        &self.stack.name
    }

    async fn log(&self, line: impl Into<String>) {
        self.ctx.events.log(Stream::Runner, line).await;
    }

    async fn run(&self) -> Result<NodeSuccess, StepError> {
        let path = self.ctx.workspace.join(&self.stack.template);
        let body = std::fs::read_to_string(&path).map_err(|e| {
            StepError::invalid(format!("cannot read template {} of stack {}: {e}", path.display(), self.name()))
        })?;
        let existing = self.prepare().await?;
        let request = StackRequest::new(self.spec, self.stack, body, existing.as_ref()).map_err(StepError::invalid)?;
        for (name, value) in &request.parameters {
            if let ParameterValue::Previous(v) = value {
                let shown = if request.no_echo.contains(name) { "****" } else { v.as_str() };
                self.log(format!("parameter {name} keeps its deployed value ({shown}): not given")).await;
            }
        }
        let resources = Some(request.template.resource_count());
        if let Some(stack) = existing.as_ref().filter(|_| !self.ctx.force) {
            if self.matches_deployed(stack, &request).await? {
                self.log(format!(
                    "stack {} already runs this template with these parameters, tags, capabilities, role and \
                     termination protection: nothing to do (no change set)",
                    self.name()
                ))
                .await;
                return Ok(self.success(Status::UpToDate, stack).await);
            }
        }
        let template = match &self.template_url {
            Some(url) => TemplateSource::Url(url.clone()),
            None => self.template_source(request.body.clone()).await?,
        };
        let status = existing.as_ref().and_then(|s| s.stack_status().cloned());
        let mut outcome = match status {
            None => self.create(&request, &template, resources).await?,
            Some(_) => match self.spec.method {
                DeployMethod::ChangeSet => self.update_by_change_set(&request, &template, resources).await?,
                DeployMethod::Direct => self.update_directly(&request, &template, resources).await?,
            },
        };
        let stack = self
            .describe()
            .await?
            .ok_or_else(|| StepError::failed(format!("stack {} is gone after its deployment", self.name())))?;
        if stack.enable_termination_protection().unwrap_or(false) != request.termination_protection && status.is_some()
        {
            self.log(format!(
                "turning termination protection {} for stack {}",
                if request.termination_protection { "on" } else { "off" },
                self.name()
            ))
            .await;
            self.call(
                self.cfn
                    .update_termination_protection()
                    .stack_name(self.name())
                    .enable_termination_protection(request.termination_protection)
                    .send(),
                "UpdateTerminationProtection",
            )
            .await?;
            outcome = Status::Succeeded;
        }
        Ok(self.success(outcome, &stack).await)
    }

    /// The node's result: the stack's outputs become the node's.
    async fn success(&self, status: Status, stack: &Stack) -> NodeSuccess {
        let outputs: Outputs = stack
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value().unwrap_or_default().to_string())))
            .collect();
        for (k, v) in &outputs {
            self.log(format!("output {k} = {v}")).await;
        }
        NodeSuccess { status: Some(status), outputs, ..Default::default() }
    }

    /// Whether the stack, settled, already runs exactly this request: nothing differs (parameters given, kept or
    /// defaulted; tags; capabilities; notification ARNs; role; termination protection) and its template is this
    /// one (GetTemplate, as submitted). Then the change set round trip is skipped; anything not proven equal goes
    /// through a change set.
    async fn matches_deployed(&self, stack: &Stack, request: &StackRequest) -> Result<bool, StepError> {
        if !settled(stack) {
            return Ok(false);
        }
        if request.template.value.get("Transform").is_some() {
            self.log(format!(
                "stack {}: its template has a Transform, whose output cannot be compared without CloudFormation",
                self.name()
            ))
            .await;
            return Ok(false);
        }
        let differences = request.differences(stack);
        if !differences.is_empty() {
            self.log(format!("stack {} differs from this request: {}", self.name(), differences.join("; "))).await;
            return Ok(false);
        }
        let template = self
            .call(
                self.cfn
                    .get_template()
                    .stack_name(self.name())
                    .template_stage(aws_sdk_cloudformation::types::TemplateStage::Original)
                    .send(),
                "GetTemplate",
            )
            .await?;
        Ok(template.template_body() == Some(request.body.as_str()))
    }

    /// The stack's current status after clearing states that block a deployment; `None`: it must be created.
    /// Change sets runner made and no longer needs (an earlier run stopped between creating and executing one,
    /// e.g. by SIGKILL) are deleted on the way.
    async fn prepare(&self) -> Result<Option<Stack>, StepError> {
        let Some(mut stack) = self.describe().await? else { return Ok(None) };
        let mut status = stack.stack_status().cloned().unwrap_or(StackStatus::CreateComplete);
        if status.as_str().ends_with("_IN_PROGRESS") && status != StackStatus::ReviewInProgress {
            self.log(format!("stack {} is {}: waiting for it to settle", self.name(), status.as_str())).await;
            status = self.wait(SystemTime::now(), 0).await?.status;
            match self.describe().await? {
                Some(settled) => stack = settled,
                None => return Ok(None),
            }
        }
        match status {
            StackStatus::RollbackComplete | StackStatus::ReviewInProgress => {
                self.log(format!(
                    "stack {} is {} (it never got created): deleting it to create it again",
                    self.name(),
                    status.as_str()
                ))
                .await;
                let log = AttemptLog::default();
                self.call_logged(
                    self.cfn
                        .delete_stack()
                        .stack_name(self.name())
                        .client_request_token(self.token("delete"))
                        .customize()
                        .interceptor(log.clone())
                        .send(),
                    "DeleteStack",
                    &log,
                )
                .await?;
                let end = self.wait(SystemTime::now(), 0).await?;
                if end.status != StackStatus::DeleteComplete {
                    return Err(self.failure("delete", &end));
                }
                Ok(None)
            }
            StackStatus::DeleteComplete => Ok(None),
            s if s.as_str().ends_with("_FAILED") && s != StackStatus::UpdateRollbackFailed => {
                Err(StepError::failed(format!(
                    "stack {} is in {}: it needs attention in the CloudFormation console before it can be deployed",
                    self.name(),
                    s.as_str()
                )))
            }
            _ => {
                self.remove_orphaned_change_sets().await;
                Ok(Some(stack))
            }
        }
    }

    /// Delete the change sets of the stack runner created and no longer needs: every `runner-<ms>-<attempt>` one
    /// (a deployment executes or deletes its change set before it ends, and one run of a pipeline at a time
    /// deploys its stacks, so one still there was left by a run that was stopped), and `plan --diff` previews
    /// (`runner-diff-<ms>`) older than [`ORPHANED_DIFF_AFTER`]. Others' change sets are left alone. Best effort:
    /// a listing or deletion that fails is logged and the deployment goes on.
    async fn remove_orphaned_change_sets(&self) {
        let mut token = None;
        let mut orphans = Vec::new();
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        loop {
            let page =
                match self.cfn.list_change_sets().stack_name(self.name()).set_next_token(token.take()).send().await {
                    Ok(page) => page,
                    Err(e) => {
                        self.log(format!("cannot list the change sets of stack {}: {}", self.name(), aws_reason(&e)))
                            .await;
                        return;
                    }
                };
            for cs in page.summaries() {
                let Some(name) = cs.change_set_name() else { continue };
                if orphaned_change_set(name, now) {
                    let status = cs.status().map(|s| s.as_str()).unwrap_or("?").to_string();
                    orphans.push((name.to_string(), status));
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        for (name, status) in orphans {
            match self.cfn.delete_change_set().stack_name(self.name()).change_set_name(&name).send().await {
                Ok(_) => self.log(format!("deleted change set {name} ({status}), left by an earlier run")).await,
                Err(e) => {
                    self.log(format!("cannot delete the change set {name} left by an earlier run: {}", aws_reason(&e)))
                        .await
                }
            }
        }
    }

    /// A ClientRequestToken for one call of this attempt of this node: the same for the SDK's retries of that
    /// request (so CloudFormation does not act twice), another for the next attempt. `runner-<hash>`, within
    /// CloudFormation's `[a-zA-Z][-a-zA-Z0-9]*`, 128 characters.
    fn token(&self, call: &str) -> String {
        let seed = format!("{}\n{}\n{}\n{call}", self.ctx.run_id, self.ctx.node, self.ctx.attempt);
        let hash = format!("{:x}", Sha256::digest(seed.as_bytes()));
        format!("runner-{call}-{}-{}", self.ctx.attempt, &hash[..32])
    }

    async fn create(
        &self,
        request: &StackRequest,
        template: &TemplateSource,
        resources: Option<u64>,
    ) -> Result<Status, StepError> {
        self.log(format!("creating stack {}", self.name())).await;
        let started = SystemTime::now();
        let log = AttemptLog::default();
        let req = stack_request!(self.cfn.create_stack(), self.name(), request, template)
            .enable_termination_protection(request.termination_protection)
            .on_failure(OnFailure::Rollback)
            .client_request_token(self.token("create"));
        self.call_logged(req.customize().interceptor(log.clone()).send(), "CreateStack", &log).await?;
        let end = self.wait(started, resources.unwrap_or(0)).await?;
        if end.status == StackStatus::CreateComplete {
            Ok(Status::Succeeded)
        } else {
            Err(self.failure("create", &end))
        }
    }

    async fn update_by_change_set(
        &self,
        request: &StackRequest,
        template: &TemplateSource,
        resources: Option<u64>,
    ) -> Result<Status, StepError> {
        let millis = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
        let change_set = format!("{CHANGE_SET_PREFIX}{millis}-{}", self.ctx.attempt);
        let req = stack_request!(self.cfn.create_change_set(), self.name(), request, template)
            .change_set_name(&change_set)
            .change_set_type(ChangeSetType::Update);
        if let Err(e) = req.send().await {
            if no_changes(e.message().unwrap_or_default()) {
                self.log(format!("stack {} is up to date: nothing to change", self.name())).await;
                return Ok(Status::Unchanged);
            }
            return Err(StepError::failed(format!(
                "CreateChangeSet for stack {} failed: {}",
                self.name(),
                aws_reason(&e)
            )));
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let cs = self
                .call(
                    self.cfn.describe_change_set().stack_name(self.name()).change_set_name(&change_set).send(),
                    "DescribeChangeSet",
                )
                .await?;
            match cs.status() {
                Some(ChangeSetStatus::CreateComplete) => {
                    for c in cs.changes() {
                        if let Some(r) = c.resource_change() {
                            let replacement = r.replacement().map(|x| x.as_str()).unwrap_or("-");
                            self.log(format!(
                                "change: {} {} ({}) replacement: {replacement}",
                                r.action().map(|a| a.as_str()).unwrap_or("?"),
                                r.logical_resource_id().unwrap_or("?"),
                                r.resource_type().unwrap_or("?"),
                            ))
                            .await;
                        }
                    }
                    break;
                }
                Some(ChangeSetStatus::Failed) => {
                    let reason = cs.status_reason().unwrap_or_default().to_string();
                    let _ =
                        self.cfn.delete_change_set().stack_name(self.name()).change_set_name(&change_set).send().await;
                    if no_changes(&reason) {
                        self.log(format!(
                            "stack {} is up to date: the change set was empty and is deleted",
                            self.name()
                        ))
                        .await;
                        return Ok(Status::Unchanged);
                    }
                    return Err(StepError::failed(format!("change set for stack {} failed: {reason}", self.name())));
                }
                _ => {
                    pause(&self.ctx.stop, delay).await?;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        let started = SystemTime::now();
        self.log(format!("executing change set {change_set}")).await;
        let log = AttemptLog::default();
        self.call_logged(
            self.cfn
                .execute_change_set()
                .stack_name(self.name())
                .change_set_name(&change_set)
                .client_request_token(self.token("execute"))
                .customize()
                .interceptor(log.clone())
                .send(),
            "ExecuteChangeSet",
            &log,
        )
        .await?;
        let end = self.wait(started, resources.unwrap_or(0)).await?;
        if end.status == StackStatus::UpdateComplete {
            Ok(Status::Succeeded)
        } else {
            Err(self.failure("update", &end))
        }
    }

    async fn update_directly(
        &self,
        request: &StackRequest,
        template: &TemplateSource,
        resources: Option<u64>,
    ) -> Result<Status, StepError> {
        let started = SystemTime::now();
        let log = AttemptLog::default();
        let req = stack_request!(self.cfn.update_stack(), self.name(), request, template)
            .client_request_token(self.token("update"));
        if let Err(e) = req.customize().interceptor(log.clone()).send().await {
            if no_changes(e.message().unwrap_or_default()) {
                self.log(format!("stack {} is up to date: no updates are to be performed", self.name())).await;
                return Ok(Status::Unchanged);
            }
            return Err(StepError::failed(format!(
                "UpdateStack of {} failed: {}",
                self.name(),
                log.explain(aws_reason(&e))
            )));
        }
        let end = self.wait(started, resources.unwrap_or(0)).await?;
        if end.status == StackStatus::UpdateComplete {
            Ok(Status::Succeeded)
        } else {
            Err(self.failure("update", &end))
        }
    }

    /// Poll the stack until it leaves `*_IN_PROGRESS`, streaming its events into the log and counting its settled
    /// resources for the progress line. The count comes from the stack's resources (ListStackResources), not
    /// from events: it moves wherever the resources do, also where no per-resource events come (an emulator).
    /// `resources` is the template's count, the total until more resources than that are listed. Where the
    /// resources cannot be listed (not allowed), the resources seen complete in events are counted.
    async fn wait(&self, since: SystemTime, resources: u64) -> Result<StackEnd, StepError> {
        let mut seen = HashSet::new();
        // Resources seen complete in events: the count when the stack's resources cannot be listed.
        let mut completed = HashSet::new();
        let mut failures = Vec::new();
        let mut delay = Duration::from_millis(100);
        let since = since - Duration::from_secs(5);
        loop {
            let events = self.cfn.describe_stack_events().stack_name(self.name()).send().await;
            if let Ok(events) = events {
                let mut fresh: Vec<_> = events
                    .stack_events()
                    .iter()
                    .filter(|e| e.timestamp().and_then(|t| SystemTime::try_from(*t).ok()).is_none_or(|t| t >= since))
                    .filter(|e| e.event_id().is_some_and(|id| seen.insert(id.to_string())))
                    .collect();
                fresh.reverse();
                for e in fresh {
                    let resource = e.logical_resource_id().unwrap_or("?");
                    let status = e.resource_status().map(|s| s.as_str()).unwrap_or("?");
                    let reason = e.resource_status_reason().unwrap_or("");
                    self.log(format!("{resource} {status} {reason}").trim_end().to_string()).await;
                    if resource != self.name() && status.ends_with("_COMPLETE") {
                        completed.insert(resource.to_string());
                    }
                    if status.ends_with("_FAILED") && !reason.is_empty() {
                        failures.push(format!("{resource}: {reason}"));
                    }
                }
            }
            let settled = match self.describe().await? {
                None => Some(StackEnd { status: StackStatus::DeleteComplete, failures: std::mem::take(&mut failures) }),
                Some(stack) => {
                    let status = stack.stack_status().cloned().unwrap_or(StackStatus::CreateComplete);
                    if !status.as_str().ends_with("_IN_PROGRESS") || status == StackStatus::ReviewInProgress {
                        if let Some(reason) = stack.stack_status_reason() {
                            if status.as_str().contains("FAILED") || status.as_str().contains("ROLLBACK") {
                                failures.push(format!("{}: {reason}", self.name()));
                            }
                        }
                        Some(StackEnd { status, failures: std::mem::take(&mut failures) })
                    } else {
                        None
                    }
                }
            };
            if resources > 0 {
                let (done, listed) = self.resource_progress().await.unwrap_or((completed.len() as u64, 0));
                self.ctx.events.progress(done, Some(listed.max(resources)), "resources", "deploying").await;
            }
            if let Some(end) = settled {
                return Ok(end);
            }
            pause(&self.ctx.stop, delay).await?;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// (settled, listed) resources of the stack: every page of ListStackResources, a resource settled when its
    /// status ends in `_COMPLETE` (CREATE_COMPLETE, UPDATE_COMPLETE, IMPORT_COMPLETE, ...). `None` when the stack
    /// cannot be listed (gone, or not allowed): the progress line then stays as it was.
    async fn resource_progress(&self) -> Option<(u64, u64)> {
        let (mut done, mut listed) = (0, 0);
        let mut token = None;
        loop {
            let page = self
                .cfn
                .list_stack_resources()
                .stack_name(self.name())
                .set_next_token(token.take())
                .send()
                .await
                .ok()?;
            for r in page.stack_resource_summaries() {
                listed += 1;
                if r.resource_status().is_some_and(|s| s.as_str().ends_with("_COMPLETE")) {
                    done += 1;
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Some((done, listed)),
            }
        }
    }

    fn failure(&self, what: &str, end: &StackEnd) -> StepError {
        let reasons =
            if end.failures.is_empty() { "CloudFormation gave no reason".to_string() } else { end.failures.join("; ") };
        let rollback = match end.status.as_str() {
            s if s.ends_with("ROLLBACK_COMPLETE") => "; the stack was rolled back",
            s if s.ends_with("ROLLBACK_FAILED") => "; the rollback failed too: the stack needs attention",
            _ => "",
        };
        StepError::failed(format!(
            "cannot {what} stack {}: it ended in {}: {reasons}{rollback}",
            self.name(),
            end.status.as_str()
        ))
    }

    async fn describe(&self) -> Result<Option<Stack>, StepError> {
        match self.cfn.describe_stacks().stack_name(self.name()).send().await {
            Ok(out) => {
                Ok(out.stacks().first().cloned().filter(|s| s.stack_status() != Some(&StackStatus::DeleteComplete)))
            }
            Err(e)
                if e.code() == Some("ValidationError")
                    && e.message().unwrap_or_default().contains("does not exist") =>
            {
                Ok(None)
            }
            Err(e) => Err(StepError::failed(format!(
                "DescribeStacks of {} in account {} failed: {}",
                self.name(),
                self.spec.account,
                aws_reason(&e)
            ))),
        }
    }

    /// A call that is not idempotent (sent with a ClientRequestToken, its attempts logged): its failure quotes the
    /// first attempt's error.
    async fn call_logged<T, E>(
        &self,
        fut: impl std::future::Future<Output = Result<T, aws_sdk_cloudformation::error::SdkError<E, HttpResponse>>>,
        action: &str,
        log: &AttemptLog,
    ) -> Result<T, StepError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        fut.await.map_err(|e| {
            StepError::failed(format!("{action} for stack {} failed: {}", self.name(), log.explain(aws_reason(&e))))
        })
    }

    async fn call<T, E>(
        &self,
        fut: impl std::future::Future<Output = Result<T, aws_sdk_cloudformation::error::SdkError<E, HttpResponse>>>,
        action: &str,
    ) -> Result<T, StepError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        fut.await
            .map_err(|e| StepError::failed(format!("{action} for stack {} failed: {}", self.name(), aws_reason(&e))))
    }

    /// The template in the request body, or uploaded to the assets bucket when over the body limit.
    async fn template_source(&self, body: String) -> Result<TemplateSource, StepError> {
        if body.len() <= TEMPLATE_BODY_LIMIT {
            return Ok(TemplateSource::Body(body));
        }
        let bucket = assets_bucket(self.spec);
        let ext = if body.trim_start().starts_with('{') { "json" } else { "yaml" };
        let key = format!("runner/templates/{:x}.{ext}", Sha256::digest(body.as_bytes()));
        self.log(format!(
            "template is {} bytes (over the {TEMPLATE_BODY_LIMIT}-byte limit): uploading it to s3://{bucket}/{key}",
            body.len()
        ))
        .await;
        self.session.s3().put_object().bucket(&bucket).key(&key).body(body.into_bytes().into()).send().await.map_err(
            |e| {
                StepError::failed(format!(
                    "cannot upload the template of stack {} to s3://{bucket}/{key}: {}",
                    self.name(),
                    aws_reason(&e)
                ))
            },
        )?;
        Ok(TemplateSource::Url(template_url(self.session.endpoint().as_deref(), &bucket, &key, &self.spec.region)))
    }
}

/// Where CloudFormation reads an uploaded template: path style under a custom endpoint.
pub fn template_url(endpoint: Option<&str>, bucket: &str, key: &str, region: &str) -> String {
    match endpoint {
        Some(e) => format!("{}/{bucket}/{key}", e.trim_end_matches('/')),
        None => format!("https://{bucket}.{}/{key}", crate::aws::endpoint_host("s3", region)),
    }
}

/// The names of the change sets a deployment makes: `runner-<ms>-<attempt>`.
const CHANGE_SET_PREFIX: &str = "runner-";
/// The names of the change sets `plan --diff` makes: `runner-diff-<ms>`.
const DIFF_CHANGE_SET_PREFIX: &str = "runner-diff-";
/// A `plan --diff` preview lives for seconds; one older than this was left by a preview that was stopped.
pub const ORPHANED_DIFF_AFTER: Duration = Duration::from_secs(600);

/// Whether a change set named `name` is one runner made and no longer needs, `now` since the Unix epoch.
fn orphaned_change_set(name: &str, now: Duration) -> bool {
    if let Some(millis) = name.strip_prefix(DIFF_CHANGE_SET_PREFIX) {
        return millis
            .parse::<u64>()
            .is_ok_and(|ms| now.saturating_sub(Duration::from_millis(ms)) > ORPHANED_DIFF_AFTER);
    }
    let Some(rest) = name.strip_prefix(CHANGE_SET_PREFIX) else { return false };
    let mut parts = rest.split('-');
    let numbers = parts.by_ref().take(2).filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())).count();
    numbers == 2 && parts.next().is_none()
}

/// AWS's ways of saying a change would change nothing.
fn no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

/// Wait, unless the node is told to stop.
async fn pause(stop: &StopSignal, delay: Duration) -> Result<(), StepError> {
    let mut stop = stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        reason = stop.stronger_than(None) => Err(StepError::stopped(reason, "stopped while waiting for CloudFormation")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Deploy of no stacks into account 111111111111 of `region`, through the bootstrap roles.
    fn spec_in(region: &str) -> DeploySpec {
        DeploySpec {
            account: "111111111111".into(),
            accounts: Vec::new(),
            region: region.into(),
            regions: Vec::new(),
            role: DeployRole::Bootstrap,
            qualifier: None,
            external_id: None,
            execution_role: None,
            assets_bucket: None,
            method: DeployMethod::ChangeSet,
            previous_parameters: true,
            stacks: Stacks::Listed(vec![]),
        }
    }

    #[test]
    fn the_request_is_compared_whole_with_the_deployed_stack() {
        use aws_sdk_cloudformation::types::{Capability, Parameter as P, Tag as T};
        let spec = spec_in("us-east-1");
        let body = "Parameters:\n  Env:\n    Type: String\n    Default: dev\n  Key:\n    Type: String\n    NoEcho: true\nResources: {}\n";
        let deployed = Stack::builder()
            .stack_name("S")
            .creation_time(aws_smithy_types::DateTime::from_secs(0))
            .stack_status(StackStatus::UpdateComplete)
            .parameters(P::builder().parameter_key("Env").parameter_value("staging").build())
            .parameters(P::builder().parameter_key("Key").parameter_value("****").build())
            .tags(T::builder().key("team").value("data").build())
            .capabilities(Capability::CapabilityIam)
            .enable_termination_protection(false)
            .build();
        let stack = StackSpec { name: "S".into(), template: "s.yaml".into(), ..Default::default() };
        // Nothing given: Env and Key keep their values; the tag is removed, the capability dropped.
        let request = StackRequest::new(&spec, &stack, body.into(), Some(&deployed)).unwrap();
        assert_eq!(request.parameters["Env"], ParameterValue::Previous("staging".into()));
        assert_eq!(request.differences(&deployed), ["- Tag team", "~ Capabilities: CAPABILITY_IAM -> none"]);
        // Given: a NoEcho value cannot be compared; termination protection and a role count.
        let stack = StackSpec {
            parameters: [("Key".to_string(), "k".to_string())].into(),
            tags: [("team".to_string(), "data".to_string())].into(),
            capabilities: vec!["CAPABILITY_IAM".into()],
            termination_protection: true,
            ..stack
        };
        let spec = DeploySpec { execution_role: Some("arn:aws:iam::111111111111:role/x".into()), ..spec };
        let request = StackRequest::new(&spec, &stack, body.into(), Some(&deployed)).unwrap();
        assert_eq!(
            request.differences(&deployed),
            [
                "? Parameter Key: NoEcho, its deployed value cannot be compared",
                "~ Execution role: none -> arn:aws:iam::111111111111:role/x",
                "~ Termination protection: off -> on"
            ]
        );
        // A new stack: a parameter with no Default must be given.
        let e =
            StackRequest::new(&spec, &StackSpec { parameters: Default::default(), ..stack.clone() }, body.into(), None)
                .unwrap_err();
        assert!(e.contains("parameter `Key`") && e.contains("the stack is new"), "{e}");
        let e = StackRequest::new(
            &spec,
            &StackSpec { parameters: [("Nope".to_string(), "1".to_string())].into(), ..stack },
            body.into(),
            None,
        )
        .unwrap_err();
        assert!(
            e.contains("parameter `Nope` is given, but template s.yaml does not declare it (it declares Env, Key)"),
            "{e}"
        );
    }

    #[test]
    fn only_change_sets_runner_made_and_left_behind_are_orphans() {
        let now = Duration::from_millis(1_800_000_000_000);
        assert!(orphaned_change_set("runner-1799999999000-1", now));
        assert!(orphaned_change_set("runner-1799999999000-12", now));
        assert!(!orphaned_change_set("runner-release", now), "someone else's name");
        assert!(!orphaned_change_set("runner-1-2-3", now));
        assert!(!orphaned_change_set("mine", now));
        assert!(!orphaned_change_set("runner-diff-1799999999000", now), "a preview in flight");
        assert!(orphaned_change_set("runner-diff-1799000000000", now), "a preview stopped long ago");
    }

    #[test]
    fn bootstrap_role_and_bucket_follow_cdk_names() {
        let spec = spec_in("eu-west-1");
        assert_eq!(
            role_arn(&spec).unwrap(),
            "arn:aws:iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-eu-west-1"
        );
        assert_eq!(assets_bucket(&spec), "cdk-hnb659fds-assets-111111111111-eu-west-1");
        assert_eq!(template_url(Some("http://localhost:5000/"), "b", "k.json", "x"), "http://localhost:5000/b/k.json");
        assert_eq!(template_url(None, "b", "k.json", "cn-north-1"), "https://b.s3.cn-north-1.amazonaws.com.cn/k.json");
        let china = DeploySpec { region: "cn-north-1".into(), ..spec.clone() };
        assert_eq!(
            role_arn(&china).unwrap(),
            "arn:aws-cn:iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-cn-north-1"
        );
        assert_eq!(session_name("prod", "deploy prod"), "runner-prod-deploy-prod");
    }
}
