//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Deliver cloud infrastructure from a RON pipeline: a DAG of steps run concurrently.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about, propagate_version = true)]
pub struct Cli {
    /// Where run state and logs live.
    #[arg(long, global = true, default_value = ".runner", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Format of diagnostics on stderr (filtered by RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files: every error with file:line:column, and warnings. Exit 2 when any is invalid.
    Validate {
        /// The pipeline files (RON) to check, e.g. `pipelines/*.ron`.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Dry run: the waves of steps that run together and what each does.
    Plan {
        /// The pipeline file (RON).
        file: PathBuf,
        #[command(flatten)]
        sources: SourceDirs,
        /// Steps running at once (0 = unlimited); default: the pipeline's max_parallel, else 16.
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Also show what each Deploy stack would change: creates change sets, prints them, deletes them.
        #[arg(long)]
        diff: bool,
        /// Show each step's description whole (long Shell commands are shortened otherwise).
        #[arg(long)]
        full: bool,
    },
    /// Print the DAG.
    Graph {
        /// The pipeline file (RON).
        file: PathBuf,
        /// How to draw it.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        #[command(flatten)]
        sources: SourceDirs,
    },
    /// Run the pipeline.
    Run(RunArgs),
    /// Run one step of a pipeline here, with the inputs a dispatcher passed in RUNNER_INPUTS (what a CodeBuild
    /// build started by `run_on: CodeBuild(...)` runs); its outputs go to RUNNER_OUTPUTS (s3://bucket/key).
    Step {
        /// The pipeline file (RON) the step belongs to.
        file: PathBuf,
        /// The id of the step to run.
        step: String,
    },
    /// List the past runs of a pipeline: id, start, duration, outcome.
    History {
        /// The pipeline file (RON); its runs are those under the state dir with its name.
        file: PathBuf,
    },
    /// Show one run's steps with status, duration and log (default: the latest run).
    Status {
        /// The pipeline file (RON).
        file: PathBuf,
        /// A run id as `runner history` lists it (default: the latest run).
        run: Option<String>,
    },
    /// Answer an Approval step of a waiting run (default: the latest run).
    Approve {
        /// The pipeline file (RON).
        file: PathBuf,
        /// The id of the Approval step to answer.
        step: String,
        /// The run to answer (default: the latest run).
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
        /// Reject instead of approving: the step fails.
        #[arg(long)]
        reject: bool,
    },
    /// Write a starter pipeline for the CDK app in the current directory: source, synth, and per stage of its cloud
    /// assembly a Publish and a Deploy (an Approval before each stage after the first).
    Init {
        /// Where to write it.
        #[arg(long, default_value = "pipeline.ron", value_name = "FILE")]
        output: PathBuf,
        /// The pipeline's name (default: the directory's).
        #[arg(long)]
        name: Option<String>,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Delete the stacks of the pipeline's Deploy steps (or of one), like `cdk destroy`: each after the stacks that
    /// depend on it, independent ones at once; stacks with termination protection are left. Asks first.
    Destroy {
        /// The pipeline file (RON).
        file: PathBuf,
        /// The Deploy step whose stacks to delete (default: every Deploy step's).
        step: Option<String>,
        /// Delete without asking (needed without a terminal to ask at).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        sources: SourceDirs,
    },
    /// Prepare an account for deployments (CDK-compatible bootstrap stack `CDKToolkit`): assets bucket (KMS,
    /// versioning, TLS only, no public access), file-publishing, deploy and CloudFormation execution roles, and
    /// the SSM parameter /cdk-bootstrap/QUALIFIER/version.
    Bootstrap(BootstrapArgs),
    /// Continuous delivery: run each pipeline when its Source branch gets a commit (polled, or pushed by a GitHub
    /// webhook), one run at a time per pipeline (the newest commit waiting), shown live on a web dashboard where
    /// approvals are answered; notifications as the pipeline files configure them.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The pipeline files to run.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where the dashboard, the API and the webhook listen (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// How often each pipeline's branches are asked for their commit (as `git ls-remote` asks).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub poll: humantime::Duration,
    /// Runs at once across all pipelines (each pipeline runs one at a time).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_runs: usize,
    /// Where the token that actions need is: env:NAME, file:PATH or secretsmanager:NAME[#KEY]; default: a random
    /// token kept in STATE_DIR/serve/token.
    #[arg(long, value_name = "SOURCE")]
    pub token: Option<String>,
    /// Where the GitHub webhook secret is (env:NAME, file:PATH or secretsmanager:NAME[#KEY]); without it,
    /// webhooks are refused.
    #[arg(long, value_name = "SOURCE")]
    pub webhook_secret: Option<String>,
    /// Reading pages and the API needs the token too.
    #[arg(long)]
    pub private: bool,
    /// The dashboard's address as people reach it, for links in notifications (default http://ADDR:PORT).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The account and region to bootstrap: aws://ACCOUNT/REGION.
    #[arg(value_name = "aws://ACCOUNT/REGION")]
    pub environment: String,
    /// The deployment account, trusted to publish and deploy (repeatable).
    #[arg(long, value_name = "ACCOUNT", required = true)]
    pub trust: Vec<String>,
    /// A role to act through in the account (e.g. an organization access role); default: the caller's
    /// credentials, which must act in ACCOUNT.
    #[arg(long, value_name = "ARN")]
    pub role: Option<String>,
    /// The bootstrap qualifier in resource names (default hnb659fds, as CDK's default synthesizer expects).
    #[arg(long)]
    pub qualifier: Option<String>,
    /// Managed policy of the CloudFormation execution role (repeatable; default AdministratorAccess).
    #[arg(long, value_name = "ARN")]
    pub execution_policy: Vec<String>,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file (RON).
    pub file: PathBuf,
    /// Steps (or nodes, `deploy-prod/DataLakeS3`) to run, with what they need and nothing after them, like
    /// `cdk deploy STACK`; default: the whole pipeline.
    #[arg(value_name = "STEP", conflicts_with = "resume")]
    pub targets: Vec<String>,
    /// Run only this step (repeatable), like `cdk deploy --exclusively`: what it needs is not run again, its
    /// outputs and workspace come from the latest run that did it.
    #[arg(long, value_name = "STEP", conflicts_with_all = ["resume", "targets"])]
    pub only: Vec<String>,
    /// Steps running at once (0 = unlimited); default: the pipeline's max_parallel, else 16.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Stop the run at the first failure (running steps are cancelled).
    #[arg(long)]
    pub fail_fast: bool,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub sources: SourceDirs,
    /// Show the plan instead of running (same as `runner plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the last unfinished or failed run: completed steps are reused, the rest run.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: accept a pipeline file whose completed steps changed (they run again).
    #[arg(long, requires = "resume")]
    pub allow_changed: bool,
    /// Run every step even when nothing changed (no up-to-date skips, change sets even for matching stacks).
    #[arg(long)]
    pub force: bool,
    /// Force one step or node (repeatable).
    #[arg(long, value_name = "ID")]
    pub force_step: Vec<String>,
    /// Approve this Approval step up front (repeatable).
    #[arg(long, value_name = "STEP")]
    pub approve: Vec<String>,
    /// Run every step here, ignoring `run_on` (used inside a dispatched CodeBuild build).
    #[arg(long, hide = true)]
    pub local_only: bool,
    /// Also write the run as a JUnit XML report (one test case per step) to FILE when the run ends.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// When another run of this pipeline is in progress (same state dir), wait for it to end instead of refusing.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SourceDirs {
    /// Use a local checkout instead of cloning: PATH, or ID=PATH when there are several Source steps.
    #[arg(long = "source-dir", value_name = "[ID=]PATH")]
    pub source_dir: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// A tree for the terminal: each node under what it needs.
    Text,
    /// Graphviz DOT (`dot -Tsvg`); a stage's stacks in a cluster named for its account and region.
    Dot,
    /// A Mermaid flowchart (renders in GitHub Markdown); a stage's stacks in a subgraph.
    Mermaid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Progress bars on a terminal; plain lines when not a terminal, when CI is set or in CodeBuild.
    Auto,
    /// One timestamped line per event, prefixed by the step id; progress at most every few seconds (CI logs).
    Plain,
    /// One JSON object per event on stdout (README: JSON events); the summary on stderr.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per diagnostic.
    Json,
}
