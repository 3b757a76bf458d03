//! The Publish step: file assets to S3, like `cdk-assets`. Assets declared in the pipeline (a file as is, or a
//! directory zipped deterministically; key = sha256 of the uploaded bytes), or the assets of one stage of a CDK
//! cloud assembly (keys verbatim from its asset manifests). What is already there (HeadObject) is skipped; large
//! files go up as multipart uploads with parallel parts; assets go up in parallel, bounded. Objects only ever
//! appear under their final key whole: through one PutObject or a completed multipart upload (aborted on failure).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use engine::event::{Status, Stream};
use engine::model::{DeployRole, Destination, FileAsset, PublishAssets, PublishSpec};
use engine::step::{EventSink, Expansion, NodeContext, NodeSuccess, Outputs, Part, StepError, StepRunner};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};

use crate::assembly::{self, AssetDestination, Packaging};
use crate::aws::{aws_reason, Sessions, Target, DEFAULT_QUALIFIER};
use crate::deploy::session_name;

/// Files above this go up as multipart uploads.
pub const MULTIPART_THRESHOLD: u64 = 8 * 1024 * 1024;
/// Part size of multipart uploads (S3's minimum is 5 MiB; at most 10,000 parts).
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// Assets (and parts) in flight at once by default.
pub const DEFAULT_PARALLEL: usize = 8;

/// Kind-specific problems of a Publish step.
pub fn check(spec: &PublishSpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if spec.max_parallel == Some(0) {
        problems.push(("max_parallel".into(), "`max_parallel` must be at least 1".into()));
    }
    match &spec.assets {
        PublishAssets::Files { destination, files } => {
            let templated = |s: &str| s.contains("${");
            let account_id = destination.account.len() == 12 && destination.account.chars().all(|c| c.is_ascii_digit());
            if !account_id && !templated(&destination.account) {
                problems.push((
                    "assets.destination.account".into(),
                    format!("account `{}` is not a 12-digit AWS account id", destination.account),
                ));
            }
            if destination.region.trim().is_empty() {
                problems.push(("assets.destination.region".into(), "empty `region`".into()));
            }
            if files.is_empty() {
                problems.push(("assets.files".into(), "a Publish needs at least one file".into()));
            }
            let mut seen = std::collections::HashSet::new();
            for (i, f) in files.iter().enumerate() {
                let valid = !f.id.is_empty() && f.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                let id = engine::diagnostic::elide(&f.id, engine::diagnostic::MAX_QUOTED);
                if !valid {
                    problems.push((
                        format!("assets.files[{i}].id"),
                        format!("asset id `{id}` must be non-empty and use only letters, digits, `-` and `_`"),
                    ));
                } else if let Some(message) = engine::validate::too_long("asset id", &f.id) {
                    problems.push((format!("assets.files[{i}].id"), message));
                }
                if !seen.insert(f.id.as_str()) {
                    problems.push((format!("assets.files[{i}].id"), format!("duplicate asset `{id}`")));
                }
                if f.path.trim().is_empty() {
                    problems.push((format!("assets.files[{i}].path"), "empty `path`".into()));
                }
            }
        }
        PublishAssets::Assembly { dir, stage } => {
            if dir.trim().is_empty() {
                problems.push(("assets.dir".into(), "empty assembly `dir`".into()));
            }
            if stage.trim().is_empty() {
                problems.push(("assets.stage".into(), "empty `stage`".into()));
            }
        }
    }
    problems
}

/// What `plan` says.
pub fn describe(spec: &PublishSpec, part: Option<&str>) -> String {
    match &spec.assets {
        PublishAssets::Files { destination, files } => format!(
            "publish {} file asset{} to s3://{}",
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            bucket_of(destination)
        ),
        PublishAssets::Assembly { dir, stage } => match part {
            Some(p) => format!("publish asset {p} of stage {stage} ({dir})"),
            None => format!("publish the assets of stage {stage} of the cloud assembly {dir}"),
        },
    }
}

