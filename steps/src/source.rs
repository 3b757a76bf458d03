//! The Source step: fetch a git repository (libgit2) at a branch, tag or commit into a cached clone under the state
//! dir, then check it out into the run's workspace. Or use a checkout that is already there: `--source-dir`, or
//! CodeBuild's (`CODEBUILD_SRC_DIR`). Its workspace becomes the workspace of every step downstream.
//!
//! The cache (`<state dir>/cache/git/<hash of the URL>`) is a bare repository, fetched shallow where the remote
//! allows it and locked (`flock`) while a run fetches into it or checks out of it, so concurrent runs never corrupt
//! it. A workspace is a repository of its own whose objects come from the cache (`objects/info/alternates`).
//!
//! Credentials (a token, a password, a key's passphrase) are read when the step runs, from the environment, a file
//! or AWS Secrets Manager. They are handed to libgit2 through its credentials callback only (never put in a URL or
//! a config file), and scrubbed from every message the step writes.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::event::Stream;
use engine::model::{GitAuth, GitReference, SecretValue, SourceSpec};
use engine::step::{EventSink, NodeContext, NodeSuccess, Outputs, StepError, StepRunner};
use sha2::Digest;

use crate::aws;

/// User name sent with a `Token`: GitHub, GitLab and Gitea accept any name with a token; this one is GitHub's.
const TOKEN_USERNAME: &str = "x-access-token";

/// Kind-specific problems of a Source step.
pub fn check(spec: &SourceSpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if spec.repository.trim().is_empty() {
        problems.push(("repository".into(), "empty `repository`: give a URL or a local path".into()));
    }
    if let Some(r) = &spec.reference {
        let (GitReference::Branch(name) | GitReference::Tag(name) | GitReference::Commit(name)) = r;
        if name.trim().is_empty() {
            problems.push(("reference".into(), "empty git reference".into()));
        }
    }
    let check_secret = |secret: &SecretValue, problems: &mut Vec<(String, String)>| match secret {
        SecretValue::Env(name) if name.trim().is_empty() => {
            problems.push(("auth".into(), "empty environment variable name".into()))
        }
        SecretValue::File(path) if path.trim().is_empty() => problems.push(("auth".into(), "empty file path".into())),
        SecretValue::Secret { name, .. } if name.trim().is_empty() => {
            problems.push(("auth".into(), "empty secret name".into()))
        }
        _ => {}
    };
    let known = !spec.repository.contains("${");
    let scheme = Scheme::of(&spec.repository);
    match &spec.auth {
        Some(GitAuth::Token(secret) | GitAuth::Basic { password: secret, .. }) => {
            check_secret(secret, &mut problems);
            if known && scheme != Scheme::Https && !(scheme == Scheme::Http && is_loopback(&spec.repository)) {
                let why = match scheme {
                    Scheme::Http => "over plain http:// it would travel unencrypted",
                    _ => "it is only sent over HTTPS",
                };
                problems.push((
                    "auth".into(),
                    format!("a token or password needs an https:// repository: {why}; for SSH use SshAgent or SshKey"),
                ));
            }
        }
        Some(GitAuth::SshKey { path, passphrase }) => {
            if path.trim().is_empty() {
                problems.push(("auth".into(), "empty key path".into()));
            }
            if let Some(p) = passphrase {
                check_secret(p, &mut problems);
            }
            if known && scheme != Scheme::Ssh {
                problems
                    .push(("auth".into(), "an SSH key needs an SSH repository (ssh://... or git@host:path)".into()));
            }
        }
        Some(GitAuth::SshAgent) if known && scheme != Scheme::Ssh => {
            problems.push(("auth".into(), "the SSH agent needs an SSH repository (ssh://... or git@host:path)".into()))
        }
        _ => {}
    }
    problems
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
    Ssh,
    /// A local path or `file://`.
    Local,
    Other,
}

impl Scheme {
    fn of(repository: &str) -> Scheme {
        let lower = repository.to_ascii_lowercase();
        if lower.starts_with("https://") {
            Scheme::Https
        } else if lower.starts_with("http://") {
            Scheme::Http
        } else if lower.starts_with("ssh://") || lower.starts_with("git+ssh://") || is_scp_like(repository) {
            Scheme::Ssh
        } else if lower.starts_with("file://") || !repository.contains("://") {
            Scheme::Local
        } else {
            Scheme::Other
        }
    }
}

/// `git@github.com:acme/infra.git`: user@host:path, no scheme.
fn is_scp_like(repository: &str) -> bool {
    match (repository.find('@'), repository.find(':')) {
        (Some(at), Some(colon)) => at < colon && !repository.contains("://") && !repository.starts_with('/'),
        _ => false,
    }
}

fn is_loopback(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or("").split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn reference_text(r: &Option<GitReference>) -> String {
    match r {
        None => "the default branch".into(),
        Some(GitReference::Branch(b)) => format!("branch `{b}`"),
        Some(GitReference::Tag(t)) => format!("tag `{t}`"),
        Some(GitReference::Commit(c)) => format!("commit `{c}`"),
    }
}

/// Environment variables a Source's `auth` reads that `is_set` says are not set.
pub fn unset_auth_env(spec: &SourceSpec, is_set: &dyn Fn(&str) -> bool) -> Vec<String> {
    let secret = match &spec.auth {
        Some(GitAuth::Token(s) | GitAuth::Basic { password: s, .. }) => Some(s),
        Some(GitAuth::SshKey { passphrase, .. }) => passphrase.as_ref(),
        Some(GitAuth::SshAgent) | None => None,
    };
    match secret {
        Some(SecretValue::Env(name)) if !is_set(name) => vec![name.clone()],
        _ => Vec::new(),
    }
}

/// Where a secret comes from, for messages (never the value).
fn secret_text(secret: &SecretValue) -> String {
    match secret {
        SecretValue::Env(name) => format!("environment variable `{name}`"),
        SecretValue::File(path) => format!("file {path}"),
        SecretValue::Secret { name, .. } => format!("AWS Secrets Manager secret `{name}`"),
    }
}

fn auth_text(auth: &Option<GitAuth>) -> String {
    match auth {
        None => "no credentials".into(),
        Some(GitAuth::Token(s)) => format!("the token from {}", secret_text(s)),
        Some(GitAuth::Basic { username, password }) => {
            format!("user `{username}` with the password from {}", secret_text(password))
        }
        Some(GitAuth::SshAgent) => "the SSH agent".into(),
        Some(GitAuth::SshKey { path, .. }) => format!("the SSH key {path}"),
    }
}

/// What `plan` says the step will do.
pub fn describe(spec: &SourceSpec, local: Option<&Checkout>) -> String {
    match local {
        Some(Checkout::Dir(dir)) => format!("use the local checkout {} (--source-dir)", dir.display()),
        Some(Checkout::CodeBuild { dir, .. }) => format!("use CodeBuild's checkout {}", dir.display()),
        None => {
            let auth = match &spec.auth {
                None => String::new(),
                auth => format!(" with {}", auth_text(auth)),
            };
            format!("clone {} at {}{auth}", scrub_url(&spec.repository), reference_text(&spec.reference))
        }
    }
}

/// A checkout that is already there, used instead of fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkout {
    /// `--source-dir`.
    Dir(PathBuf),
    /// CodeBuild's checkout of its source.
    CodeBuild { dir: PathBuf, version: Option<String>, branch: Option<String> },
}

