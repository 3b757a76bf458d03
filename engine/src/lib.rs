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
