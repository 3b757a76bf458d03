//! `runner` as a library: what the binary's commands and the server share. A pipeline file is loaded, validated
//! and planned ([`pipeline`]), run through one call ([`run`]), shown by reporters ([`report`]), and read back
//! afterwards ([`runs`]); [`serve`] runs pipelines continuously behind a web dashboard; a pipeline's stacks are
//! deleted with [`destroy`]; [`init`] writes a starter pipeline for a CDK app.

pub mod destroy;
pub mod init;
pub mod pipeline;
pub mod report;
pub mod run;
pub mod runs;
pub mod serve;
