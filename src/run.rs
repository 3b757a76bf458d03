//! The run API: one call that runs a planned pipeline, the same for `runner run`, `runner step`, `runner
//! bootstrap` and `runner serve`. It checks the environment, takes the pipeline's lock, starts or resumes the run
//! record, checks access to every account (preflight), walks the plan (restarting once from a new definition when
//! a SelfUpdate asks), and hands every event to the run record, the summary and the reporters it was given.
//!
//! It never prints: what a person should read before the walk starts (resuming, preflight) goes to the
//! reporters' [`Reporter::notice`], so a server shows it on its page and the CLI on stderr.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::approval::ApprovalDesk;
use engine::diagnostic::Diagnostic;
use engine::event::RunStatus;
use engine::model::{PublishAssets, StepKind};
use engine::plan::Plan;
use engine::record::Recorder;
use engine::redact::Redactor;
use engine::step::StopReason;
use engine::subst::{ParameterRef, StoreValues};
use engine::validate::{self, closest};
use engine::walk::{self, WalkOptions};
use steps::approval::ApprovalMode;
use steps::StepCatalog;
use tokio::sync::{mpsc, watch};

use crate::pipeline::{self, Planned};
use crate::report::{Reporter, Summary};
use crate::runs;

/// Exit codes of the binary, as a run's ending maps to them.
pub mod exit {
    /// A step failed (or the preflight did: nothing ran).
    pub const FAILED: u8 = 1;
    /// Invalid input or usage: nothing ran.
    pub const INVALID: u8 = 2;
    /// Interrupted by SIGINT or SIGTERM.
    pub const INTERRUPTED: u8 = 130;
}

/// What to run, and how.
pub struct RunRequest {
    pub planned: Planned,
    /// The pipeline file as the user named it (kept in the run record, named in hints and dispatched builds).
    pub file: PathBuf,
    /// Where runs, caches and locks live; relative paths are taken from the current directory.
    pub state_dir: PathBuf,
    /// Steps at once; `None`: the pipeline's `max_parallel`, else 16; 0 = unlimited.
    pub jobs: Option<usize>,
    pub fail_fast: bool,
    /// Continue the last unfinished or failed run instead of starting one.
    pub resume: bool,
    /// With `resume`: run completed steps whose definition changed again instead of refusing.
    pub allow_changed: bool,
    pub force: bool,
    /// Step or node ids to force.
    pub force_steps: Vec<String>,
    /// Approval steps approved up front.
    pub approve: Vec<String>,
    /// How an Approval gets its answer when nobody approved it up front.
    pub approval_mode: ApprovalMode,
    /// Where waiting approvals are answered from inside this process (the terminal, a web page).
    pub approvals: ApprovalDesk,
    /// Run every step here, ignoring `run_on`.
    pub local_only: bool,
    /// When another run of the pipeline holds its lock: wait for it (true) or refuse at once (false).
    pub wait_for_lock: bool,
    /// The environment `${env:...}` reads and steps inherit.
    pub env: HashMap<String, String>,
    /// Source step id -> the commit it checks out whatever its reference points at when it runs: what a trigger
    /// saw, so that a run deploys the commit that started it (`runner serve`). Empty: each Source fetches its
    /// reference as it is then.
    pub source_commits: HashMap<String, String>,
    /// Step or node ids to run, with what they need (upstream), and nothing after them, like `cdk deploy STACK`.
    /// Empty: the whole pipeline.
    pub targets: Vec<String>,
    /// With `targets`: run only them, like `cdk deploy --exclusively`; what they need is taken, outputs and
    /// workspaces, from the latest run that did it with the same definition (refused when none did).
    pub exclusively: bool,
    /// What to tell people when the preflight refuses the run, instead of the generic line about Deploy and
    /// Publish steps (e.g. `runner bootstrap`: act through `--role`).
    pub preflight_remedy: Option<String>,
}

