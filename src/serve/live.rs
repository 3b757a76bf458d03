//! The event fan-out of a run the server started: one reporter given to the run API that keeps the run's view for
//! the pages, broadcasts each event (as the JSON events of `runner run --output json`) to the page's and the
//! API's server-sent event streams, writes them to `serve/runs/<run-id>.events.jsonl`, keeps the server's meta
//! record of the run, and hands occasions to the notifiers. It never drives the run: approving and cancelling go
//! through the handles the run API was given (the approval desk, the stop signal).

use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use engine::approval::{Answer, ApprovalDesk};
use engine::event::{Event, EventKind, RunStatus};
use engine::model::Notification;
use engine::step::StopReason;
use tokio::sync::{broadcast, watch};

use super::notify::{self, Occasion};
use super::queue::Slot;
use super::record::{RunMeta, Trigger};
use super::view::RunView;
use super::Server;
use crate::report::{Reporter, Summary};

/// Events a slow subscriber may fall behind by before it is told to reload.
const BROADCAST_CAPACITY: usize = 1024;

/// A run in progress in this server.
pub struct LiveRun {
    pub pipeline: String,
    pub trigger: Trigger,
    /// Where the run's Approval steps wait: the page's and the API's answers go there.
    pub approvals: ApprovalDesk,
    stop: watch::Sender<Option<StopReason>>,
    view: Mutex<RunView>,
    events: broadcast::Sender<Arc<str>>,
}

impl LiveRun {
    pub fn new(pipeline: &str, trigger: Trigger) -> Arc<LiveRun> {
        let (stop, _) = watch::channel(None);
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Arc::new(LiveRun {
            pipeline: pipeline.to_string(),
            view: Mutex::new(RunView::queued(pipeline, trigger.clone())),
            trigger,
            approvals: ApprovalDesk::default(),
            stop,
            events,
        })
    }

    pub fn view(&self) -> MutexGuard<'_, RunView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn run_id(&self) -> Option<String> {
        self.view().run_id.clone()
    }

    /// The stop signal the run API watches.
    pub fn stop_signal(&self) -> watch::Receiver<Option<StopReason>> {
        self.stop.subscribe()
    }

    /// Ask the run to stop: running steps get SIGTERM; asked again, SIGKILL (as Ctrl-C twice). Returns what was
    /// asked.
    pub fn cancel(&self) -> StopReason {
        let reason = match *self.stop.borrow() {
            None => StopReason::Interrupt,
            Some(_) => StopReason::Kill,
        };
        self.stop(reason);
        reason
    }

    pub fn stop(&self, reason: StopReason) {
        self.stop.send_replace(Some(reason));
    }

    /// Answer a waiting Approval node. Errors say why not (nothing waits there).
    pub fn answer(&self, node: &str, approved: bool, by: &str) -> Result<(), String> {
        if !self.approvals.is_waiting(node) {
            return Err(format!("`{node}` does not wait for an approval"));
        }
        if self.approvals.answer(node, Answer { approved, by: by.to_string() }) {
            Ok(())
        } else {
            Err(format!("`{node}` does not wait for an approval"))
        }
    }

    /// The view now and the events from now on, with nothing lost in between.
    pub fn subscribe(&self) -> (RunView, broadcast::Receiver<Arc<str>>) {
        let view = self.view();
        let rx = self.events.subscribe();
        (view.clone(), rx)
    }

    /// Nothing ran: the pipeline could not be loaded or run (`message`, rendered for people).
    pub fn not_started(&self, message: &str) {
        {
            let mut view = self.view();
            view.status = "failed".into();
            view.live = false;
            view.error = Some(message.trim_end().to_string());
        }
        self.broadcast(serde_json::json!({"event": "run_not_started", "error": message.trim_end()}).to_string());
    }

    fn broadcast(&self, json: String) {
        let _ = self.events.send(Arc::from(json));
    }

    fn notice(&self, text: &str) {
        self.view().notices.push(text.to_string());
        self.broadcast(serde_json::json!({"event": "notice", "text": text}).to_string());
    }
}

/// The reporter the server gives the run API.
pub struct LiveReporter {
    server: Arc<Server>,
    slot: Arc<Slot>,
    live: Arc<LiveRun>,
    notifications: Vec<Notification>,
    previous_failed: bool,
    meta: RunMeta,
    events_file: Option<BufWriter<std::fs::File>>,
}

impl LiveReporter {
    pub fn new(server: Arc<Server>, slot: Arc<Slot>, live: Arc<LiveRun>, notifications: Vec<Notification>) -> Self {
        let meta = RunMeta { pipeline: slot.name.clone(), trigger: Some(live.trigger.clone()), ..Default::default() };
        LiveReporter { server, slot, live, notifications, previous_failed: false, meta, events_file: None }
    }

    /// The pipeline's previous run failed: a success now is notified as fixed.
    pub fn previous_failed(mut self, failed: bool) -> Self {
        self.previous_failed = failed;
        self
    }

