//! CDK cloud assemblies (`cdk synth` output, `cdk.out`) as the real CDK writes them: the root `manifest.json`
//! with one nested `cdk:cloud-assembly` per Stage, each stage's `aws:cloudformation:stack` artifacts and their
//! `cdk:asset-manifest` files (`*.assets.json`). Nothing here panics on a bad file: every problem is a message
//! naming the file and what is wrong; unknown artifact types and newer schema versions are warnings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The newest cloud assembly schema (major version) this build has been checked against.
pub const KNOWN_SCHEMA_MAJOR: u64 = 55;

/// Artifact types `runner` reads or knowingly ignores.
const KNOWN_TYPES: [&str; 5] =
    ["aws:cloudformation:stack", "cdk:asset-manifest", "cdk:cloud-assembly", "cdk:tree", "cdk:feature-flag-report"];

/// One stage of an assembly: its stacks, in dependency order, and its assets.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    /// The stage's own directory (`cdk.out/assembly-Dev`).
    pub dir: PathBuf,
    pub stacks: Vec<StackArtifact>,
    pub files: Vec<FileAssetEntry>,
    pub images: Vec<ImageAssetEntry>,
    /// Things worth saying that do not stop anything (unknown artifact types, a newer schema).
    pub warnings: Vec<String>,
    /// The stages nested in it (`Platform/Services`), whose stacks and assets it includes.
    pub nested: Vec<String>,
}

/// A CloudFormation stack of a stage, placeholders resolved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StackArtifact {
    /// The artifact id (`DevVpcStack3FD4A81C`).
    pub id: String,
    pub stack_name: String,
    pub display_name: String,
    pub account: String,
    pub region: String,
    /// Absolute path of the template.
    pub template_file: PathBuf,
    pub assume_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    /// `s3://bucket/key` of the published template.
    pub template_object_url: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub termination_protection: bool,
    /// `notificationArns`: SNS topics of the stack's events (left out: a deployed stack keeps its own).
    pub notification_arns: Option<Vec<String>>,
    pub requires_bootstrap_version: Option<u64>,
    pub bootstrap_version_parameter: Option<String>,
    /// Stack names of this stage it depends on.
    pub depends_on: Vec<String>,
    /// Where its template and the assets of its own asset manifest are published ([`file_key`], [`image_key`]):
    /// what its deployment waits for.
    pub assets: Vec<String>,
}

/// How a file asset is packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    File,
    Zip,
}

/// A file asset of a stage, with its destinations.
#[derive(Debug, Clone, PartialEq)]
pub struct FileAssetEntry {
    /// The manifest's key (the source hash).
    pub hash: String,
    pub display_name: String,
    /// Absolute source path.
    pub path: PathBuf,
    pub packaging: Packaging,
    pub destinations: Vec<AssetDestination>,
    /// The node part that publishes it.
    pub part: String,
}

/// Where an asset goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetDestination {
    pub bucket: String,
    pub key: String,
    pub region: String,
    pub account: String,
    pub role: Option<String>,
    pub external_id: Option<String>,
}

/// A docker image asset (built and pushed with the docker CLI).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageAssetEntry {
    pub hash: String,
    pub display_name: String,
    pub directory: PathBuf,
    pub dockerfile: Option<String>,
    /// (repositoryName, imageTag, region, account, role)
    pub destinations: Vec<ImageDestination>,
    pub part: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDestination {
    pub repository: String,
    pub tag: String,
    pub region: String,
    pub account: String,
    pub role: Option<String>,
}

/// What a file asset destination provides and a stack consumes: `s3://bucket/key`.
pub fn file_key(d: &AssetDestination) -> String {
    format!("s3://{}/{}", d.bucket, d.key)
}

/// What an image asset destination provides and a stack consumes: `ecr://account/region/repository:tag`.
pub fn image_key(d: &ImageDestination) -> String {
    format!("ecr://{}/{}/{}:{}", d.account, d.region, d.repository, d.tag)
}

/// `${AWS::AccountId}`, `${AWS::Region}`, `${AWS::Partition}` replaced.
pub fn resolve_placeholders(text: &str, account: &str, region: &str) -> String {
    text.replace("${AWS::AccountId}", account)
        .replace("${AWS::Region}", region)
        .replace("${AWS::Partition}", crate::aws::Partition::of(region).name)
}

