//! `runner validate FILE...`: load, validate and plan each file; say what each pipeline holds. Every file is
//! checked, whatever the ones before it held; exit 2 when any is invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use runner::run::exit;

pub fn main(files: &[PathBuf]) -> Result<ExitCode, String> {
    let mut invalid = 0;
    for file in files {
        match runner::pipeline::load(file, &[]) {
            Ok(planned) => {
                let p = &planned.plan.pipeline.loaded.pipeline;
                println!(
                    "{}: pipeline `{}` is valid: {} steps, {} nodes",
                    file.display(),
                    p.name,
                    p.steps.len(),
                    planned.plan.graph.node_count()
                );
            }
            Err(message) => {
                invalid += 1;
                eprint!("{message}");
            }
        }
    }
    if invalid == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    if files.len() > 1 {
        eprintln!("{invalid} of {} files invalid", files.len());
    }
    Ok(ExitCode::from(exit::INVALID))
}
