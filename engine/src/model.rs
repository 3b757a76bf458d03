//! The pipeline as written in its RON file: plain serde types, externally tagged, no `untagged` or `flatten`
//! (they would ruin the error messages serde gives for a bad file).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A step's id as held in the model: a string stored inline when short.
pub type StepId = compact_str::CompactString;

/// Read a list with no spare capacity. serde's own `Vec` starts at four elements when the length is not known
/// (RON never tells it), and a pipeline of 100k steps holds ~200k short lists: that is ~20 MB of nothing.
fn compact_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct CompactList<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for CompactList<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut list = Vec::new();
            while let Some(item) = seq.next_element()? {
                if list.len() == list.capacity() {
                    // Doubling from one, not from four.
                    list.reserve_exact(list.len().max(1));
                }
                list.push(item);
            }
            list.shrink_to_fit();
            Ok(list)
        }
    }

    deserializer.deserialize_seq(CompactList(std::marker::PhantomData))
}

/// A whole pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Pipeline")]
pub struct Pipeline {
    /// Names the run state under `.runner/`. Required in the file given to runner; a file only ever included
    /// (a shared definition) may leave it out.
    #[serde(default)]
    pub name: String,
    /// Other pipeline files (paths relative to this one) whose parameters, defaults and steps this pipeline takes,
    /// before its own (see [`crate::compose`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Parameters the steps use as `${param:NAME}`, with a description and an optional default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Parameter>,
    /// Values of parameters declared here or in an included file; the file given to runner has the last word.
    /// Once loaded: every parameter's value, defaults applied and references to other parameters replaced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default, deserialize_with = "compact_list")]
    pub steps: Vec<Step>,
    /// Who hears about the runs `runner serve` starts: a run failed, an approval waits, a run succeeded after a
    /// failure. A notification that cannot be sent is logged and never fails the run.
    #[serde(default)]
    pub notifications: Vec<Notification>,
}

/// Where a notification goes, and on which occasions (`on`; left out or empty: all of them). Modelled on
/// CodePipeline's notification rules (execution failed, manual approval needed, execution succeeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Notification {
    /// A POST of a Slack-compatible JSON message (`{"text": ...}`, with a link to the run's page) to a webhook URL
    /// (a Slack incoming webhook, or any HTTP endpoint). The URL is read like a Source token: webhook URLs are
    /// secrets, so it is never shown.
    Webhook {
        url: SecretValue,
        #[serde(default)]
        on: Vec<NotifyOn>,
    },
    /// An Amazon SNS Publish to a topic, with the caller's credentials (the server's role), in the topic's region
    /// (from its ARN unless given).
    Sns {
        topic_arn: String,
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        on: Vec<NotifyOn>,
    },
}

/// An occasion for a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NotifyOn {
    /// A run ended failed.
    Failed,
    /// An Approval step waits for a person.
    ApprovalWaiting,
    /// A run succeeded after the pipeline's previous run had failed.
    Fixed,
}

/// A parameter of a pipeline: what it means, and its value when no file gives one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Parameter")]
pub struct Parameter {
    /// Shown by `plan` and in the error when the parameter has no value.
    #[serde(default)]
    pub description: Option<String>,
    /// The value when no `values` entry gives one; left out, a value must be given.
    #[serde(default)]
    pub default: Option<String>,
}

/// Settings every step falls back to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Defaults")]
pub struct Defaults {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub retry_backoff: Option<String>,
    #[serde(default)]
    pub max_parallel: Option<usize>,
    /// An AWS endpoint for every AWS call of the pipeline (`AWS_ENDPOINT_URL` in the environment also works).
    #[serde(default)]
    pub aws_endpoint_url: Option<String>,
}

/// One step: an id, what it waits for, and what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Step")]
pub struct Step {
    /// Ids and needs are short: kept inline (up to 24 bytes) rather than in an allocation of their own each.
    pub id: StepId,
    #[serde(default, deserialize_with = "compact_list")]
    pub needs: Vec<StepId>,
    pub kind: StepKind,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    // Optional texts are boxed (16 bytes, not 24): a pipeline of 100k steps holds 300k of them.
    #[serde(default)]
    pub working_dir: Option<Box<str>>,
    #[serde(default)]
    pub timeout: Option<Box<str>>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub retry_backoff: Option<Box<str>>,
    /// Skip the step when nothing it depends on changed since its last success (Shell steps opt in; they may
    /// have side effects). Deploy and Publish always check with the cloud instead.
    #[serde(default)]
    pub incremental: bool,
    /// Files, directories or globs (relative to the workspace) whose content is part of the step's fingerprint.
    #[serde(default, deserialize_with = "compact_list")]
    pub inputs: Vec<String>,
    /// Where the step runs: here (default), or in an AWS CodeBuild build when one machine is not enough.
    #[serde(default)]
    pub run_on: RunOn,
}

/// Where a step runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum RunOn {
    #[default]
    Local,
    /// Start a build of this CodeBuild project that runs `runner step <pipeline> <step>`.
    CodeBuild(Box<CodeBuildTarget>),
}

