//! Triggers: what makes a pipeline run. Every `--poll` each pipeline's Source references are asked for their commit
//! as `git ls-remote` asks (one connection, nothing fetched); a GitHub push webhook names the commit at once
//! ([`super::hook`]); a person asks from the page or the API ([`super::queue::trigger_now`]). Each hands a
//! [`Trigger`] to the pipeline's queue, which drops it when it saw those commits already.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use engine::model::{GitReference, Pipeline, SourceSpec, StepKind};
use engine::subst::{self, Lookup};
use tokio::sync::watch;

use super::queue::{Offer, Slot};
use super::record::{now, short, Cause, Trigger};
use super::Server;

/// The Source steps a trigger watches, their `${env:...}` substituted: every Source whose reference can move (a
/// branch, a tag, or the remote's default branch), with its id.
pub fn watched_sources(pipeline: &Pipeline) -> Vec<(String, SourceSpec)> {
    pipeline
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Source(spec) if !matches!(spec.reference, Some(GitReference::Commit(_))) => {
                Some((s.id.to_string(), substituted(spec)))
            }
            _ => None,
        })
        .collect()
}

struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn output(&self, _node: &str, _key: &str) -> Option<String> {
        None
    }
}

/// A Source's fields with `${env:...}` read from the server's environment (as the step reads them when it runs).
fn substituted(spec: &SourceSpec) -> SourceSpec {
    let Ok(mut value) = serde_json::to_value(spec) else { return spec.clone() };
    let mut missing = Vec::new();
    subst::for_each_string(&mut value, &mut |s| *s = subst::render(s, &ProcessEnv, &mut missing));
    serde_json::from_value(value).unwrap_or_else(|_| spec.clone())
}

/// Ask each watched Source's remote for the commit its reference points at now.
pub async fn check(server: &Server, slot: &Slot) -> Result<BTreeMap<String, String>, String> {
    let model = slot.model();
    let endpoint = model.defaults.aws_endpoint_url.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
    let mut commits = BTreeMap::new();
    for (id, spec) in watched_sources(&model) {
        let commit = steps::source::remote_commit(&spec, &server.base_dir, &server.aws, endpoint.as_deref()).await?;
        commits.insert(id, commit);
    }
    Ok(commits)
}

