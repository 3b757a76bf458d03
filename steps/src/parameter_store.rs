//! SSM Parameter Store, both ways:
//!
//! - reading: every `${ssm:NAME}` of a pipeline is read once when the run starts, with the caller's credentials
//!   (the deployment account, where the original data lake keeps each environment's configuration), ten names per
//!   GetParameters call, SecureString values decrypted and handed back as secrets to mask;
//! - writing: the `ParameterStore` step kind writes chosen values (a stage's outputs, usually) to parameters named
//!   by a prefix, in the deployment account or a target account, overwriting only what differs, so that a re-run
//!   with the same values writes nothing and says so (the original pipeline's "sync parameters with outputs").
//!
//! AWS: GetParameters <https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParameters.html>,
//! PutParameter <https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_PutParameter.html>.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_ssm::types::ParameterType;
use engine::event::{Status, Stream};
use engine::model::{DeployRole, ParameterStoreSpec};
use engine::step::{NodeContext, NodeSuccess, Outputs, StepError, StepRunner};
use engine::subst::{ParameterRef, StoreValues};

use crate::aws::{aws_reason, Sessions, Target, DEFAULT_QUALIFIER};

/// GetParameters takes at most this many names.
const NAMES_PER_CALL: usize = 10;

/// What reading a run's `${ssm:...}` references found.
#[derive(Debug, Default)]
pub struct Read {
    pub values: StoreValues,
    /// The values of SecureString parameters: masked wherever the run writes or shows text.
    pub secrets: Vec<String>,
}

/// Why a reference could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// The parameter that does not exist; `None`: the store could not be read at all.
    pub missing: Option<ParameterRef>,
    pub message: String,
}

