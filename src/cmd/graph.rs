//! `runner graph FILE --format text|dot|mermaid`: the planned DAG.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{GraphFormat, SourceDirs};

pub fn main(file: &Path, format: GraphFormat, sources: &SourceDirs) -> Result<ExitCode, String> {
    let plan = runner::pipeline::load(file, &sources.source_dir)?.plan;
    let text = match format {
        GraphFormat::Text => engine::graph::text(&plan),
        GraphFormat::Dot => engine::graph::dot(&plan),
        GraphFormat::Mermaid => engine::graph::mermaid(&plan),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