impl RunRequest {
    /// A fresh run of `planned` with the defaults: this process's environment, no forcing, approvals waited for.
    pub fn new(planned: Planned, file: PathBuf, state_dir: PathBuf) -> Self {
        RunRequest {
            planned,
            file,
            state_dir,
            jobs: None,
            fail_fast: false,
            resume: false,
            allow_changed: false,
            force: false,
            force_steps: Vec::new(),
            approve: Vec::new(),
            approval_mode: ApprovalMode::Wait,
            approvals: ApprovalDesk::default(),
            local_only: false,
            wait_for_lock: false,
            env: std::env::vars().collect(),
            source_commits: HashMap::new(),
            targets: Vec::new(),
            exclusively: false,
            preflight_remedy: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The walk ended with this status.
    Walked(RunStatus),
    /// The preflight found an account that cannot be reached (exit 1), or templates CloudFormation would refuse
    /// (`invalid_input`: exit 2): nothing ran.
    NotStarted { invalid_input: bool },
}

/// The end of a run.
pub struct RunEnd {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub ending: Ending,
    pub summary: Summary,
}

impl RunEnd {
    /// The binary's exit code for this ending.
    pub fn exit_code(&self) -> u8 {
        match self.ending {
            Ending::Walked(RunStatus::Succeeded) => 0,
            Ending::NotStarted { invalid_input: true } => exit::INVALID,
            Ending::Walked(RunStatus::Failed) | Ending::NotStarted { invalid_input: false } => exit::FAILED,
            Ending::Walked(RunStatus::Interrupted) => exit::INTERRUPTED,
        }
    }
}

/// Run a planned pipeline to its end. `Err` is invalid input or usage (exit 2), rendered for people: nothing ran
/// and no run was recorded. `stop` escalates (interrupt, then kill) as Ctrl-C does.
pub async fn run(
    request: RunRequest,
    mut reporters: Vec<Box<dyn Reporter>>,
    stop: watch::Receiver<Option<StopReason>>,
) -> Result<RunEnd, String> {
    let RunRequest { planned, file, state_dir, env, .. } = request;
    let Planned { mut plan, catalog } = planned;
    let base_dir = std::env::current_dir().map_err(|e| format!("error: {e}\n"))?;
    let state_dir = if state_dir.is_absolute() { state_dir } else { base_dir.join(state_dir) };
    let mut reused_upstream = HashMap::new();
    let mut selection_notice = None;
    if !request.targets.is_empty() {
        if request.resume {
            return Err("error: --resume continues a whole run: it takes no target steps and no --only\n".into());
        }
        let selected = pipeline::select(plan, &request.targets)?;
        plan = selected.plan;
        let names = request.targets.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ");
        if request.exclusively && !selected.upstream.is_empty() {
            let upstream: Vec<&str> = selected.upstream.iter().map(|n| &**n).collect();
            reused_upstream = runs::latest_successes(&plan, &state_dir, &upstream).map_err(|missing| {
                format!(
                    "error: --only {names}: {} never succeeded with the pipeline's current definition, so there is \
                     nothing to take {} outputs from\n  hint: `runner run {} {}` runs {names} and what {} needs\n",
                    missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                    if missing.len() == 1 { "its" } else { "their" },
                    file.display(),
                    request.targets.join(" "),
                    if request.targets.len() == 1 { "it" } else { "they" },
                )
            })?;
            selection_notice = Some(format!(
                "only {names}: {} node(s) run; what they need ({}) is taken from earlier runs",
                selected.targets.len(),
                upstream.join(", ")
            ));
        } else if request.exclusively {
            selection_notice = Some(format!("only {names}: {} node(s) run", selected.targets.len()));
        } else {
            selection_notice = Some(format!(
                "{names} and what {} needs: {} node(s) run",
                if request.targets.len() == 1 { "it" } else { "they" },
                plan.graph.node_count()
            ));
        }
    }
    check_env(&plan, &catalog, &env, &reused_upstream)?;
    if let Some(text) = &selection_notice {
        notice(&mut reporters, text);
    }
    // Where each `${ssm:...}` is written, for the message if it does not exist; nothing else points into the file.
    let ssm_places = ssm_places(&plan);
    plan.pipeline.loaded.release_source();
    let jobs = pipeline::jobs_for(&plan, request.jobs);
    let name = plan.pipeline.loaded.pipeline.name.clone();
    check_ids(&plan, request.force_steps.iter().chain(&request.approve))?;

    let mut lock = PipelineLock::acquire(&state_dir, &name, request.wait_for_lock, &mut reporters).await?;
    let resume = match request.resume.then(|| runs::resume(&plan, &state_dir, request.allow_changed)).transpose()? {
        Some(runs::Resumable::Run(resume)) => Some(*resume),
        Some(runs::Resumable::Fresh(why)) => {
            notice(&mut reporters, &format!("{why}: starting a new run"));
            None
        }
        None => None,
    };
    let (run_id, run_dir, mut recorder, resumed) = if let Some(resume) = resume {
        let text = if resume.state.nodes.values().all(|n| n.started.is_none()) {
            format!("resuming run {}: nothing ran there (it stopped before its first step)", resume.run_id)
        } else {
            format!("resuming run {}: {} node(s) done there are reused", resume.run_id, resume.reused.len())
        };
        notice(&mut reporters, &text);
        let recorder = Recorder::resume(&resume.run_dir, resume.state);
        (resume.run_id, resume.run_dir, recorder, resume.reused)
    } else {
        let run_id = new_run_id(&state_dir, &name);
        let run_dir = walk::run_dir(&state_dir, &run_id);
        let hashes = runs::step_hashes(&plan.pipeline.loaded.pipeline);
        let recorder = Recorder::new(&run_dir, &run_id, &name, file.display().to_string(), hashes)
            .map_err(|e| format!("error: cannot create {}: {e}\n", run_dir.display()))?;
        (run_id, run_dir, recorder, reused_upstream)
    };
    lock.holds(&run_id);
    for r in &mut reporters {
        r.recorded(&run_id, &run_dir);
    }
    let fingerprints =
        engine::incremental::FingerprintStore::load(&state_dir, &name).map_err(|e| format!("error: {e}\n"))?;
    if let Some(why) = &fingerprints.damaged {
        notice(&mut reporters, &format!("warning: {why}"));
    }

    let mut catalog = (*catalog).clone();
    catalog.approvals = steps::approval::ApprovalSettings {
        mode: request.approval_mode,
        pre_approved: request.approve.iter().cloned().collect(),
        pipeline_file: file.display().to_string(),
    };
    catalog.self_update.current = pipeline::self_update_base(&plan);
    catalog.local_only = request.local_only;
    catalog.pipeline_file = file.display().to_string();
    catalog.source_commits = request.source_commits;
    let catalog = Arc::new(catalog);
    let mut options = WalkOptions {
        run_id: run_id.clone(),
        jobs,
        fail_fast: request.fail_fast,
        base_dir: base_dir.clone(),
        run_dir: run_dir.clone(),
        env: Arc::new(env),
        store: Arc::default(),
        redactor: Arc::default(),
        force: walk::Force { all: request.force, ids: request.force_steps.iter().cloned().collect() },
        resumed,
        fingerprints: Some(fingerprints),
        approvals: request.approvals.clone(),
        state_dir,
    };
    if let Ok(exe) = std::env::current_exe() {
        steps::process::enable_guardian(exe);
    }
    let mut summary = Summary::new(run_dir.display().to_string());

    // `${ssm:...}` values, read once with the caller's credentials; then every account is checked with them.
    let checked = match read_parameter_store(&plan, &catalog, &ssm_places, &mut reporters).await {
        Ok(read) => {
            options.redactor = Arc::new(Redactor::new(read.secrets));
            options.store = Arc::new(read.values);
            preflight(&plan, &catalog, &options.env, &options.store, &base_dir, &mut reporters).await
        }
        Err(errors) => Err(Refused {
            errors,
            remedy: Some(
                "nothing ran: the Parameter Store values the pipeline uses could not be read (see above)".into(),
            ),
            invalid_input: false,
        }),
    };
    if let Err(Refused { errors, remedy, invalid_input }) = checked {
        let error = format!("preflight: {}", errors.join("\npreflight: "));
        recorder.not_started(&error);
        summary.not_started(&run_id, &name, &error);
        summary.remedy = remedy.or_else(|| request.preflight_remedy.clone());
        for r in &mut reporters {
            r.not_started(&summary, &errors);
        }
        return Ok(RunEnd { run_id, run_dir, ending: Ending::NotStarted { invalid_input }, summary });
    }

    let (mut plan, mut catalog, mut options) = (plan, catalog, options);
    loop {
        let (tx, mut rx) = mpsc::channel(1024);
        let walk_plan = Arc::new(plan);
        let walker = {
            let (plan, stop, options) = (Arc::clone(&walk_plan), stop.clone(), options.clone());
            let catalog: Arc<dyn engine::step::Catalog> = catalog.clone();
            tokio::spawn(async move { walk::walk(&plan, catalog, options, stop, tx).await })
        };
        let mut signals = stop.clone();
        let mut signals_open = true;
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(mut event) = event else { break };
                    // Nothing a reporter shows or the record keeps holds a secret.
                    options.redactor.event(&mut event);
                    summary.event(&event);
                    recorder.handle(&event);
                    for r in &mut reporters {
                        r.event(&event);
                    }
                }
                // Said through the reporters, so that a terminal's bars are moved out of the way first.
                changed = signals.changed(), if signals_open => {
                    signals_open = changed.is_ok();
                    let text = match *signals.borrow_and_update() {
                        Some(StopReason::Interrupt) => "interrupted: stopping running steps (again to kill them now)",
                        Some(StopReason::Kill) => "interrupted again: killing running steps",
                        _ => continue,
                    };
                    notice(&mut reporters, text);
                }
            }
        }
        let outcome = walker.await.map_err(|e| format!("error: the run crashed: {e}\n"))?;
        let Some(restart) = outcome.restart else {
            if let Some(e) = &recorder.error {
                notice(&mut reporters, &format!("warning: {e}"));
            }
            for r in &mut reporters {
                r.finish(&summary);
            }
            return Ok(RunEnd { run_id, run_dir, ending: Ending::Walked(outcome.status), summary });
        };
        // SelfUpdate: plan the new definition; completed nodes it did not change are reused.
        let old = Arc::try_unwrap(walk_plan).unwrap_or_else(|p| (*p).clone());
        let next = pipeline::plan_restart(&restart.path, restart.text, &catalog, &base_dir)?;
        // The new definition may read more of Parameter Store.
        if let Some(unread) = unread_references(&next.plan, &options.store) {
            let read = steps::parameter_store::read_references(&unread, &catalog.aws, catalog.aws_endpoint.as_deref())
                .await
                .map_err(|errors| {
                    let lines: Vec<String> = errors.into_iter().map(|e| format!("error: {}", e.message)).collect();
                    format!("{}\nthe new definition cannot run\n", lines.join("\n"))
                })?;
            let mut store = (*options.store).clone();
            store.values.extend(read.values.values);
            options.store = Arc::new(store);
            let mut secrets = read.secrets;
            secrets.extend(options.redactor.secrets().iter().cloned());
            options.redactor = Arc::new(Redactor::new(secrets));
        }
        options.resumed = runs::reusable(&old, &next.plan, recorder.state());
        options.fingerprints = Some(
            engine::incremental::FingerprintStore::load(&options.state_dir, next.name())
                .map_err(|e| format!("error: {e}\n"))?,
        );
        plan = next.plan;
        catalog = next.catalog;
    }
}

