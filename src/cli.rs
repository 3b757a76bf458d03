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
    /// Check a pipeline file: every error with file:line:column, and warnings.
    Validate { file: PathBuf },
    /// Dry run: the waves of steps that run together and what each does.
    Plan {
        file: PathBuf,
        #[command(flatten)]
        sources: SourceDirs,
        /// Steps running at once (0 = unlimited); default: the pipeline's max_parallel, else 16.
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Also show what each Deploy stack would change: creates change sets, prints them, deletes them.
        #[arg(long)]
        diff: bool,
    },
    /// Print the DAG.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        #[command(flatten)]
        sources: SourceDirs,
    },
    /// Run the pipeline.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    pub file: PathBuf,
    /// Steps running at once (0 = unlimited); default: the pipeline's max_parallel, else 16.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Stop the run at the first failure (running steps are cancelled).
    #[arg(long)]
    pub fail_fast: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub sources: SourceDirs,
    /// Show the plan instead of running (same as `runner plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the run as a JUnit XML report (one test case per step) to FILE when the run ends.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SourceDirs {
    /// Use a local checkout instead of cloning: PATH, or ID=PATH when there are several Source steps.
    #[arg(long = "source-dir", value_name = "[ID=]PATH")]
    pub source_dir: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Progress bars on a terminal; plain lines when not a terminal or when CI is set.
    Auto,
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
