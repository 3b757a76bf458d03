//! `runner validate FILE...`: load, validate and plan each file; say what each pipeline holds. Every file is
//! checked, whatever the ones before it held; exit 2 when any is invalid. A file that another one given includes
//! (a shared definition such as pipelines/datalake.ron, which `validate pipelines/*.ron` names too) is checked as
//! part of that one, not on its own: alone it lacks what its includers give (a name, parameter values).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use runner::run::exit;

pub fn main(files: &[PathBuf]) -> Result<ExitCode, String> {
    let loaded: Vec<_> = files.iter().map(|f| engine::load::load(f)).collect();
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    // Each included file -> the first file given that includes it.
    let mut included_by: HashMap<PathBuf, &Path> = HashMap::new();
    for (file, l) in files.iter().zip(&loaded) {
        for inc in l.as_ref().map(|l| l.included.as_slice()).unwrap_or_default() {
            included_by.entry(canonical(&inc.path)).or_insert(file);
        }
    }
    let mut invalid = 0;
    for (file, l) in files.iter().zip(loaded) {
        if let Some(by) = included_by.get(&canonical(file)) {
            println!("{}: included by {}, checked with it", file.display(), by.display());
            continue;
        }
        match l.map_err(|e| e.render()).and_then(|l| runner::pipeline::plan_loaded(l, &[])) {
            Ok(planned) => {
                let p = &planned.plan.pipeline.loaded.pipeline;
                println!(
                    "{}: pipeline `{}` is valid: {}, {}",
                    file.display(),
                    p.name,
                    engine::counted(p.steps.len(), "step"),
                    engine::counted(planned.plan.graph.node_count(), "node")
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
