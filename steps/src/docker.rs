//! Docker image assets of a cloud assembly: built and pushed with the docker CLI when it is installed; without
//! it, a clear error naming the asset (never silently skipped).

use engine::event::{Status, Stream};
use engine::step::{NodeContext, NodeSuccess, StepError};

use crate::assembly::ImageAssetEntry;
use crate::aws::{aws_reason, Sessions, Target};

/// Whether a `docker` CLI answers.
pub async fn docker_available() -> bool {
    tokio::process::Command::new("docker")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Publish an image asset to every destination repository (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG`),
/// like `cdk-assets`: each destination is first asked whether it has the tag (ECR DescribeImages, through the
/// destination's role); the image is built only when some destination lacks it, and pushed only there (docker
/// logged in to each such registry with ECR's GetAuthorizationToken). Every destination has it already: nothing
/// is built or pushed, and the node is `unchanged` (which also keeps a second publish off repositories with
/// immutable tags, as `runner bootstrap` makes them).
pub async fn publish_image(
    ctx: &NodeContext,
    image: &ImageAssetEntry,
    sessions: &Sessions,
    target_of: impl Fn(&str, &str, Option<String>) -> Target,
) -> Result<NodeSuccess, StepError> {
    let mut missing = Vec::new();
    for d in &image.destinations {
        let fail = |what: String| {
            StepError::failed(format!(
                "docker image asset `{}` to {} in account {}: {what}",
                image.display_name, d.repository, d.account
            ))
        };
        let session =
            sessions.get(&target_of(&d.account, &d.region, d.role.clone())).await.map_err(|e| fail(e.to_string()))?;
        let ecr = aws_sdk_ecr::Client::new(&session.config);
        let found = ecr
            .describe_images()
            .repository_name(&d.repository)
            .image_ids(aws_sdk_ecr::types::ImageIdentifier::builder().image_tag(&d.tag).build())
            .send()
            .await;
        match found {
            Ok(out) if !out.image_details().is_empty() => {
                ctx.events
                    .log(
                        Stream::Runner,
                        format!("{}:{} in account {} is already there", d.repository, d.tag, d.account),
                    )
                    .await;
            }
            Ok(_) => missing.push((d, ecr)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_image_not_found_exception()) => missing.push((d, ecr)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_repository_not_found_exception()) => {
                return Err(fail(format!(
                    "the repository does not exist (bootstrap the account: `runner bootstrap aws://{}/{}`): {}",
                    d.account,
                    d.region,
                    aws_reason(&e)
                )));
            }
            Err(e) => return Err(fail(format!("cannot check whether the image is there: {}", aws_reason(&e)))),
        }
    }
    if missing.is_empty() {
        ctx.events
            .log(
                Stream::Runner,
                format!("every destination of `{}` has its image: nothing to build", image.display_name),
            )
            .await;
        return Ok(NodeSuccess { status: Some(Status::Unchanged), ..Default::default() });
    }
    if !docker_available().await {
        return Err(StepError::failed(format!(
            "cannot publish docker image asset `{}` ({}): the docker CLI is not installed (or does not run); \
             install docker to build and push it",
            image.display_name,
            image.directory.display()
        )));
    }
    let local = format!("runner-asset:{}", image.hash);
    let mut build = vec!["build".to_string(), "--tag".into(), local.clone()];
    if let Some(file) = &image.dockerfile {
        build.extend(["--file".into(), image.directory.join(file).display().to_string()]);
    }
    build.push(image.directory.display().to_string());
    run(ctx, &build, image).await?;
    for (d, ecr) in missing {
        let fail = |what: String| {
            StepError::failed(format!(
                "docker image asset `{}` to {} in account {}: {what}",
                image.display_name, d.repository, d.account
            ))
        };
        let auth = ecr
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| fail(format!("GetAuthorizationToken failed: {}", aws_reason(&e))))?;
        let data = auth.authorization_data().first().ok_or_else(|| fail("ECR returned no authorization".into()))?;
        let token = data.authorization_token().unwrap_or_default();
        let decoded =
            aws_smithy_types::base64::decode(token).map_err(|e| fail(format!("unreadable ECR token: {e}")))?;
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        let (user, password) = decoded.split_once(':').ok_or_else(|| fail("unreadable ECR token".into()))?;
        let registry = data
            .proxy_endpoint()
            .map(|e| e.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("{}.{}", d.account, crate::aws::endpoint_host("dkr.ecr", &d.region)));
        login(ctx, &registry, user, password, image).await?;
        let remote = format!("{registry}/{}:{}", d.repository, d.tag);
        run(ctx, &["tag".into(), local.clone(), remote.clone()], image).await?;
        run(ctx, &["push".into(), remote], image).await?;
    }
    Ok(NodeSuccess::default())
}

/// `docker login --username USER --password-stdin REGISTRY`, the password never on a command line.
async fn login(
    ctx: &NodeContext,
    registry: &str,
    user: &str,
    password: &str,
    image: &ImageAssetEntry,
) -> Result<(), StepError> {
    use tokio::io::AsyncWriteExt;
    ctx.events.log(Stream::Runner, format!("docker login --username {user} --password-stdin {registry}")).await;
    let mut child = tokio::process::Command::new("docker")
        .args(["login", "--username", user, "--password-stdin", registry])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            StepError::failed(format!("docker image asset `{}`: cannot run docker: {e}", image.display_name))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(password.as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| StepError::failed(format!("docker image asset `{}`: docker login: {e}", image.display_name)))?;
    if !out.status.success() {
        return Err(StepError::failed(format!(
            "docker image asset `{}`: `docker login` to {registry} failed: {}",
            image.display_name,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

async fn run(ctx: &NodeContext, args: &[String], image: &ImageAssetEntry) -> Result<(), StepError> {
    ctx.events.log(Stream::Runner, format!("docker {}", args.join(" "))).await;
    let out =
        tokio::process::Command::new("docker").args(args).stdin(std::process::Stdio::null()).output().await.map_err(
            |e| StepError::failed(format!("docker image asset `{}`: cannot run docker: {e}", image.display_name)),
        )?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        ctx.events.log(Stream::Stdout, line).await;
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        ctx.events.log(Stream::Stderr, line).await;
    }
    if !out.status.success() {
        return Err(StepError::failed(format!(
            "docker image asset `{}`: `docker {}` failed ({})",
            image.display_name,
            args.first().map_or("", String::as_str),
            out.status
        )));
    }
    Ok(())
}