fn notice(reporters: &mut [Box<dyn Reporter>], text: &str) {
    reporters.iter_mut().for_each(|r| r.notice(text));
}

/// `--force-step` and `--approve` must name steps or nodes of the plan.
fn check_ids<'a>(plan: &Plan, ids: impl Iterator<Item = &'a String>) -> Result<(), String> {
    let steps = &plan.pipeline.loaded.pipeline.steps;
    for id in ids {
        let known = plan.graph.node_weights().any(|n| *n.id == **id) || steps.iter().any(|s| s.id == *id);
        if !known {
            let hint = closest(id, steps.iter().map(|s| s.id.as_str()))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let id = engine::diagnostic::elide(id, engine::diagnostic::MAX_QUOTED);
            return Err(format!("error: `{id}` is not a step of `{}`{hint}\n", plan.pipeline.loaded.pipeline.name));
        }
    }
    Ok(())
}

/// Why the preflight stopped a run: its errors, and what to do about them when there is more to say than the
/// reporters' generic line.
struct Refused {
    errors: Vec<String>,
    remedy: Option<String>,
    /// The input is at fault (templates), not an account's access.
    invalid_input: bool,
}

/// Read every `${ssm:...}` of the pipeline from Parameter Store with the caller's credentials. The errors name each
/// parameter that does not exist and where the pipeline uses it.
async fn read_parameter_store(
    plan: &Plan,
    catalog: &StepCatalog,
    places: &HashMap<ParameterRef, String>,
    reporters: &mut [Box<dyn Reporter>],
) -> Result<steps::parameter_store::Read, Vec<String>> {
    let refs: Vec<ParameterRef> = plan.pipeline.ssm_refs.keys().cloned().collect();
    if refs.is_empty() {
        return Ok(Default::default());
    }
    notice(reporters, &format!("reading {} parameter(s) from SSM Parameter Store", refs.len()));
    steps::parameter_store::read_references(&refs, &catalog.aws, catalog.aws_endpoint.as_deref()).await.map_err(
        |errors| {
            errors
                .into_iter()
                .map(|e| match e.missing.as_ref().and_then(|r| places.get(r)) {
                    Some(place) => format!("{} (used at {place})", e.message),
                    None => e.message,
                })
                .collect()
        },
    )
}

