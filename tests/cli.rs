//! The command line as a new user meets it, through the real binary: `--help`, `validate` of several files,
//! `status` and `history` of past runs (a run its preflight stopped, a resumed run), and what runner says when
//! there are no AWS credentials.

mod common;
mod emulator;

use std::net::TcpListener;

use common::*;
use emulator::Moto;

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two Deploy steps in two accounts (their templates are never read: the preflight stops the run first).
const TWO_ACCOUNTS: &str = r#"Pipeline(name: "two", steps: [
    Step(id: "deploy-dev", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
        (name: "Queue", template: "queue.yaml"),
    ]))),
    Step(id: "deploy-prod", needs: ["deploy-dev"], kind: Deploy(account: "333333333333", region: "us-east-1",
        stacks: Listed([(name: "Queue", template: "queue.yaml")]))),
])"#;

#[test]
fn no_credentials_are_said_once_with_where_runner_looked_and_no_sdk_internals() {
    let moto = Moto::start();
    // As on a laptop: the instance metadata service is not disabled, it just does not answer.
    let imds = format!("http://127.0.0.1:{}", closed_port());
    let out = moto
        .env_without_credentials(Test::new())
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
        .pipeline(TWO_ACCOUNTS)
        .args(&["run", "pipeline.ron"])
        .run();
    out.assert_code(1);
    assert_eq!(out.stderr.matches("no AWS credentials found").count(), 1, "said once\n{}", out.dump());
    out.assert_stderr_contains("AWS_ACCESS_KEY_ID is not set");
    out.assert_stderr_contains("profile `default` in /dev/null");
    out.assert_stderr_contains("the EC2 instance metadata service");
    out.assert_stderr_contains("nothing ran: no AWS credentials");
    for internal in ["WARN", "aws_config", "ProviderError", "dispatch failure", "endpoint cannot be reached", "\u{1b}["]
    {
        out.assert_stderr_not_contains(internal);
    }
}

#[test]
fn diagnostics_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let out = Test::new()
        .pipeline(r#"Pipeline(name: "p", steps: [Step(id: "a", kind: Shell(commands: ["true"]))])"#)
        .env("RUST_LOG", "debug")
        .args(&["run", "pipeline.ron"])
        .run();
    out.assert_code(0);
    out.assert_stderr_contains("node started");
    out.assert_stderr_not_contains("\u{1b}[");
}

/// What a long `--help` leaves undescribed: an `Arguments:` entry with no text under it, a `Possible values:` item
/// with no text after it (clap prints `- name: text`, or `- name` alone).
fn undescribed(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut missing = Vec::new();
    let mut section = "";
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if !line.starts_with(' ') && trimmed.ends_with(':') {
            section = trimmed;
            continue;
        }
        if trimmed == "Possible values:" {
            section = trimmed;
            continue;
        }
        match section {
            // An argument's text is on the next line.
            "Arguments:"
                if (trimmed.starts_with('<') || trimmed.starts_with('['))
                    && lines.get(i + 1).is_none_or(|l| l.trim().is_empty()) =>
            {
                missing.push(format!("argument {trimmed}"));
            }
            "Possible values:" if trimmed.starts_with("- ") && !trimmed.contains(':') => {
                missing.push(format!("value {trimmed}"));
            }
            "Possible values:" if !trimmed.starts_with("- ") => section = "Options:",
            _ => {}
        }
    }
    missing
}

#[test]
fn help_describes_every_positional_argument_and_every_value() {
    let top = Test::new().args(&["--help"]).run();
    top.assert_code(0);
    let commands: Vec<String> = top
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 9, "{commands:?}\n{}", top.dump());
    let mut missing = Vec::new();
    for command in &commands {
        let out = Test::new().args(&[command, "--help"]).run();
        out.assert_code(0);
        missing.extend(undescribed(&out.stdout).into_iter().map(|m| format!("runner {command}: {m}")));
    }
    assert!(missing.is_empty(), "described nowhere:\n{}", missing.join("\n"));
    let run = Test::new().args(&["run", "--help"]).run();
    for value in ["auto:", "plain:", "json:"] {
        run.assert_stdout_contains(value);
    }
}