impl Checkout {
    pub fn dir(&self) -> &Path {
        match self {
            Checkout::Dir(d) | Checkout::CodeBuild { dir: d, .. } => d,
        }
    }
}

/// Inside an AWS CodeBuild build (`CODEBUILD_BUILD_ID` set): the sources CodeBuild already checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeBuild {
    pub build_id: String,
    /// `CODEBUILD_SRC_DIR`: the primary source.
    pub dir: PathBuf,
    /// `CODEBUILD_RESOLVED_SOURCE_VERSION`: the commit of the primary source.
    pub version: Option<String>,
    /// `CODEBUILD_WEBHOOK_HEAD_REF` without `refs/heads/`: the branch of a webhook build.
    pub branch: Option<String>,
    /// `CODEBUILD_SRC_DIR_<identifier>`: secondary sources.
    pub secondary: HashMap<String, PathBuf>,
}

impl CodeBuild {
    /// `None` outside CodeBuild (or when CodeBuild gave no source directory).
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Option<CodeBuild> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let build_id = get("CODEBUILD_BUILD_ID")?;
        let dir = PathBuf::from(get("CODEBUILD_SRC_DIR")?);
        let secondary = vars
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("CODEBUILD_SRC_DIR_")?.to_string(), PathBuf::from(v))))
            .collect();
        Some(CodeBuild {
            build_id,
            dir,
            version: get("CODEBUILD_RESOLVED_SOURCE_VERSION"),
            branch: get("CODEBUILD_WEBHOOK_HEAD_REF").map(|r| r.trim_start_matches("refs/heads/").to_string()),
            secondary,
        })
    }

    /// The checkout of a Source step: the secondary source whose identifier is the step id (`-` read as `_`),
    /// else the primary source.
    pub fn checkout_for(&self, step_id: &str) -> Checkout {
        let identifier = step_id.replace('-', "_");
        match self.secondary.get(&identifier).or_else(|| self.secondary.get(step_id)) {
            Some(dir) => Checkout::CodeBuild { dir: dir.clone(), version: None, branch: None },
            None => Checkout::CodeBuild {
                dir: self.dir.clone(),
                version: self.version.clone(),
                branch: self.branch.clone(),
            },
        }
    }
}

/// A Source step ready to run.
pub struct SourceStep {
    pub spec: SourceSpec,
    /// A checkout to use instead of fetching.
    pub local: Option<Checkout>,
    /// The pipeline's `aws_endpoint_url` (Secrets Manager).
    pub endpoint: Option<String>,
    pub sessions: Arc<aws::Sessions>,
    /// The commit to check out, whatever the reference points at now: the one a trigger saw move (`runner
    /// serve`), so that a run deploys the commit that started it. `BRANCH` still names the reference's branch.
    pub pin: Option<String>,
}

#[async_trait::async_trait]
impl StepRunner for SourceStep {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        if let Some(local) = &self.local {
            return use_checkout(local, ctx).await;
        }
        let url = repository_location(&self.spec.repository, &ctx.workspace);
        let shown = scrub_url(&self.spec.repository);
        let what = format!("{shown} at {}", reference_text(&self.spec.reference));
        let env = |name: &str| ctx.env.get(name).cloned().or_else(|| std::env::var(name).ok());
        let credentials =
            read_credentials(&self.spec.auth, &env, &ctx.workspace, &self.sessions, self.endpoint.as_deref())
                .await
                .map_err(|e| match e {
                    CredentialError::Invalid(m) => StepError::invalid(format!("cannot fetch {what}: {m}")),
                    CredentialError::Failed(m) => StepError::failed(format!("cannot fetch {what}: {m}")),
                })?;
        let redactor = Redactor::new(credentials.as_ref().map(Credentials::secrets).unwrap_or_default());
        let cache = ctx.state_dir.join("cache").join("git").join(cache_key(&url));
        let dest = ctx.state_dir.join("workspaces").join(&ctx.pipeline).join(&ctx.node);
        ctx.events.log(Stream::Runner, format!("fetching {what} into the cache {}", cache.display())).await;
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            access: RemoteAccess {
                url,
                credentials,
                auth_text: auth_text(&self.spec.auth),
                cancel: Arc::clone(&cancel),
            },
            shown: shown.clone(),
            reference: self.spec.reference.clone(),
            pin: self.pin.clone(),
            cache,
            dest: dest.clone(),
            events: ctx.events.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let task = tokio::task::spawn_blocking(move || job.run());
        let mut stop = ctx.stop.clone();
        let outcome = tokio::select! {
            r = task => r.map_err(|e| StepError::failed(format!("the fetch of {what} crashed: {e}")))?,
            reason = stop.stronger_than(None) => {
                cancel.store(true, Ordering::SeqCst);
                return Err(StepError::stopped(reason, format!("the fetch of {what} was stopped")));
            }
        };
        let outputs = outcome.map_err(|e| StepError::failed(redactor.redact(&format!("cannot fetch {what}: {e}"))))?;
        ctx.events
            .log(
                Stream::Runner,
                redactor.redact(&format!(
                    "checked out {} ({}) into {}",
                    outputs["COMMIT_ID"],
                    outputs["COMMIT_MESSAGE"],
                    dest.display()
                )),
            )
            .await;
        Ok(NodeSuccess { outputs, workspace: Some(dest), ..Default::default() })
    }
}