/// The account in an ARN (`arn:aws:iam::111111111111:role/x`), if it has one.
pub fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

/// Check a manifest's `version`: an error if missing or malformed, a warning if newer than known.
fn check_version(path: &Path, manifest: &Value, warnings: &mut Vec<String>) -> Result<(), String> {
    let version = manifest
        .get("version")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{} has no `version`: is it a CDK cloud assembly manifest?", path.display()))?;
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u64>().ok())
        .ok_or_else(|| format!("{}: unknown cloud assembly version `{version}`", path.display()))?;
    if major > KNOWN_SCHEMA_MAJOR {
        warnings.push(format!(
            "{}: cloud assembly version {version} is newer than the {KNOWN_SCHEMA_MAJOR}.x runner knows; reading it \
             anyway",
            path.display()
        ));
    }
    Ok(())
}

fn artifacts(path: &Path, manifest: &Value) -> Result<Vec<(String, Value)>, String> {
    let Some(map) = manifest.get("artifacts") else { return Ok(Vec::new()) };
    let map = map.as_object().ok_or_else(|| format!("{}: `artifacts` is not an object", path.display()))?;
    Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn str_of<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

/// Names of the stages of an assembly (the `displayName`s of its nested assemblies).
pub fn stage_names(root: &Path) -> Result<Vec<String>, String> {
    let path = root.join("manifest.json");
    let manifest = read_json(&path)?;
    let mut names = Vec::new();
    for (id, a) in artifacts(&path, &manifest)? {
        if str_of(&a, "type") == Some("cdk:cloud-assembly") {
            let props = a.get("properties").cloned().unwrap_or_default();
            names.push(str_of(&props, "displayName").unwrap_or(&id).to_string());
        }
    }
    Ok(names)
}

/// Whether an assembly exists at `root` (its `manifest.json` does).
fn exists(root: &Path) -> bool {
    root.join("manifest.json").is_file()
}

/// Where to read the assembly `dir` while planning: in the step's workspace (`workspace`: `None` when it is only
/// settled at run time), if it is there and its path needs no substitution. `None`: expand at run time.
pub fn at_plan_time(dir: &str, workspace: impl FnOnce() -> Option<PathBuf>) -> Option<PathBuf> {
    if dir.contains("${") {
        return None;
    }
    workspace().map(|w| w.join(dir)).filter(|root| exists(root))
}

/// The nested assemblies (`cdk:cloud-assembly` artifacts: CDK's Stages) a manifest names: (artifact id, display
/// name, directory). A directory that would leave the assembly is an error.
fn nested_assemblies(dir: &Path, path: &Path, manifest: &Value) -> Result<Vec<(String, String, PathBuf)>, String> {
    let mut nested = Vec::new();
    for (id, a) in artifacts(path, manifest)? {
        if str_of(&a, "type") != Some("cdk:cloud-assembly") {
            continue;
        }
        let props = a.get("properties").cloned().unwrap_or_default();
        let display = str_of(&props, "displayName").unwrap_or(&id).to_string();
        let directory = str_of(&props, "directoryName").unwrap_or(&id).to_string();
        if directory.contains("..") || Path::new(&directory).is_absolute() {
            return Err(format!("{}: stage `{display}` has an unsafe directoryName `{directory}`", path.display()));
        }
        nested.push((id, display, dir.join(directory)));
    }
    Ok(nested)
}

/// Read stage `stage` of the assembly at `root`: a Stage of the app (`Dev`), or one nested in a Stage, addressed
/// by its path (`Platform/Services`, its `displayName`; its artifact id `assembly-Platform-Services` works too).
/// A stage's stacks and assets include those of the stages nested in it (a Stage inside a Stage, as CDK writes
/// it: a `cdk:cloud-assembly` artifact in the stage's own manifest), in dependency order.
pub fn load_stage(root: &Path, stage: &str) -> Result<Stage, String> {
    let path = root.join("manifest.json");
    if !path.is_file() {
        return Err(format!(
            "no cloud assembly at {}: {} does not exist (has `cdk synth` run?)",
            root.display(),
            path.display()
        ));
    }
    let manifest = read_json(&path)?;
    let mut warnings = Vec::new();
    check_version(&path, &manifest, &mut warnings)?;
    for (id, a) in artifacts(&path, &manifest)? {
        let kind = str_of(&a, "type").unwrap_or("");
        if !KNOWN_TYPES.contains(&kind) {
            warnings.push(format!("{}: ignoring artifact `{id}` of unknown type `{kind}`", path.display()));
        } else if kind == "aws:cloudformation:stack" {
            warnings.push(format!(
                "{}: stack `{id}` is in no Stage of the app: a Deploy of a stage does not deploy it",
                path.display()
            ));
        }
    }
    // Every stage, nested ones too, breadth first: (id, display name, directory).
    let mut names = Vec::new();
    let mut found = None;
    let mut queue: std::collections::VecDeque<(String, String, PathBuf)> =
        nested_assemblies(root, &path, &manifest)?.into();
    let mut seen = HashSet::new();
    let wanted = format!("assembly-{}", stage.replace('/', "-"));
    while let Some((id, display, dir)) = queue.pop_front() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        if found.is_none() && (display == stage || id == stage || id == wanted) {
            found = Some((display.clone(), dir.clone()));
        }
        names.push(display);
        let inner = dir.join("manifest.json");
        if let Ok(m) = read_json(&inner) {
            queue.extend(nested_assemblies(&dir, &inner, &m)?);
        }
    }
    let Some((name, dir)) = found else {
        return Err(if names.is_empty() {
            format!("the cloud assembly at {} has no stages (no nested `cdk:cloud-assembly`)", root.display())
        } else {
            let hint = engine::validate::closest(stage, names.iter().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            format!(
                "the cloud assembly at {} has no stage `{stage}`: its stages are {}{hint}",
                root.display(),
                names.join(", ")
            )
        });
    };
    let mut stage = read_stage_tree(&dir, &name)?;
    warnings.append(&mut stage.warnings);
    stage.warnings = warnings;
    let mut used = HashSet::new();
    for f in &mut stage.files {
        f.part = unique_part(&f.display_name, &f.hash, &mut used);
    }
    for i in &mut stage.images {
        i.part = unique_part(&i.display_name, &i.hash, &mut used);
    }
    Ok(stage)
}

/// A stage and the stages nested in it, merged: their stacks (names unique across them, in dependency order),
/// file assets (one per hash and source, every destination kept), images (one per hash), warnings.
fn read_stage_tree(dir: &Path, name: &str) -> Result<Stage, String> {
    let mut stage = read_stage_dir(dir, name)?;
    let path = dir.join("manifest.json");
    let manifest = read_json(&path)?;
    let mut stacks = std::mem::take(&mut stage.stacks);
    for (_, display, inner_dir) in nested_assemblies(dir, &path, &manifest)? {
        let inner = read_stage_tree(&inner_dir, &display)?;
        for s in inner.stacks {
            if let Some(twin) = stacks.iter().find(|t| t.stack_name == s.stack_name) {
                return Err(format!(
                    "{}: stack name {} is used by `{}` and by `{}` of stage {display}",
                    path.display(),
                    s.stack_name,
                    twin.display_name,
                    s.display_name
                ));
            }
            stacks.push(s);
        }
        for f in inner.files {
            match stage.files.iter_mut().find(|x| x.hash == f.hash && x.path == f.path) {
                Some(existing) => {
                    for d in f.destinations {
                        if !existing.destinations.contains(&d) {
                            existing.destinations.push(d);
                        }
                    }
                }
                None => stage.files.push(f),
            }
        }
        for i in inner.images {
            match stage.images.iter_mut().find(|x| x.hash == i.hash) {
                Some(existing) => {
                    for d in i.destinations {
                        if !existing.destinations.contains(&d) {
                            existing.destinations.push(d);
                        }
                    }
                }
                None => stage.images.push(i),
            }
        }
        stage.warnings.extend(inner.warnings);
        stage.nested.push(display);
        stage.nested.extend(inner.nested);
    }
    stage.stacks = order_stacks(stacks, &path)?;
    Ok(stage)
}

/// Read a stage's own manifest and asset manifests (not the stages nested in it).
fn read_stage_dir(dir: &Path, name: &str) -> Result<Stage, String> {
    let path = dir.join("manifest.json");
    let manifest = read_json(&path)?;
    let mut warnings = Vec::new();
    check_version(&path, &manifest, &mut warnings)?;
    let arts = artifacts(&path, &manifest)?;
    let mut stacks = Vec::new();
    // asset manifest artifact id -> (file, stack's account, stack's region)
    let mut asset_manifests: Vec<(String, String)> = Vec::new();
    let mut env_of_manifest: HashMap<String, (String, String)> = HashMap::new();
    // stack artifact id -> the artifacts it depends on (its asset manifest among them)
    let mut deps_of: HashMap<String, Vec<String>> = HashMap::new();
    let ids: HashMap<String, String> = arts
        .iter()
        .filter(|(_, a)| str_of(a, "type") == Some("aws:cloudformation:stack"))
        .map(|(id, a)| {
            let name = a.get("properties").and_then(|p| str_of(p, "stackName")).unwrap_or(id).to_string();
            (id.clone(), name)
        })
        .collect();
    for (id, a) in &arts {
        let kind = str_of(a, "type").unwrap_or("");
        match kind {
            "aws:cloudformation:stack" => {
                let stack = read_stack(dir, &path, id, a, &ids)?;
                for dep in a.get("dependencies").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(dep) = dep.as_str() {
                        env_of_manifest.insert(dep.to_string(), (stack.account.clone(), stack.region.clone()));
                        deps_of.entry(id.clone()).or_default().push(dep.to_string());
                    }
                }
                stacks.push(stack);
            }
            "cdk:asset-manifest" => {
                let file = a
                    .get("properties")
                    .and_then(|p| str_of(p, "file"))
                    .ok_or_else(|| format!("{}: asset manifest `{id}` names no `file`", path.display()))?;
                asset_manifests.push((id.clone(), file.to_string()));
            }
            "cdk:cloud-assembly" | "cdk:tree" | "cdk:feature-flag-report" => {}
            other => warnings.push(format!("{}: ignoring artifact `{id}` of unknown type `{other}`", path.display())),
        }
    }
    let mut files: Vec<FileAssetEntry> = Vec::new();
    let mut images: Vec<ImageAssetEntry> = Vec::new();
    let mut keys_of_manifest: HashMap<String, Vec<String>> = HashMap::new();
    for (id, file) in asset_manifests {
        let (account, region) = env_of_manifest.get(&id).cloned().unwrap_or_default();
        let keys =
            read_asset_manifest(dir, &dir.join(&file), &account, &region, &mut files, &mut images, &mut warnings)?;
        keys_of_manifest.insert(id, keys);
    }
    for stack in &mut stacks {
        stack.assets.extend(stack.template_object_url.clone());
        for dep in deps_of.get(&stack.id).into_iter().flatten() {
            stack.assets.extend(keys_of_manifest.get(dep).into_iter().flatten().cloned());
        }
        stack.assets.sort();
        stack.assets.dedup();
    }
    Ok(Stage { name: name.to_string(), dir: dir.to_path_buf(), stacks, files, images, warnings, nested: Vec::new() })
}

