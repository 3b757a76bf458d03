//! The queue of one pipeline: one run at a time; while it runs, the newest trigger waits and replaces any older
//! waiting one, which is recorded as superseded (CodePipeline's SUPERSEDED mode). A bound across pipelines
//! (`--max-runs`) is a semaphore every run holds a permit of. Runs go through the run API, like `runner run`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use engine::model::Pipeline;
use engine::step::StopReason;
use tokio::sync::{watch, Notify};

use super::live::{LiveReporter, LiveRun};
use super::record::{now, Cause, PipelineRecord, Started, Trigger};
use super::view::RunSummary;
use super::Server;
use crate::run::RunRequest;

/// One pipeline the server runs.
pub struct Slot {
    pub name: String,
    /// The file as given on the command line.
    pub file: PathBuf,
    /// The definition as last loaded (at start, then at each run).
    model: Mutex<Arc<Pipeline>>,
    record_path: PathBuf,
    state: Mutex<QueueState>,
    /// Something was queued.
    wake: Notify,
    /// The running run ended.
    idle: Notify,
    pub polls: Mutex<PollState>,
    /// Summaries of finished runs (they never change), so listing history reads each run's record once.
    pub summaries: Mutex<HashMap<String, RunSummary>>,
}

/// What the queue holds now.
#[derive(Default)]
pub struct QueueState {
    pub running: Option<Arc<LiveRun>>,
    pub waiting: Option<Trigger>,
    /// The commits of the newest trigger accepted (waiting, running or started last): a trigger that saw the same
    /// is not queued again.
    pub last_seen: BTreeMap<String, String>,
    pub record: PipelineRecord,
}

/// The last checks of the pipeline's branches.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PollState {
    /// When the remote was last asked (RFC 3339).
    pub checked_at: Option<String>,
    /// How many times it was asked since the server started.
    pub checks: u64,
    /// Why the last check failed, if it did.
    pub error: Option<String>,
}

/// What became of a trigger offered to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// It waits for the running run (or for a permit), replacing `superseded` if one waited.
    Queued { superseded: Option<Trigger> },
    /// Its commits are those of the newest trigger already accepted: nothing to do.
    Unchanged,
}