/// `--source-dir` or CodeBuild: outputs from the checkout as it is.
async fn use_checkout(local: &Checkout, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
    let given = local.dir();
    let dir = std::fs::canonicalize(given).map_err(|e| match local {
        Checkout::Dir(_) => StepError::invalid(format!("--source-dir {}: {e}", given.display())),
        Checkout::CodeBuild { .. } => {
            StepError::invalid(format!("CodeBuild's source directory {} cannot be used: {e}", given.display()))
        }
    })?;
    let what = match local {
        Checkout::Dir(_) => "the local checkout",
        Checkout::CodeBuild { .. } => "CodeBuild's checkout",
    };
    ctx.events.log(Stream::Runner, format!("using {what} {}", dir.display())).await;
    let repo = git2::Repository::discover(&dir).ok();
    let mut outputs = match &repo {
        Some(repo) => head_outputs(repo).unwrap_or_default(),
        None => {
            ctx.events.log(Stream::Runner, "not a git repository: commit outputs from what CodeBuild says only").await;
            Outputs::new()
        }
    };
    if let Checkout::CodeBuild { version, branch, .. } = local {
        if let Some(version) = version {
            // CodeBuild's resolved version wins; the message and author come from that commit when it is here.
            if let Some(commit) =
                repo.as_ref().and_then(|r| r.revparse_single(version).ok()).and_then(|o| o.peel_to_commit().ok())
            {
                outputs.extend(commit_outputs(&commit));
            } else {
                outputs.insert("COMMIT_MESSAGE".into(), String::new());
                outputs.insert("COMMIT_AUTHOR".into(), String::new());
            }
            outputs.insert("COMMIT_ID".into(), version.clone());
        }
        if let Some(branch) = branch {
            outputs.insert("BRANCH".into(), branch.clone());
        }
        for key in ["COMMIT_ID", "BRANCH", "COMMIT_MESSAGE", "COMMIT_AUTHOR"] {
            outputs.entry(key.into()).or_default();
        }
        let commit = outputs.get("COMMIT_ID").filter(|c| !c.is_empty()).map_or("an unknown commit", String::as_str);
        ctx.events.log(Stream::Runner, format!("CodeBuild checked out {commit}")).await;
    }
    Ok(NodeSuccess { outputs, workspace: Some(dir), ..Default::default() })
}

/// Process-wide libgit2 settings, once before any git work: a remote that does not answer fails instead of hanging
/// (connect within 15 s; no read waits longer than 5 minutes).
pub fn init_git() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: called once, at startup, before any other libgit2 call of the process.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(15_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(300_000);
        }
    });
}

/// A URL as is; a local path made absolute against the base dir.
fn repository_location(repository: &str, base: &Path) -> String {
    match Scheme::of(repository) {
        Scheme::Local if !repository.to_ascii_lowercase().starts_with("file://") => {
            base.join(repository).display().to_string()
        }
        _ => repository.to_string(),
    }
}