/// Files: one node. Assembly: one node per asset when the assembly is in the step's workspace and nothing upstream
/// can change it first (`workspace`, as for Deploy), else one node expanding at run time.
/// The assembly's `dir` and `stage` take their `${env:...}` from `env` now (a stage name in a node's id, a
/// directory read while planning); still templated (a step output, an unset variable), the step expands when it
/// runs.
pub fn expand(
    spec: &PublishSpec,
    workspace: impl FnOnce() -> Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expansion, String> {
    match &spec.assets {
        PublishAssets::Files { .. } => Ok(Expansion::Single),
        PublishAssets::Assembly { dir, stage } => {
            let known = |s: &str| {
                let mut missing = Vec::new();
                let lookup = engine::subst::Values { env, outputs: &|_| None };
                let out = engine::subst::render(s, &lookup, &mut missing);
                missing.is_empty().then_some(out)
            };
            let (Some(dir), Some(stage)) = (known(dir), known(stage)) else {
                return Ok(Expansion::AtRunTime);
            };
            let Some(root) = assembly::at_plan_time(&dir, workspace) else {
                return Ok(Expansion::AtRunTime);
            };
            Ok(Expansion::Parts(parts(spec, &assembly::load_stage(&root, &stage)?)))
        }
    }
}

/// One node per asset, each saying where it puts the asset, so that a stack waits only for its own.
fn parts(spec: &PublishSpec, stage: &assembly::Stage) -> Vec<Part> {
    let files = stage.files.iter().map(|f| (&f.part, f.destinations.iter().map(assembly::file_key).collect()));
    let images = stage.images.iter().map(|i| (&i.part, i.destinations.iter().map(assembly::image_key).collect()));
    files
        .chain(images)
        .map(|(n, provides)| Part {
            name: n.clone(),
            description: describe(spec, Some(n)),
            provides,
            ..Default::default()
        })
        .collect()
}

fn bucket_of(d: &Destination) -> String {
    let q = d.qualifier.as_deref().unwrap_or(DEFAULT_QUALIFIER);
    d.bucket.clone().unwrap_or_else(|| format!("cdk-{q}-assets-{}-{}", d.account, d.region))
}

fn role_of(d: &Destination) -> Option<String> {
    let q = d.qualifier.as_deref().unwrap_or(DEFAULT_QUALIFIER);
    match &d.role {
        DeployRole::Bootstrap => Some(crate::aws::role_arn(
            &d.region,
            &d.account,
            &format!("cdk-{q}-file-publishing-role-{a}-{r}", a = d.account, r = d.region),
        )),
        DeployRole::Arn(arn) => Some(arn.clone()),
        DeployRole::Caller => None,
    }
}

/// sha256 of files already hashed, by path, valid while the file's size, modification and change times (ns)
/// and inode stay the same: a second publish of unchanged files reads none of them. Kept in
/// `<state>/cache/publish-sha256.json`; a damaged or missing cache is just empty.
pub struct HashCache {
    path: PathBuf,
    entries: std::sync::Mutex<HashMap<String, CachedHash>>,
    dirty: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct CachedHash {
    len: u64,
    modified_ns: u64,
    changed_ns: u64,
    inode: u64,
    sha256: String,
}

impl HashCache {
    pub fn load(state_dir: &Path) -> HashCache {
        let path = state_dir.join("cache").join("publish-sha256.json");
        let entries = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        HashCache { path, entries: std::sync::Mutex::new(entries), dirty: Default::default() }
    }

    fn stamp(path: &Path) -> Option<(String, u64, u64, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let ns = |s: i64, n: i64| (s as u64).saturating_mul(1_000_000_000).saturating_add(n as u64);
        let key = std::fs::canonicalize(path).ok()?.display().to_string();
        Some((key, m.len(), ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()), m.ino()))
    }

    /// The body's sha256: from the cache when the file is unchanged, else read (and remembered).
    pub async fn sha256(&self, body: &Body) -> Result<String, String> {
        let Body::File { path, .. } = body else { return body.sha256().await };
        let stamp = Self::stamp(path);
        if let Some((key, len, modified_ns, changed_ns, inode)) = &stamp {
            let entries = self.entries.lock().map_err(|e| e.to_string())?;
            if let Some(c) = entries.get(key) {
                if (c.len, c.modified_ns, c.changed_ns, c.inode) == (*len, *modified_ns, *changed_ns, *inode) {
                    return Ok(c.sha256.clone());
                }
            }
        }
        let sha256 = body.sha256().await?;
        if let Some((key, len, modified_ns, changed_ns, inode)) = stamp {
            let entry = CachedHash { len, modified_ns, changed_ns, inode, sha256: sha256.clone() };
            self.entries.lock().map_err(|e| e.to_string())?.insert(key, entry);
            self.dirty.store(true, Ordering::Relaxed);
        }
        Ok(sha256)
    }

    /// Write the cache if it changed (atomically: a temporary file renamed over it).
    pub fn save(&self) -> Result<(), String> {
        if !self.dirty.load(Ordering::Relaxed) {
            return Ok(());
        }
        let text = {
            let entries = self.entries.lock().map_err(|e| e.to_string())?;
            serde_json::to_vec(&*entries).map_err(|e| e.to_string())?
        };
        let fail = |e: std::io::Error| format!("cannot write the hash cache {}: {e}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = self.path.with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }
}

/// The session a Publish of pipeline-declared files acts with, for the preflight (`None` when its destination
/// needs step outputs, or for an assembly, whose roles are only known from its manifests).
pub fn preflight_target(
    spec: &PublishSpec,
    pipeline: &str,
    step: &str,
    endpoint: Option<&str>,
    env: &std::collections::HashMap<String, String>,
) -> Option<Target> {
    let PublishAssets::Files { destination, .. } = &spec.assets else { return None };
    let value = serde_json::to_value(destination).ok()?;
    let mut value = value;
    let mut missing = Vec::new();
    let lookup = EnvLookup(env);
    engine::subst::for_each_string(&mut value, &mut |s| {
        if s.contains("${") {
            *s = engine::subst::render(s, &lookup, &mut missing);
        }
    });
    let endpoint = endpoint.map(|e| engine::subst::render(e, &lookup, &mut missing));
    if !missing.is_empty() {
        return None;
    }
    let d: Destination = serde_json::from_value(value).ok()?;
    Some(Target {
        account: d.account.clone(),
        region: d.region.clone(),
        role: role_of(&d),
        external_id: d.external_id.clone(),
        session_name: session_name(pipeline, step),
        endpoint,
    })
}

struct EnvLookup<'a>(&'a std::collections::HashMap<String, String>);

impl engine::subst::Lookup for EnvLookup<'_> {
    fn env(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn output(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// `<ID>_KEY`-style output name of an asset id.
pub fn output_name(id: &str, suffix: &str) -> String {
    let id: String = id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{id}_{suffix}")
}

/// A Publish step's node.
pub struct PublishStep {
    pub spec: PublishSpec,
    pub endpoint: Option<String>,
    pub sessions: Arc<Sessions>,
}

#[async_trait::async_trait]
impl StepRunner for PublishStep {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        let parallel = self.spec.max_parallel.unwrap_or(DEFAULT_PARALLEL).max(1);
        match &self.spec.assets {
            PublishAssets::Files { destination, files } => self.publish_files(ctx, destination, files, parallel).await,
            PublishAssets::Assembly { dir, stage } => {
                let root = ctx.workspace.join(dir);
                let stage = assembly::load_stage(&root, stage).map_err(StepError::invalid)?;
                for w in &stage.warnings {
                    ctx.events.log(Stream::Runner, format!("warning: {w}")).await;
                }
                match ctx.part.as_deref() {
                    None => {
                        let parts = parts(&self.spec, &stage);
                        ctx.events
                            .log(
                                Stream::Runner,
                                format!(
                                    "stage {} of {} has {} file and {} docker image assets",
                                    stage.name,
                                    root.display(),
                                    stage.files.len(),
                                    stage.images.len()
                                ),
                            )
                            .await;
                        Ok(NodeSuccess { expansion: parts, ..Default::default() })
                    }
                    Some(part) => self.publish_assembly_asset(ctx, &stage, part, parallel).await,
                }
            }
        }
    }
}

impl PublishStep {
    fn target(
        &self,
        ctx: &NodeContext,
        account: &str,
        region: &str,
        role: Option<String>,
        ext: Option<String>,
    ) -> Target {
        Target {
            account: account.to_string(),
            region: region.to_string(),
            role,
            external_id: ext,
            session_name: session_name(&ctx.pipeline, &ctx.step),
            endpoint: self.endpoint.clone(),
        }
    }

    async fn publish_files(
        &self,
        ctx: &NodeContext,
        destination: &Destination,
        files: &[FileAsset],
        parallel: usize,
    ) -> Result<NodeSuccess, StepError> {
        let bucket = bucket_of(destination);
        let target = self.target(
            ctx,
            &destination.account,
            &destination.region,
            role_of(destination),
            destination.external_id.clone(),
        );
        let prefix = destination.prefix.clone().unwrap_or_default();
        // Prepare every asset first (open, zip; in parallel): a missing path fails before anything is uploaded.
        // Files are hashed in their upload task (from the cache when unchanged), so uploads start at once.
        let mut prepared = tokio::task::JoinSet::new();
        let limit = Arc::new(Semaphore::new(parallel));
        for (i, f) in files.iter().enumerate() {
            let path = ctx.workspace.join(&f.path);
            let (id, limit) = (f.id.clone(), Arc::clone(&limit));
            prepared.spawn(async move {
                let _permit = limit.acquire().await;
                let (body, ext) = prepare(&path, Packaging::Zip, true)
                    .await
                    .map_err(|e| StepError::invalid(format!("cannot publish asset `{id}`: {e}")))?;
                Ok::<_, StepError>((i, body, ext))
            });
        }
        let mut ready = BTreeMap::new();
        let mut errors = Vec::new();
        while let Some(joined) = prepared.join_next().await {
            match joined {
                Ok(Ok((i, body, ext))) => {
                    ready.insert(i, (body, ext));
                }
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(StepError::failed(format!("preparing an asset failed: {e}"))),
            }
        }
        if let Some(first) = errors.into_iter().min_by(|a, b| a.message.cmp(&b.message)) {
            return Err(first);
        }
        let mut jobs = Vec::new();
        for (f, (body, ext)) in files.iter().zip(ready.into_values()) {
            jobs.push(Job {
                asset: f.id.clone(),
                body,
                key_from_hash: Some((prefix.clone(), ext)),
                destination: AssetDestination {
                    bucket: bucket.clone(),
                    key: String::new(),
                    region: destination.region.clone(),
                    account: destination.account.clone(),
                    role: target.role.clone(),
                    external_id: target.external_id.clone(),
                },
            });
        }
        let results = self.upload_all(ctx, jobs, parallel).await?;
        let mut outputs = Outputs::new();
        for (f, r) in files.iter().zip(&results) {
            outputs.insert(output_name(&f.id, "BUCKET"), r.bucket.clone());
            outputs.insert(output_name(&f.id, "KEY"), r.key.clone());
            outputs.insert(output_name(&f.id, "URL"), format!("s3://{}/{}", r.bucket, r.key));
        }
        Ok(finish(&results, outputs))
    }

    async fn publish_assembly_asset(
        &self,
        ctx: &NodeContext,
        stage: &assembly::Stage,
        part: &str,
        parallel: usize,
    ) -> Result<NodeSuccess, StepError> {
        if let Some(image) = stage.images.iter().find(|i| i.part == part) {
            let target_of =
                |account: &str, region: &str, role: Option<String>| self.target(ctx, account, region, role, None);
            return crate::docker::publish_image(ctx, image, &self.sessions, target_of).await;
        }
        let asset = stage
            .files
            .iter()
            .find(|f| f.part == part)
            .ok_or_else(|| StepError::invalid(format!("no asset `{part}` in stage {}", stage.name)))?;
        let (body, _) = prepare(&asset.path, asset.packaging, false)
            .await
            .map_err(|e| StepError::invalid(format!("cannot publish asset `{}`: {e}", asset.display_name)))?;
        let jobs = asset
            .destinations
            .iter()
            .map(|d| Job {
                asset: asset.display_name.clone(),
                body: body.clone(),
                key_from_hash: None,
                destination: d.clone(),
            })
            .collect();
        let results = self.upload_all(ctx, jobs, parallel).await?;
        let mut outputs = Outputs::new();
        if let Some(r) = results.first() {
            outputs.insert("BUCKET".into(), r.bucket.clone());
            outputs.insert("KEY".into(), r.key.clone());
            outputs.insert("URL".into(), format!("s3://{}/{}", r.bucket, r.key));
        }
        Ok(finish(&results, outputs))
    }

    /// Upload every job, at most `parallel` assets (and `parallel` part requests) at once.
    async fn upload_all(&self, ctx: &NodeContext, jobs: Vec<Job>, parallel: usize) -> Result<Vec<Done>, StepError> {
        let progress = Arc::new(Progress {
            bytes: AtomicU64::new(0),
            total: jobs.iter().map(|j| j.body.len()).sum(),
            assets: AtomicU64::new(0),
            count: jobs.len() as u64,
            events: ctx.events.clone(),
            last: std::sync::Mutex::new(None),
        });
        let hashes = Arc::new(HashCache::load(&ctx.state_dir));
        let listings = self.list_existing(ctx, &jobs).await;
        let shared = Arc::new(Shared {
            listings,
            hashes: Arc::clone(&hashes),
            sessions: Arc::clone(&self.sessions),
            requests: Semaphore::new(parallel),
            encryption: Mutex::new(HashMap::new()),
            progress: Arc::clone(&progress),
        });
        let slots = Arc::new(Semaphore::new(parallel));
        let mut set = tokio::task::JoinSet::new();
        for (i, job) in jobs.into_iter().enumerate() {
            let target = self.target(
                ctx,
                &job.destination.account,
                &job.destination.region,
                job.destination.role.clone(),
                job.destination.external_id.clone(),
            );
            let (shared, slots) = (Arc::clone(&shared), Arc::clone(&slots));
            set.spawn(async move {
                let _slot = slots.acquire().await;
                (i, upload(&shared, &target, job).await)
            });
        }
        let mut results: BTreeMap<usize, Done> = BTreeMap::new();
        let mut errors = Vec::new();
        let mut stop = ctx.stop.clone();
        loop {
            tokio::select! {
                next = set.join_next() => {
                    let Some(joined) = next else { break };
                    match joined {
                        Ok((i, Ok(done))) => {
                            let line = if done.uploaded {
                                format!("uploaded {} ({} bytes) to s3://{}/{}", done.asset, done.bytes, done.bucket, done.key)
                            } else {
                                format!("{} is already published at s3://{}/{}", done.asset, done.bucket, done.key)
                            };
                            ctx.events.log(Stream::Runner, line).await;
                            results.insert(i, done);
                        }
                        Ok((_, Err(e))) => errors.push(e),
                        Err(e) => errors.push(format!("an upload task failed: {e}")),
                    }
                }
                reason = stop.stronger_than(None) => {
                    set.abort_all();
                    return Err(StepError::stopped(reason, "stopped while uploading assets"));
                }
            }
        }
        progress.report();
        if let Err(e) = hashes.save() {
            ctx.events.log(Stream::Runner, format!("warning: {e}")).await;
        }
        if !errors.is_empty() {
            errors.sort();
            return Err(StepError::failed(errors.join("\n")));
        }
        Ok(results.into_values().collect())
    }
}

fn finish(results: &[Done], outputs: Outputs) -> NodeSuccess {
    let status = if results.iter().all(|r| !r.uploaded) { Some(Status::Unchanged) } else { None };
    NodeSuccess { status, outputs, ..Default::default() }
}

/// The bytes of an asset: a file read in place, or bytes made in memory (a zip).
#[derive(Clone)]
pub enum Body {
    File { path: Arc<PathBuf>, len: u64 },
    Bytes(bytes::Bytes),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::File { len, .. } => *len,
            Body::Bytes(b) => b.len() as u64,
        }
    }

    /// sha256 of the bytes, hex.
    pub async fn sha256(&self) -> Result<String, String> {
        match self {
            Body::Bytes(b) => Ok(format!("{:x}", Sha256::digest(b))),
            Body::File { path, .. } => {
                let path = Arc::clone(path);
                tokio::task::spawn_blocking(move || {
                    let mut f =
                        std::fs::File::open(&*path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    let mut h = Sha256::new();
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = f.read(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                    Ok(format!("{:x}", h.finalize()))
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    }

    /// Bytes `[start, start + len)`.
    async fn range(&self, start: u64, len: u64) -> Result<bytes::Bytes, String> {
        match self {
            Body::Bytes(b) => Ok(b.slice(start as usize..(start + len) as usize)),
            Body::File { path, .. } => {
                let path = Arc::clone(path);
                tokio::task::spawn_blocking(move || {
                    let read = || -> std::io::Result<Vec<u8>> {
                        let mut f = std::fs::File::open(&*path)?;
                        f.seek(SeekFrom::Start(start))?;
                        let mut buf = vec![0u8; len as usize];
                        f.read_exact(&mut buf)?;
                        Ok(buf)
                    };
                    read().map(bytes::Bytes::from).map_err(|e| format!("cannot read {}: {e}", path.display()))
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    }
}

/// Read an asset's source: a directory is zipped (when `packaging` is Zip), a file is taken as is. Returns the
/// body and the key's extension for keys made from the hash (`.zip` for a directory, the file's own otherwise).
async fn prepare(path: &Path, packaging: Packaging, any: bool) -> Result<(Body, String), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        if packaging != Packaging::Zip && !any {
            return Err(format!("{} is a directory, but the asset's packaging is `file`", path.display()));
        }
        let dir = path.to_path_buf();
        let zipped = tokio::task::spawn_blocking(move || zip_dir(&dir)).await.map_err(|e| e.to_string())??;
        return Ok((Body::Bytes(zipped.into()), ".zip".into()));
    }
    std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
    Ok((Body::File { path: Arc::new(path.to_path_buf()), len: meta.len() }, ext))
}

/// A directory as a zip that depends on nothing but the files' paths, contents and executable bits: entries
/// sorted by path, timestamps 1980-01-01 00:00:00, permissions 0644 (0755 for executables), deflate level 6.
pub fn zip_dir(dir: &Path) -> Result<Vec<u8>, String> {
    let mut entries = Vec::new();
    collect(dir, "", &mut entries)?;
    entries.sort();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, path, executable, len) in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(6))
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(if executable { 0o755 } else { 0o644 })
            .large_file(len >= u32::MAX as u64);
        w.start_file(&name, options).map_err(|e| format!("cannot zip {}: {e}", path.display()))?;
        let mut f = std::fs::File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        std::io::copy(&mut f, &mut w).map_err(|e| format!("cannot zip {}: {e}", path.display()))?;
    }
    let mut cursor = w.finish().map_err(|e| format!("cannot zip {}: {e}", dir.display()))?;
    cursor.flush().ok();
    Ok(cursor.into_inner())
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf, bool, u64)>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let rel = format!("{prefix}{name}");
        if meta.is_dir() {
            collect(&path, &format!("{rel}/"), out)?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            out.push((rel, path, meta.permissions().mode() & 0o111 != 0, meta.len()));
        }
    }
    Ok(())
}

/// One asset to one destination.
struct Job {
    asset: String,
    body: Body,
    /// The key is `{prefix}{sha256 of the body}{ext}`, computed in the upload task.
    key_from_hash: Option<(String, String)>,
    destination: AssetDestination,
}

/// How a job ended.
#[derive(Debug, Clone)]
struct Done {
    asset: String,
    bucket: String,
    key: String,
    bytes: u64,
    uploaded: bool,
}

/// (account, bucket) -> the bucket's SSE-KMS key (`Some(None)`: SSE-KMS with the default key), or `None`.
type EncryptionCache = HashMap<(String, String), Option<Option<String>>>;

struct Shared {
    /// (account, bucket) -> every key under the listed prefix, when many assets go to one bucket.
    listings: HashMap<(String, String), Listing>,
    hashes: Arc<HashCache>,
    sessions: Arc<Sessions>,
    requests: Semaphore,
    encryption: Mutex<EncryptionCache>,
    progress: Arc<Progress>,
}

struct Progress {
    bytes: AtomicU64,
    total: u64,
    assets: AtomicU64,
    count: u64,
    events: EventSink,
    /// When progress was last sent: at most every 200 ms, and at the end.
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Progress {
    fn report(&self) {
        let (done, assets) = (self.bytes.load(Ordering::Relaxed), self.assets.load(Ordering::Relaxed));
        if assets < self.count {
            let Ok(mut last) = self.last.lock() else { return };
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(200)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        self.events.try_progress(done, Some(self.total), "bytes", format!("{assets}/{} assets", self.count));
    }

    fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.report();
    }

    fn asset_done(&self, counted: u64, len: u64) {
        // An asset that was already there counts as done in full.
        self.bytes.fetch_add(len - counted.min(len), Ordering::Relaxed);
        self.assets.fetch_add(1, Ordering::Relaxed);
        self.report();
    }
}

async fn upload(shared: &Shared, target: &Target, mut job: Job) -> Result<Done, String> {
    if let Some((prefix, ext)) = &job.key_from_hash {
        let hash = shared.hashes.sha256(&job.body).await.map_err(|e| format!("asset `{}`: {e}", job.asset))?;
        job.destination.key = format!("{prefix}{hash}{ext}");
    }
    let d = &job.destination;
    let whom = match &d.role {
        Some(r) => format!("account {} as {r}", d.account),
        None => format!("account {} with the caller's credentials", d.account),
    };
    let fail = |what: String| format!("asset `{}` to s3://{}/{} ({whom}): {what}", job.asset, d.bucket, d.key);
    let session = shared.sessions.get(target).await.map_err(|e| fail(e.to_string()))?;
    let s3 = session.s3();
    let len = job.body.len();
    let mut done =
        Done { asset: job.asset.clone(), bucket: d.bucket.clone(), key: d.key.clone(), bytes: len, uploaded: false };
    let listing = shared.listings.get(&(d.account.clone(), d.bucket.clone())).filter(|l| d.key.starts_with(&l.prefix));
    let there = match listing {
        // The bucket was listed (one request per 1,000 keys instead of a HeadObject per asset).
        Some(l) => Ok(l.keys.contains(&d.key)),
        None => s3.head_object().bucket(&d.bucket).key(&d.key).send().await.map(|_| true),
    };
    match there {
        Ok(false) => {}
        Ok(true) => {
            shared.progress.asset_done(0, len);
            return Ok(done);
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let reason = match status {
                Some(403) => "access denied (HTTP 403 on HeadObject)".to_string(),
                _ => aws_reason(&e),
            };
            return Err(fail(format!("cannot check whether it is already there: {reason}")));
        }
    }
    let sse = encryption(shared, &s3, &d.account, &d.bucket).await.map_err(fail)?;
    let (algo, kms_key) = match sse {
        Some(key) => (Some(ServerSideEncryption::AwsKms), key),
        None => (None, None),
    };
    if len <= MULTIPART_THRESHOLD {
        let bytes = job.body.range(0, len).await.map_err(fail)?;
        let _permit = shared.requests.acquire().await.map_err(|e| fail(e.to_string()))?;
        s3.put_object()
            .bucket(&d.bucket)
            .key(&d.key)
            .body(ByteStream::from(bytes))
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .set_server_side_encryption(algo)
            .set_ssekms_key_id(kms_key)
            .send()
            .await
            .map_err(|e| fail(format!("PutObject failed: {}", aws_reason(&e))))?;
        shared.progress.asset_done(0, len);
    } else {
        multipart(shared, &s3, &job, algo, kms_key).await.map_err(fail)?;
        shared.progress.asset_done(len, len);
    }
    done.uploaded = true;
    Ok(done)
}

/// The keys under a prefix of a bucket, listed completely.
struct Listing {
    prefix: String,
    keys: std::collections::HashSet<String>,
}

/// From this many assets to one bucket on, the bucket is listed instead of asking HeadObject per asset.
const LIST_FROM: usize = 16;
/// At most this many ListObjectsV2 pages (1,000 keys each); a bigger bucket falls back to HeadObject.
const LIST_PAGES: usize = 10;

impl PublishStep {
    /// Buckets that many jobs go to, listed under the jobs' common key prefix. A listing that fails (e.g. no
    /// s3:ListBucket) or is too long is left out: those jobs ask HeadObject.
    async fn list_existing(&self, ctx: &NodeContext, jobs: &[Job]) -> HashMap<(String, String), Listing> {
        let mut groups: HashMap<(String, String), (Target, Vec<String>)> = HashMap::new();
        for job in jobs {
            let d = &job.destination;
            let prefix = match &job.key_from_hash {
                Some((prefix, _)) => prefix.clone(),
                None => d.key.clone(),
            };
            let target = self.target(ctx, &d.account, &d.region, d.role.clone(), d.external_id.clone());
            groups.entry((d.account.clone(), d.bucket.clone())).or_insert((target, Vec::new())).1.push(prefix);
        }
        let mut listings = HashMap::new();
        for ((account, bucket), (target, prefixes)) in groups {
            if prefixes.len() < LIST_FROM {
                continue;
            }
            let prefix = prefixes.iter().skip(1).fold(prefixes[0].clone(), |common, p| {
                common.chars().zip(p.chars()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect()
            });
            let Ok(session) = self.sessions.get(&target).await else { continue };
            let s3 = session.s3();
            let mut keys = std::collections::HashSet::new();
            let mut token = None;
            let mut complete = false;
            for _ in 0..LIST_PAGES {
                let page = s3
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await;
                let Ok(page) = page else { break };
                keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => {
                        complete = true;
                        break;
                    }
                }
            }
            if complete {
                ctx.events
                    .log(
                        Stream::Runner,
                        format!(
                            "listed s3://{bucket}/{prefix}: {} objects there, instead of a HeadObject per asset",
                            keys.len()
                        ),
                    )
                    .await;
                listings.insert((account, bucket), Listing { prefix, keys });
            }
        }
        listings
    }
}

/// The bucket's default encryption, asked once per bucket: `Some(key)` when it is SSE-KMS.
async fn encryption(
    shared: &Shared,
    s3: &aws_sdk_s3::Client,
    account: &str,
    bucket: &str,
) -> Result<Option<Option<String>>, String> {
    let mut cache = shared.encryption.lock().await;
    let key = (account.to_string(), bucket.to_string());
    if let Some(v) = cache.get(&key) {
        return Ok(v.clone());
    }
    let value = match s3.get_bucket_encryption().bucket(bucket).send().await {
        Ok(out) => {
            let rule = out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default());
            match rule {
                Some(r) if r.sse_algorithm() == &ServerSideEncryption::AwsKms => {
                    Some(r.kms_master_key_id().map(str::to_string))
                }
                _ => None,
            }
        }
        Err(e) if e.code() == Some("ServerSideEncryptionConfigurationNotFoundError") => None,
        Err(e) if e.code() == Some("NoSuchBucket") => {
            return Err(format!("the bucket does not exist: {}", aws_reason(&e)));
        }
        // Not allowed to read it (like cdk-assets): let the bucket apply its defaults.
        Err(e) if e.code() == Some("AccessDenied") => None,
        Err(e) => return Err(format!("cannot read the bucket's encryption: {}", aws_reason(&e))),
    };
    cache.insert(key, value.clone());
    Ok(value)
}

async fn multipart(
    shared: &Shared,
    s3: &aws_sdk_s3::Client,
    job: &Job,
    algo: Option<ServerSideEncryption>,
    kms_key: Option<String>,
) -> Result<(), String> {
    let d = &job.destination;
    let len = job.body.len();
    let part_size = PART_SIZE.max(len.div_ceil(10_000));
    let created = s3
        .create_multipart_upload()
        .bucket(&d.bucket)
        .key(&d.key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .set_server_side_encryption(algo)
        .set_ssekms_key_id(kms_key)
        .send()
        .await
        .map_err(|e| format!("CreateMultipartUpload failed: {}", aws_reason(&e)))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    let result = async {
        let count = len.div_ceil(part_size);
        let parts = (0..count).map(|i| {
            let start = i * part_size;
            let size = part_size.min(len - start);
            let upload_id = upload_id.clone();
            async move {
                let bytes = job.body.range(start, size).await?;
                let _permit = shared.requests.acquire().await.map_err(|e| e.to_string())?;
                let out = s3
                    .upload_part()
                    .bucket(&d.bucket)
                    .key(&d.key)
                    .upload_id(&upload_id)
                    .part_number(i as i32 + 1)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(|e| format!("UploadPart {} failed: {}", i + 1, aws_reason(&e)))?;
                shared.progress.add_bytes(size);
                Ok::<_, String>(
                    CompletedPart::builder()
                        .part_number(i as i32 + 1)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build(),
                )
            }
        });
        let completed = futures_join_all(parts).await?;
        s3.complete_multipart_upload()
            .bucket(&d.bucket)
            .key(&d.key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .map_err(|e| format!("CompleteMultipartUpload failed: {}", aws_reason(&e)))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        // Nothing half-written: the parts go, the final key never appeared.
        let _ = s3.abort_multipart_upload().bucket(&d.bucket).key(&d.key).upload_id(&upload_id).send().await;
    }
    result
}

/// Run futures concurrently (they bound themselves with the request semaphore); the first error wins.
async fn futures_join_all<T, F>(futures: impl Iterator<Item = F>) -> Result<Vec<T>, String>
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<T>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(Ok(v)) => results[i] = Some(v),
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Ok(()))
        }
    })
    .await?;
    Ok(results.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_zips_to_the_same_bytes_whatever_its_timestamps() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join("sub")).unwrap();
        std::fs::write(a.path().join("b.txt"), "bee").unwrap();
        std::fs::write(a.path().join("sub/a.txt"), "aye").unwrap();
        let first = zip_dir(a.path()).unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(b.path().join("sub")).unwrap();
        // Written in the other order, later: other timestamps and inode order.
        std::fs::write(b.path().join("sub/a.txt"), "aye").unwrap();
        std::fs::write(b.path().join("b.txt"), "bee").unwrap();
        let second = zip_dir(b.path()).unwrap();
        assert_eq!(first, second);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(first)).unwrap();
        let names: Vec<String> =
            (0..archive.len()).map(|i| archive.by_index(i).unwrap().name().unwrap().to_string()).collect();
        assert_eq!(names, ["b.txt", "sub/a.txt"]);
        let f = archive.by_index(0).unwrap();
        assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o644));
        std::fs::write(b.path().join("b.txt"), "changed").unwrap();
        assert_ne!(zip_dir(b.path()).unwrap(), zip_dir(a.path()).unwrap());
    }

    #[tokio::test]
    async fn the_hash_cache_reads_a_file_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        std::fs::write(&file, "one").unwrap();
        let body = || Body::File { path: Arc::new(file.clone()), len: 3 };
        let cache = HashCache::load(dir.path());
        let first = cache.sha256(&body()).await.unwrap();
        assert_eq!(first, format!("{:x}", Sha256::digest(b"one")));
        cache.save().unwrap();
        // A cached entry is trusted while the stamp matches: poison it to see it is used.
        let reloaded = HashCache::load(dir.path());
        let key = HashCache::stamp(&file).unwrap().0;
        reloaded.entries.lock().unwrap().get_mut(&key).unwrap().sha256 = "cached".into();
        assert_eq!(reloaded.sha256(&body()).await.unwrap(), "cached");
        // Rewritten (other size and times): read again.
        std::fs::write(&file, "three").unwrap();
        assert_eq!(reloaded.sha256(&body()).await.unwrap(), format!("{:x}", Sha256::digest(b"three")));
    }

    #[test]
    fn output_names_are_environment_variable_names() {
        assert_eq!(output_name("lambda-code", "KEY"), "LAMBDA_CODE_KEY");
    }

    #[test]
    fn the_default_destination_is_the_cdk_bootstrap_bucket_through_the_file_publishing_role() {
        let d = Destination {
            account: "111111111111".into(),
            region: "eu-west-1".into(),
            bucket: None,
            role: DeployRole::Bootstrap,
            qualifier: None,
            external_id: None,
            prefix: None,
        };
        assert_eq!(bucket_of(&d), "cdk-hnb659fds-assets-111111111111-eu-west-1");
        assert_eq!(
            role_of(&d).unwrap(),
            "arn:aws:iam::111111111111:role/cdk-hnb659fds-file-publishing-role-111111111111-eu-west-1"
        );
    }
}
