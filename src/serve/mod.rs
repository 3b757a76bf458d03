//! `runner serve`: continuous delivery from one process. Each pipeline's Source branches are watched (polled as
//! `git ls-remote` asks, and pushed by GitHub webhooks); a commit that moves a branch queues a run of that pipeline;
//! runs go through the run API ([`crate::run::run`]) like `runner run`'s, and their events fan out to the run
//! record, the dashboard's live streams and the notifiers.
//!
//! The pieces, one module each, data flowing one way:
//! [`trigger`] (poll, webhook, manual) -> [`queue`] (one run per pipeline, the newest commit waiting, older ones
//! superseded; a bound across pipelines) -> the run API -> [`live`] (the event fan-out: the server's record of the
//! run, server-sent events, [`notify`]). The web handlers ([`web`], [`api`], [`hook`]) read records and subscribe to
//! events; they act only through the queue (trigger) and the run API's handles (approve, cancel).

pub mod api;
pub mod auth;
pub mod graph;
pub mod hook;
pub mod live;
pub mod notify;
pub mod queue;
pub mod record;
pub mod trigger;
pub mod view;
pub mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::model::SecretValue;
use tokio::sync::Semaphore;

use queue::Slot;

/// What `runner serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The pipeline files, as given.
    pub files: Vec<PathBuf>,
    /// Where to listen; loopback unless the user says otherwise.
    pub listen: SocketAddr,
    /// How often each pipeline's branches are asked for their commit.
    pub poll: Duration,
    /// Runs at once across all pipelines (each pipeline runs one at a time).
    pub max_runs: usize,
    pub state_dir: PathBuf,
    /// The token that actions (trigger, approve, reject, cancel) need; `None`: one is made and written to
    /// `<state>/serve/token`.
    pub token: Option<SecretValue>,
    /// The secret GitHub signs webhook deliveries with; `None`: webhooks are refused (401).
    pub webhook_secret: Option<SecretValue>,
    /// Reading pages and the API needs the token too.
    pub private: bool,
    /// The address people reach the dashboard at, for links in notifications; default `http://<listen>`.
    pub public_url: Option<String>,
}

/// The server's shared state.
pub struct Server {
    pub state_dir: PathBuf,
    /// The directory runs are started from (relative paths of pipelines and Sources are read from it).
    pub base_dir: PathBuf,
    pub pipelines: Vec<Arc<Slot>>,
    pub auth: auth::Auth,
    /// The webhook secret's bytes, when webhooks are accepted.
    pub webhook_secret: Option<Vec<u8>>,
    /// One permit per run at once, across pipelines.
    pub run_permits: Arc<Semaphore>,
    pub poll: Duration,
    pub public_url: String,
    pub private: bool,
    /// Graphviz `dot`, when installed: it lays the DAG out.
    pub dot: Option<PathBuf>,
    pub graphs: graph::Cache,
    /// AWS sessions for Secrets Manager and SNS (the caller's credentials: the instance or task role).
    pub aws: Arc<steps::aws::Sessions>,
    pub started: Instant,
}

impl Server {
    pub fn slot(&self, name: &str) -> Option<&Arc<Slot>> {
        self.pipelines.iter().find(|s| s.name == name)
    }

    /// `<state>/serve`: the server's own records (per pipeline, per run) beside the runs' records.
    pub fn dir(&self) -> PathBuf {
        self.state_dir.join("serve")
    }

    /// The link to a run's page.
    pub fn run_url(&self, pipeline: &str, run_id: &str) -> String {
        format!("{}/pipelines/{}/runs/{}", self.public_url.trim_end_matches('/'), pipeline, run_id)
    }
}

/// Read a secret given as `env:NAME`, `file:PATH` or `secretsmanager:NAME[#KEY]` (the forms a Source's token
/// takes, in one word for the command line).
pub fn parse_secret(text: &str) -> Result<SecretValue, String> {
    let (kind, rest) = text.split_once(':').unwrap_or(("", text));
    match kind {
        "env" if !rest.is_empty() => Ok(SecretValue::Env(rest.to_string())),
        "file" if !rest.is_empty() => Ok(SecretValue::File(rest.to_string())),
        "secretsmanager" if !rest.is_empty() => {
            let (name, key) = match rest.split_once('#') {
                Some((n, k)) => (n.to_string(), Some(k.to_string())),
                None => (rest.to_string(), None),
            };
            Ok(SecretValue::Secret { name, region: None, key })
        }
        // Not echoed: it may be the secret itself, typed where its source belongs.
        _ => {
            Err("not a secret source: write env:NAME, file:PATH or secretsmanager:NAME[#KEY] (the value itself never \
                  goes on the command line)"
                .to_string())
        }
    }
}