/// The cache directory's name: a hash of the URL.
fn cache_key(url: &str) -> String {
    let digest = sha2::Sha256::digest(url.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The URL without a user name or password written into it (`https://***@host/...`).
pub fn scrub_url(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return url.to_string();
    }
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------------------------

/// Credentials read for one fetch.
#[derive(Clone)]
enum Credentials {
    UserPass { username: String, password: String },
    SshAgent,
    SshKey { path: PathBuf, passphrase: Option<String> },
}

impl Credentials {
    fn secrets(&self) -> Vec<String> {
        match self {
            Credentials::UserPass { password, .. } => vec![password.clone()],
            Credentials::SshKey { passphrase: Some(p), .. } => vec![p.clone()],
            _ => Vec::new(),
        }
    }
}

enum CredentialError {
    /// The definition or the environment is wrong: a retry cannot help.
    Invalid(String),
    /// Reading failed (e.g. Secrets Manager unreachable).
    Failed(String),
}

/// The credentials a Source's `auth` names, read now: `env` looks variables up (the step's env, then the runner's),
/// files are relative to `base`.
async fn read_credentials(
    auth: &Option<GitAuth>,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    base: &Path,
    sessions: &aws::Sessions,
    endpoint: Option<&str>,
) -> Result<Option<Credentials>, CredentialError> {
    let secret = |value, what| read_secret(value, env, base, sessions, endpoint, what);
    Ok(Some(match auth {
        None => return Ok(None),
        Some(GitAuth::Token(value)) => {
            Credentials::UserPass { username: TOKEN_USERNAME.into(), password: secret(value, "token").await? }
        }
        Some(GitAuth::Basic { username, password }) => {
            Credentials::UserPass { username: username.clone(), password: secret(password, "password").await? }
        }
        Some(GitAuth::SshAgent) => Credentials::SshAgent,
        Some(GitAuth::SshKey { path, passphrase }) => {
            let path = expand_home(path);
            if !path.is_file() {
                return Err(CredentialError::Invalid(format!("the SSH key {} does not exist", path.display())));
            }
            let passphrase = match passphrase {
                Some(p) => Some(secret(p, "key passphrase").await?),
                None => None,
            };
            Credentials::SshKey { path, passphrase }
        }
    }))
}

/// A secret's value; errors name where it was looked for, never a value.
async fn read_secret(
    secret: &SecretValue,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    base: &Path,
    sessions: &aws::Sessions,
    endpoint: Option<&str>,
    what: &str,
) -> Result<String, CredentialError> {
    let value = match secret {
        SecretValue::Env(name) => env(name).ok_or_else(|| {
            CredentialError::Invalid(format!("the {what}'s environment variable `{name}` is not set"))
        })?,
        SecretValue::File(path) => {
            let full = base.join(expand_home(path));
            std::fs::read_to_string(&full).map_err(|e| {
                CredentialError::Invalid(format!("cannot read the {what} from {}: {}", full.display(), io_reason(&e)))
            })?
        }
        SecretValue::Secret { name, region, key } => {
            read_aws_secret(sessions, endpoint, name, region.as_deref(), key.as_deref())
                .await
                .map_err(|e| CredentialError::Failed(format!("cannot read the {what}: {e}")))?
        }
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(CredentialError::Invalid(format!("the {what} from {} is empty", secret_text(secret))));
    }
    Ok(value)
}

/// A secret given the way a Source's token is (an environment variable of this process, a file relative to `base`,
/// or AWS Secrets Manager with the caller's credentials), for what is not a step: the server's webhook secret and
/// API token, a notification's webhook URL. `what` names it in errors, which never hold the value.
pub async fn secret_value(
    secret: &SecretValue,
    what: &str,
    base: &Path,
    sessions: &aws::Sessions,
    endpoint: Option<&str>,
) -> Result<String, String> {
    let env = |name: &str| std::env::var(name).ok();
    read_secret(secret, &env, base, sessions, endpoint, what).await.map_err(|e| match e {
        CredentialError::Invalid(m) | CredentialError::Failed(m) => m,
    })
}

/// The commit a Source's reference points at on its remote now, asked as `git ls-remote` asks: one connection that
/// lists the remote's refs, nothing fetched (an annotated tag gives the commit it names). A `Commit` reference is
/// its own answer. What triggers use (`runner serve` polls with it); errors read like the step's own
/// (`cannot ask <repository> at branch `dev`: the remote cannot be reached: ...`), credentials scrubbed.
pub async fn remote_commit(
    spec: &SourceSpec,
    base: &Path,
    sessions: &aws::Sessions,
    endpoint: Option<&str>,
) -> Result<String, String> {
    if let Some(GitReference::Commit(c)) = &spec.reference {
        return Ok(c.clone());
    }
    let what = format!("{} at {}", scrub_url(&spec.repository), reference_text(&spec.reference));
    let env = |name: &str| std::env::var(name).ok();
    let credentials = read_credentials(&spec.auth, &env, base, sessions, endpoint).await.map_err(|e| match e {
        CredentialError::Invalid(m) | CredentialError::Failed(m) => format!("cannot ask {what}: {m}"),
    })?;
    let redactor = Redactor::new(credentials.as_ref().map(Credentials::secrets).unwrap_or_default());
    let access = RemoteAccess {
        url: repository_location(&spec.repository, base),
        credentials,
        auth_text: auth_text(&spec.auth),
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let reference = spec.reference.clone();
    let asked = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let state = AuthState::default();
        let mut remote =
            git2::Remote::create_detached(access.url.as_str()).map_err(|e| access.remote_error(&e, &state))?;
        let heads = access.ls(&mut remote, None)?;
        let wanted = heads.wanted(reference.as_ref())?;
        Ok(heads.peeled(&wanted).to_string())
    })
    .await
    .map_err(|e| format!("cannot ask {what}: {e}"))?;
    asked.map_err(|e| redactor.redact(&format!("cannot ask {what}: {e}")))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// A secret's string from AWS Secrets Manager, with the caller's credentials; `key`: one field of a JSON secret.
async fn read_aws_secret(
    sessions: &aws::Sessions,
    endpoint: Option<&str>,
    name: &str,
    region: Option<&str>,
    key: Option<&str>,
) -> Result<String, String> {
    let config = sessions.caller(region, endpoint).await;
    if config.region().is_none() {
        return Err(format!("no AWS region for the secret `{name}`: give the secret a `region` or set AWS_REGION"));
    }
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let out = client
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .map_err(|e| format!("AWS Secrets Manager secret `{name}` cannot be read: {}", aws::aws_reason(&e)))?;
    let text = out
        .secret_string()
        .ok_or_else(|| format!("AWS Secrets Manager secret `{name}` holds binary data, not a string"))?;
    match key {
        None => Ok(text.to_string()),
        Some(key) => {
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|_| format!("AWS Secrets Manager secret `{name}` is not JSON, so it has no key `{key}`"))?;
            match json.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("the key `{key}` of AWS Secrets Manager secret `{name}` is not a string")),
                None => Err(format!("AWS Secrets Manager secret `{name}` has no key `{key}`")),
            }
        }
    }
}

/// Replaces every secret value in a text with `***`, as the run's redactor does for SecureString values (the same
/// [`engine::redact::Redactor`]), and user names or passwords written into URLs.
#[derive(Debug, Clone, Default)]
pub struct Redactor(engine::redact::Redactor);

impl Redactor {
    pub fn new(secrets: Vec<String>) -> Self {
        Redactor(engine::redact::Redactor::new(secrets))
    }

    pub fn redact(&self, text: &str) -> String {
        scrub_urls_in(&self.0.redact(text))
    }
}

/// Every URL in a text without the user name or password written into it: `(https://u:p@host/x)` becomes
/// `(https://***@host/x)`. An SSH URL keeps its user name (`ssh://git@host/x`: not a secret; an HTTPS user name can
/// be a token).
fn scrub_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let scheme_start = head[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+')).map_or(0, |p| p + 1);
        let ssh = matches!(head[scheme_start..i].to_ascii_lowercase().as_str(), "ssh" | "git+ssh");
        let end = tail.find(|c: char| c.is_whitespace() || "/?#)'\"`>".contains(c)).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) if ssh && !authority[..at].contains(':') => out.push_str(authority),
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Fetch into the cache, check out into the workspace (blocking: libgit2)
// ---------------------------------------------------------------------------------------------------------------

struct Job {
    access: RemoteAccess,
    /// The repository as shown in messages (no credentials).
    shown: String,
    reference: Option<GitReference>,
    /// Check out this commit (a trigger's), whatever the reference points at now.
    pin: Option<String>,
    cache: PathBuf,
    dest: PathBuf,
    events: EventSink,
    runtime: tokio::runtime::Handle,
}

/// One remote as libgit2 talks to it: where, with which credentials, how its errors read for people.
struct RemoteAccess {
    url: String,
    credentials: Option<Credentials>,
    auth_text: String,
    cancel: Arc<AtomicBool>,
}

/// The remote's refs, as `git ls-remote` lists them.
struct Heads {
    refs: HashMap<String, git2::Oid>,
    /// The branch the remote's HEAD names, when it says.
    default_branch: Option<String>,
}

/// What the remote has for the reference.
struct Wanted {
    /// The object the ref points to (an annotated tag's tag object, else a commit).
    target: git2::Oid,
    /// Refspec that fetches it into the cache, and the cache ref it lands in.
    refspec: String,
    local_ref: String,
    branch: Option<String>,
}

