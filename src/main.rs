//! `runner`: the CLI. Parses arguments, loads and plans the pipeline, wires the walker to the reporters and the
//! run record, and maps the outcome to an exit code (0 success, 1 a step failed, 2 invalid input, 130 interrupted).

mod cli;
mod report;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use engine::diagnostic::Diagnostic;
use engine::event::RunStatus;
use engine::model::StepKind;
use engine::plan::Plan;
use engine::record::Recorder;
use engine::step::{PlanContext, StopReason};
use engine::validate::{self, closest};
use engine::walk::{self, WalkOptions};
use steps::StepCatalog;
use tokio::sync::{mpsc, watch};

use cli::{Cli, Command, GraphFormat, LogFormat, OutputFormat, RunArgs, SourceDirs};
use report::{JsonReporter, JunitReporter, PlainReporter, Reporter, Summary, TtyReporter};

const DEFAULT_JOBS: usize = 16;

/// Exit codes.
const FAILED: u8 = 1;
const INVALID: u8 = 2;
const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(steps::process::GUARDIAN_ARG) {
        steps::process::guardian_main();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    steps::source::init_git();
    match dispatch(cli) {
        Ok(code) => code,
        Err(message) => {
            eprint!("{message}");
            ExitCode::from(INVALID)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a command; `Err` holds a rendered message for invalid input (exit 2).
fn dispatch(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Validate { file } => {
            let plan = load(&file, &SourceDirs { source_dir: Vec::new() })?.0;
            let p = &plan.pipeline.loaded.pipeline;
            println!(
                "{}: pipeline `{}` is valid: {} steps, {} nodes",
                file.display(),
                p.name,
                p.steps.len(),
                plan.graph.node_count()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { file, sources, jobs, diff } => {
            let (plan, catalog) = load(&file, &sources)?;
            print!("{}", engine::graph::waves(&plan, jobs_for(&plan, jobs)));
            if diff {
                return Ok(print_diffs(&plan, &catalog, &cli.state_dir));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { file, format, sources } => {
            let plan = load(&file, &sources)?.0;
            let text = match format {
                GraphFormat::Text => engine::graph::text(&plan),
                GraphFormat::Dot => engine::graph::dot(&plan),
                GraphFormat::Mermaid => engine::graph::mermaid(&plan),
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            if args.dry_run {
                let plan = load(&args.file, &args.sources)?.0;
                print!("{}", engine::graph::waves(&plan, jobs_for(&plan, args.jobs)));
                return Ok(ExitCode::SUCCESS);
            }
            run(args, &cli.state_dir)
        }
    }
}

fn jobs_for(plan: &Plan, jobs: Option<usize>) -> usize {
    jobs.or(plan.pipeline.loaded.pipeline.defaults.max_parallel).unwrap_or(DEFAULT_JOBS)
}

/// Load, validate and plan; warnings are printed, errors returned rendered.
fn load(file: &Path, sources: &SourceDirs) -> Result<(Plan, Arc<StepCatalog>), String> {
    let loaded = engine::load::load(file).map_err(|e| e.render())?;
    let source_dirs = source_dirs(&loaded, sources)?;
    let aws_endpoint = loaded.pipeline.defaults.aws_endpoint_url.clone().filter(|e| !e.is_empty());
    let codebuild = steps::source::CodeBuild::from_env(std::env::vars());
    let catalog = Arc::new(StepCatalog { source_dirs, aws_endpoint, aws: Default::default(), codebuild });
    let env = |name: &str| std::env::var(name).ok();
    let valid = validate::validate(loaded, catalog.as_ref(), &env).map_err(|invalid| {
        let n = invalid.error_count();
        format!(
            "{}\n{n} error{} in {}\n",
            invalid.render(),
            if n == 1 { "" } else { "s" },
            invalid.loaded.path.display()
        )
    })?;
    if !valid.warnings.is_empty() {
        eprintln!("{}", validate::render_all(&valid.loaded, &valid.warnings));
    }
    let base_dir = std::env::current_dir().map_err(|e| format!("error: cannot read the current directory: {e}\n"))?;
    let plan = Plan::build(valid.clone(), catalog.as_ref(), &PlanContext { base_dir })
        .map_err(|diags| validate::render_all(&valid.loaded, &diags))?;
    Ok((plan, catalog))
}

/// `plan --diff`: each Deploy stack's change set, previewed and deleted. Exit 1 when a preview failed.
fn print_diffs(plan: &Plan, catalog: &StepCatalog, state_dir: &Path) -> ExitCode {
    let steps = &plan.pipeline.loaded.pipeline.steps;
    let env: HashMap<String, String> = std::env::vars().collect();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let mut failed = false;
    println!("\ndiff (change sets created, read and deleted; nothing executed)");
    for n in plan.graph.node_indices() {
        let node = &plan.graph[n];
        let step = &steps[node.step];
        let (StepKind::Deploy(spec), Some(part)) = (&step.kind, node.part.as_deref()) else { continue };
        let result = (|| {
            let spec = steps::deploy::resolve_with_env(spec, &env)?;
            let stack = match &spec.stacks {
                engine::model::Stacks::Listed(list) => list.iter().find(|s| s.name == part).cloned(),
            }
            .ok_or_else(|| format!("no stack `{part}`"))?;
            let workspace = workspace_of(plan, catalog, node.step, state_dir);
            let target = steps::deploy::target(
                &spec,
                &plan.pipeline.loaded.pipeline.name,
                &step.id,
                catalog.aws_endpoint.as_deref(),
            );
            runtime.block_on(async {
                let session = catalog.aws.get(&target).await.map_err(|e| e.to_string())?;
                steps::deploy::diff(&spec, &stack, &workspace, &session, &node.id).await
            })
        })();
        match result {
            Ok(d) if !d.exists => {
                println!("\n{} ({}): new stack, {} resources to add", d.node, d.target, d.changes.len());
                d.changes.iter().for_each(|c| println!("  {c}"));
            }
            Ok(d) if d.changes.is_empty() => println!("\n{} ({}): no changes", d.node, d.target),
            Ok(d) => {
                println!("\n{} ({}): {} changes", d.node, d.target, d.changes.len());
                d.changes.iter().for_each(|c| println!("  {c}"));
            }
            Err(e) => {
                failed = true;
                println!("\n{}: cannot preview: {e}", node.id);
            }
        }
    }
    if failed {
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Where a step's templates are before a run: the `--source-dir` (or the last clone) of the Source upstream of
/// it, else the current directory.
fn workspace_of(plan: &Plan, catalog: &StepCatalog, step: usize, state_dir: &Path) -> PathBuf {
    let steps = &plan.pipeline.loaded.pipeline.steps;
    let mut queue = std::collections::VecDeque::from([step]);
    let mut seen = std::collections::HashSet::new();
    while let Some(i) = queue.pop_front() {
        if !seen.insert(i) {
            continue;
        }
        let s = &steps[i];
        if matches!(s.kind, StepKind::Source(_)) {
            if let Some(checkout) = catalog.checkout_of(&s.id) {
                return checkout.dir().to_path_buf();
            }
            return state_dir.join("workspaces").join(&plan.pipeline.loaded.pipeline.name).join(&s.id);
        }
        for need in &s.needs {
            if let Some(j) = steps.iter().position(|x| &x.id == need) {
                queue.push_back(j);
            }
        }
    }
    PathBuf::from(".")
}

/// `--source-dir [ID=]PATH` against the pipeline's Source steps.
fn source_dirs(loaded: &engine::load::Loaded, sources: &SourceDirs) -> Result<HashMap<String, PathBuf>, String> {
    let source_ids: Vec<&str> =
        loaded.pipeline.steps.iter().filter(|s| matches!(s.kind, StepKind::Source(_))).map(|s| s.id.as_str()).collect();
    let mut dirs = HashMap::new();
    for arg in &sources.source_dir {
        let (id, path) = match arg.split_once('=') {
            Some((id, path)) => (id.to_string(), path),
            None => match source_ids.as_slice() {
                [only] => (only.to_string(), arg.as_str()),
                [] => return Err(format!("error: --source-dir {arg}: the pipeline has no Source step\n")),
                many => {
                    return Err(format!(
                    "error: --source-dir {arg}: the pipeline has {} Source steps ({}); write --source-dir ID=PATH\n",
                    many.len(),
                    many.join(", ")
                ))
                }
            },
        };
        if !source_ids.contains(&id.as_str()) {
            let hint =
                closest(&id, source_ids.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(format!("error: --source-dir {arg}: `{id}` is not a Source step{hint}\n"));
        }
        let path = PathBuf::from(path);
        if !path.is_dir() {
            return Err(format!("error: --source-dir {arg}: {} is not a directory\n", path.display()));
        }
        dirs.insert(id, path);
    }
    Ok(dirs)
}

fn run(args: RunArgs, state_dir: &Path) -> Result<ExitCode, String> {
    let (plan, catalog) = load(&args.file, &args.sources)?;
    let env: HashMap<String, String> = std::env::vars().collect();
    check_env(&plan, &catalog, &env)?;
    let jobs = jobs_for(&plan, args.jobs);
    let name = &plan.pipeline.loaded.pipeline.name;
    let run_id = run_id(name);
    let base_dir = std::env::current_dir().map_err(|e| format!("error: {e}\n"))?;
    let state_dir = if state_dir.is_absolute() { state_dir.to_path_buf() } else { base_dir.join(state_dir) };
    let run_dir = walk::run_dir(&state_dir, &run_id);
    let mut recorder =
        Recorder::new(&run_dir).map_err(|e| format!("error: cannot create {}: {e}\n", run_dir.display()))?;
    let options = WalkOptions {
        run_id,
        jobs,
        fail_fast: args.fail_fast,
        base_dir,
        run_dir: run_dir.clone(),
        state_dir,
        env: Arc::new(env),
    };
    if let Ok(exe) = std::env::current_exe() {
        steps::process::enable_guardian(exe);
    }
    let mut reporter: Box<dyn Reporter> = match args.output {
        OutputFormat::Json => Box::new(JsonReporter::new(std::io::stdout().lock())),
        OutputFormat::Plain => Box::new(PlainReporter::new(std::io::stdout().lock())),
        // In CodeBuild (its logs go to CloudWatch) and other CI: plain lines.
        OutputFormat::Auto
            if std::io::stderr().is_terminal()
                && std::env::var_os("CI").is_none()
                && std::env::var_os("CODEBUILD_BUILD_ID").is_none() =>
        {
            Box::new(TtyReporter::new())
        }
        OutputFormat::Auto => Box::new(PlainReporter::new(std::io::stdout().lock())),
    };
    let mut summary = Summary::new(run_dir.display().to_string());
    let mut junit = args.junit.as_deref().map(JunitReporter::new);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("error: cannot start the async runtime: {e}\n"))?;
    let steps_to_check = plan.pipeline.loaded.pipeline.steps.clone();
    let preflight_env: HashMap<String, String> = options.env.as_ref().clone();
    let preflight = runtime.block_on(async {
        let deploys = steps_to_check.iter().filter(|s| matches!(s.kind, StepKind::Deploy(_))).count();
        if deploys == 0 {
            return Vec::new();
        }
        eprintln!("preflight: checking access to the accounts of {deploys} Deploy step(s)");
        steps::deploy::preflight(&steps_to_check, name, catalog.aws_endpoint.as_deref(), &preflight_env, &catalog.aws)
            .await
    });
    if !preflight.is_empty() {
        for e in &preflight {
            eprintln!("error: preflight: {e}");
        }
        eprintln!("nothing ran: no Deploy can act in its account (fix the access above and run again)");
        if let Some(junit) = &mut junit {
            junit.not_run(name, &options.run_id, "preflight", &preflight.join("\n"));
            if let Err(e) = junit.write() {
                eprintln!("error: {e}");
            }
        }
        return Ok(ExitCode::from(FAILED));
    }
    let outcome = runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(None);
        tokio::spawn(forward_signals(stop_tx));
        let (tx, mut rx) = mpsc::channel(1024);
        let catalog: Arc<dyn engine::step::Catalog> = catalog;
        let walker = tokio::spawn(async move { walk::walk(&plan, catalog, options, stop_rx, tx).await });
        while let Some(event) = rx.recv().await {
            summary.event(&event);
            recorder.handle(&event);
            reporter.event(&event);
            if let Some(junit) = &mut junit {
                junit.event(&event);
            }
        }
        reporter.finish(&summary);
        if let Some(e) = &recorder.error {
            eprintln!("warning: {e}");
        }
        if let Some(Err(e)) = junit.as_ref().map(JunitReporter::write) {
            eprintln!("error: {e}");
        }
        walker.await
    });
    let outcome = outcome.map_err(|e| format!("error: the run crashed: {e}\n"))?;
    Ok(match outcome.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(FAILED),
        RunStatus::Interrupted => ExitCode::from(INTERRUPTED),
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
        if count == 1 {
            eprintln!("\ninterrupted: stopping running steps (again to kill them now)");
        }
        stop.send_replace(Some(reason));
    }
}

/// Every `${env:...}` of the steps that will run must be set; else list them all (exit 2, nothing runs).
fn check_env(plan: &Plan, catalog: &StepCatalog, env: &HashMap<String, String>) -> Result<(), String> {
    let valid = &plan.pipeline;
    let mut missing: Vec<Diagnostic> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, refs) in valid.env_refs.iter().enumerate() {
        let step = &valid.loaded.pipeline.steps[i];
        if matches!(step.kind, StepKind::Source(_)) && catalog.checkout_of(&step.id).is_some() {
            continue;
        }
        for (name, span) in refs {
            if !env.contains_key(name) && seen.insert((name.clone(), span.map(|s| s.start))) {
                missing.push(Diagnostic::error(format!("environment variable `{name}` is not set"), *span));
            }
        }
        // A Source's `auth: Token(Env("NAME"))` and the like: the variable must be set too.
        if let StepKind::Source(spec) = &step.kind {
            let defaults = &valid.loaded.pipeline.defaults.env;
            let is_set =
                |name: &str| env.contains_key(name) || step.env.contains_key(name) || defaults.contains_key(name);
            let span = valid.loaded.source_map.nearest(&format!("steps[{i}].kind.auth"));
            for name in steps::source::unset_auth_env(spec, &is_set) {
                missing.push(Diagnostic::error(
                    format!("environment variable `{name}` is not set (the `auth` of Source `{}` reads it)", step.id),
                    span,
                ));
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_by_key(|d| d.span.map(|s| s.start));
    let names: std::collections::BTreeSet<&str> = missing.iter().filter_map(|d| d.message.split('`').nth(1)).collect();
    Err(format!(
        "{}\nnothing ran: set {} and run again\n",
        validate::render_all(&valid.loaded, &missing),
        names.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// `<pipeline>-<UTC time>`, e.g. `prod-20261125T162244.123Z`: sortable, unique per start.
fn run_id(pipeline: &str) -> String {
    let t = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{pipeline}-{compact}")
}
