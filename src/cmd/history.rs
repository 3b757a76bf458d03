//! `runner history FILE`: the pipeline's past runs.

use std::path::Path;
use std::process::ExitCode;

pub fn main(file: &Path, state_dir: &Path) -> Result<ExitCode, String> {
    let planned = runner::pipeline::load_for(file, &[], runner::pipeline::Purpose::ReadRuns)?;
    print!("{}", runner::runs::history(state_dir, planned.name()));
    Ok(ExitCode::SUCCESS)
}