/// How a remote operation went wrong with credentials.
#[derive(Default)]
struct AuthState {
    calls: std::cell::Cell<u32>,
    rejected: std::cell::Cell<bool>,
    missing: std::cell::Cell<bool>,
    mismatch: std::cell::RefCell<Option<String>>,
}

impl Job {
    fn log(&self, line: String) {
        let events = self.events.clone();
        self.runtime.block_on(async move { events.log(Stream::Runner, line).await });
    }

    fn run(self) -> Result<Outputs, String> {
        let _lock = self.lock()?;
        let cache = open_cache(&self.cache)?;
        let (commit, branch, tag) = match (self.reference.clone(), self.pin.clone()) {
            (Some(GitReference::Commit(c)), _) => (self.fetch_commit(&cache, &c)?, None, None),
            (reference, Some(pin)) => self.fetch_pinned(&cache, reference.as_ref(), &pin)?,
            (reference, None) => {
                let wanted = self.resolve(&cache, reference.as_ref())?;
                if cache.odb().map(|o| o.exists(wanted.target)).unwrap_or(false) {
                    self.log(format!("{} is in the cache already: nothing to fetch", wanted.target));
                } else {
                    self.fetch(&cache, &[wanted.refspec.as_str()], self.shallow_depth())?;
                }
                cache
                    .reference(&wanted.local_ref, wanted.target, true, "runner: fetched")
                    .map_err(|e| format!("cannot update the cache: {}", e.message()))?;
                let object = cache.find_object(wanted.target, None).map_err(|_| {
                    format!("the fetch did not bring {} ({})", wanted.target, reference_text(&reference))
                })?;
                let commit = object.peel_to_commit().map_err(|e| e.message().to_string())?.id();
                let tag = match &reference {
                    Some(GitReference::Tag(t)) => Some((t.clone(), wanted.target)),
                    _ => None,
                };
                (commit, wanted.branch, tag)
            }
        };
        if self.access.cancel.load(Ordering::SeqCst) {
            // The step was stopped while the fetch finished: leave the workspace alone.
            return Err("stopped".into());
        }
        self.check_out(&cache, commit, branch.as_deref(), tag)
    }

    /// The pinned commit, with the reference's branch name: fetched with the branch when the branch still points
    /// at it (or has it in its shallow history), else by id like a `Commit`.
    #[allow(clippy::type_complexity)]
    fn fetch_pinned(
        &self,
        cache: &git2::Repository,
        reference: Option<&GitReference>,
        pin: &str,
    ) -> Result<(git2::Oid, Option<String>, Option<(String, git2::Oid)>), String> {
        let oid = git2::Oid::from_str(pin).map_err(|_| format!("`{pin}` is not a commit id"))?;
        let has = |id: git2::Oid| cache.odb().map(|o| o.exists(id)).unwrap_or(false);
        let wanted = self.resolve(cache, reference)?;
        if has(oid) {
            self.log(format!("{pin} is in the cache already: nothing to fetch"));
        } else {
            self.fetch(cache, &[wanted.refspec.as_str()], self.shallow_depth())?;
        }
        if has(wanted.target) {
            cache
                .reference(&wanted.local_ref, wanted.target, true, "runner: fetched")
                .map_err(|e| format!("cannot update the cache: {}", e.message()))?;
        }
        let commit = if has(oid) { oid } else { self.fetch_commit(cache, pin)? };
        let now = if wanted.target == oid {
            "the reference still points at it".to_string()
        } else {
            format!("the reference has moved on to {} since", wanted.target)
        };
        self.log(format!("pinned to {pin}, the commit that started this run ({now})"));
        Ok((commit, wanted.branch, None))
    }

    /// Depth for fetches: 1 over the network (a shallow fetch), everything from a local repository.
    fn shallow_depth(&self) -> Option<i32> {
        matches!(Scheme::of(&self.access.url), Scheme::Https | Scheme::Http | Scheme::Ssh | Scheme::Other).then_some(1)
    }

