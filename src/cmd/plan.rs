//! `runner plan FILE [--diff]` (and `runner run --dry-run`): the waves of steps that run together; with `--diff`,
//! what each Deploy stack would change (change sets created, read and deleted; nothing executed).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use engine::model::StepKind;
use runner::pipeline::{self, Planned};
use runner::run::exit;

use crate::cli::SourceDirs;

pub fn main(
    file: &Path,
    sources: &SourceDirs,
    jobs: Option<usize>,
    diff: bool,
    full: bool,
    state_dir: &Path,
) -> Result<ExitCode, String> {
    let planned = pipeline::load(file, &sources.source_dir)?;
    let jobs = pipeline::jobs_limit(&planned.plan, jobs);
    let waves = if full {
        engine::graph::waves_in_full(&planned.plan, jobs)
    } else {
        engine::graph::waves(&planned.plan, jobs)
    };
    print!("{waves}");
    if diff {
        return Ok(print_diffs(&planned, state_dir));
    }
    Ok(ExitCode::SUCCESS)
}

/// Each Deploy stack's change set, previewed and deleted. Exit 1 when a preview failed.
fn print_diffs(planned: &Planned, state_dir: &Path) -> ExitCode {
    let Planned { plan, catalog } = planned;
    let steps = &plan.pipeline.loaded.pipeline.steps;
    let env: HashMap<String, String> = std::env::vars().collect();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let mut failed = false;
    println!("\ndiff (each stack known before the run: a change set created, read and deleted; nothing executed)");
    for n in plan.graph.node_indices() {
        let node = &plan.graph[n];
        let step = &steps[node.step];
        let StepKind::Deploy(spec) = &step.kind else { continue };
        let Some(part) = node.part() else {
            let spec = steps::deploy::resolve_with_env(spec, &env).unwrap_or_else(|_| (**spec).clone());
            println!("\n{}: nothing to preview before the run: {}", node.id, known_at_run_time(&spec, &step.needs));
            continue;
        };
        let result = (|| {
            let spec = steps::deploy::resolve_with_env(spec, &env)?;
            let workspace = pipeline::workspace_of(plan, catalog, node.step, state_dir);
            let (spec, stack) = steps::deploy::stack_for_diff(&spec, part, &workspace)?;
            let target = steps::deploy::target(
                &spec,
                &plan.pipeline.loaded.pipeline.name,
                &step.id,
                catalog.aws_endpoint.as_deref(),
            );
            runtime.block_on(async {
                let session = catalog.aws.get(&target).await.map_err(|e| e.to_string())?;
                steps::deploy::diff(&spec, &stack, &workspace, &session, &node.id).await
            })
        })();
        match result {
            Ok(d) if !d.exists => {
                println!("\n{} ({}): new stack, {} resources to add", d.node, d.target, d.changes.len());
                d.changes.iter().for_each(|c| println!("  {c}"));
            }
            Ok(d) if d.changes.is_empty() => println!("\n{} ({}): no changes", d.node, d.target),
            Ok(d) => {
                println!("\n{} ({}): {} changes", d.node, d.target, d.changes.len());
                d.changes.iter().for_each(|c| println!("  {c}"));
            }
            Err(e) => {
                failed = true;
                println!("\n{}: cannot preview: {e}", node.id);
            }
        }
    }
    if failed {
        ExitCode::from(exit::FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Why a Deploy's stacks are known only when the pipeline runs (its node expands at run time).
fn known_at_run_time(spec: &engine::model::DeploySpec, needs: &[impl std::fmt::Display]) -> String {
    use engine::model::Stacks;
    let placeholders =
        [&spec.account, &spec.region].into_iter().chain(&spec.accounts).chain(&spec.regions).any(|f| f.contains("${"));
    match &spec.stacks {
        Stacks::Assembly { dir, stage } if !placeholders && !stage.contains("${") => {
            let before = needs.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
            format!(
                "its stacks are those of stage {stage} of the cloud assembly `{dir}`, which the steps before it \
                 ({before}) write when the pipeline runs"
            )
        }
        _ => "its accounts or regions are known only when the run resolves their `${...}` (Parameter Store values, \
              unset variables or step outputs)"
            .to_string(),
    }
}
