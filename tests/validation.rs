//! `runner validate` (and the checks `run` does before starting anything) on bad pipeline files: exit code 2,
//! `pipeline.ron:LINE:COLUMN`, the source line and a caret under the offending token.

mod common;

use common::*;

fn validate(text: &str) -> Output {
    Test::new().pipeline(text).args(&["validate", "pipeline.ron"]).run()
}

// ---------------------------------------------------------------------------------------------------------------
// RON syntax and shape: the first such error, with its line.
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_ron_syntax_error_is_reported_with_its_line() {
    let text = r#"Pipeline(
    name: "syntax",
    steps: [
        Step(id: "ok", kind: Shell(commands: ["true"])),
        Step(id: "broken" kind: Shell(commands: ["true"])),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2);
    assert_diagnostic_line(&out, line_of(text, r#""broken" kind"#));
}

#[test]
fn an_unknown_field_is_reported_with_its_name_and_line() {
    let text = r#"Pipeline(
    name: "unknown-field",
    steps: [
        Step(id: "a", kind: Shell(commands: ["true"])),
        Step(id: "b", kind: Shell(commands: ["true"]), colour: "red"),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2).assert_stderr_contains("colour");
    assert_diagnostic_line(&out, line_of(text, "colour"));
}

#[test]
fn an_unknown_step_kind_is_reported_with_its_name_and_line() {
    let text = r#"Pipeline(
    name: "unknown-kind",
    steps: [
        Step(id: "a", kind: Shell(commands: ["true"])),
        Step(id: "b", kind: Docker(image: "alpine")),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2).assert_stderr_contains("Docker");
    assert_diagnostic_line(&out, line_of(text, "Docker"));
}

#[test]
fn a_misspelt_field_suggests_the_closest_valid_name() {
    let text = r#"Pipeline(
    name: "misspelt",
    steps: [
        Step(id: "a", kind: Shell(comands: ["true"])),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2).assert_stderr_contains("unexpected field named `comands`");
    out.assert_stderr_contains("did you mean `commands`?");
    assert_diagnostic_line(&out, line_of(text, "comands"));
}

#[test]
fn a_missing_id_is_reported_with_the_field_name_and_line() {
    let text = r#"Pipeline(
    name: "missing-id",
    steps: [
        Step(id: "a", kind: Shell(commands: ["true"])),
        Step(kind: Shell(commands: ["echo no id"])),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2);
    assert!(
        ["`id`", "\"id\"", "'id'"].iter().any(|quoted| out.stderr.contains(quoted)),
        "stderr does not name the missing field `id`\n{}",
        out.dump()
    );
    assert_diagnostic_line(&out, line_of(text, "no id"));
}

// ---------------------------------------------------------------------------------------------------------------
// Semantic errors: each at the offending token.
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn duplicate_ids_are_all_reported_at_the_repeated_id() {
    let text = r#"Pipeline(
    name: "duplicates",
    steps: [
        Step(id: "alpha", kind: Shell(commands: ["true"])),
        Step(id: "beta", kind: Shell(commands: ["true"])),
        Step(id: "alpha", kind: Shell(commands: ["true"])),
        Step(id: "beta", kind: Shell(commands: ["true"])),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2).assert_stderr_contains_ci("duplicate");
    let (line, column) = position_nth(text, r#""alpha""#, 1);
    assert_diagnostic(&out, text, line, column);
    let (line, column) = position_nth(text, r#""beta""#, 1);
    assert_diagnostic(&out, text, line, column);
}

#[test]
fn needs_naming_an_unknown_step_suggests_the_closest_id() {
    let text = r#"Pipeline(
    name: "unknown-need",
    steps: [
        Step(id: "build", kind: Shell(commands: ["true"])),
        Step(id: "test", kind: Shell(commands: ["true"])),
        Step(
            id: "deploy",
            needs: ["test", "buidl"],
            kind: Shell(commands: ["true"]),
        ),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2).assert_stderr_contains("buidl").assert_stderr_contains("did you mean `build`?");
    let (line, column) = position(text, r#""buidl""#);
    assert_diagnostic(&out, text, line, column);
}

#[test]
fn a_cycle_is_spelled_out_from_the_step_that_comes_first_in_the_file() {
    // `root` is not in the cycle; `leaf` hangs off the cycle without being part of it.
    let text = r#"Pipeline(
    name: "cycle",
    steps: [
        Step(id: "root", kind: Shell(commands: ["true"])),
        Step(id: "a", needs: ["root", "c"], kind: Shell(commands: ["true"])),
        Step(id: "b", needs: ["a"], kind: Shell(commands: ["true"])),
        Step(id: "c", needs: ["b"], kind: Shell(commands: ["true"])),
        Step(id: "leaf", needs: ["c"], kind: Shell(commands: ["true"])),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2);
    // Either direction (`a` is needed by `b`, `a` needs `c`), but starting and ending at `a`, the first in the file.
    assert!(
        out.stderr.contains("a -> b -> c -> a") || out.stderr.contains("a -> c -> b -> a"),
        "stderr does not spell out the cycle starting at `a`\n{}",
        out.dump()
    );
    assert!(!out.stderr.contains("-> leaf") && !out.stderr.contains("-> root"), "{}", out.dump());
    // The location is the id or a `needs` entry of one of the steps in the cycle.
    let candidates: Vec<(usize, usize)> =
        [position(text, r#"id: "a""#), position(text, r#"id: "b""#), position(text, r#"id: "c""#)]
            .iter()
            .map(|&(line, column)| (line, column + "id: ".len()))
            .chain([
                {
                    let (line, column) = position(text, r#""root", "c""#);
                    (line, column + r#""root", "#.len())
                },
                position(text, r#""a"], kind"#),
                position(text, r#""b"], kind"#),
            ])
            .collect();
    let found: Vec<_> = locations(&out).into_iter().filter(|l| candidates.contains(l)).collect();
    assert!(
        !found.is_empty(),
        "no location at an id or need of the cycle (expected one of {candidates:?})\n{}",
        out.dump()
    );
    assert_diagnostic(&out, text, found[0].0, found[0].1);
}

#[test]
fn an_output_reference_to_a_step_that_is_not_upstream_is_an_error() {
    let text = r#"Pipeline(
    name: "not-upstream",
    steps: [
        Step(id: "producer", kind: Shell(commands: ["echo VERSION=1 >> $RUNNER_OUTPUT"])),
        Step(id: "consumer", kind: Shell(commands: ["echo ${steps.producer.outputs.VERSION}"])),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2).assert_stderr_contains("producer");
    // At the string holding the reference, or at the reference itself.
    let (line, quote) = position(text, r#""echo ${steps"#);
    let dollar = quote + r#""echo "#.len();
    let column = if locations(&out).contains(&(line, dollar)) { dollar } else { quote };
    assert_diagnostic(&out, text, line, column);
}

#[test]
fn an_empty_command_list_is_an_error() {
    let text = r#"Pipeline(
    name: "empty-commands",
    steps: [
        Step(id: "fine", kind: Shell(commands: ["true"])),
        Step(
            id: "nothing",
            kind: Shell(commands: []),
        ),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2);
    assert_diagnostic_line(&out, line_of(text, "commands: []"));
}

#[test]
fn a_malformed_timeout_is_reported_at_its_value() {
    let text = r#"Pipeline(
    name: "bad-timeout",
    steps: [
        Step(
            id: "slow",
            kind: Shell(commands: ["true"]),
            timeout: "ten minutes",
        ),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2);
    let (line, column) = position(text, r#""ten minutes""#);
    assert_diagnostic(&out, text, line, column);
}

#[test]
fn a_zero_timeout_is_reported_at_its_value() {
    let text = r#"Pipeline(
    name: "zero-timeout",
    steps: [
        Step(id: "instant", kind: Shell(commands: ["true"]), timeout: "0s"),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2);
    let (line, column) = position(text, r#""0s""#);
    assert_diagnostic(&out, text, line, column);
}

#[test]
fn several_semantic_errors_are_all_reported_sorted_by_position() {
    let text = r#"Pipeline(
    name: "many",
    steps: [
        Step(id: "one", kind: Shell(commands: ["true"])),
        Step(id: "two", needs: ["onee"], kind: Shell(commands: ["true"])),
        Step(id: "three", kind: Shell(commands: ["true"]), timeout: "0s"),
        Step(id: "one", kind: Shell(commands: ["true"])),
        Step(id: "four", kind: Shell(commands: [])),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(2).assert_stderr_contains("did you mean `one`?");

    let unknown_need = position(text, r#""onee""#);
    let zero_timeout = position(text, r#""0s""#);
    let duplicate = position_nth(text, r#""one""#, 1);
    let empty_line = line_of(text, "commands: []");

    for &(line, column) in &[unknown_need, zero_timeout, duplicate] {
        assert_diagnostic(&out, text, line, column);
    }
    assert_diagnostic_line(&out, empty_line);

    // Sorted by position: the first location printed for each error comes in file order.
    let printed = locations(&out);
    let first_index = |line: usize| {
        printed
            .iter()
            .position(|&(l, _)| l == line)
            .unwrap_or_else(|| panic!("no location on line {line}\n{}", out.dump()))
    };
    let order = [unknown_need.0, zero_timeout.0, duplicate.0, empty_line].map(first_index);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "errors not sorted by position: {order:?}\n{}", out.dump());
}

#[test]
fn a_valid_pipeline_validates() {
    let text = r#"Pipeline(
    name: "valid",
    defaults: (
        env: {"GREETING": "hello"},
        timeout: "5m",
        retries: 1,
        retry_backoff: "1s",
        max_parallel: 4,
    ),
    steps: [
        Step(id: "first", kind: Shell(commands: ["echo VERSION=1 >> $RUNNER_OUTPUT"])),
        Step(
            id: "second",
            needs: ["first"],
            kind: Shell(commands: ["echo ${steps.first.outputs.VERSION}"]),
            env: {"PROFILE": "release"},
            timeout: "1h30m",
            retries: 2,
            retry_backoff: "5s",
        ),
        Step(id: "third", needs: ["second"], kind: Shell(program: "echo", args: ["${steps.first.outputs.VERSION}"])),
    ],
)
"#;
    let out = validate(text);
    out.assert_code(0).assert_stderr_not_contains("error");
}

// ---------------------------------------------------------------------------------------------------------------
// Unset `${env:...}` variables: a warning for validate, an error for run (before anything starts).
// ---------------------------------------------------------------------------------------------------------------

const UNSET_ENV: &str = r#"Pipeline(
    name: "unset-env",
    steps: [
        Step(id: "marker", kind: Shell(commands: ["touch ran.txt"])),
        Step(id: "one", needs: ["marker"], kind: Shell(commands: ["echo ${env:RUNNER_TEST_NOPE}"])),
        Step(id: "two", kind: Shell(commands: ["echo ${env:RUNNER_TEST_NOPE_EITHER}"])),
    ],
)
"#;

#[test]
fn an_unset_env_variable_is_only_a_warning_for_validate() {
    let out = Test::new()
        .pipeline(UNSET_ENV)
        .env_remove("RUNNER_TEST_NOPE")
        .env_remove("RUNNER_TEST_NOPE_EITHER")
        .args(&["validate", "pipeline.ron"])
        .run();
    out.assert_code(0).assert_stderr_contains("RUNNER_TEST_NOPE");
}

#[test]
fn run_lists_every_unset_env_variable_and_runs_nothing() {
    let test = Test::new()
        .pipeline(UNSET_ENV)
        .env_remove("RUNNER_TEST_NOPE")
        .env_remove("RUNNER_TEST_NOPE_EITHER")
        .args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(2).assert_stderr_contains("RUNNER_TEST_NOPE").assert_stderr_contains("RUNNER_TEST_NOPE_EITHER");
    assert!(!test.exists("ran.txt"), "a step ran although the run was invalid\n{}", out.dump());
}

#[test]
fn run_accepts_env_variables_that_are_set() {
    let test = Test::new()
        .pipeline(UNSET_ENV)
        .env("RUNNER_TEST_NOPE", "x")
        .env("RUNNER_TEST_NOPE_EITHER", "y")
        .args(&["run", "pipeline.ron"]);
    test.run().assert_code(0);
    assert!(test.exists("ran.txt"));
}

#[test]
fn validate_reports_a_missing_file_as_a_usage_error() {
    let out = Test::new().args(&["validate", "does-not-exist.ron"]).run();
    out.assert_code(2).assert_stderr_contains("does-not-exist.ron");
}
