//! `runner` as a library: what the binary's commands and the server share. A pipeline file is loaded, validated
//! and planned ([`pipeline`]), run through one call ([`run`]), shown by reporters ([`report`]), and read back
//! afterwards ([`runs`]); [`serve`] runs pipelines continuously behind a web dashboard; a pipeline's stacks are
//! deleted with [`destroy`].

pub mod destroy;
pub mod pipeline;
pub mod report;
pub mod run;
pub mod runs;
pub mod serve;