/// `file:line:column` of the first use of each `${ssm:...}`.
fn ssm_places(plan: &Plan) -> HashMap<ParameterRef, String> {
    let loaded = &plan.pipeline.loaded;
    plan.pipeline
        .ssm_refs
        .iter()
        .filter_map(|(r, span)| {
            let span = (*span)?;
            let (file, text) = loaded.file_of(Some(span));
            let (line, column) = engine::diagnostic::line_col(text, span.start);
            Some((r.clone(), format!("{}:{line}:{column}", file.display())))
        })
        .collect()
}

/// The `${ssm:...}` of a new definition not read yet, if any.
fn unread_references(plan: &Plan, store: &StoreValues) -> Option<Vec<ParameterRef>> {
    let unread: Vec<ParameterRef> =
        plan.pipeline.ssm_refs.keys().filter(|r| !store.values.contains_key(*r)).cloned().collect();
    (!unread.is_empty()).then_some(unread)
}

/// Every Deploy's role (and every Publish's of files declared in the pipeline) can be assumed and acts in its
/// account; then every template already there is read and checked (steps::stage::check_at_start). No credentials
/// at all is said once, not once per account.
async fn preflight(
    plan: &Plan,
    catalog: &StepCatalog,
    env: &HashMap<String, String>,
    store: &StoreValues,
    base_dir: &std::path::Path,
    reporters: &mut [Box<dyn Reporter>],
) -> Result<(), Refused> {
    let steps = &plan.pipeline.loaded.pipeline.steps;
    let checked = steps
        .iter()
        .filter(|s| match &s.kind {
            StepKind::Deploy(_) => true,
            StepKind::Publish(p) => matches!(p.assets, PublishAssets::Files { .. }),
            _ => false,
        })
        .count();
    if checked == 0 {
        return Ok(());
    }
    notice(reporters, &format!("preflight: checking access to the accounts of {checked} Deploy or Publish step(s)"));
    if let Err(e) = catalog.aws.check_credentials(catalog.aws_endpoint.as_deref()).await {
        return Err(Refused {
            errors: vec![e.0],
            remedy: Some("nothing ran: no AWS credentials (see above)".to_string()),
            invalid_input: false,
        });
    }
    let name = &plan.pipeline.loaded.pipeline.name;
    let errors = steps::deploy::preflight(steps, name, catalog.aws_endpoint.as_deref(), env, store, &catalog.aws).await;
    if !errors.is_empty() {
        return Err(Refused { errors, remedy: None, invalid_input: false });
    }
    let errors = steps::stage::check_at_start(catalog, steps, base_dir, name, env).await;
    if errors.is_empty() {
        Ok(())
    } else {
        let remedy =
            Some("nothing ran: fix the templates above (or what the pipeline gives them) and run again".into());
        Err(Refused { errors, remedy, invalid_input: true })
    }
}