    /// Exclusive use of the cache: other runs wait (polling, so that a stop is noticed).
    fn lock(&self) -> Result<CacheLock, String> {
        let path = self.cache.with_extension("lock");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let file = File::create(&path).map_err(|e| format!("cannot create the lock file {}: {e}", path.display()))?;
        let mut said = false;
        loop {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor we own; the lock goes with the file when it is closed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(CacheLock(file));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(format!("cannot lock the cache ({}): {err}", path.display()));
            }
            if !said {
                self.log("another run is using the cache: waiting for it".into());
                said = true;
            }
            if self.access.cancel.load(Ordering::SeqCst) {
                return Err("stopped while waiting for the cache".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl RemoteAccess {
    /// Credentials from `self`, progress (when `events` is given) into the step's events, and a stop honoured.
    fn callbacks<'a>(&'a self, state: &'a AuthState, events: Option<&EventSink>) -> git2::RemoteCallbacks<'a> {
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.credentials(move |_url, username_from_url, allowed| {
            if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(username_from_url.unwrap_or("git"));
            }
            let calls = state.calls.get() + 1;
            state.calls.set(calls);
            if calls > 1 {
                state.rejected.set(true);
                return Err(git2::Error::from_str("the remote rejected the credentials"));
            }
            let user = username_from_url.unwrap_or("git");
            let ssh = allowed.contains(git2::CredentialType::SSH_KEY);
            let plain = allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT);
            match &self.credentials {
                Some(Credentials::UserPass { username, password }) if plain => {
                    git2::Cred::userpass_plaintext(username, password)
                }
                Some(Credentials::SshAgent) | None if ssh => git2::Cred::ssh_key_from_agent(user),
                Some(Credentials::SshKey { path, passphrase }) if ssh => {
                    git2::Cred::ssh_key(user, None, path, passphrase.as_deref())
                }
                None => {
                    state.missing.set(true);
                    Err(git2::Error::from_str("the remote requires credentials"))
                }
                Some(_) => {
                    let asked = if plain { "a user name and password (HTTPS)" } else { "another kind of credentials" };
                    *state.mismatch.borrow_mut() = Some(asked.to_string());
                    Err(git2::Error::from_str("the remote asks for other credentials"))
                }
            }
        });
        let cancel = Arc::clone(&self.cancel);
        let events = events.cloned();
        callbacks.transfer_progress(move |p| {
            if let Some(events) = &events {
                events.try_progress(
                    p.received_objects() as u64,
                    Some(p.total_objects() as u64),
                    "objects",
                    "receiving objects",
                );
            }
            !cancel.load(Ordering::SeqCst)
        });
        callbacks
    }

    /// A git error from talking to the remote, for people: credentials rejected or missing, remote unreachable.
    fn remote_error(&self, e: &git2::Error, state: &AuthState) -> String {
        if self.cancel.load(Ordering::SeqCst) {
            return "stopped".into();
        }
        if state.rejected.get() {
            return format!("the remote rejected the credentials ({})", self.auth_text);
        }
        if state.missing.get() {
            return "the remote requires authentication: give the Source an `auth` (Token, Basic, SshAgent or SshKey)"
                .into();
        }
        if let Some(asked) = state.mismatch.borrow().as_ref() {
            return format!("the remote asks for {asked}, but the Source gives {}", self.auth_text);
        }
        let message = e.message().trim_end_matches('.');
        if e.code() == git2::ErrorCode::Certificate && e.class() != git2::ErrorClass::Ssh {
            return certificate_error(&self.url, message);
        }
        match e.class() {
            git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Ssl => {
                format!("the remote cannot be reached: {message}")
            }
            git2::ErrorClass::Http if e.code() == git2::ErrorCode::Auth => {
                format!("the remote refused access ({}): {message}", self.auth_text)
            }
            git2::ErrorClass::Http => format!("the remote answered with an error: {message}"),
            git2::ErrorClass::Ssh if e.code() == git2::ErrorCode::Auth => {
                format!("the remote refused the SSH credentials ({}): {message}", self.auth_text)
            }
            git2::ErrorClass::Ssh if e.code() == git2::ErrorCode::Certificate || message.contains("hostkey") => {
                format!(
                    "the SSH server's host key is not in ~/.ssh/known_hosts, or differs from the one there ({message}); \
                     check it and add it as for ssh itself, e.g. `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts`"
                )
            }
            git2::ErrorClass::Ssh if message.contains("private key") => {
                format!(
                    "cannot use {}: a wrong passphrase, or a key format libssh2 cannot read ({message})",
                    self.auth_text
                )
            }
            _ if e.code() == git2::ErrorCode::NotFound && Scheme::of(&self.url) == Scheme::Local => {
                format!("no git repository there: {message}")
            }
            _ => message.to_string(),
        }
    }

    /// Lists the remote's refs over one connection (`git ls-remote`).
    fn ls(&self, remote: &mut git2::Remote, events: Option<&EventSink>) -> Result<Heads, String> {
        let state = AuthState::default();
        let conn = remote
            .connect_auth(git2::Direction::Fetch, Some(self.callbacks(&state, events)), None)
            .map_err(|e| self.remote_error(&e, &state))?;
        let refs: HashMap<String, git2::Oid> = conn
            .list()
            .map_err(|e| self.remote_error(&e, &state))?
            .iter()
            .map(|h| (h.name().to_string(), h.oid()))
            .collect();
        let default_branch = conn.default_branch().ok().and_then(|b| b.as_str().ok().map(str::to_string));
        Ok(Heads { refs, default_branch })
    }
}

impl Heads {
    /// Which object the reference names, and how to fetch it.
    fn wanted(&self, reference: Option<&GitReference>) -> Result<Wanted, String> {
        let heads = &self.refs;
        let branch_wanted = |b: &str| -> Result<Wanted, String> {
            let name = format!("refs/heads/{b}");
            let target = *heads.get(&name).ok_or_else(|| format!("branch `{b}` does not exist in the repository"))?;
            Ok(Wanted {
                target,
                refspec: format!("+{name}:refs/remotes/origin/{b}"),
                local_ref: format!("refs/remotes/origin/{b}"),
                branch: Some(b.to_string()),
            })
        };
        match reference {
            Some(GitReference::Branch(b)) => branch_wanted(b),
            Some(GitReference::Tag(t)) => {
                let name = format!("refs/tags/{t}");
                let target = *heads.get(&name).ok_or_else(|| format!("tag `{t}` does not exist in the repository"))?;
                Ok(Wanted { target, refspec: format!("+{name}:{name}"), local_ref: name, branch: None })
            }
            None => {
                let default = self
                    .default_branch
                    .clone()
                    .or_else(|| {
                        // An old server that does not name HEAD's target: the branch HEAD points at.
                        let head = heads.get("HEAD")?;
                        let mut names: Vec<&String> = heads
                            .iter()
                            .filter(|(n, o)| n.starts_with("refs/heads/") && *o == head)
                            .map(|(n, _)| n)
                            .collect();
                        names.sort();
                        names.first().map(|n| n.to_string())
                    })
                    .ok_or("the repository has no default branch: give the Source a `reference`")?;
                branch_wanted(default.trim_start_matches("refs/heads/"))
            }
            Some(GitReference::Commit(c)) => Err(format!("commit `{c}` has no ref on the remote to resolve")),
        }
    }

    /// The commit a wanted ref names: an annotated tag's peeled entry (`refs/tags/v1^{}`), else its target.
    fn peeled(&self, wanted: &Wanted) -> git2::Oid {
        self.refs.get(&format!("{}^{{}}", wanted.local_ref)).copied().unwrap_or(wanted.target)
    }
}

impl Job {
    fn callbacks<'a>(&'a self, state: &'a AuthState) -> git2::RemoteCallbacks<'a> {
        self.access.callbacks(state, Some(&self.events))
    }

    fn remote_error(&self, e: &git2::Error, state: &AuthState) -> String {
        self.access.remote_error(e, state)
    }

    /// Asks the remote which object the reference names.
    fn resolve(&self, cache: &git2::Repository, reference: Option<&GitReference>) -> Result<Wanted, String> {
        let state = AuthState::default();
        let mut remote = cache.remote_anonymous(&self.access.url).map_err(|e| self.remote_error(&e, &state))?;
        self.access.ls(&mut remote, Some(&self.events))?.wanted(reference)
    }

    fn fetch(&self, cache: &git2::Repository, refspecs: &[&str], depth: Option<i32>) -> Result<(), String> {
        let attempt = |depth: Option<i32>| -> Result<(), (git2::Error, AuthState)> {
            let state = AuthState::default();
            let mut remote = match cache.remote_anonymous(&self.access.url) {
                Ok(r) => r,
                Err(e) => return Err((e, state)),
            };
            let callbacks = self.callbacks(&state);
            let mut options = git2::FetchOptions::new();
            options.remote_callbacks(callbacks).download_tags(git2::AutotagOption::None);
            if let Some(d) = depth {
                options.depth(d);
            }
            let result = remote.fetch(refspecs, Some(&mut options), Some("runner: fetch"));
            drop(options);
            result.map_err(|e| (e, state))
        };
        match attempt(depth) {
            Ok(()) => Ok(()),
            // Some servers refuse shallow fetches: fetch everything instead.
            Err((e, state))
                if depth.is_some()
                    && !state.rejected.get()
                    && !state.missing.get()
                    && !self.access.cancel.load(Ordering::SeqCst)
                    && e.class() != git2::ErrorClass::Net =>
            {
                self.log(format!("shallow fetch refused ({}): fetching the whole history", e.message()));
                attempt(None).map_err(|(e, state)| self.remote_error(&e, &state))
            }
            Err((e, state)) => Err(self.remote_error(&e, &state)),
        }
    }

    /// A commit by id: from the cache if it is there, else after fetching every branch and tag (whole history), else
    /// by asking for the id itself.
    fn fetch_commit(&self, cache: &git2::Repository, id: &str) -> Result<git2::Oid, String> {
        let find = |cache: &git2::Repository| {
            cache.revparse_single(id).ok().and_then(|o| o.peel_to_commit().ok()).map(|c| c.id())
        };
        if let Some(commit) = find(cache) {
            self.log(format!("commit {commit} is in the cache already: nothing to fetch"));
            return Ok(commit);
        }
        let unshallow = cache.is_shallow().then_some(i32::MAX);
        self.fetch(cache, &["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"], unshallow)?;
        if let Some(commit) = find(cache) {
            return Ok(commit);
        }
        if id.len() == 40 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            let refspec = format!("+{id}:refs/runner/commits/{id}");
            if self.fetch(cache, &[refspec.as_str()], None).is_ok() {
                if let Some(commit) = find(cache) {
                    return Ok(commit);
                }
            }
        }
        Err(format!("commit `{id}` does not exist in the repository"))
    }

    /// A fresh workspace whose objects come from the cache, checked out at `commit`.
    fn check_out(
        &self,
        cache: &git2::Repository,
        commit: git2::Oid,
        branch: Option<&str>,
        tag: Option<(String, git2::Oid)>,
    ) -> Result<Outputs, String> {
        let dest = &self.dest;
        let fail =
            |what: &str, e: git2::Error| format!("cannot check out into {}: {what}: {}", dest.display(), e.message());
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| format!("cannot clear {}: {e}", dest.display()))?;
        }
        std::fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let repo = git2::Repository::init(dest).map_err(|e| fail("init", e))?;
        let git_dir = repo.path().to_path_buf();
        drop(repo);
        let objects = cache.path().join("objects");
        let info = git_dir.join("objects").join("info");
        std::fs::create_dir_all(&info).map_err(|e| format!("cannot create {}: {e}", info.display()))?;
        std::fs::write(info.join("alternates"), format!("{}\n", objects.display()))
            .map_err(|e| format!("cannot link the workspace to the cache: {e}"))?;
        let shallow = cache.path().join("shallow");
        if shallow.exists() {
            std::fs::copy(&shallow, git_dir.join("shallow"))
                .map_err(|e| format!("cannot copy {}: {e}", shallow.display()))?;
        }
        let repo = git2::Repository::open(dest).map_err(|e| fail("open", e))?;
        // The workspace's `origin`: the URL without any user name or password written into it.
        let origin = self.shown.replacen("***@", "", 1);
        repo.remote("origin", &origin).map_err(|e| fail("remote", e))?;
        let target = repo.find_commit(commit).map_err(|e| fail("find the commit", e))?;
        match branch {
            Some(b) => {
                repo.reference(&format!("refs/remotes/origin/{b}"), commit, true, "runner: fetched")
                    .map_err(|e| fail("remote branch", e))?;
                let mut local = repo.branch(b, &target, true).map_err(|e| fail("branch", e))?;
                let _ = local.set_upstream(Some(&format!("origin/{b}")));
                repo.set_head(&format!("refs/heads/{b}")).map_err(|e| fail("HEAD", e))?;
            }
            None => repo.set_head_detached(commit).map_err(|e| fail("HEAD", e))?,
        }
        if let Some((name, oid)) = tag {
            repo.reference(&format!("refs/tags/{name}"), oid, true, "runner: fetched").map_err(|e| fail("tag", e))?;
        }
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.force();
        repo.checkout_head(Some(&mut checkout)).map_err(|e| fail("checkout", e))?;
        head_outputs(&repo).map_err(|e| e.message().to_string())
    }
}

