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
    let name = &plan.pipeline.loaded.pipeline.name;
    let endpoint = catalog.aws_endpoint.as_deref();
    // Change set of one stack, created, read and deleted; printed under `label`. False when it could not be.
    let preview = |label: &str,
                   step: &str,
                   spec: &engine::model::DeploySpec,
                   stack: &engine::model::StackSpec,
                   workspace: &Path|
     -> bool {
        let target = steps::deploy::target(spec, name, step, endpoint);
        let result = runtime.block_on(async {
            let session = catalog.aws.get(&target).await.map_err(|e| e.to_string())?;
            steps::deploy::diff(spec, stack, workspace, &session, label).await
        });
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
                println!("\n{label}: cannot preview: {e}");
                return false;
            }
        }
        true
    };
    // `${ssm:...}` values, read once if a Deploy known only at run time may need them (as a run reads them).
    let mut store: Option<engine::subst::StoreValues> = None;
    println!("\ndiff (a change set per stack, created, read and deleted; nothing executed)");
    for n in plan.graph.node_indices() {
        let node = &plan.graph[n];
        let step = &steps[node.step];
        let StepKind::Deploy(spec) = &step.kind else { continue };
        let workspace = pipeline::workspace_of(plan, catalog, node.step, state_dir);
        let Some(part) = node.part() else {
            // Its stacks come from an assembly the run synthesizes: the one a previous synth left, if any, with the
            // targets resolved as the run will.
            let store = store.get_or_insert_with(|| read_store(plan, catalog, &runtime));
            let resolved = steps::deploy::resolve_before_run(spec, &env, store);
            let found = resolved.as_ref().map_err(Clone::clone).and_then(|spec| {
                let synthesized = matches!(spec.stacks, engine::model::Stacks::Assembly { .. });
                if synthesized {
                    steps::deploy::assembly_stacks_for_diff(spec, &workspace)
                } else {
                    Err(String::new())
                }
            });
            match found {
                Ok((root, stacks)) => {
                    println!(
                        "\n{}: the stacks of the cloud assembly at {} as a previous synth left it (the run synthesizes \
                         it again first)",
                        node.id,
                        root.display()
                    );
                    for (spec, stack) in &stacks {
                        failed |= !preview(&format!("{}/{}", node.id, stack.name), &step.id, spec, stack, &workspace);
                    }
                }
                Err(why) => {
                    let spec = resolved.unwrap_or_else(|_| {
                        steps::deploy::resolve_with_env(spec, &env).unwrap_or_else(|_| (**spec).clone())
                    });
                    let why = if why.is_empty() { String::new() } else { format!(" ({why})") };
                    println!(
                        "\n{}: nothing to preview before the run: {}{why}",
                        node.id,
                        known_at_run_time(&spec, &step.needs)
                    );
                }
            }
            continue;
        };
        match steps::deploy::resolve_with_env(spec, &env)
            .and_then(|spec| steps::deploy::stack_for_diff(&spec, part, &workspace))
        {
            Ok((spec, stack)) => failed |= !preview(&node.id, &step.id, &spec, &stack, &workspace),
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

/// The pipeline's `${ssm:...}` values, read with the caller's credentials; none when they cannot be read (the
/// Deploys needing them then say they are known only at run time).
fn read_store(
    plan: &engine::plan::Plan,
    catalog: &steps::StepCatalog,
    runtime: &tokio::runtime::Runtime,
) -> engine::subst::StoreValues {
    let refs: Vec<_> = plan.pipeline.ssm_refs.keys().cloned().collect();
    if refs.is_empty() {
        return Default::default();
    }
    runtime
        .block_on(steps::parameter_store::read_references(&refs, &catalog.aws, catalog.aws_endpoint.as_deref()))
        .map(|read| read.values)
        .unwrap_or_default()
}