/// Read every reference, with the caller's credentials; every parameter that does not exist is an error (all of
/// them named), as is a store that cannot be read.
pub async fn read_references(
    refs: &[ParameterRef],
    sessions: &Sessions,
    endpoint: Option<&str>,
) -> Result<Read, Vec<ReadError>> {
    let mut by_region: BTreeMap<Option<&str>, Vec<&ParameterRef>> = BTreeMap::new();
    for r in refs {
        by_region.entry(r.region.as_deref()).or_default().push(r);
    }
    let mut read = Read::default();
    let mut errors = Vec::new();
    for (region, refs) in by_region {
        let config = sessions.caller(region, endpoint).await;
        let where_ = format!(
            "in the Parameter Store of the deployment account ({})",
            config.region().map_or("the caller's region".to_string(), |r| r.to_string())
        );
        let ssm = aws_sdk_ssm::Client::new(&config);
        for chunk in refs.chunks(NAMES_PER_CALL) {
            let names: Vec<String> = chunk.iter().map(|r| r.name.clone()).collect();
            let out = match ssm.get_parameters().set_names(Some(names)).with_decryption(true).send().await {
                Ok(out) => out,
                Err(e) => {
                    errors.push(ReadError {
                        missing: None,
                        message: format!("cannot read SSM parameters {where_}: {}", aws_reason(&e)),
                    });
                    return Err(errors);
                }
            };
            let mut found: HashMap<String, (String, bool)> = HashMap::new();
            for p in out.parameters() {
                let (Some(name), Some(value)) = (p.name(), p.value()) else { continue };
                let secure = p.r#type() == Some(&ParameterType::SecureString);
                let requested = format!("{name}{}", p.selector().unwrap_or_default());
                found.insert(requested, (value.to_string(), secure));
                found.entry(name.to_string()).or_insert_with(|| (value.to_string(), secure));
            }
            for r in chunk {
                match found.get(&r.name) {
                    Some((value, secure)) => {
                        if *secure {
                            read.secrets.push(value.clone());
                        }
                        read.values.values.insert((*r).clone(), value.clone());
                    }
                    None => errors.push(ReadError {
                        missing: Some((*r).clone()),
                        message: format!("SSM parameter `{}` does not exist {where_}", r.name),
                    }),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(read)
    } else {
        Err(errors)
    }
}

/// Kind-specific problems of a ParameterStore step.
pub fn check(spec: &ParameterStoreSpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let templated = |s: &str| s.contains("${");
    if spec.parameters.is_empty() && spec.read.is_empty() {
        problems.push(("parameters".into(), "a ParameterStore step writes `parameters` or `read`s some".into()));
    }
    let name_ok = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
    if !templated(&spec.prefix) && !name_ok(&spec.prefix) {
        problems.push((
            "prefix".into(),
            format!("prefix `{}`: parameter names use only letters, digits and `_.-/`", spec.prefix),
        ));
    }
    for (i, key) in spec.read.iter().enumerate() {
        if key.is_empty() || !name_ok(key) {
            problems
                .push((format!("read[{i}]"), format!("`{key}`: parameter names use only letters, digits and `_.-/`")));
        }
    }
    for (key, value) in &spec.parameters {
        let at = format!("parameters.{key}");
        let name = format!("{}{key}", spec.prefix);
        if key.is_empty() || !name_ok(key) {
            problems.push((at.clone(), format!("`{key}`: parameter names use only letters, digits and `_.-/`")));
        } else if !templated(&name) && name.contains('/') && !name.starts_with('/') {
            problems.push((
                at.clone(),
                format!("`{name}` has a `/` but does not start with one, which Parameter Store requires"),
            ));
        }
        if value.is_empty() {
            problems.push((at, format!("the value of `{key}` is empty: Parameter Store refuses empty values")));
        }
    }
    let account_id = |a: &str| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit());
    match (&spec.account, &spec.region) {
        (Some(a), _) if !templated(a) && !account_id(a) => {
            problems.push(("account".into(), format!("account `{a}` is not a 12-digit AWS account id")));
        }
        (Some(_), None) => {
            problems.push(("region".into(), "a ParameterStore step with `account` needs a `region`".into()))
        }
        _ => {}
    }
    if spec.account.is_none() && spec.role != DeployRole::Bootstrap {
        problems.push(("role".into(), "`role` acts in an `account`: give the account too".into()));
    }
    problems
}

/// What `plan` says.
pub fn describe(spec: &ParameterStoreSpec) -> String {
    let prefix = if spec.prefix.is_empty() { String::new() } else { format!(" under {}", spec.prefix) };
    let place = match (&spec.account, &spec.region) {
        (Some(a), Some(r)) => format!("account {a} ({r})"),
        (Some(a), None) => format!("account {a}"),
        (None, Some(r)) => format!("the deployment account ({r})"),
        (None, None) => "the deployment account".to_string(),
    };
    let (w, r) = (spec.parameters.len(), spec.read.len());
    match (w, r) {
        (0, r) => format!("read {r} parameter{}{prefix} from the Parameter Store of {place}", plural(r)),
        (w, 0) => format!(
            "write {w} parameter{}{prefix} to the Parameter Store of {place}, only where the value differs",
            plural(w)
        ),
        (w, r) => format!(
            "write {w} parameter{}{prefix} to the Parameter Store of {place}, only where the value differs, and read \
             {r} back",
            plural(w)
        ),
    }
}

/// The output a read parameter becomes: its key, with what an environment variable cannot hold as `_`.
pub fn output_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A ParameterStore step's node.
pub struct ParameterStoreStep {
    pub spec: ParameterStoreSpec,
    pub endpoint: Option<String>,
    pub sessions: Arc<Sessions>,
}

#[async_trait::async_trait]
impl StepRunner for ParameterStoreStep {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        let spec = &self.spec;
        for (key, value) in &spec.parameters {
            if value.is_empty() {
                return Err(StepError::invalid(format!(
                    "the value of `{key}` is empty (Parameter Store refuses empty values): does the output it reads exist?"
                )));
            }
        }
        let (config, place) = match &spec.account {
            None => {
                let config = self.sessions.caller(spec.region.as_deref(), self.endpoint.as_deref()).await;
                (config, "the deployment account".to_string())
            }
            Some(account) => {
                let region = spec.region.clone().unwrap_or_default();
                let q = spec.qualifier.as_deref().unwrap_or(DEFAULT_QUALIFIER);
                let role = match &spec.role {
                    DeployRole::Bootstrap => {
                        Some(crate::aws::role_arn(&region, account, &format!("cdk-{q}-deploy-role-{account}-{region}")))
                    }
                    DeployRole::Arn(arn) => Some(arn.clone()),
                    DeployRole::Caller => None,
                };
                let target = Target {
                    account: account.clone(),
                    region,
                    role,
                    external_id: spec.external_id.clone(),
                    session_name: crate::deploy::session_name(&ctx.pipeline, &ctx.step),
                    endpoint: self.endpoint.clone(),
                };
                let session = self.sessions.get(&target).await.map_err(|e| StepError::failed(e.to_string()))?;
                (session.config, format!("account {account}"))
            }
        };
        let ssm = aws_sdk_ssm::Client::new(&config);
        let wanted: Vec<(String, &str)> =
            spec.parameters.iter().map(|(k, v)| (format!("{}{k}", spec.prefix), v.as_str())).collect();
        let names: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
        let mut current: HashMap<String, (String, Option<ParameterType>)> = HashMap::new();
        for chunk in names.chunks(NAMES_PER_CALL) {
            let out =
                ssm.get_parameters().set_names(Some(chunk.to_vec())).with_decryption(true).send().await.map_err(
                    |e| StepError::failed(format!("cannot read the parameters in {place}: {}", aws_reason(&e))),
                )?;
            for p in out.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    current.insert(name.to_string(), (value.to_string(), p.r#type().cloned()));
                }
            }
        }
        let mut written = 0;
        for (name, value) in &wanted {
            // A SecureString stays one (its value is a secret: written encrypted, never shown); anything else is
            // written as a String.
            let secure = current.get(name).is_some_and(|(_, t)| t.as_ref() == Some(&ParameterType::SecureString));
            let kind = if secure { ParameterType::SecureString } else { ParameterType::String };
            let same = current.get(name).is_some_and(|(v, t)| v == value && t.as_ref().is_none_or(|t| *t == kind));
            if same {
                let shown = if secure { "its value (a SecureString)" } else { value };
                ctx.events.log(Stream::Runner, format!("{name} already holds {shown}")).await;
                continue;
            }
            ssm.put_parameter()
                .name(name)
                .value(*value)
                .r#type(kind)
                .overwrite(true)
                .send()
                .await
                .map_err(|e| StepError::failed(format!("cannot write {name} in {place}: {}", aws_reason(&e))))?;
            let was = match current.get(name) {
                // Decrypted to compare: never shown.
                Some((_, Some(ParameterType::SecureString))) => " (was a SecureString)".to_string(),
                Some((old, _)) => format!(" (was {old})"),
                None => " (new)".to_string(),
            };
            let shown =
                if secure { format!("wrote {name} (a SecureString)") } else { format!("wrote {name} = {value}") };
            ctx.events.log(Stream::Runner, format!("{shown}{was}")).await;
            written += 1;
            ctx.events.progress(written as u64, Some(wanted.len() as u64), "parameters", "writing").await;
        }
        let mut outputs = Outputs::new();
        if !spec.read.is_empty() {
            let names: Vec<String> = spec.read.iter().map(|k| format!("{}{k}", spec.prefix)).collect();
            let mut found: HashMap<String, String> = HashMap::new();
            for chunk in names.chunks(NAMES_PER_CALL) {
                // Not decrypted: a SecureString's value is a secret, masked like a token (`${ssm:NAME}` hands it to
                // a command; its output is masked too).
                let out = ssm.get_parameters().set_names(Some(chunk.to_vec())).send().await.map_err(|e| {
                    StepError::failed(format!("cannot read the parameters in {place}: {}", aws_reason(&e)))
                })?;
                for p in out.parameters() {
                    if let (Some(name), Some(value)) = (p.name(), p.value()) {
                        let value = match p.r#type() {
                            Some(ParameterType::SecureString) => engine::redact::MASK.to_string(),
                            _ => value.to_string(),
                        };
                        found.insert(name.to_string(), value);
                    }
                }
            }
            let missing: Vec<&str> = names.iter().filter(|n| !found.contains_key(*n)).map(String::as_str).collect();
            if !missing.is_empty() {
                return Err(StepError::failed(format!(
                    "{} not in the Parameter Store of {place}: {}",
                    if missing.len() == 1 { "this parameter is" } else { "these parameters are" },
                    missing.join(", ")
                )));
            }
            for (key, name) in spec.read.iter().zip(&names) {
                let value = &found[name];
                ctx.events.log(Stream::Runner, format!("read {name} = {value}")).await;
                outputs.insert(output_name(key), value.clone());
            }
            if wanted.is_empty() {
                return Ok(NodeSuccess { outputs, ..Default::default() });
            }
        }
        outputs.insert("WRITTEN".into(), written.to_string());
        outputs.insert("UNCHANGED".into(), (wanted.len() - written).to_string());
        if written == 0 {
            let n = wanted.len();
            ctx.events
                .log(
                    Stream::Runner,
                    format!("all {n} parameter{} already hold these values in {place}: nothing written", plural(n)),
                )
                .await;
            return Ok(NodeSuccess { status: Some(Status::Unchanged), outputs, ..Default::default() });
        }
        Ok(NodeSuccess { outputs, ..Default::default() })
    }
}
