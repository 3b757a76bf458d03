//! Docker image assets of a cloud assembly: built and pushed with the docker CLI when it is installed; without
//! it, a clear error naming the asset (never silently skipped).

use engine::event::Stream;
use engine::step::{NodeContext, NodeSuccess, StepError};

use crate::assembly::ImageAssetEntry;

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

/// Build the image and push it to each destination repository (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG`).
/// The docker CLI must already be logged in to those registries.
pub async fn publish_image(ctx: &NodeContext, image: &ImageAssetEntry) -> Result<NodeSuccess, StepError> {
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
    for d in &image.destinations {
        let remote = format!("{}.dkr.ecr.{}.amazonaws.com/{}:{}", d.account, d.region, d.repository, d.tag);
        run(ctx, &["tag".into(), local.clone(), remote.clone()], image).await?;
        run(ctx, &["push".into(), remote], image).await?;
    }
    Ok(NodeSuccess::default())
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