/// libgit2 refused the server's TLS certificate (`message`: libgit2's reason): say which way, and how a private
/// certificate authority is trusted (OpenSSL's default verify paths, which read `SSL_CERT_FILE` and `SSL_CERT_DIR`).
fn certificate_error(url: &str, message: &str) -> String {
    if message.contains("hostname does not match") {
        return format!("the server's certificate is not for `{}` ({message})", url_host(url));
    }
    format!(
        "the server's certificate is not trusted ({message}): if a private certificate authority issued it, set \
         SSL_CERT_FILE to a PEM bundle that includes that authority's certificate"
    )
}

/// The host of a URL, without user or port: `127.0.0.1` for `https://ci@127.0.0.1:8443/a.git`.
fn url_host(url: &str) -> &str {
    let authority = url.split("://").nth(1).unwrap_or(url).split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The cache's bare repository; one that cannot be opened (e.g. left half-made) is made again.
fn open_cache(path: &Path) -> Result<git2::Repository, String> {
    if let Ok(repo) = git2::Repository::open_bare(path) {
        return Ok(repo);
    }
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| format!("cannot clear the broken cache {}: {e}", path.display()))?;
    }
    git2::Repository::init_bare(path)
        .map_err(|e| format!("cannot create the cache {}: {}", path.display(), e.message()))
}

