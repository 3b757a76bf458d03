//! `runner validate FILE`: load, validate and plan; say what the pipeline holds.

use std::path::Path;
use std::process::ExitCode;

pub fn main(file: &Path) -> Result<ExitCode, String> {
    let planned = runner::pipeline::load(file, &[])?;
    let p = &planned.plan.pipeline.loaded.pipeline;
    println!(
        "{}: pipeline `{}` is valid: {} steps, {} nodes",
        file.display(),
        p.name,
        p.steps.len(),
        planned.plan.graph.node_count()
    );
    Ok(ExitCode::SUCCESS)
}
