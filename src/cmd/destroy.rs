//! `runner destroy FILE [STEP] [--force]`: the stacks of the pipeline's Deploy steps (or of one), listed in the
//! order they go, deleted after asking (like `cdk destroy`); `--force` does not ask, and without a terminal to ask
//! at nothing is deleted unless it is given.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use runner::destroy::Outcome;
use runner::run::exit;

use crate::cli::SourceDirs;

pub fn main(file: &Path, step: Option<&str>, force: bool, sources: &SourceDirs) -> Result<ExitCode, String> {
    let planned = runner::pipeline::load(file, &sources.source_dir)?;
    let env = std::env::vars().collect();
    let destroy = runner::destroy::plan(&planned, step, &env)?;
    eprintln!("destroy: {} stack(s) of `{}`, in this order:", destroy.stacks.len(), planned.name());
    for s in &destroy.stacks {
        eprintln!("  {}  ({}, stack {})", s.node, s.environment, s.name);
    }
    if !force {
        if !std::io::stdin().is_terminal() {
            return Err("error: destroy deletes these stacks only when told so: pass --force (there is no terminal \
                        to ask at)\n"
                .into());
        }
        eprint!("delete them? type y and Enter (anything else keeps them) ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
            eprintln!("nothing deleted");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("error: cannot start the async runtime: {e}\n"))?;
    let outcomes = runtime.block_on(runner::destroy::destroy(&destroy, planned.catalog.aws.clone(), |s, o| match o {
        Outcome::Deleted => eprintln!("  ✔ {} deleted", s.node),
        Outcome::Absent => eprintln!("  - {} was not there", s.node),
        Outcome::Protected => eprintln!(
            "  ✘ {} has termination protection: not deleted (aws cloudformation \
                 update-termination-protection --no-enable-termination-protection --stack-name {})",
            s.node, s.name
        ),
        Outcome::Failed(e) => eprintln!("  ✘ {}: {e}", s.node),
        Outcome::Kept(why) => eprintln!("  - {} not deleted: {why}", s.node),
    }));
    let deleted = outcomes.iter().filter(|o| **o == Outcome::Deleted).count();
    let kept = outcomes.iter().filter(|o| !matches!(o, Outcome::Deleted | Outcome::Absent)).count();
    eprintln!("destroy: {deleted} deleted, {kept} left");
    Ok(if kept == 0 { ExitCode::SUCCESS } else { ExitCode::from(exit::FAILED) })
}
