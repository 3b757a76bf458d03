//! One module per command: each parses nothing (clap did) and orchestrates nothing of its own: it calls the
//! library (load, the run API, past runs) and prints.

pub mod approve;
pub mod bootstrap;
pub mod destroy;
pub mod graph;
pub mod history;
pub mod init;
pub mod plan;
pub mod run;
pub mod serve;
pub mod status;
pub mod step;
pub mod validate;
