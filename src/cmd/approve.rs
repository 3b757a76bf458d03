//! `runner approve FILE STEP [--run ID] [--reject]`: answer a waiting Approval from another shell.

use std::path::Path;
use std::process::ExitCode;

pub fn main(file: &Path, step: &str, run: Option<&str>, reject: bool, state_dir: &Path) -> Result<ExitCode, String> {
    let planned = runner::pipeline::load_for(file, &[], runner::pipeline::Purpose::ReadRuns)?;
    print!("{}", runner::runs::approve(&planned.plan, state_dir, step, run, reject)?);
    Ok(ExitCode::SUCCESS)
}
