//! `runner status FILE [RUN]`: one run's nodes (default: the latest run).

use std::path::Path;
use std::process::ExitCode;

pub fn main(file: &Path, run: Option<&str>, state_dir: &Path) -> Result<ExitCode, String> {
    let planned = runner::pipeline::load_for(file, &[], runner::pipeline::Purpose::ReadRuns)?;
    print!("{}", runner::runs::status(&planned.plan, state_dir, run)?);
    Ok(ExitCode::SUCCESS)
}