/// A node part name from a display name: `AuditWriterFunction/Code` -> `AuditWriterFunction-Code`.
fn unique_part(display: &str, hash: &str, used: &mut HashSet<String>) -> String {
    let mut base: String =
        display.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    base = base.trim_matches('-').to_string();
    if base.is_empty() {
        base = hash.chars().take(12).collect();
    }
    let mut name = base.clone();
    if used.contains(&name) {
        name = format!("{base}-{}", hash.chars().take(8).collect::<String>());
    }
    let mut n = 2;
    while used.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    used.insert(name.clone());
    name
}

fn read_stack(
    dir: &Path,
    path: &Path,
    id: &str,
    a: &Value,
    ids: &HashMap<String, String>,
) -> Result<StackArtifact, String> {
    let env = str_of(a, "environment").unwrap_or("");
    let (account, region) = env
        .strip_prefix("aws://")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(|| format!("{}: stack `{id}` has no environment `aws://ACCOUNT/REGION`", path.display()))?;
    if account == "unknown-account" || region == "unknown-region" {
        return Err(format!(
            "{}: stack `{id}` is environment-agnostic ({env}): give it an `env` (account and region) in the CDK app",
            path.display()
        ));
    }
    let props = a.get("properties").cloned().unwrap_or_default();
    let resolve = |s: &str| resolve_placeholders(s, account, region);
    let template = str_of(&props, "templateFile")
        .ok_or_else(|| format!("{}: stack `{id}` has no `templateFile`", path.display()))?;
    let map = |field: &str| -> BTreeMap<String, String> {
        props
            .get(field)
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), &resolve))).collect())
            .unwrap_or_default()
    };
    let depends_on = a
        .get("dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|d| ids.get(d).cloned())
        .collect();
    Ok(StackArtifact {
        id: id.to_string(),
        stack_name: str_of(&props, "stackName").unwrap_or(id).to_string(),
        display_name: str_of(a, "displayName").unwrap_or(id).to_string(),
        account: account.to_string(),
        region: region.to_string(),
        template_file: dir.join(template),
        assume_role_arn: str_of(&props, "assumeRoleArn").map(resolve),
        execution_role_arn: str_of(&props, "cloudFormationExecutionRoleArn").map(resolve),
        template_object_url: str_of(&props, "stackTemplateAssetObjectUrl").map(resolve),
        parameters: map("parameters"),
        tags: map("tags"),
        termination_protection: props.get("terminationProtection").and_then(Value::as_bool).unwrap_or(false),
        notification_arns: props
            .get("notificationArns")
            .and_then(Value::as_array)
            .map(|arns| arns.iter().filter_map(Value::as_str).map(resolve).collect()),
        requires_bootstrap_version: props.get("requiresBootstrapStackVersion").and_then(Value::as_u64),
        bootstrap_version_parameter: str_of(&props, "bootstrapStackVersionSsmParameter").map(str::to_string),
        depends_on,
        assets: Vec::new(),
    })
}