#[test]
fn validate_takes_several_files_and_checks_every_one() {
    let test = Test::new()
        .write("pipelines/a.ron", r#"Pipeline(name: "a", steps: [Step(id: "x", kind: Shell(commands: ["true"]))])"#)
        .write(
            "pipelines/b.ron",
            r#"Pipeline(name: "b", steps: [Step(id: "y", needs: ["nope"], kind: Shell(commands: ["true"]))])"#,
        )
        .write("pipelines/c.ron", r#"Pipeline(name: "c", steps: [Step(id: "z", kind: Shell(commands: ["true"]))])"#);
    let out = test.run_with(&["validate", "pipelines/a.ron", "pipelines/b.ron", "pipelines/c.ron"]);
    out.assert_code(2);
    out.assert_stdout_contains("pipelines/a.ron: pipeline `a` is valid");
    out.assert_stdout_contains("pipelines/c.ron: pipeline `c` is valid");
    out.assert_stderr_contains("`y` needs unknown step `nope`");
    out.assert_stderr_contains("1 of 3 files invalid");
    let good = test.run_with(&["validate", "pipelines/a.ron", "pipelines/c.ron"]);
    good.assert_code(0);
    // The shipped pipelines as `runner validate pipelines/*.ron` names them: the shared definition the environments
    // include (pipelines/datalake.ron) is checked through them, and its unset variable is said once, not per file.
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("pipelines"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ron"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    let shared = files.iter().find(|f| f.ends_with("datalake.ron")).expect("pipelines/datalake.ron");
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let all = Test::new().env("EXAMPLE_REPO", ".").env_remove("DATALAKE_REPO").run_with(&args);
    all.assert_code(0);
    assert_eq!(all.stdout.matches(" is valid").count(), files.len() - 1, "{}", all.dump());
    all.assert_stdout_contains(&format!("{shared}: included by "));
    assert_eq!(
        all.stderr.matches("environment variable `DATALAKE_REPO` is not set").count(),
        1,
        "one warning for dev, test and prod\n{}",
        all.dump()
    );
}

#[test]
fn status_lists_nodes_in_plan_order() {
    let test = Test::new().pipeline(
        r#"Pipeline(name: "order", steps: [
    Step(id: "zeta", kind: Shell(commands: ["true"])),
    Step(id: "alpha", needs: ["zeta"], kind: Shell(commands: ["true"])),
    Step(id: "mu", needs: ["alpha"], kind: Shell(commands: ["true"])),
])"#,
    );
    test.run_with(&["run", "pipeline.ron"]).assert_code(0);
    let out = test.run_with(&["status", "pipeline.ron"]);
    out.assert_code(0);
    let order: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["zeta", "alpha", "mu"].contains(w))
        .collect();
    assert_eq!(order, ["zeta", "alpha", "mu"], "{}", out.dump());
}

#[test]
fn status_points_at_logs_only_for_nodes_that_wrote_one() {
    let test = Test::new().pipeline(
        r#"Pipeline(name: "logs", steps: [
    Step(id: "breaks", kind: Shell(commands: ["echo trying", "false"])),
    Step(id: "after", needs: ["breaks"], kind: Shell(commands: ["true"])),
])"#,
    );
    test.run_with(&["run", "pipeline.ron"]).assert_code(1);
    let out = test.run_with(&["status", "pipeline.ron"]);
    out.assert_code(0);
    let row = |node: &str| out.stdout.lines().find(|l| l.starts_with(&format!("{node} "))).unwrap().to_string();
    let breaks = row("breaks");
    let log = breaks.split_whitespace().last().unwrap();
    assert!(log.ends_with("breaks.log") && std::path::Path::new(log).exists(), "{}", out.dump());
    assert!(row("after").trim_end().ends_with(" -"), "a skipped node has no log to point at\n{}", out.dump());
}

#[test]
fn a_run_its_preflight_stopped_is_shown_and_resumed_as_one_where_nothing_ran() {
    // Credentials, but an endpoint that does not answer: the preflight stops the run.
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let test = Test::new()
        .pipeline(TWO_ACCOUNTS)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1");
    let first = test.run_with(&["run", "pipeline.ron"]);
    first.assert_code(1);
    first.assert_stderr_contains("nothing ran");
    let history = test.run_with(&["history", "pipeline.ron"]);
    history.assert_code(0);
    history.assert_stdout_contains("failed (nothing ran: preflight:");
    let status = test.run_with(&["status", "pipeline.ron"]);
    status.assert_code(0);
    status.assert_stdout_contains("failed: nothing ran, its preflight stopped it:");
    status.assert_stdout_contains("the AWS endpoint cannot be reached");
    assert!(!status.stdout.contains("duration"), "no table of steps that never ran\n{}", status.dump());
    let resumed = test.run_with(&["run", "pipeline.ron", "--resume"]);
    resumed.assert_code(1);
    resumed.assert_stderr_contains("nothing ran there (it stopped before its first step)");
    assert_eq!(run_dirs(test.path()).len(), 1, "the resume continued the same run");
}

#[test]
fn history_shows_a_resumed_runs_working_time_not_the_time_between_its_attempts() {
    let test = Test::new().pipeline(
        r#"Pipeline(name: "flaky", steps: [
    Step(id: "a", kind: Shell(commands: ["true"])),
    Step(id: "b", needs: ["a"], kind: Shell(commands: ["test -f fixed"])),
])"#,
    );
    test.run_with(&["run", "pipeline.ron"]).assert_code(1);
    // The first attempt started two hours before the resume.
    let state_file = single_run_dir(test.path()).join("state.json");
    let mut state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    let started = humantime::parse_rfc3339(state["started"].as_str().unwrap()).unwrap();
    let earlier = started - std::time::Duration::from_secs(2 * 3600);
    state["started"] = humantime::format_rfc3339_millis(earlier).to_string().into();
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    std::fs::write(test.path().join("fixed"), "").unwrap();
    test.run_with(&["run", "pipeline.ron", "--resume"]).assert_code(0);
    let out = test.run_with(&["history", "pipeline.ron"]);
    out.assert_code(0);
    assert!(out.stdout.lines().next().unwrap().contains(" working "), "the column says what it shows\n{}", out.dump());
    let line = out.stdout.lines().find(|l| l.starts_with("flaky-")).expect("the run's line").to_string();
    let duration = line.split_whitespace().nth(2).unwrap();
    assert!(duration.ends_with("ms") || duration.ends_with('s') && !duration.contains('m'), "working time: {line}");
    assert!(line.contains("resumed 1x, 120m"), "and the span: {line}");
}