/// Poll one pipeline until the server stops: at once, then every `--poll`.
pub async fn poll(server: Arc<Server>, slot: Arc<Slot>, mut stop: watch::Receiver<bool>) {
    loop {
        let checked = check(&server, &slot).await;
        let error = match checked {
            Ok(commits) if !commits.is_empty() => {
                let trigger = Trigger::new(commits, Cause::Poll);
                if let Offer::Queued { .. } = slot.offer(trigger.clone(), false) {
                    eprintln!("{}: {} is at {}: queued a run", slot.name, describe(&trigger), trigger.short_commit());
                }
                None
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        {
            let mut polls = slot.polls.lock().unwrap_or_else(|e| e.into_inner());
            if error.is_some() && polls.error != error {
                eprintln!("{}: {}", slot.name, error.as_deref().unwrap_or_default());
            }
            polls.checked_at = Some(now());
            polls.checks += 1;
            polls.error = error;
        }
        tokio::select! {
            _ = tokio::time::sleep(server.poll) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
    }
}

fn describe(trigger: &Trigger) -> String {
    let ids: Vec<&str> = trigger.commits.keys().map(String::as_str).collect();
    format!("`{}`", ids.join("`, `"))
}

/// A push as GitHub describes it (the `push` event's payload: only what matching needs).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Push {
    /// `refs/heads/dev`, `refs/tags/v1`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The commit the ref points at after the push.
    pub after: String,
    /// The ref was deleted.
    #[serde(default)]
    pub deleted: bool,
    pub repository: PushRepository,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PushRepository {
    #[serde(default)]
    pub clone_url: Option<String>,
    #[serde(default)]
    pub ssh_url: Option<String>,
    #[serde(default)]
    pub git_url: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub default_branch: Option<String>,
}

/// The Source steps of `pipeline` that follow the pushed ref of the pushed repository.
pub fn following(pipeline: &Pipeline, base: &Path, push: &Push) -> Vec<String> {
    let repo = &push.repository;
    let pushed: Vec<String> = [&repo.clone_url, &repo.ssh_url, &repo.git_url, &repo.html_url, &repo.url]
        .into_iter()
        .flatten()
        .map(|u| repository_key(u, base))
        .collect();
    watched_sources(pipeline)
        .into_iter()
        .filter(|(_, spec)| {
            let wanted = match &spec.reference {
                Some(GitReference::Branch(b)) => format!("refs/heads/{b}"),
                Some(GitReference::Tag(t)) => format!("refs/tags/{t}"),
                None => match &repo.default_branch {
                    Some(b) => format!("refs/heads/{b}"),
                    None => return false,
                },
                Some(GitReference::Commit(_)) => return false,
            };
            wanted == push.reference && pushed.contains(&repository_key(&spec.repository, base))
        })
        .map(|(id, _)| id)
        .collect()
}

/// A repository's identity for matching webhooks: host and path, lower case, without scheme, user, port or
/// `.git` (`https://github.com/Acme/infra.git` and `git@github.com:acme/infra` are one); a local path made
/// absolute (and canonical when it exists).
pub fn repository_key(url: &str, base: &Path) -> String {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let remote = ["https://", "http://", "ssh://", "git+ssh://", "git://"]
        .iter()
        .find_map(|scheme| lower.starts_with(scheme).then(|| &url[scheme.len()..]));
    let host_path = match remote {
        Some(rest) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let host = host.split(':').next().unwrap_or(host);
            Some(format!("{host}/{path}"))
        }
        None if lower.starts_with("file://") => None,
        None => scp_like(url).map(|(host, path)| format!("{host}/{path}")),
    };
    match host_path {
        Some(hp) => hp.trim_end_matches('/').trim_end_matches(".git").trim_end_matches('/').to_ascii_lowercase(),
        None => {
            let path = url.strip_prefix("file://").unwrap_or(url);
            let full = base.join(path);
            let full = std::fs::canonicalize(&full).unwrap_or(full);
            format!("file:{}", full.display().to_string().trim_end_matches('/'))
        }
    }
}

/// `git@host:path` -> (host, path).
fn scp_like(url: &str) -> Option<(&str, &str)> {
    let colon = url.find(':')?;
    let slash = url.find('/').unwrap_or(usize::MAX);
    if colon > slash || colon < 1 {
        return None;
    }
    let (user_host, path) = (&url[..colon], &url[colon + 1..]);
    let host = user_host.rsplit('@').next()?;
    Some((host, path))
}

/// A push trigger for the Sources of a pipeline that follow it.
pub fn push_trigger(sources: &[String], push: &Push, delivery: &str) -> Trigger {
    let commits = sources.iter().map(|id| (id.clone(), push.after.clone())).collect();
    Trigger::new(commits, Cause::Webhook { delivery: delivery.to_string() })
}

/// `abc123def456 (poll)`.
pub fn describe_trigger(trigger: &Trigger) -> String {
    format!("{} ({})", trigger.commits.values().next().map(|c| short(c)).unwrap_or_default(), trigger.cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_written_several_ways_is_one_key() {
        let base = Path::new("/work");
        let key = repository_key("https://github.com/Acme/infra.git", base);
        assert_eq!(key, "github.com/acme/infra");
        for other in [
            "git@github.com:acme/infra.git",
            "ssh://git@github.com:22/acme/infra",
            "git://github.com/acme/infra.git",
            "https://x-access-token@github.com/acme/infra/",
            "http://github.com/acme/infra",
        ] {
            assert_eq!(repository_key(other, base), key, "{other}");
        }
        assert_ne!(repository_key("https://github.com/acme/infra-two", base), key);
    }

    #[test]
    fn local_paths_are_made_absolute() {
        assert_eq!(repository_key("repo", Path::new("/nowhere")), "file:/nowhere/repo");
        assert_eq!(repository_key("file:///nowhere/repo", Path::new("/x")), "file:/nowhere/repo");
    }

    fn pipeline(reference: &str) -> Pipeline {
        let text = format!(
            r#"Pipeline(name: "p", steps: [
                Step(id: "source", kind: Source(repository: "https://github.com/acme/infra.git"{reference})),
                Step(id: "build", needs: ["source"], kind: Shell(commands: ["true"])),
            ])"#
        );
        engine::load::parse(Path::new("p.ron"), text).unwrap().pipeline
    }

    fn push(reference: &str, default_branch: Option<&str>) -> Push {
        Push {
            reference: reference.into(),
            after: "a".repeat(40),
            deleted: false,
            repository: PushRepository {
                clone_url: Some("https://github.com/acme/infra.git".into()),
                default_branch: default_branch.map(str::to_string),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_push_to_the_followed_branch_names_the_source() {
        let p = pipeline(r#", reference: Branch("dev")"#);
        assert_eq!(following(&p, Path::new("/"), &push("refs/heads/dev", None)), vec!["source".to_string()]);
        assert!(following(&p, Path::new("/"), &push("refs/heads/test", None)).is_empty());
        assert!(following(&p, Path::new("/"), &push("refs/tags/dev", None)).is_empty());
    }

    #[test]
    fn a_source_without_a_reference_follows_the_default_branch_the_push_names() {
        let p = pipeline("");
        assert_eq!(following(&p, Path::new("/"), &push("refs/heads/main", Some("main"))).len(), 1);
        assert!(following(&p, Path::new("/"), &push("refs/heads/dev", Some("main"))).is_empty());
    }
}