/// Why none of `left` can go next: a cycle spelled out in deploy order, or a dependency on no stack of the stage.
fn why_unordered(left: &[StackArtifact], done: &HashSet<String>) -> String {
    let index: HashMap<&str, usize> = left.iter().enumerate().map(|(i, s)| (s.stack_name.as_str(), i)).collect();
    let depends_on = |i: usize| left[i].depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect();
    if let Some(cycle) = engine::validate::find_cycles(left.len(), depends_on).first() {
        let spelled = engine::validate::spell_cycle(cycle.iter().rev().map(|&i| left[i].stack_name.as_str()));
        return format!("the stacks depend on each other in a cycle: {spelled}");
    }
    let (stack, missing) = left
        .iter()
        .find_map(|s| {
            s.depends_on.iter().find(|d| !done.contains(*d) && !index.contains_key(d.as_str())).map(|d| (s, d))
        })
        .map_or(("?", "?"), |(s, d)| (s.stack_name.as_str(), d.as_str()));
    format!("stack `{stack}` depends on `{missing}`, which is not a stack of this assembly")
}

/// Stacks sorted so each comes after what it depends on; a cycle is an error.
fn order_stacks(stacks: Vec<StackArtifact>, path: &Path) -> Result<Vec<StackArtifact>, String> {
    let mut done: HashSet<String> = HashSet::new();
    let mut left = stacks;
    let mut ordered = Vec::new();
    while !left.is_empty() {
        let (ready, rest): (Vec<_>, Vec<_>) =
            left.into_iter().partition(|s| s.depends_on.iter().all(|d| done.contains(d)));
        if ready.is_empty() {
            return Err(format!("{}: {}", path.display(), why_unordered(&rest, &done)));
        }
        done.extend(ready.iter().map(|s| s.stack_name.clone()));
        ordered.extend(ready);
        left = rest;
    }
    Ok(ordered)
}

