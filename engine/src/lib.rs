//! The engine of `runner`: the pipeline model, validation with positions, the plan (a petgraph DAG of nodes),
//! the tokio walker and its event stream, run records and summaries. It knows nothing of AWS, git or terminals.

pub mod approval;
pub mod compose;
pub mod diagnostic;
pub mod event;
pub mod graph;
pub mod incremental;
pub mod load;
pub mod memory;
pub mod model;
pub mod plan;
pub mod record;
pub mod redact;
pub mod source_map;
pub mod step;
pub mod subst;
pub mod validate;
pub mod walk;

pub use event::{Event, EventKind, RunStatus, Status};
pub use plan::Plan;
pub use step::{Catalog, NodeContext, NodeSuccess, StepError, StepRunner, StopReason};

/// `n` and the noun, plural unless there is one: `1 node`, `3 nodes`, `0 waves` (the noun takes an `s`).
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_thing_is_singular_and_any_other_count_plural() {
        assert_eq!(super::counted(1, "node"), "1 node");
        assert_eq!(super::counted(0, "wave"), "0 waves");
        assert_eq!(super::counted(17, "step"), "17 steps");
    }
}
