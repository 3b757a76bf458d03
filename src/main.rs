//! `runner`: the CLI. Parses arguments, loads and plans the pipeline, wires the walker to the reporters and the
//! run record, and maps the outcome to an exit code (0 success, 1 a step failed, 2 invalid input, 130 interrupted).

mod cli;
mod report;
mod runs;

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
    engine::memory::release_large_blocks_eagerly();
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
            let (plan, catalog) = load(&args.file, &args.sources)?;
            run(plan, catalog, args, &cli.state_dir)
        }
        Command::Step { file, step } => run_one_step(&file, &step, &cli.state_dir),
        Command::History { file } => {
            let plan = load(&file, &SourceDirs { source_dir: Vec::new() })?.0;
            print!("{}", runs::history(&cli.state_dir, &plan.pipeline.loaded.pipeline.name));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { file, run } => {
            let plan = load(&file, &SourceDirs { source_dir: Vec::new() })?.0;
            print!("{}", runs::status(&cli.state_dir, &plan.pipeline.loaded.pipeline.name, run.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve { file, step, run, reject } => {
            let plan = load(&file, &SourceDirs { source_dir: Vec::new() })?.0;
            print!("{}", runs::approve(&plan, &cli.state_dir, &step, run.as_deref(), reject)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap(args) => bootstrap(args, &cli.state_dir),
    }
}

/// `runner bootstrap aws://ACCOUNT/REGION --trust ACCOUNT`: the bootstrap stack, deployed as a one-step pipeline
/// by the Deploy step (preflight included: refused when the credentials act in another account).
fn bootstrap(args: cli::BootstrapArgs, state_dir: &Path) -> Result<ExitCode, String> {
    let b = steps::bootstrap::Bootstrap::new(
        &args.environment,
        args.trust,
        args.role,
        args.qualifier,
        args.execution_policy,
    )
    .map_err(|e| format!("error: {e}\n"))?;
    let dir = state_dir.join("bootstrap");
    std::fs::create_dir_all(&dir).map_err(|e| format!("error: cannot create {}: {e}\n", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("error: {}: {e}\n", dir.display()))?;
    let template = dir.join(format!("{}-{}.yaml", steps::bootstrap::STACK_NAME, b.qualifier));
    std::fs::write(&template, steps::bootstrap::TEMPLATE)
        .map_err(|e| format!("error: cannot write {}: {e}\n", template.display()))?;
    let text = b.pipeline(&template);
    let file = dir.join("bootstrap.ron");
    std::fs::write(&file, &text).map_err(|e| format!("error: cannot write {}: {e}\n", file.display()))?;
    let loaded = engine::load::parse(&file, text).map_err(|e| e.render())?;
    let sources = SourceDirs { source_dir: Vec::new() };
    let (plan, catalog) = plan_of(loaded, &sources)?;
    eprintln!(
        "bootstrap: aws://{}/{} (qualifier {}), trusting {}, acting as {}",
        b.account,
        b.region,
        b.qualifier,
        b.trust.join(", "),
        b.role.as_deref().unwrap_or("the caller's credentials")
    );
    let run_args = RunArgs {
        file,
        jobs: None,
        fail_fast: false,
        output: args.output,
        sources,
        dry_run: false,
        resume: false,
        allow_changed: false,
        force: false,
        force_step: Vec::new(),
        approve: Vec::new(),
        local_only: false,
        junit: None,
    };
    run(plan, catalog, run_args, state_dir)
}

fn jobs_for(plan: &Plan, jobs: Option<usize>) -> usize {
    jobs.or(plan.pipeline.loaded.pipeline.defaults.max_parallel).unwrap_or(DEFAULT_JOBS)
}

/// Load, validate and plan; warnings are printed, errors returned rendered.
fn load(file: &Path, sources: &SourceDirs) -> Result<(Plan, Arc<StepCatalog>), String> {
    let loaded = engine::load::load(file).map_err(|e| e.render())?;
    plan_of(loaded, sources)
}

/// Validate and plan a loaded pipeline.
fn plan_of(loaded: engine::load::Loaded, sources: &SourceDirs) -> Result<(Plan, Arc<StepCatalog>), String> {
    let source_dirs = source_dirs(&loaded, sources)?;
    let aws_endpoint = loaded.pipeline.defaults.aws_endpoint_url.clone().filter(|e| !e.is_empty());
    let codebuild = steps::source::CodeBuild::from_env(std::env::vars());
    let catalog = Arc::new(StepCatalog { source_dirs, aws_endpoint, codebuild, ..Default::default() });
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
    let plan = Plan::build(valid, catalog.as_ref(), &PlanContext { base_dir }).map_err(|e| e.render())?;
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
        let (StepKind::Deploy(spec), Some(part)) = (&step.kind, node.part()) else { continue };
        let result = (|| {
            let spec = steps::deploy::resolve_with_env(spec, &env)?;
            let workspace = workspace_of(plan, catalog, node.step, state_dir);
            let (spec, stack) = steps::deploy::stack_for_diff(&spec, part, &workspace)?;
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
            if let Some(j) = steps.iter().position(|x| x.id == *need) {
                queue.push_back(j);
            }
        }
    }
    PathBuf::from(".")
}

/// `runner step FILE STEP`: the step as the dispatcher resolved it (RUNNER_INPUTS), run alone, here; its result
/// goes to RUNNER_OUTPUTS (s3://bucket/key) or, without it, to stdout as JSON.
fn run_one_step(file: &Path, step_id: &str, state_dir: &Path) -> Result<ExitCode, String> {
    let plan = load(file, &SourceDirs { source_dir: Vec::new() })?.0;
    let pipeline = &plan.pipeline.loaded.pipeline;
    let Some(written) = pipeline.steps.iter().find(|s| s.id == step_id) else {
        let hint = closest(step_id, pipeline.steps.iter().map(|s| s.id.as_str()))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(format!("error: `{step_id}` is not a step of `{}`{hint}\n", pipeline.name));
    };
    let inputs: steps::codebuild::StepInputs = match std::env::var("RUNNER_INPUTS") {
        Ok(json) => serde_json::from_str(&json).map_err(|e| format!("error: RUNNER_INPUTS is not runner's: {e}\n"))?,
        Err(_) => steps::codebuild::StepInputs { step: written.clone(), env: Default::default() },
    };
    if inputs.step.id != step_id {
        return Err(format!("error: RUNNER_INPUTS holds step `{}`, not `{step_id}`\n", inputs.step.id));
    }
    let mut alone = pipeline.clone();
    let mut step = inputs.step;
    step.needs.clear();
    step.run_on = engine::model::RunOn::Local;
    alone.defaults.env.extend(inputs.env);
    alone.steps = vec![step];
    let config = ron::ser::PrettyConfig::default()
        .extensions(ron::extensions::Extensions::IMPLICIT_SOME | ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES);
    let text = ron::ser::to_string_pretty(&alone, config)
        .map_err(|e| format!("error: cannot write the step's pipeline: {e}\n"))?;
    let base = std::env::var_os("CODEBUILD_SRC_DIR").map(PathBuf::from);
    if let Some(dir) = &base {
        std::env::set_current_dir(dir).map_err(|e| format!("error: cannot enter {}: {e}\n", dir.display()))?;
    }
    let state = if state_dir.is_absolute() {
        state_dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| e.to_string())?.join(state_dir)
    };
    std::fs::create_dir_all(&state).map_err(|e| format!("error: cannot create {}: {e}\n", state.display()))?;
    let one = state.join(format!("step-{step_id}.ron"));
    std::fs::write(&one, text).map_err(|e| format!("error: cannot write {}: {e}\n", one.display()))?;
    let args = RunArgs {
        file: one,
        jobs: None,
        fail_fast: false,
        output: OutputFormat::Plain,
        sources: SourceDirs { source_dir: Vec::new() },
        dry_run: false,
        resume: false,
        allow_changed: false,
        force: true,
        force_step: Vec::new(),
        approve: Vec::new(),
        local_only: true,
        junit: None,
    };
    let (plan, catalog) = load(&args.file, &args.sources)?;
    let code = run(plan, catalog, args, &state)?;
    let (_, last) = runs::runs_of(&state, &pipeline.name).pop().ok_or("error: the step left no run\n")?;
    let recorded = engine::record::RunState::load(&last).map_err(|e| format!("error: {e}\n"))?;
    let node = recorded.nodes.get(step_id).cloned().unwrap_or_default();
    let result = steps::codebuild::StepResult { status: node.status, outputs: node.outputs, error: node.error };
    let json = serde_json::to_vec(&result).map_err(|e| e.to_string())?;
    match std::env::var("RUNNER_OUTPUTS") {
        Ok(url) => {
            let (bucket, key) = steps::codebuild::parse_s3_url(&url)
                .ok_or_else(|| format!("error: RUNNER_OUTPUTS `{url}` is not s3://bucket/key\n"))?;
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let region = std::env::var("AWS_REGION")
                    .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|_| "us-east-1".into());
                let target = steps::aws::Target {
                    account: String::new(),
                    region,
                    role: None,
                    external_id: None,
                    session_name: steps::deploy::session_name(&pipeline.name, step_id),
                    endpoint: pipeline.defaults.aws_endpoint_url.clone(),
                };
                let session =
                    steps::aws::Sessions::default().get(&target).await.map_err(|e| format!("error: {e}\n"))?;
                session.s3().put_object().bucket(&bucket).key(&key).body(json.into()).send().await.map_err(|e| {
                    format!("error: cannot write the step's outputs to {url}: {}\n", steps::aws::aws_reason(&e))
                })?;
                eprintln!("outputs written to {url}");
                Ok::<(), String>(())
            })?;
        }
        Err(_) => println!("{}", String::from_utf8_lossy(&json)),
    }
    Ok(code)
}

/// The plan of a new definition a SelfUpdate found, with a catalog that remembers the run restarted.
fn plan_from_text(path: &Path, text: String, catalog: &StepCatalog) -> Result<(Plan, Arc<StepCatalog>), String> {
    let loaded = engine::load::parse(path, text).map_err(|e| e.render())?;
    let env = |name: &str| std::env::var(name).ok();
    let valid = validate::validate(loaded, catalog, &env).map_err(|invalid| invalid.render())?;
    let base_dir = std::env::current_dir().map_err(|e| format!("error: {e}\n"))?;
    let plan = Plan::build(valid, catalog, &PlanContext { base_dir }).map_err(|e| e.render())?;
    let mut next = catalog.clone();
    next.self_update.current = self_update_base(&plan);
    next.self_update.restarted = true;
    Ok((plan, Arc::new(next)))
}

/// The definition a SelfUpdate compares the new one with; only kept when the pipeline has a SelfUpdate (a copy
/// of the whole model otherwise held for nothing).
fn self_update_base(plan: &Plan) -> Option<Arc<engine::model::Pipeline>> {
    let steps = &plan.pipeline.loaded.pipeline.steps;
    steps
        .iter()
        .any(|s| matches!(s.kind, StepKind::SelfUpdate(_)))
        .then(|| Arc::new(plan.pipeline.loaded.pipeline.clone()))
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

fn run(mut plan: Plan, catalog: Arc<StepCatalog>, args: RunArgs, state_dir: &Path) -> Result<ExitCode, String> {
    let env: HashMap<String, String> = std::env::vars().collect();
    check_env(&plan, &catalog, &env)?;
    // Nothing points into the file from here on.
    plan.pipeline.loaded.release_source();
    let jobs = jobs_for(&plan, args.jobs);
    let name = &plan.pipeline.loaded.pipeline.name;
    let base_dir = std::env::current_dir().map_err(|e| format!("error: {e}\n"))?;
    let state_dir = if state_dir.is_absolute() { state_dir.to_path_buf() } else { base_dir.join(state_dir) };
    for id in args.force_step.iter().chain(&args.approve) {
        let known = plan.graph.node_weights().any(|n| *n.id == **id)
            || plan.pipeline.loaded.pipeline.steps.iter().any(|s| s.id == *id);
        if !known {
            let ids = plan.pipeline.loaded.pipeline.steps.iter().map(|s| s.id.as_str());
            let hint = closest(id, ids).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(format!("error: `{id}` is not a step of `{name}`{hint}\n"));
        }
    }
    let (run_id, run_dir, mut recorder, resumed) = if args.resume {
        let resume = runs::resume(&plan, &state_dir, args.allow_changed)?;
        eprintln!("resuming run {}: {} node(s) done there are reused", resume.run_id, resume.reused.len());
        let recorder = Recorder::resume(&resume.run_dir, resume.state);
        (resume.run_id, resume.run_dir, recorder, resume.reused)
    } else {
        let run_id = run_id(name);
        let run_dir = walk::run_dir(&state_dir, &run_id);
        let hashes = runs::step_hashes(&plan.pipeline.loaded.pipeline);
        let recorder = Recorder::new(&run_dir, args.file.display().to_string(), hashes)
            .map_err(|e| format!("error: cannot create {}: {e}\n", run_dir.display()))?;
        (run_id, run_dir, recorder, HashMap::new())
    };
    let fingerprints =
        engine::incremental::FingerprintStore::load(&state_dir, name).map_err(|e| format!("error: {e}\n"))?;
    let interactive =
        std::io::stderr().is_terminal() && std::io::stdin().is_terminal() && std::env::var_os("CI").is_none();
    let approvals = engine::approval::ApprovalDesk::default();
    let mut catalog = (*catalog).clone();
    catalog.approvals = steps::approval::ApprovalSettings {
        mode: if interactive && args.output == OutputFormat::Auto {
            steps::approval::ApprovalMode::Prompt
        } else if std::env::var_os("CI").is_some() {
            steps::approval::ApprovalMode::Fail
        } else {
            steps::approval::ApprovalMode::Wait
        },
        pre_approved: args.approve.iter().cloned().collect(),
        pipeline_file: args.file.display().to_string(),
    };
    catalog.self_update.current = self_update_base(&plan);
    catalog.local_only = args.local_only;
    catalog.pipeline_file = args.file.display().to_string();
    let catalog = Arc::new(catalog);
    let options = WalkOptions {
        run_id,
        jobs,
        fail_fast: args.fail_fast,
        base_dir,
        run_dir: run_dir.clone(),
        env: Arc::new(env),
        force: walk::Force { all: args.force, ids: args.force_step.iter().cloned().collect() },
        resumed,
        fingerprints: Some(fingerprints),
        approvals: approvals.clone(),
        state_dir,
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
            Box::new(TtyReporter::new(approvals))
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
        let deploys = steps_to_check
            .iter()
            .filter(|s| match &s.kind {
                StepKind::Deploy(_) => true,
                StepKind::Publish(p) => matches!(p.assets, engine::model::PublishAssets::Files { .. }),
                _ => false,
            })
            .count();
        if deploys == 0 {
            return Vec::new();
        }
        eprintln!("preflight: checking access to the accounts of {deploys} Deploy or Publish step(s)");
        steps::deploy::preflight(&steps_to_check, name, catalog.aws_endpoint.as_deref(), &preflight_env, &catalog.aws)
            .await
    });
    if !preflight.is_empty() {
        for e in &preflight {
            eprintln!("error: preflight: {e}");
        }
        eprintln!("nothing ran: a Deploy or Publish cannot act in its account (fix the access above and run again)");
        if let Some(junit) = &mut junit {
            junit.not_run(name, &options.run_id, "preflight", &preflight.join("\n"));
            if let Err(e) = junit.write() {
                eprintln!("error: {e}");
            }
        }
        return Ok(ExitCode::from(FAILED));
    }
    let outcome: Result<walk::RunOutcome, String> = runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(None);
        tokio::spawn(forward_signals(stop_tx));
        let (mut plan, mut catalog, mut options) = (plan, catalog, options);
        loop {
            let (tx, mut rx) = mpsc::channel(1024);
            let walk_plan = Arc::new(plan);
            let walker = {
                let (plan, stop_rx, options) = (Arc::clone(&walk_plan), stop_rx.clone(), options.clone());
                let catalog: Arc<dyn engine::step::Catalog> = catalog.clone();
                tokio::spawn(async move { walk::walk(&plan, catalog, options, stop_rx, tx).await })
            };
            while let Some(event) = rx.recv().await {
                summary.event(&event);
                recorder.handle(&event);
                reporter.event(&event);
                if let Some(junit) = &mut junit {
                    junit.event(&event);
                }
            }
            let outcome = walker.await.map_err(|e| format!("error: the run crashed: {e}\n"))?;
            let Some(restart) = outcome.restart else {
                reporter.finish(&summary);
                if let Some(e) = &recorder.error {
                    eprintln!("warning: {e}");
                }
                if let Some(Err(e)) = junit.as_ref().map(JunitReporter::write) {
                    eprintln!("error: {e}");
                }
                return Ok(outcome);
            };
            // SelfUpdate: plan the new definition; completed nodes it did not change are reused.
            let old = Arc::try_unwrap(walk_plan).unwrap_or_else(|p| (*p).clone());
            let (new_plan, new_catalog) = plan_from_text(&restart.path, restart.text, &catalog)?;
            options.resumed = runs::reusable(&old, &new_plan, recorder.state());
            options.fingerprints = Some(
                engine::incremental::FingerprintStore::load(
                    &options.state_dir,
                    &new_plan.pipeline.loaded.pipeline.name,
                )
                .map_err(|e| format!("error: {e}\n"))?,
            );
            plan = new_plan;
            catalog = new_catalog;
        }
    });
    let outcome = outcome?;
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
    for (i, step) in valid.loaded.pipeline.steps.iter().enumerate() {
        let refs = valid.env_refs_of(i);
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
            let span = valid.loaded.source_map().nearest(&format!("steps[{i}].kind.auth"));
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