fn read_asset_manifest(
    stage_dir: &Path,
    path: &Path,
    account: &str,
    region: &str,
    files: &mut Vec<FileAssetEntry>,
    images: &mut Vec<ImageAssetEntry>,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, String> {
    let manifest = read_json(path)?;
    let mut keys = Vec::new();
    check_version(path, &manifest, warnings)?;
    let base = path.parent().unwrap_or(stage_dir);
    for (hash, asset) in manifest.get("files").and_then(Value::as_object).into_iter().flatten() {
        let source = asset.get("source").cloned().unwrap_or_default();
        let display = str_of(asset, "displayName").unwrap_or(hash).to_string();
        let Some(src) = str_of(&source, "path") else {
            if source.get("executable").is_some() {
                return Err(format!(
                    "{}: file asset `{display}` is built by an executable, which runner does not run",
                    path.display()
                ));
            }
            return Err(format!("{}: file asset `{display}` has no source path", path.display()));
        };
        let packaging = match str_of(&source, "packaging").unwrap_or("file") {
            "file" => Packaging::File,
            "zip" => Packaging::Zip,
            other => return Err(format!("{}: file asset `{display}` has unknown packaging `{other}`", path.display())),
        };
        let destinations = destinations(path, &display, asset, account, region, |d, account, region| {
            let resolve = |s: &str| resolve_placeholders(s, account, region);
            Ok(AssetDestination {
                bucket: resolve(str_of(d, "bucketName").ok_or("no `bucketName`")?),
                key: resolve(str_of(d, "objectKey").ok_or("no `objectKey`")?),
                region: region.to_string(),
                account: account.to_string(),
                role: str_of(d, "assumeRoleArn").map(resolve),
                external_id: str_of(d, "assumeRoleExternalId").map(str::to_string),
            })
        })?;
        keys.extend(destinations.iter().map(file_key));
        let entry = FileAssetEntry {
            hash: hash.clone(),
            display_name: display,
            path: base.join(src),
            packaging,
            destinations,
            part: String::new(),
        };
        match files.iter_mut().find(|f| f.hash == entry.hash && f.path == entry.path) {
            Some(existing) => {
                for d in entry.destinations {
                    if !existing.destinations.contains(&d) {
                        existing.destinations.push(d);
                    }
                }
            }
            None => files.push(entry),
        }
    }
    for (hash, asset) in manifest.get("dockerImages").and_then(Value::as_object).into_iter().flatten() {
        let source = asset.get("source").cloned().unwrap_or_default();
        let display = str_of(asset, "displayName").unwrap_or(hash).to_string();
        let Some(dir) = str_of(&source, "directory") else {
            return Err(format!("{}: docker image asset `{display}` has no source directory", path.display()));
        };
        let destinations = destinations(path, &display, asset, account, region, |d, account, region| {
            let resolve = |s: &str| resolve_placeholders(s, account, region);
            Ok(ImageDestination {
                repository: resolve(str_of(d, "repositoryName").ok_or("no `repositoryName`")?),
                tag: resolve(str_of(d, "imageTag").ok_or("no `imageTag`")?),
                region: region.to_string(),
                account: account.to_string(),
                role: str_of(d, "assumeRoleArn").map(resolve),
            })
        })?;
        keys.extend(destinations.iter().map(image_key));
        // The same image for several stacks (each asset manifest names it, with its own repositories): one asset,
        // every destination kept.
        match images.iter_mut().find(|i| &i.hash == hash) {
            Some(existing) => {
                for d in destinations {
                    if !existing.destinations.contains(&d) {
                        existing.destinations.push(d);
                    }
                }
            }
            None => images.push(ImageAssetEntry {
                hash: hash.clone(),
                display_name: display,
                directory: base.join(dir),
                dockerfile: str_of(&source, "dockerFile").map(str::to_string),
                destinations,
                part: String::new(),
            }),
        }
    }
    Ok(keys)
}

/// Each destination of an asset, its region and account resolved (the destination's own, else its stack's).
fn destinations<T>(
    path: &Path,
    display: &str,
    asset: &Value,
    account: &str,
    region: &str,
    read: impl Fn(&Value, &str, &str) -> Result<T, &'static str>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for (id, d) in asset.get("destinations").and_then(Value::as_object).into_iter().flatten() {
        let region = str_of(d, "region").unwrap_or(region);
        let role = str_of(d, "assumeRoleArn").unwrap_or("");
        let account = arn_account(role).unwrap_or(account);
        if account.is_empty() || account.contains("${") || region.is_empty() || region.contains("${") {
            return Err(format!(
                "{}: destination `{id}` of asset `{display}` names no account or region (is its stack \
                 environment-agnostic?)",
                path.display()
            ));
        }
        out.push(
            read(d, account, region)
                .map_err(|e| format!("{}: destination `{id}` of asset `{display}`: {e}", path.display()))?,
        );
    }
    if out.is_empty() {
        return Err(format!("{}: asset `{display}` has no destinations", path.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_between_an_assembly_s_stacks_is_spelled_out() {
        let stack = |name: &str, deps: &[&str]| StackArtifact {
            stack_name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        let stacks = vec![stack("Base", &[]), stack("A", &["Base", "C"]), stack("B", &["A"]), stack("C", &["B"])];
        let err = order_stacks(stacks, Path::new("cdk.out/manifest.json")).unwrap_err();
        assert!(err.ends_with("the stacks depend on each other in a cycle: A -> B -> C -> A"), "{err}");
        let err = order_stacks(vec![stack("A", &["Gone"])], Path::new("m.json")).unwrap_err();
        assert!(err.contains("stack `A` depends on `Gone`, which is not a stack of this assembly"), "{err}");
    }

    /// A small assembly as `cdk synth` writes it: one stage `Dev`, two stacks (B after A), a zip and a file asset.
    pub fn hand_made() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("assembly-Dev")).unwrap();
        std::fs::create_dir_all(root.join("asset.abc")).unwrap();
        std::fs::write(root.join("asset.abc/index.js"), "exports.handler = 1;\n").unwrap();
        std::fs::write(
            root.join("manifest.json"),
            r#"{"version": "55.0.0", "artifacts": {
                "assembly-Dev": {"type": "cdk:cloud-assembly", "properties": {"directoryName": "assembly-Dev", "displayName": "Dev"}},
                "Tree": {"type": "cdk:tree", "properties": {"file": "tree.json"}}}}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("assembly-Dev/manifest.json"),
            r#"{"version": "55.0.0", "artifacts": {
                "DevA.assets": {"type": "cdk:asset-manifest", "properties": {"file": "DevA.assets.json"}},
                "DevA": {"type": "aws:cloudformation:stack", "environment": "aws://111111111111/us-east-1",
                  "properties": {"templateFile": "DevA.template.json", "stackName": "Dev-A",
                    "assumeRoleArn": "arn:${AWS::Partition}:iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-us-east-1",
                    "cloudFormationExecutionRoleArn": "arn:${AWS::Partition}:iam::111111111111:role/cdk-hnb659fds-cfn-exec-role-111111111111-us-east-1",
                    "stackTemplateAssetObjectUrl": "s3://cdk-hnb659fds-assets-111111111111-us-east-1/aaa.json",
                    "requiresBootstrapStackVersion": 6, "bootstrapStackVersionSsmParameter": "/cdk-bootstrap/hnb659fds/version",
                    "tags": {"team": "data"}},
                  "dependencies": ["DevA.assets"], "displayName": "Dev/A"},
                "DevB": {"type": "aws:cloudformation:stack", "environment": "aws://111111111111/us-east-1",
                  "properties": {"templateFile": "DevB.template.json", "stackName": "Dev-B"},
                  "dependencies": ["DevA"], "displayName": "Dev/B"},
                "Strange": {"type": "cdk:something-new"}}}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("assembly-Dev/DevA.assets.json"),
            r#"{"version": "55.0.0", "files": {
                "abc": {"displayName": "Fn/Code", "source": {"path": "../asset.abc", "packaging": "zip"},
                  "destinations": {"d1": {"bucketName": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}", "objectKey": "abc.zip",
                    "region": "us-east-1", "assumeRoleArn": "arn:${AWS::Partition}:iam::111111111111:role/cdk-hnb659fds-file-publishing-role-111111111111-us-east-1"}}},
                "aaa": {"displayName": "Dev-A Template", "source": {"path": "DevA.template.json", "packaging": "file"},
                  "destinations": {"d1": {"bucketName": "cdk-hnb659fds-assets-111111111111-us-east-1", "objectKey": "aaa.json", "region": "us-east-1"}}}},
              "dockerImages": {}}"#,
        )
        .unwrap();
        std::fs::write(root.join("assembly-Dev/DevA.template.json"), r#"{"Resources": {}}"#).unwrap();
        std::fs::write(root.join("assembly-Dev/DevB.template.json"), r#"{"Resources": {}}"#).unwrap();
        dir
    }

    #[test]
    fn a_stage_reads_its_stacks_in_dependency_order_with_placeholders_resolved() {
        let dir = hand_made();
        let stage = load_stage(dir.path(), "Dev").unwrap();
        let names: Vec<&str> = stage.stacks.iter().map(|s| s.stack_name.as_str()).collect();
        assert_eq!(names, ["Dev-A", "Dev-B"]);
        let a = &stage.stacks[0];
        assert_eq!(
            a.assume_role_arn.as_deref(),
            Some("arn:aws:iam::111111111111:role/cdk-hnb659fds-deploy-role-111111111111-us-east-1")
        );
        assert_eq!(a.requires_bootstrap_version, Some(6));
        assert_eq!(a.tags["team"], "data");
        assert_eq!(stage.stacks[1].depends_on, ["Dev-A"]);
        assert_eq!(stage.files.len(), 2);
        let code = stage.files.iter().find(|f| f.hash == "abc").unwrap();
        assert_eq!(code.packaging, Packaging::Zip);
        assert_eq!(code.part, "Fn-Code");
        assert_eq!(code.destinations[0].bucket, "cdk-hnb659fds-assets-111111111111-us-east-1");
        assert!(code.path.ends_with("assembly-Dev/../asset.abc"));
        assert!(stage.warnings.iter().any(|w| w.contains("`Strange`") && w.contains("cdk:something-new")));
    }

    #[test]
    fn an_unknown_stage_names_the_stages_there_are() {
        let dir = hand_made();
        let e = load_stage(dir.path(), "Prod").unwrap_err();
        assert!(e.contains("no stage `Prod`: its stages are Dev"), "{e}");
    }

    #[test]
    fn bad_manifests_are_errors_not_panics() {
        let dir = hand_made();
        let root = dir.path();
        std::fs::write(root.join("manifest.json"), "{not json").unwrap();
        assert!(load_stage(root, "Dev").unwrap_err().contains("is not valid JSON"));
        std::fs::write(root.join("manifest.json"), r#"{"version": "x.y"}"#).unwrap();
        assert!(load_stage(root, "Dev").unwrap_err().contains("unknown cloud assembly version `x.y`"));
        std::fs::write(root.join("manifest.json"), r#"{"version": "99.0.0", "artifacts": {"assembly-Dev": {"type": "cdk:cloud-assembly", "properties": {"directoryName": "assembly-Dev", "displayName": "Dev"}}}}"#).unwrap();
        let stage = load_stage(root, "Dev").unwrap();
        assert!(stage.warnings.iter().any(|w| w.contains("99.0.0 is newer")), "{:?}", stage.warnings);
        std::fs::write(
            root.join("assembly-Dev/manifest.json"),
            r#"{"version": "55.0.0", "artifacts": {"X": {"type": "aws:cloudformation:stack"}}}"#,
        )
        .unwrap();
        assert!(load_stage(root, "Dev").unwrap_err().contains("has no environment"));
        assert!(load_stage(&root.join("nope"), "Dev").unwrap_err().contains("has `cdk synth` run?"));
    }

    #[test]
    fn partitions_follow_regions() {
        assert_eq!(
            resolve_placeholders("arn:${AWS::Partition}:x:${AWS::Region}:${AWS::AccountId}", "1", "cn-north-1"),
            "arn:aws-cn:x:cn-north-1:1"
        );
        assert_eq!(arn_account("arn:aws:iam::111111111111:role/x"), Some("111111111111"));
        assert_eq!(arn_account("arn:aws:iam:::role/x"), None);
    }
}