/// A CodeBuild project a step is dispatched to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBuildTarget {
    pub project: String,
    /// Region of the project; default: the caller's.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    /// e.g. `BUILD_GENERAL1_LARGE`.
    #[serde(default)]
    pub compute_type: Option<String>,
    /// Extra environment of the build.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Bucket where `runner step` in the build writes the step's outputs for the dispatcher to read.
    pub outputs_bucket: String,
    /// The pipeline file as the build sees it in its source; default: the file given to `runner run`.
    #[serde(default)]
    pub pipeline: Option<String>,
}

/// What a step does. One variant per step kind; each kind is one module in the `steps` crate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepKind {
    Source(Box<SourceSpec>),
    Shell(ShellSpec),
    Deploy(Box<DeploySpec>),
    Approval(ApprovalSpec),
    SelfUpdate(SelfUpdateSpec),
    Publish(Box<PublishSpec>),
    ParameterStore(Box<ParameterStoreSpec>),
}

impl StepKind {
    /// The kind's name as written in RON.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Source(_) => "Source",
            StepKind::Shell(_) => "Shell",
            StepKind::Deploy(_) => "Deploy",
            StepKind::Approval(_) => "Approval",
            StepKind::SelfUpdate(_) => "SelfUpdate",
            StepKind::Publish(_) => "Publish",
            StepKind::ParameterStore(_) => "ParameterStore",
        }
    }
}

/// Clone a git repository into the run's workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A URL or a local path.
    pub repository: String,
    /// Left out: the remote's default branch.
    #[serde(default)]
    pub reference: Option<GitReference>,
    /// Credentials for the remote; left out: none (public or local repositories; SSH URLs try the agent).
    #[serde(default)]
    pub auth: Option<GitAuth>,
}

/// How a Source authenticates to its remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum GitAuth {
    /// HTTPS with a token as the password (user name `x-access-token`, accepted by GitHub, GitLab, Gitea).
    Token(SecretValue),
    /// HTTPS basic authentication with a user name and a password or token.
    Basic { username: String, password: SecretValue },
    /// SSH through the running ssh-agent (`SSH_AUTH_SOCK`).
    SshAgent,
    /// SSH with a private key file (`~` is the home directory); `passphrase` when the key has one.
    SshKey {
        path: String,
        #[serde(default)]
        passphrase: Option<SecretValue>,
    },
}

/// Where a secret value (a token, a password) is read from when the step runs. It never reaches a log, an error
/// message or the run state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum SecretValue {
    /// An environment variable of the runner (or of the step's `env`).
    Env(String),
    /// A file holding the value (surrounding whitespace ignored).
    File(String),
    /// AWS Secrets Manager: the secret's string, or one field of it when it is JSON and `key` is given.
    Secret {
        name: String,
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        key: Option<String>,
    },
}

/// Which revision a Source checks out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GitReference {
    Branch(String),
    Tag(String),
    Commit(String),
}

/// Run commands through `sh -c`, or one program with arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellSpec {
    #[serde(default, deserialize_with = "compact_list")]
    pub commands: Vec<String>,
    #[serde(default)]
    pub program: Option<String>,
    #[serde(default, deserialize_with = "compact_list")]
    pub args: Vec<String>,
}

/// Deploy a stage: CloudFormation stacks in one account and region, through an assumed role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// The target account id (12 digits); or `accounts`.
    #[serde(default)]
    pub account: String,
    /// Several target accounts: the stage is deployed to each, one node per account (and stack), concurrently
    /// within the pipeline's `max_parallel`. An entry may hold several ids separated by commas or spaces, so that
    /// one parameter (or an SSM StringList) can give the whole list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// The target region; or `regions`.
    #[serde(default)]
    pub region: String,
    /// Several target regions (with `account` or `accounts`: every account in every region), written like
    /// `accounts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Which credentials act in the account; default: the CDK bootstrap deploy role.
    #[serde(default)]
    pub role: DeployRole,
    /// The CDK bootstrap qualifier in role and bucket names; default `hnb659fds`.
    #[serde(default)]
    pub qualifier: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// The role CloudFormation itself uses (`RoleARN`); default: none (CDK bootstrap: `cfn-exec-role`).
    #[serde(default)]
    pub execution_role: Option<String>,
    /// Bucket for templates over the 51,200-byte body limit; default `cdk-{qualifier}-assets-{account}-{region}`.
    #[serde(default)]
    pub assets_bucket: Option<String>,
    #[serde(default)]
    pub method: DeployMethod,
    /// Parameters a stack is not given keep the value the deployed stack has (`UsePreviousValue`), like `cdk
    /// deploy`'s default `--previous-parameters`; `false`: they take the template's `Default` (and one with no
    /// Default must be given). A new stack has no previous values: its parameters are given or defaulted.
    #[serde(default = "previous_parameters")]
    pub previous_parameters: bool,
    pub stacks: Stacks,
}

fn previous_parameters() -> bool {
    true
}

/// The credentials a Deploy acts with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployRole {
    /// `arn:aws:iam::{account}:role/cdk-{qualifier}-deploy-role-{account}-{region}`.
    #[default]
    Bootstrap,
    /// This role ARN.
    Arn(String),
    /// No role: the caller's own credentials (they must act in the target account).
    Caller,
}