impl Slot {
    pub fn new(file: PathBuf, model: Pipeline, serve_dir: &Path) -> Slot {
        let name = model.name.clone();
        Slot {
            record_path: PipelineRecord::path(serve_dir, &name),
            name,
            file,
            model: Mutex::new(Arc::new(model)),
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            polls: Mutex::new(PollState::default()),
            summaries: Mutex::new(HashMap::new()),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn model(&self) -> Arc<Pipeline> {
        Arc::clone(&self.model.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Pick up where the last server left off: the commits it started last are not started again, whatever
    /// happened to that run (a server killed mid-run shows the run interrupted; see README).
    pub fn restore(&self, _server: &Server) {
        let record = PipelineRecord::load(&self.record_path);
        let mut state = self.state();
        if let Some(started) = &record.last_started {
            state.last_seen = started.trigger.commits.clone();
        }
        state.record = record;
    }

    /// Queue a trigger, unless `always` is false and it saw the commits already accepted last.
    pub fn offer(&self, trigger: Trigger, always: bool) -> Offer {
        let mut state = self.state();
        let seen = !trigger.commits.is_empty()
            && trigger.commits.iter().all(|(source, commit)| state.last_seen.get(source) == Some(commit));
        if seen && !always {
            return Offer::Unchanged;
        }
        state.last_seen.extend(trigger.commits.clone());
        let superseded = state.waiting.replace(trigger.clone());
        if let Some(old) = &superseded {
            state.record.supersede(old.clone(), &trigger);
            if let Err(e) = state.record.save(&self.record_path) {
                tracing::warn!("{}: {e}", self.name);
            }
            eprintln!(
                "{}: commit {} superseded by {} while waiting",
                self.name,
                old.short_commit(),
                trigger.short_commit()
            );
        }
        drop(state);
        self.wake.notify_one();
        Offer::Queued { superseded }
    }

    /// Ask the running run to stop (as Ctrl-C asks `runner run`).
    pub fn stop_running(&self, reason: StopReason) {
        if let Some(run) = &self.state().running {
            run.stop(reason);
        }
    }

    /// Wait until no run of this pipeline is in progress.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.state().running.is_none() {
                return;
            }
            notified.await;
        }
    }

    /// The run in progress, if it is `run_id`.
    pub fn live(&self, run_id: &str) -> Option<Arc<LiveRun>> {
        self.state().running.clone().filter(|r| r.run_id().as_deref() == Some(run_id))
    }
}

/// The pipeline's dispatcher: waits for a trigger and a permit, then runs it; until the server stops.
pub async fn dispatch(server: Arc<Server>, slot: Arc<Slot>, mut stop: watch::Receiver<bool>) {
    loop {
        loop {
            if *stop.borrow() {
                return;
            }
            if slot.state().waiting.is_some() {
                break;
            }
            tokio::select! {
                _ = slot.wake.notified() => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
        }
        let permit = tokio::select! {
            permit = Arc::clone(&server.run_permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        // Taken only now: while it waited for a permit, a newer trigger could still replace it.
        let live = {
            let mut state = slot.state();
            let Some(trigger) = state.waiting.take() else { continue };
            let live = LiveRun::new(&slot.name, trigger);
            state.running = Some(Arc::clone(&live));
            live
        };
        execute(&server, &slot, &live).await;
        slot.state().running = None;
        slot.idle.notify_waiters();
        drop(permit);
    }
}

/// One run of the pipeline for a trigger, through the run API.
async fn execute(server: &Arc<Server>, slot: &Arc<Slot>, live: &Arc<LiveRun>) {
    let trigger = live.trigger.clone();
    // Written before anything starts: a server killed from here on never starts these commits again.
    {
        let mut state = slot.state();
        state.record.last_started =
            Some(Started { trigger: trigger.clone(), started_at: now(), run_id: None, error: None });
        if let Err(e) = state.record.save(&slot.record_path) {
            tracing::warn!("{}: {e}", slot.name);
        }
    }
    let previous_failed = previous_run_failed(&server.state_dir, &slot.name);
    let planned = match crate::pipeline::load(&slot.file, &[]) {
        Ok(planned) => planned,
        Err(message) => {
            not_run(server, slot, live, &message);
            return;
        }
    };
    *slot.model.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(planned.plan.pipeline.loaded.pipeline.clone());
    let notifications = planned.plan.pipeline.loaded.pipeline.notifications.clone();
    let unknown: Vec<&String> = trigger
        .commits
        .keys()
        .filter(|id| {
            !planned
                .plan
                .pipeline
                .loaded
                .pipeline
                .steps
                .iter()
                .any(|s| s.id.as_str() == id.as_str() && matches!(s.kind, engine::model::StepKind::Source(_)))
        })
        .collect();
    if !unknown.is_empty() {
        let message = format!(
            "error: the pipeline has no Source step {} any more (the trigger saw a commit for it)\n",
            unknown.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        );
        not_run(server, slot, live, &message);
        return;
    }
    let mut request = RunRequest::new(planned, slot.file.clone(), server.state_dir.clone());
    request.source_commits = trigger.commits.clone().into_iter().collect();
    request.approvals = live.approvals.clone();
    request.wait_for_lock = true;
    request.approval_mode = steps::approval::ApprovalMode::Wait;
    let reporter = LiveReporter::new(Arc::clone(server), Arc::clone(slot), Arc::clone(live), notifications.clone());
    let reporter = reporter.previous_failed(previous_failed);
    let reporters: Vec<Box<dyn crate::report::Reporter>> = vec![Box::new(reporter)];
    let result = crate::run::run(request, reporters, live.stop_signal()).await;
    if let Err(message) = result {
        live.not_started(&message);
        eprintln!("{}: nothing ran for {}: {}", slot.name, trigger.short_commit(), first_line(&message));
        super::notify::send(
            server,
            &slot.name,
            &notifications,
            super::notify::Occasion::Failed,
            format!("`{}` did not start for {}: {}", slot.name, trigger.short_commit(), first_line(&message)),
            live.run_id().map(|id| server.run_url(&slot.name, &id)),
        );
    }
}

/// The pipeline file cannot be run (invalid now): no run is recorded; the error is kept on the pipeline's record
/// and page, and notified.
fn not_run(server: &Arc<Server>, slot: &Arc<Slot>, live: &Arc<LiveRun>, message: &str) {
    live.not_started(message);
    eprintln!("{}: nothing ran for {}: {}", slot.name, live.trigger.short_commit(), first_line(message));
    {
        let mut state = slot.state();
        if let Some(started) = &mut state.record.last_started {
            started.error = Some(message.to_string());
        }
        if let Err(e) = state.record.save(&slot.record_path) {
            tracing::warn!("{}: {e}", slot.name);
        }
    }
    let notifications = slot.model().notifications.clone();
    super::notify::send(
        server,
        &slot.name,
        &notifications,
        super::notify::Occasion::Failed,
        format!("`{}` did not start for {}: {}", slot.name, live.trigger.short_commit(), first_line(message)),
        Some(format!("{}/pipelines/{}", server.public_url.trim_end_matches('/'), slot.name)),
    );
}

fn first_line(text: &str) -> &str {
    text.trim_start_matches("error: ").lines().next().unwrap_or("")
}

/// Whether the pipeline's latest run (before the one about to start) failed: a success now is then "fixed".
fn previous_run_failed(state_dir: &Path, pipeline: &str) -> bool {
    let runs = crate::runs::runs_of(state_dir, pipeline);
    runs.last().and_then(|(_, dir)| engine::record::RunState::load(dir).ok()).is_some_and(|s| s.status == "failed")
}

/// A manual trigger: the branches' commits now (asked of the remotes), queued even when they already ran.
pub async fn trigger_now(server: &Arc<Server>, slot: &Arc<Slot>, by: &str) -> Result<Offer, String> {
    let commits = super::trigger::check(server, slot).await?;
    Ok(slot.offer(Trigger::new(commits, Cause::Manual { by: by.to_string() }), true))
}
