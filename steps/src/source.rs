//! The Source step: clone a git repository (libgit2) at a branch, tag or commit into the run's workspace, or use a
//! local checkout given with `--source-dir`. Its workspace becomes the workspace of every step downstream.

use std::path::{Path, PathBuf};

use engine::event::Stream;
use engine::model::{GitReference, SourceSpec};
use engine::step::{NodeContext, NodeSuccess, Outputs, StepError, StepRunner};

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
    problems
}

fn reference_text(r: &Option<GitReference>) -> String {
    match r {
        None => "the default branch".into(),
        Some(GitReference::Branch(b)) => format!("branch `{b}`"),
        Some(GitReference::Tag(t)) => format!("tag `{t}`"),
        Some(GitReference::Commit(c)) => format!("commit `{c}`"),
    }
}

/// What `plan` says the step will do.
pub fn describe(spec: &SourceSpec, local: Option<&Path>) -> String {
    match local {
        Some(dir) => format!("use the local checkout {} (--source-dir)", dir.display()),
        None => format!("clone {} at {}", spec.repository, reference_text(&spec.reference)),
    }
}

/// A Source step ready to run.
pub struct SourceStep {
    pub spec: SourceSpec,
    /// `--source-dir`: use this checkout instead of cloning.
    pub local: Option<PathBuf>,
}

#[async_trait::async_trait]
impl StepRunner for SourceStep {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        if let Some(dir) = &self.local {
            let dir = std::fs::canonicalize(dir)
                .map_err(|e| StepError::invalid(format!("--source-dir {}: {e}", dir.display())))?;
            ctx.events.log(Stream::Runner, format!("using the local checkout {}", dir.display())).await;
            let outputs = match git2::Repository::discover(&dir) {
                Ok(repo) => head_outputs(&repo).unwrap_or_default(),
                Err(_) => {
                    ctx.events.log(Stream::Runner, "not a git repository: no commit outputs").await;
                    Outputs::new()
                }
            };
            return Ok(NodeSuccess { outputs, workspace: Some(dir), ..Default::default() });
        }
        let url = repository_location(&self.spec.repository, &ctx.workspace);
        let dest = ctx.state_dir.join("workspaces").join(&ctx.pipeline).join(&ctx.node);
        let what = format!("{} at {}", self.spec.repository, reference_text(&self.spec.reference));
        ctx.events.log(Stream::Runner, format!("cloning {what} into {}", dest.display())).await;
        let reference = self.spec.reference.clone();
        let events = ctx.events.clone();
        let clone_dest = dest.clone();
        let job = tokio::task::spawn_blocking(move || clone(&url, reference.as_ref(), &clone_dest, &events));
        let mut stop = ctx.stop.clone();
        let outputs = tokio::select! {
            r = job => r.map_err(|e| StepError::failed(format!("clone task failed: {e}")))?
                .map_err(|e| StepError::failed(format!("cannot clone {what}: {e}")))?,
            reason = stop.stronger_than(None) => {
                return Err(StepError::stopped(reason, format!("clone of {what} was stopped")));
            }
        };
        ctx.events
            .log(Stream::Runner, format!("checked out {} ({})", outputs["COMMIT_ID"], outputs["COMMIT_MESSAGE"]))
            .await;
        Ok(NodeSuccess { outputs, workspace: Some(dest), ..Default::default() })
    }
}

/// A URL as is; a local path made absolute against the base dir.
fn repository_location(repository: &str, base: &Path) -> String {
    let is_url = repository.contains("://") || (repository.contains('@') && repository.contains(':'));
    if is_url {
        repository.to_string()
    } else {
        base.join(repository).display().to_string()
    }
}

fn clone(
    url: &str,
    reference: Option<&GitReference>,
    dest: &Path,
    events: &engine::step::EventSink,
) -> Result<Outputs, String> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| format!("cannot clear {}: {e}", dest.display()))?;
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.transfer_progress(|p| {
        events.try_progress(
            p.received_objects() as u64,
            Some(p.total_objects() as u64),
            "objects",
            "receiving objects",
        );
        true
    });
    let mut fetch = git2::FetchOptions::new();
    fetch.remote_callbacks(callbacks);
    let mut builder = git2::build::RepoBuilder::new();
    builder.fetch_options(fetch);
    if let Some(GitReference::Branch(b)) = reference {
        builder.branch(b);
    }
    let repo = builder.clone(url, dest).map_err(|e| match reference {
        Some(GitReference::Branch(b)) if e.code() == git2::ErrorCode::NotFound => {
            format!("branch `{b}` does not exist in the repository")
        }
        _ => e.message().to_string(),
    })?;
    let detached = match reference {
        Some(GitReference::Tag(t)) => Some(
            repo.revparse_single(&format!("refs/tags/{t}"))
                .map_err(|_| format!("tag `{t}` does not exist in the repository"))?,
        ),
        Some(GitReference::Commit(c)) => {
            Some(repo.revparse_single(c).map_err(|_| format!("commit `{c}` does not exist in the repository"))?)
        }
        _ => None,
    };
    if let Some(object) = detached {
        let commit = object.peel_to_commit().map_err(|e| e.message().to_string())?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.force();
        repo.checkout_tree(commit.as_object(), Some(&mut checkout)).map_err(|e| e.message().to_string())?;
        repo.set_head_detached(commit.id()).map_err(|e| e.message().to_string())?;
    }
    head_outputs(&repo).map_err(|e| e.message().to_string())
}

/// COMMIT_ID, BRANCH (empty when detached) and COMMIT_MESSAGE (first line) of a repository's HEAD.
fn head_outputs(repo: &git2::Repository) -> Result<Outputs, git2::Error> {
    let head = repo.head()?;
    let commit = head.peel_to_commit()?;
    let branch =
        if repo.head_detached().unwrap_or(false) { String::new() } else { head.shorthand().unwrap_or("").to_string() };
    let mut outputs = Outputs::new();
    outputs.insert("COMMIT_ID".into(), commit.id().to_string());
    outputs.insert("BRANCH".into(), branch);
    outputs.insert("COMMIT_MESSAGE".into(), commit.summary().ok().flatten().unwrap_or("").to_string());
    Ok(outputs)
}
