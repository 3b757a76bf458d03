//! The Shell step: commands run in order through `sh -c`, or one program with its arguments.

use std::collections::BTreeMap;
use std::path::Path;

use engine::model::ShellSpec;
use engine::step::{NodeContext, NodeSuccess, Outputs, StepError, StepRunner};
use tokio::process::Command;

use crate::process::{self, ProcessEnd};

/// Kind-specific problems of a Shell step.
pub fn check(spec: &ShellSpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    match (&spec.program, spec.commands.is_empty()) {
        (None, true) => problems.push(("commands".into(), "empty command list: give `commands` or a `program`".into())),
        (Some(_), false) => {
            problems.push(("program".into(), "give either `commands` or a `program` with `args`, not both".into()))
        }
        (Some(p), true) if p.trim().is_empty() => problems.push(("program".into(), "empty `program`".into())),
        _ => {}
    }
    if spec.program.is_none() && !spec.args.is_empty() {
        problems.push(("args".into(), "`args` without a `program`".into()));
    }
    for (i, c) in spec.commands.iter().enumerate() {
        if c.trim().is_empty() {
            problems.push((format!("commands[{i}]"), "empty command".into()));
        }
    }
    problems
}

/// What `plan` says the step will do.
pub fn describe(spec: &ShellSpec) -> String {
    match &spec.program {
        Some(p) => {
            let mut line = format!("run {p}");
            for a in &spec.args {
                line.push(' ');
                line.push_str(a);
            }
            line
        }
        None if spec.commands.len() == 1 => format!("sh -c `{}`", spec.commands[0]),
        None => {
            let each: Vec<String> = spec.commands.iter().map(|c| format!("`{c}`")).collect();
            format!("{} commands, each through sh -c, in order: {}", spec.commands.len(), each.join(", "))
        }
    }
}

/// A Shell step ready to run.
pub struct ShellStep {
    pub spec: ShellSpec,
}

#[async_trait::async_trait]
impl StepRunner for ShellStep {
    async fn run(&self, ctx: &NodeContext) -> Result<NodeSuccess, StepError> {
        if let Some(parent) = ctx.output_file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StepError::failed(format!("cannot create {}: {e}", parent.display())))?;
        }
        if !ctx.working_dir.is_dir() {
            return Err(StepError::invalid(format!("working directory {} does not exist", ctx.working_dir.display())));
        }
        let invocations: Vec<(String, Command)> = match &self.spec.program {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.args(&self.spec.args);
                vec![(describe(&self.spec), cmd)]
            }
            None => self
                .spec
                .commands
                .iter()
                .map(|c| {
                    let mut cmd = Command::new("sh");
                    cmd.arg("-c").arg(c);
                    (c.clone(), cmd)
                })
                .collect(),
        };
        let count = invocations.len();
        for (k, (what, mut cmd)) in invocations.into_iter().enumerate() {
            cmd.current_dir(&ctx.working_dir)
                .envs(&ctx.env)
                .env("RUNNER_OUTPUT", &ctx.output_file)
                .env("RUNNER_RUN_ID", &ctx.run_id)
                .env("RUNNER_STEP", &ctx.node)
                .env("RUNNER_WORKSPACE", &ctx.workspace)
                .env("RUNNER_ATTEMPT", ctx.attempt.to_string());
            let which =
                if count > 1 { format!("command {} of {count} (`{what}`)", k + 1) } else { format!("`{what}`") };
            let end = process::run(cmd, &ctx.events, &ctx.stop)
                .await
                .map_err(|e| StepError::failed(format!("cannot start {which}: {e}")))?;
            match end {
                ProcessEnd::Exited(status) if status.success() => {}
                ProcessEnd::Exited(status) => {
                    return Err(StepError::failed(format!("{which} {}", process::describe_exit(status))));
                }
                ProcessEnd::Stopped(reason) => return Err(StepError::stopped(reason, format!("{which} was stopped"))),
            }
        }
        let outputs = read_outputs(&ctx.output_file)?;
        Ok(NodeSuccess { outputs, ..Default::default() })
    }
}

/// Read `KEY=VALUE` lines a step wrote to `$RUNNER_OUTPUT` (blank lines and `#` comments ignored).
pub fn read_outputs(path: &Path) -> Result<Outputs, StepError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(StepError::failed(format!("cannot read outputs from {}: {e}", path.display()))),
    };
    let mut outputs = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let valid_key = |k: &str| {
            !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        match line.split_once('=') {
            Some((k, v)) if valid_key(k.trim()) => {
                outputs.insert(k.trim().to_string(), v.to_string());
            }
            _ => {
                return Err(StepError::failed(format!(
                    "line {} of $RUNNER_OUTPUT is not KEY=VALUE (KEY: letters, digits, `_`): `{line}`",
                    n + 1
                )))
            }
        }
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_key_value_lines_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        std::fs::write(&p, "A=1\n# note\n\nB=x=y\n").unwrap();
        let o = read_outputs(&p).unwrap();
        assert_eq!(o["A"], "1");
        assert_eq!(o["B"], "x=y");
        std::fs::write(&p, "not a pair\n").unwrap();
        assert!(read_outputs(&p).unwrap_err().message.contains("line 1"));
    }

    #[test]
    fn a_shell_step_needs_something_to_run() {
        assert_eq!(check(&ShellSpec::default())[0].0, "commands");
        let both = ShellSpec { commands: vec!["x".into()], program: Some("y".into()), args: vec![] };
        assert_eq!(check(&both)[0].0, "program");
    }
}