/// Every `${env:...}` of the steps that will run must be set; else list them all (exit 2, nothing runs). Steps
/// with no node in the plan (left out by a selection) or only reused nodes do not run.
fn check_env(
    plan: &Plan,
    catalog: &StepCatalog,
    env: &HashMap<String, String>,
    reused: &HashMap<String, engine::walk::Reused>,
) -> Result<(), String> {
    let valid = &plan.pipeline;
    let mut missing: Vec<Diagnostic> = Vec::new();
    let mut seen = BTreeSet::new();
    let runs: std::collections::HashSet<usize> =
        plan.graph.node_weights().filter(|n| !reused.contains_key(&*n.id)).map(|n| n.step).collect();
    for (i, step) in valid.loaded.pipeline.steps.iter().enumerate() {
        if !runs.contains(&i) {
            continue;
        }
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
    let names: BTreeSet<&str> = missing.iter().filter_map(|d| d.message.split('`').nth(1)).collect();
    // A repository named by a variable can also be given as a local checkout.
    let of_a_repository = valid.loaded.pipeline.steps.iter().any(|s| match &s.kind {
        StepKind::Source(spec) => names.iter().any(|n| spec.repository.contains(&format!("${{env:{n}}}"))),
        _ => false,
    });
    let or = if of_a_repository { " (or give the source as a local checkout: --source-dir PATH)" } else { "" };
    Err(format!(
        "{}\nnothing ran: set {} and run again{or}\n",
        validate::render_all(&valid.loaded, &missing),
        names.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// `<pipeline>-<UTC time>`, e.g. `prod-20261125T162244.123Z`: sortable, and unique under the pipeline's lock (a
/// millisecond already taken by a run directory moves the id on by one).
fn new_run_id(state_dir: &Path, pipeline: &str) -> String {
    let mut time = std::time::SystemTime::now();
    loop {
        let t = humantime::format_rfc3339_millis(time).to_string();
        let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
        let id = format!("{pipeline}-{compact}");
        if !walk::run_dir(state_dir, &id).exists() {
            return id;
        }
        time += std::time::Duration::from_millis(1);
    }
}

/// One run at a time per pipeline and state dir: an exclusive `flock` on `<state>/locks/<pipeline>.lock`, held
/// until the run ends (the kernel lets go when the process dies, SIGKILL included). The file says who holds it
/// (`pid N run ID`), for the message a second run gets. Reading commands (`status`, `history`, `approve`) never
/// take it.
struct PipelineLock {
    file: File,
}

impl PipelineLock {
    async fn acquire(
        state_dir: &Path,
        pipeline: &str,
        wait: bool,
        reporters: &mut [Box<dyn Reporter>],
    ) -> Result<PipelineLock, String> {
        let dir = state_dir.join("locks");
        std::fs::create_dir_all(&dir).map_err(|e| format!("error: cannot create {}: {e}\n", dir.display()))?;
        let path = dir.join(format!("{pipeline}.lock"));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("error: cannot open {}: {e}\n", path.display()))?;
        if !try_lock(&file, false).map_err(|e| format!("error: cannot lock {}: {e}\n", path.display()))? {
            let holder = describe_holder(&read_holder(&mut file).await);
            if !wait {
                return Err(format!(
                    "error: another run of `{pipeline}` is in progress ({holder})\n  hint: wait for it to end (or \
                     pass --wait to queue behind it); `runner status` shows it\n"
                ));
            }
            notice(reporters, &format!("waiting: another run of `{pipeline}` is in progress ({holder})"));
            let blocking = file.try_clone().map_err(|e| format!("error: {}: {e}\n", path.display()))?;
            tokio::task::spawn_blocking(move || try_lock(&blocking, true))
                .await
                .map_err(|e| format!("error: {e}\n"))?
                .map_err(|e| format!("error: cannot lock {}: {e}\n", path.display()))?;
        }
        let mut lock = PipelineLock { file };
        lock.write(&format!("pid {}", std::process::id()));
        Ok(lock)
    }

    /// Name the run now holding the lock.
    fn holds(&mut self, run_id: &str) {
        self.write(&format!("pid {} run {run_id}", std::process::id()));
    }

    fn write(&mut self, text: &str) {
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = self.file.write_all(text.as_bytes());
    }
}

/// `flock(LOCK_EX)`, blocking or not; `Ok(false)` when another holds it and `block` is false.
fn try_lock(file: &File, block: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = if block { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    loop {
        // SAFETY: flock on a descriptor this File owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// `pid 4242 run prod-2026...` -> `pid 4242, run prod-2026...`.
/// What the lock file says of its holder, once the holder has named its run: a run writes its pid as it takes
/// the lock and its run id a moment later (the id is chosen under the lock), and until then the file may still
/// name the previous holder. Read again every 20 ms for up to 2 s, until it names a live process and a run.
async fn read_holder(file: &mut File) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut text);
        let pid = text.split_whitespace().skip_while(|w| *w != "pid").nth(1).and_then(|p| p.parse::<i32>().ok());
        // SAFETY: signal 0 only checks that the process exists.
        let alive = pid.is_some_and(|p| p > 0 && unsafe { libc::kill(p, 0) } == 0);
        if (alive && text.contains(" run ")) || std::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn describe_holder(text: &str) -> String {
    let mut words = text.split_whitespace();
    let mut parts = Vec::new();
    while let (Some(key), Some(value)) = (words.next(), words.next()) {
        if matches!(key, "pid" | "run") {
            parts.push(format!("{key} {}", value.chars().take(300).collect::<String>()));
        }
    }
    if parts.is_empty() {
        "its process is starting".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_described_from_the_lock_file() {
        assert_eq!(describe_holder("pid 42 run prod-20261129T101010.000Z"), "pid 42, run prod-20261129T101010.000Z");
        assert_eq!(describe_holder("pid 42"), "pid 42");
        assert_eq!(describe_holder(""), "its process is starting");
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_while_the_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.lock");
        let a = File::create(&path).unwrap();
        let b = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(try_lock(&a, false).unwrap());
        assert!(!try_lock(&b, false).unwrap());
        drop(a);
        assert!(try_lock(&b, false).unwrap());
    }

    #[test]
    fn run_ids_taken_by_a_run_directory_move_on() {
        let dir = tempfile::tempdir().unwrap();
        let first = new_run_id(dir.path(), "p");
        std::fs::create_dir_all(walk::run_dir(dir.path(), &first)).unwrap();
        let second = new_run_id(dir.path(), "p");
        assert!(second > first, "{first} then {second}");
    }
}
