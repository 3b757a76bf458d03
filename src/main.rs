//! `runner`: the CLI. Parses arguments and hands each command to its module in `cmd/`, thin front ends over the
//! library's run API; maps the outcome to an exit code (0 success, 1 a step failed, 2 invalid input, 130
//! interrupted).

mod cli;
mod cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};
use runner::run::exit;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(steps::process::GUARDIAN_ARG) {
        steps::process::guardian_main();
        return ExitCode::SUCCESS;
    }
    engine::memory::release_large_blocks_eagerly();
    let cli = Cli::parse();
    // The server says what it does (triggers, runs, notifications) at info level.
    let default_filter = if matches!(cli.command, Command::Serve(_)) { "warn,runner::serve=info" } else { "warn" };
    init_tracing(cli.log_format, default_filter);
    steps::source::init_git();
    match dispatch(cli) {
        Ok(code) => code,
        Err(message) => {
            eprint!("{message}");
            ExitCode::from(exit::INVALID)
        }
    }
}

/// The AWS SDK's own warnings about each credential provider it tried, left out of what `RUST_LOG` unset shows:
/// runner says once what is missing and where it looked (see `steps::aws`).
const QUIET_AWS_CREDENTIALS: &str = "aws_config::meta::credentials=error,aws_config::imds=error";

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default_filter},{QUIET_AWS_CREDENTIALS}")));
    // Colour codes only for a person at a terminal (never into a pipe, a file or CloudWatch), and not under NO_COLOR.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a command; `Err` holds a rendered message for invalid input (exit 2).
fn dispatch(cli: Cli) -> Result<ExitCode, String> {
    let state_dir = &cli.state_dir;
    match cli.command {
        Command::Validate { files } => cmd::validate::main(&files),
        Command::Plan { file, sources, jobs, diff, full } => {
            cmd::plan::main(&file, &sources, jobs, diff, full, state_dir)
        }
        Command::Graph { file, format, sources } => cmd::graph::main(&file, format, &sources),
        Command::Run(args) => cmd::run::main(args, state_dir),
        Command::Step { file, step } => cmd::step::main(&file, &step, state_dir),
        Command::History { file } => cmd::history::main(&file, state_dir),
        Command::Status { file, run } => cmd::status::main(&file, run.as_deref(), state_dir),
        Command::Approve { file, step, run, reject } => {
            cmd::approve::main(&file, &step, run.as_deref(), reject, state_dir)
        }
        Command::Bootstrap(args) => cmd::bootstrap::main(args, state_dir),
        Command::Serve(args) => cmd::serve::main(args, state_dir),
        Command::Init { output, name, force } => cmd::init::main(&output, name.as_deref(), force),
        Command::Destroy { file, step, force, sources } => cmd::destroy::main(&file, step.as_deref(), force, &sources),
    }
}
