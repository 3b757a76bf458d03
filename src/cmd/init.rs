//! `runner init [--output FILE] [--name NAME] [--force]`: a starter pipeline for the CDK app in the current
//! directory (library: `runner::init`), checked like `runner validate` once written.

use std::path::Path;
use std::process::ExitCode;

pub fn main(output: &Path, name: Option<&str>, force: bool) -> Result<ExitCode, String> {
    let dir = std::env::current_dir().map_err(|e| format!("error: cannot read the current directory: {e}\n"))?;
    let app = runner::init::find_app(&dir)?;
    if output.exists() && !force {
        return Err(format!("error: {} exists: pass --force to replace it (or --output FILE)\n", output.display()));
    }
    let default_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "app".into());
    let text = runner::init::pipeline(name.unwrap_or(&default_name), &app);
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("error: cannot create {}: {e}\n", parent.display()))?;
    }
    std::fs::write(output, &text).map_err(|e| format!("error: cannot write {}: {e}\n", output.display()))?;
    let stages: Vec<&str> = app.stages.iter().map(|s| s.name.as_str()).collect();
    if stages.is_empty() {
        eprintln!(
            "wrote {}: source and synth; no stages yet (`cdk synth` has not written {}): run it, then `runner init \
             --force` again",
            output.display(),
            app.output
        );
    } else {
        eprintln!(
            "wrote {}: source, synth, and for each stage ({}) a Publish of its assets and a Deploy of its stacks, an \
             Approval before every stage after the first",
            output.display(),
            stages.join(", ")
        );
    }
    let planned = runner::pipeline::load(output, &[])?;
    println!(
        "{}: pipeline `{}` is valid: {} steps",
        output.display(),
        planned.name(),
        planned.plan.pipeline.loaded.pipeline.steps.len()
    );
    Ok(ExitCode::SUCCESS)
}