/// Start the server: load every pipeline (invalid ones stop it here, exit 2), read the secrets, bind, then watch,
/// queue and serve until `shutdown` resolves. Runs in progress are stopped like Ctrl-C stops `runner run`.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let base_dir = std::env::current_dir().map_err(|e| format!("error: cannot read the current directory: {e}\n"))?;
    let state_dir =
        if options.state_dir.is_absolute() { options.state_dir.clone() } else { base_dir.join(&options.state_dir) };
    let serve_dir = state_dir.join("serve");
    std::fs::create_dir_all(serve_dir.join("runs"))
        .map_err(|e| format!("error: cannot create {}: {e}\n", serve_dir.display()))?;

    let mut pipelines = Vec::new();
    for file in &options.files {
        let planned = crate::pipeline::load(file, &[])?;
        let name = planned.name().to_string();
        if pipelines.iter().any(|s: &Arc<Slot>| s.name == name) {
            return Err(format!(
                "error: two pipeline files are named `{name}` ({}): a pipeline's name names its runs, so each must be \
                 unique\n",
                file.display()
            ));
        }
        pipelines.push(Arc::new(Slot::new(file.clone(), planned.plan.pipeline.loaded.pipeline.clone(), &serve_dir)));
    }

    let aws = Arc::new(steps::aws::Sessions::default());
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let token = match &options.token {
        Some(secret) => steps::source::secret_value(secret, "token", &base_dir, &aws, endpoint.as_deref())
            .await
            .map_err(|e| format!("error: --token: {e}\n"))?,
        None => auth::make_token_file(&serve_dir.join("token"))?,
    };
    let webhook_secret = match &options.webhook_secret {
        Some(secret) => Some(
            steps::source::secret_value(secret, "webhook secret", &base_dir, &aws, endpoint.as_deref())
                .await
                .map_err(|e| format!("error: --webhook-secret: {e}\n"))?
                .into_bytes(),
        ),
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("error: cannot listen on {}: {e}\n", options.listen))?;
    let local = listener.local_addr().map_err(|e| format!("error: {e}\n"))?;
    let public_url = options.public_url.clone().unwrap_or_else(|| format!("http://{local}"));
    let server = Arc::new(Server {
        state_dir,
        base_dir,
        pipelines,
        auth: auth::Auth::new(token, public_url.starts_with("https://")),
        webhook_secret,
        run_permits: Arc::new(Semaphore::new(options.max_runs.max(1))),
        poll: options.poll,
        public_url,
        private: options.private,
        dot: graph::find_dot(),
        graphs: graph::Cache::default(),
        aws,
        started: Instant::now(),
    });

    let token_note = match &options.token {
        Some(_) => "actions need the token given with --token".to_string(),
        None => format!("actions need the token in {}", serve_dir.join("token").display()),
    };
    let names: Vec<&str> = server.pipelines.iter().map(|s| s.name.as_str()).collect();
    eprintln!(
        "runner serve: listening on http://{local} ({}: {}); polling every {}; {token_note}{}",
        if names.len() == 1 { "pipeline" } else { "pipelines" },
        names.join(", "),
        humantime::format_duration(options.poll),
        if server.webhook_secret.is_some() { "; GitHub webhooks at /hooks/github" } else { "" }
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for slot in &server.pipelines {
        slot.restore(&server);
        tokio::spawn(queue::dispatch(Arc::clone(&server), Arc::clone(slot), stop_rx.clone()));
        tokio::spawn(trigger::poll(Arc::clone(&server), Arc::clone(slot), stop_rx.clone()));
    }
    let app = web::router(Arc::clone(&server));
    let stopping = {
        let server = Arc::clone(&server);
        async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            for slot in &server.pipelines {
                slot.stop_running(engine::step::StopReason::Interrupt);
            }
        }
    };
    // Answers go out as soon as they are written: without TCP_NODELAY, a response written in two segments waits
    // for the client's delayed ACK (~40 ms a request on Linux).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(stopping)
        .await
        .map_err(|e| format!("error: the server stopped: {e}\n"))?;
    // Let the runs in progress end (their steps were asked to stop).
    for slot in &server.pipelines {
        slot.wait_idle().await;
    }
    Ok(())
}

/// A path made absolute against `base`.
pub fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Random bytes as hex, for tokens, sessions and CSRF tokens.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_on_the_command_line_name_where_the_value_is() {
        assert_eq!(parse_secret("env:HOOK").unwrap(), SecretValue::Env("HOOK".into()));
        assert_eq!(parse_secret("file:/run/s").unwrap(), SecretValue::File("/run/s".into()));
        assert_eq!(
            parse_secret("secretsmanager:ci/hook#secret").unwrap(),
            SecretValue::Secret { name: "ci/hook".into(), region: None, key: Some("secret".into()) }
        );
        let err = parse_secret("hunter2").unwrap_err();
        assert!(err.contains("env:NAME") && !err.contains("hunter2"), "{err}");
        assert!(parse_secret("env:").is_err());
    }
}