    fn save_meta(&self) {
        if self.meta.run_id.is_empty() {
            return;
        }
        if let Err(e) = self.meta.save(&self.server.dir()) {
            tracing::warn!("{}: {e}", self.slot.name);
        }
    }

    fn notify(&self, occasion: Occasion, text: String) {
        let link = self.live.run_id().map(|id| self.server.run_url(&self.slot.name, &id));
        notify::send(&self.server, &self.slot.name, &self.notifications, occasion, text, link);
    }
}

impl Reporter for LiveReporter {
    fn recorded(&mut self, run_id: &str, _run_dir: &std::path::Path) {
        self.live.view().run_id = Some(run_id.to_string());
        self.meta.run_id = run_id.to_string();
        self.save_meta();
        {
            let mut state = self.slot.state();
            if let Some(started) = &mut state.record.last_started {
                if started.trigger == self.live.trigger {
                    started.run_id = Some(run_id.to_string());
                }
            }
            let path = super::record::PipelineRecord::path(&self.server.dir(), &self.slot.name);
            if let Err(e) = state.record.save(&path) {
                tracing::warn!("{}: {e}", self.slot.name);
            }
        }
        let path = self.server.dir().join("runs").join(format!("{run_id}.events.jsonl"));
        self.events_file = std::fs::File::create(&path).ok().map(BufWriter::new);
        eprintln!(
            "{}: run {run_id} started for {}",
            self.slot.name,
            super::trigger::describe_trigger(&self.live.trigger)
        );
        self.live.broadcast(serde_json::json!({"event": "run_recorded", "run_id": run_id}).to_string());
    }

    fn event(&mut self, event: &Event) {
        self.live.view().apply(event);
        let Ok(json) = serde_json::to_string(event) else { return };
        if let Some(file) = &mut self.events_file {
            let _ = file.write_all(json.as_bytes());
            let _ = file.write_all(b"\n");
        }
        match &event.kind {
            EventKind::RunStarted { nodes, .. } => {
                self.meta.nodes = nodes.iter().map(Into::into).collect();
                self.save_meta();
            }
            EventKind::NodesAdded { nodes, .. } => {
                self.meta.nodes.extend(nodes.iter().map(Into::into));
                self.save_meta();
            }
            EventKind::RunFinished { critical_path, critical_path_ms, .. } => {
                self.meta.critical_path = critical_path.clone();
                self.meta.critical_path_ms = critical_path_ms.as_millis() as u64;
                self.save_meta();
                if let Some(file) = &mut self.events_file {
                    let _ = file.flush();
                }
            }
            EventKind::ApprovalRequested { node, message } => {
                let downstream: Vec<String> =
                    self.live.view().downstream_of(node).iter().map(|n| n.id.clone()).collect();
                self.notify(
                    Occasion::ApprovalWaiting,
                    format!(
                        "`{}` waits for approval at `{node}`: {message} (approving lets run: {})",
                        self.slot.name,
                        if downstream.is_empty() { "nothing more".to_string() } else { downstream.join(", ") }
                    ),
                );
            }
            _ => {}
        }
        self.live.broadcast(json);
    }

    fn finish(&mut self, summary: &Summary) {
        if let Some(file) = &mut self.events_file {
            let _ = file.flush();
        }
        let run_id = summary.run_id.clone();
        let verdict = summary.status.map(super::view::run_status).unwrap_or("ended");
        eprintln!("{}: run {run_id} {verdict}", self.slot.name);
        let failed: Vec<String> = summary
            .rows
            .iter()
            .filter(|r| r.status == Some(engine::event::Status::Failed))
            .map(|r| match &r.error {
                Some(e) => format!("`{}`: {}", r.node, e.lines().next().unwrap_or("")),
                None => format!("`{}`", r.node),
            })
            .collect();
        match summary.status {
            Some(RunStatus::Failed) => self
                .notify(Occasion::Failed, format!("`{}` run {run_id} failed: {}", self.slot.name, failed.join("; "))),
            Some(RunStatus::Succeeded) if self.previous_failed => {
                self.notify(Occasion::Fixed, format!("`{}` run {run_id} succeeded after a failed run", self.slot.name))
            }
            _ => {}
        }
    }

    fn notice(&mut self, text: &str) {
        self.live.notice(text);
    }

    fn not_started(&mut self, summary: &Summary, errors: &[String]) {
        let message = format!("preflight: {}", errors.join("\npreflight: "));
        {
            let mut view = self.live.view();
            view.status = "failed".into();
            view.live = false;
            view.error = Some(message.clone());
        }
        self.live.broadcast(serde_json::json!({"event": "run_not_started", "error": message}).to_string());
        eprintln!("{}: run {} did not start: {}", self.slot.name, summary.run_id, errors.join("; "));
        self.notify(
            Occasion::Failed,
            format!("`{}` run {} did not start: {}", self.slot.name, summary.run_id, errors.join("; ")),
        );
    }
}