/// How stacks are changed, like `cdk deploy --method`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployMethod {
    /// Updates through a change set; an empty one means unchanged. New stacks: CreateStack.
    #[default]
    ChangeSet,
    /// CreateStack / UpdateStack directly.
    Direct,
}

/// The stacks of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stacks {
    /// Stacks listed in the pipeline, with templates in the workspace.
    Listed(Vec<StackSpec>),
    /// Every stack of one stage of a CDK cloud assembly (`cdk synth` output), with the roles its manifest names
    /// and the templates its Publish put in the assets bucket.
    Assembly {
        /// The assembly directory, relative to the workspace (e.g. `cdk.out`).
        dir: String,
        /// The Stage's name (its `displayName`, e.g. `Dev`).
        stage: String,
    },
}

/// One CloudFormation stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    /// The stack name; also the node id's part (`<step>/<name>`).
    pub name: String,
    /// Template path, relative to the workspace (the upstream Source's checkout).
    pub template: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// e.g. `CAPABILITY_IAM`, `CAPABILITY_NAMED_IAM`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub termination_protection: bool,
    /// SNS topics CloudFormation sends the stack's events to; left out, a deployed stack keeps its topics (an
    /// empty list removes them).
    #[serde(default)]
    pub notification_arns: Option<Vec<String>>,
    /// Other stacks of this stage deployed before this one.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// Wait for a person before going on (e.g. before the prod stage).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// What the person is asked.
    #[serde(default)]
    pub message: Option<String>,
    /// `"true"` (the default) or `"false"`: whether a person must approve. Usually a parameter, so that one shared
    /// definition asks before prod and not before dev (`required: "${param:approval}"`).
    #[serde(default)]
    pub required: Option<String>,
}

/// Compare the pipeline definition in the new source with the one the run started from; restart from it when
/// it changed (CDK Pipelines' self-mutation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfUpdateSpec {
    /// The pipeline file's path in the source workspace, e.g. `pipelines/prod.ron`.
    pub pipeline: String,
}

/// Write values (chosen outputs of a stage, usually) to SSM Parameter Store, where other pipelines find them: each
/// parameter is named by the prefix and its key, and written (overwritten) only when its value differs. Or read
/// parameters back into outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterStoreSpec {
    /// Put before every key, e.g. `/DataLake/Prod/` (a name with `/` in it must start with `/`).
    #[serde(default)]
    pub prefix: String,
    /// Key (after the prefix) -> value to write, e.g. `"vpc_id": "${steps.deploy/Prod-VpcStack.outputs.VpcId}"`.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Keys (after the prefix) to read back into the node's outputs (`vpc_id` -> output `vpc_id`), after writing:
    /// what a consumer of the parameters sees. A parameter that does not exist fails the step. A SecureString is
    /// not decrypted: its output is `***` (hand its value to a command with `${ssm:NAME}`, masked in what it prints).
    #[serde(default)]
    pub read: Vec<String>,
    /// The account whose Parameter Store is written; left out: the deployment account, with the caller's
    /// credentials.
    #[serde(default)]
    pub account: Option<String>,
    /// Left out: the caller's region; required with `account`.
    #[serde(default)]
    pub region: Option<String>,
    /// With `account`: the credentials that act there; default the CDK bootstrap deploy role of that account.
    #[serde(default)]
    pub role: DeployRole,
    #[serde(default)]
    pub qualifier: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
}

/// Upload file assets to S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    pub assets: PublishAssets,
    /// Assets uploaded at once by this node; default 8.
    #[serde(default)]
    pub max_parallel: Option<usize>,
}

/// What a Publish uploads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PublishAssets {
    /// Files and directories of the workspace, to one bucket; each object's key is the sha256 of its bytes.
    Files { destination: Destination, files: Vec<FileAsset> },
    /// The file (and docker image) assets of one stage of a CDK cloud assembly, to the destinations its asset
    /// manifests name (keys verbatim).
    Assembly {
        /// The assembly directory, relative to the workspace (e.g. `cdk.out`).
        dir: String,
        /// The Stage's name (its `displayName`, e.g. `Dev`).
        stage: String,
    },
}

/// One file asset declared in a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAsset {
    /// Names the asset in messages and outputs (`<ID>_KEY`, `<ID>_URL`).
    pub id: String,
    /// A file (uploaded as is) or a directory (zipped deterministically), relative to the workspace.
    pub path: String,
}

/// Where a Publish puts assets declared in the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub account: String,
    pub region: String,
    /// Default: the CDK bootstrap assets bucket `cdk-{qualifier}-assets-{account}-{region}`.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Default `Bootstrap`: the CDK file-publishing role `cdk-{qualifier}-file-publishing-role-{account}-{region}`.
    #[serde(default)]
    pub role: DeployRole,
    #[serde(default)]
    pub qualifier: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// Prepended to every object key (e.g. `assets/`).
    #[serde(default)]
    pub prefix: Option<String>,
}