/// Held while a run uses a cached repository; closing the file releases the lock.
struct CacheLock(#[allow(dead_code)] File);

/// COMMIT_ID, BRANCH (empty when detached), COMMIT_MESSAGE (first line) and COMMIT_AUTHOR of a repository's HEAD.
fn head_outputs(repo: &git2::Repository) -> Result<Outputs, git2::Error> {
    let head = repo.head()?;
    let commit = head.peel_to_commit()?;
    let branch =
        if repo.head_detached().unwrap_or(false) { String::new() } else { head.shorthand().unwrap_or("").to_string() };
    let mut outputs = commit_outputs(&commit);
    outputs.insert("BRANCH".into(), branch);
    Ok(outputs)
}

fn commit_outputs(commit: &git2::Commit) -> Outputs {
    let author = commit.author();
    let mut outputs = Outputs::new();
    outputs.insert("COMMIT_ID".into(), commit.id().to_string());
    outputs.insert("COMMIT_MESSAGE".into(), commit.summary().ok().flatten().unwrap_or("").to_string());
    outputs.insert(
        "COMMIT_AUTHOR".into(),
        format!("{} <{}>", String::from_utf8_lossy(author.name_bytes()), String::from_utf8_lossy(author.email_bytes())),
    );
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_an_ssh_user_name_but_no_https_credentials() {
        assert_eq!(
            scrub_urls_in("cannot fetch ssh://git@host:2222/a.git at main"),
            "cannot fetch ssh://git@host:2222/a.git at main"
        );
        assert_eq!(scrub_urls_in("(git+ssh://u:pw@host/a)"), "(git+ssh://***@host/a)");
        assert_eq!(scrub_urls_in("see https://ghp_abc@github.com/a.git"), "see https://***@github.com/a.git");
        assert_eq!(scrub_urls_in("x https://u:p@h/y and ssh://git@h/z"), "x https://***@h/y and ssh://git@h/z");
    }

    #[test]
    fn urls_lose_their_user_and_password() {
        assert_eq!(scrub_url("https://user:s3cret@example.com/a.git"), "https://***@example.com/a.git");
        assert_eq!(scrub_url("https://ghp_abc@github.com/a.git"), "https://***@github.com/a.git");
        assert_eq!(scrub_url("https://example.com/a@b.git"), "https://example.com/a@b.git");
        assert_eq!(scrub_url("git@github.com:acme/a.git"), "git@github.com:acme/a.git");
    }

    #[test]
    fn the_redactor_replaces_secrets_and_credentials_in_urls() {
        let r = Redactor::new(vec!["tok3n".into()]);
        assert_eq!(r.redact("bad tok3n for https://x:y@h/r"), "bad *** for https://***@h/r");
        assert_eq!(
            r.redact("failed (https://u:p@h:8/r) and `http://a@b`"),
            "failed (https://***@h:8/r) and `http://***@b`"
        );
        assert_eq!(
            r.redact("no credentials in https://h/a@b or mail@example.com"),
            "no credentials in https://h/a@b or mail@example.com"
        );
    }

    #[test]
    fn certificate_errors_say_what_is_wrong_and_how_to_trust_a_private_authority() {
        let untrusted = certificate_error("https://git.corp.example:8443/infra.git", "the SSL certificate is invalid");
        assert_eq!(
            untrusted,
            "the server's certificate is not trusted (the SSL certificate is invalid): if a private certificate \
             authority issued it, set SSL_CERT_FILE to a PEM bundle that includes that authority's certificate"
        );
        assert_eq!(
            certificate_error("https://ci@git.corp.example:8443/infra.git", "hostname does not match certificate"),
            "the server's certificate is not for `git.corp.example` (hostname does not match certificate)"
        );
        assert_eq!(url_host("https://127.0.0.1/a.git"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:8443/a.git"), "[::1]");
        assert_eq!(url_host("https://[::1]/a.git"), "[::1]");
    }

    #[test]
    fn schemes_are_told_apart() {
        assert_eq!(Scheme::of("https://github.com/a/b.git"), Scheme::Https);
        assert_eq!(Scheme::of("git@github.com:a/b.git"), Scheme::Ssh);
        assert_eq!(Scheme::of("ssh://git@host/a.git"), Scheme::Ssh);
        assert_eq!(Scheme::of("/srv/git/a"), Scheme::Local);
        assert_eq!(Scheme::of("../a"), Scheme::Local);
        assert_eq!(Scheme::of("file:///srv/a"), Scheme::Local);
    }

    #[test]
    fn tokens_need_https_except_on_the_loopback() {
        let spec = |repository: &str, auth| SourceSpec { repository: repository.into(), reference: None, auth };
        let token = || Some(GitAuth::Token(SecretValue::Env("T".into())));
        assert!(check(&spec("https://github.com/a/b.git", token())).is_empty());
        assert!(check(&spec("http://127.0.0.1:8080/a.git", token())).is_empty());
        assert_eq!(check(&spec("http://github.com/a/b.git", token())).len(), 1);
        assert_eq!(check(&spec("git@github.com:a/b.git", token())).len(), 1);
        assert_eq!(check(&spec("https://github.com/a/b.git", Some(GitAuth::SshAgent))).len(), 1);
    }

    #[test]
    fn codebuild_sources_come_from_its_variables() {
        let vars = [
            ("CODEBUILD_BUILD_ID", "proj:1"),
            ("CODEBUILD_SRC_DIR", "/codebuild/src"),
            ("CODEBUILD_RESOLVED_SOURCE_VERSION", "abc"),
            ("CODEBUILD_WEBHOOK_HEAD_REF", "refs/heads/dev"),
            ("CODEBUILD_SRC_DIR_tools_src", "/codebuild/tools"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cb = CodeBuild::from_env(vars).expect("inside CodeBuild");
        assert_eq!(
            cb.checkout_for("source"),
            Checkout::CodeBuild {
                dir: "/codebuild/src".into(),
                version: Some("abc".into()),
                branch: Some("dev".into())
            }
        );
        assert_eq!(cb.checkout_for("tools-src").dir(), Path::new("/codebuild/tools"));
        assert!(CodeBuild::from_env([("CODEBUILD_SRC_DIR".to_string(), "/x".to_string())]).is_none());
    }
}
