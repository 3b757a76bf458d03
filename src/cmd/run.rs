//! `runner run FILE`: picks the reporters (`--output`, the terminal, CI), forwards Ctrl-C, and hands the rest to
//! the run API.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use engine::step::StopReason;
use runner::pipeline::Purpose;
use runner::report::{JsonReporter, JunitReporter, PlainReporter, Reporter, TtyReporter};
use runner::run::{RunEnd, RunRequest};
use steps::approval::ApprovalMode;
use tokio::sync::watch;

use crate::cli::{OutputFormat, RunArgs};

pub fn main(args: RunArgs, state_dir: &Path) -> Result<ExitCode, String> {
    let purpose = if args.dry_run { Purpose::Inspect } else { Purpose::Run };
    let planned = runner::pipeline::load_for(&args.file, &args.sources.source_dir, purpose)?;
    if args.dry_run {
        let mut plan = planned.plan;
        let targets = if args.only.is_empty() { &args.targets } else { &args.only };
        if !targets.is_empty() {
            plan = runner::pipeline::select(plan, targets)?.plan;
        }
        print!("{}", engine::graph::waves(&plan, runner::pipeline::jobs_limit(&plan, args.jobs)));
        return Ok(ExitCode::SUCCESS);
    }
    let mut request = RunRequest::new(planned, args.file.clone(), state_dir.to_path_buf());
    request.jobs = args.jobs;
    request.fail_fast = args.fail_fast;
    request.resume = args.resume;
    request.allow_changed = args.allow_changed;
    request.force = args.force;
    request.force_steps = args.force_step;
    request.approve = args.approve;
    request.local_only = args.local_only;
    request.wait_for_lock = args.wait;
    request.exclusively = !args.only.is_empty();
    request.targets = if args.only.is_empty() { args.targets } else { args.only };
    let end = execute(request, args.output, args.junit.as_deref())?;
    Ok(ExitCode::from(end.exit_code()))
}

/// Run `request` on a new runtime with the reporters `output` asks for (and a JUnit file), Ctrl-C forwarded.
pub fn execute(mut request: RunRequest, output: OutputFormat, junit: Option<&Path>) -> Result<RunEnd, String> {
    let terminal = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let interactive = terminal && std::io::stdin().is_terminal();
    request.approval_mode = if interactive && output == OutputFormat::Auto {
        ApprovalMode::Prompt
    } else if std::env::var_os("CI").is_some() {
        ApprovalMode::Fail
    } else {
        ApprovalMode::Wait
    };
    let mut reporters: Vec<Box<dyn Reporter>> = vec![match output {
        OutputFormat::Json => Box::new(JsonReporter::new(std::io::stdout())),
        OutputFormat::Plain => Box::new(PlainReporter::new(std::io::stdout())),
        // In CodeBuild (its logs go to CloudWatch) and other CI: plain lines.
        OutputFormat::Auto if terminal && std::env::var_os("CODEBUILD_BUILD_ID").is_none() => {
            Box::new(TtyReporter::new(request.approvals.clone()))
        }
        OutputFormat::Auto => Box::new(PlainReporter::new(std::io::stdout())),
    }];
    if let Some(path) = junit {
        reporters.push(Box::new(JunitReporter::new(path)));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("error: cannot start the async runtime: {e}\n"))?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(None);
        tokio::spawn(forward_signals(stop_tx));
        runner::run::run(request, reporters, stop_rx).await
    })
}

/// SIGINT/SIGTERM: the first asks running steps to terminate, the second kills them.
async fn forward_signals(stop: watch::Sender<Option<StopReason>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    let mut count = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        count += 1;
        let reason = if count == 1 { StopReason::Interrupt } else { StopReason::Kill };
        // The run API says so through the reporters (a terminal's bars must make way for it first).
        stop.send_replace(Some(reason));
    }
}
