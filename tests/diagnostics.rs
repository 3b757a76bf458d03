//! Diagnostics hold for any input (issue 12 items 1, 2 and 8; issue 14 "Messages"): no panic while reporting
//! (CRLF, CR, tabs, multi-byte characters, the end of the file), names that become file names or columns bounded
//! at validation, quoted input bounded, invalid UTF-8 placed, and every caret on the token at fault.

mod common;

use common::*;

/// The binary never panics: exit 0 or 2, and nothing on stderr says `panicked`.
fn assert_no_panic(out: &Output) {
    assert!(matches!(out.code, Some(0) | Some(2)), "expected exit 0 or 2\n{}", out.dump());
    assert!(!out.stderr.contains("panicked"), "{}", out.dump());
}

fn validate_bytes(bytes: &[u8]) -> Output {
    let test = Test::new().args(&["validate", "pipeline.ron"]);
    std::fs::write(test.path().join("pipeline.ron"), bytes).unwrap();
    test.run()
}

// ---------------------------------------------------------------------------------------------------------------
// Line ends, tabs, multi-byte characters, the end of the file
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_comment_ended_by_crlf_is_a_syntax_error_not_a_panic() {
    let out = validate_bytes(b"//\r\n");
    out.assert_code(2).assert_stderr_contains("pipeline.ron:");
    assert_no_panic(&out);
    assert_caret_line(&out);
}

#[test]
fn a_stray_word_after_a_comment_in_a_crlf_file_is_pointed_at() {
    let text = "Pipeline(\r\n    name: \"p\", // the name\r\n    stray\r\n    steps: [],\r\n)\r\n";
    let out = validate_bytes(text.as_bytes());
    out.assert_code(2).assert_stderr_contains("stray");
    assert!(!out.stderr.contains('\r'), "a carriage return reached the terminal\n{:?}", out.stderr);
    assert_diagnostic(&out, &text.replace('\r', ""), 3, 5);
}

#[test]
fn a_crlf_pipeline_cut_short_anywhere_is_an_error_with_a_position() {
    let prod = std::fs::read_to_string(repo_root().join("pipelines/prod.ron")).unwrap().replace('\n', "\r\n");
    let cuts: Vec<usize> = (1..40).map(|k| prod.len() * k / 40).chain([1, 2, prod.len() - 1, prod.len() - 2]).collect();
    for cut in cuts {
        let out = validate_bytes(&prod.as_bytes()[..cut]);
        assert_no_panic(&out);
        if out.code == Some(2) {
            out.assert_stderr_contains("pipeline.ron:");
        }
    }
}

#[test]
fn a_file_with_lone_carriage_returns_is_numbered_by_them() {
    let text = "Pipeline(\r    name: \"p\",\r    stepz: [],\r)";
    let out = validate_bytes(text.as_bytes());
    out.assert_code(2).assert_stderr_contains("stepz");
    assert_no_panic(&out);
    assert!(out.stderr.contains("pipeline.ron:3:5"), "{}", out.dump());
    assert!(!out.stderr.contains('\r'), "{:?}", out.stderr);
}

#[test]
fn tabs_and_multi_byte_characters_before_a_fault_keep_the_caret_under_it() {
    let text = "Pipeline(\n\tname: \"données\",\n\tsteps: [\n\t\tStep(id: \"é\", needs: [\"ü\", \"sourc\"], kind: Shell(commands: [\"true\"])),\n\t],\n)\n";
    let out = validate_bytes(text.as_bytes());
    out.assert_code(2);
    let (line, column) = position(text, "\"sourc\"");
    assert_diagnostic(&out, text, line, column);
}

#[test]
fn an_error_at_the_end_of_the_file_is_shown_on_its_last_line() {
    for text in ["Pipeline(\n    name: \"p\",\n", "Pipeline(\r\n    name: \"p\",\r\n", "Pipeline(name: \"p\""] {
        let out = validate_bytes(text.as_bytes());
        out.assert_code(2);
        assert_no_panic(&out);
        assert_caret_line(&out);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Names that become file names and columns
// ---------------------------------------------------------------------------------------------------------------

fn with_step_id(id: &str) -> String {
    format!("Pipeline(name: \"long\", steps: [Step(id: \"{id}\", kind: Shell(commands: [\"true\"]))])\n")
}

#[test]
fn a_step_id_of_65536_characters_is_refused_by_validate_with_a_short_message() {
    let id = "a".repeat(65_536);
    let test = Test::new().pipeline(&with_step_id(&id));
    for command in ["validate", "plan", "graph", "run", "status", "history"] {
        let out = test.run_with(&[command, "pipeline.ron"]);
        out.assert_code(2).assert_stderr_contains("step id").assert_stderr_contains("at most 128");
        assert!(
            out.stderr.len() < 2_000,
            "`{command}`: {} bytes of stderr\n{}",
            out.stderr.len(),
            &out.stderr[..2_000]
        );
    }
    assert!(!test.exists(".runner/runs"), "a run was recorded for an invalid pipeline");
}

#[test]
fn a_step_id_too_long_for_a_file_name_is_refused_before_the_run() {
    // 248 characters passed validation and failed at run time with `File name too long`.
    let id = "b".repeat(248);
    let test = Test::new().pipeline(&with_step_id(&id)).args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(2).assert_stderr_contains("is 248 characters long: at most 128 are allowed");
    let (line, column) = position(&with_step_id(&id), &format!("\"{id}\""));
    assert!(out.stderr.contains(&format!("pipeline.ron:{line}:{column}")), "{}", out.dump());
    // 128 is fine, and runs.
    let fine = "c".repeat(128);
    let test = Test::new().pipeline(&with_step_id(&fine)).args(&["run", "pipeline.ron"]);
    test.run().assert_code(0);
    // Its log file and `status` column hold the whole id.
    let status = test.run_with(&["status", "pipeline.ron"]);
    status.assert_code(0).assert_stdout_contains(&format!("{fine}  succeeded"));
}

#[test]
fn a_pipeline_name_too_long_for_a_file_name_is_refused() {
    let name = "p".repeat(300);
    let text = format!("Pipeline(name: \"{name}\", steps: [Step(id: \"a\", kind: Shell(commands: [\"true\"]))])\n");
    let out = Test::new().pipeline(&text).args(&["run", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("pipeline name").assert_stderr_contains("at most 128");
    let (line, column) = position(&text, &format!("\"{name}\""));
    assert!(out.stderr.contains(&format!("pipeline.ron:{line}:{column}")), "{}", out.dump());
    assert_caret_line(&out);
}

#[test]
fn a_stack_name_or_asset_id_too_long_is_refused_at_its_token() {
    let stack = format!("S{}", "t".repeat(200));
    let asset = "x".repeat(129);
    let text = format!(
        r#"Pipeline(
    name: "long-names",
    steps: [
        Step(id: "deploy", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
            (name: "{stack}", template: "t.yaml"),
        ]))),
        Step(id: "publish", kind: Publish(assets: Files(
            destination: (account: "111111111111", region: "us-east-1"),
            files: [(id: "{asset}", path: "f.txt")],
        ))),
    ],
)
"#
    );
    let out = Test::new().pipeline(&text).args(&["validate", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("stack name").assert_stderr_contains("asset id");
    for token in [format!("\"{stack}\""), format!("\"{asset}\"")] {
        let (line, column) = position(&text, &token);
        assert!(out.stderr.contains(&format!("pipeline.ron:{line}:{column}")), "{token}\n{}", out.dump());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Bounded quotes, invalid UTF-8
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_50_mb_file_of_garbage_gives_a_few_lines_of_error() {
    // Random printable garbage on one line, random bytes, and one long word (the token found is quoted whole by
    // the parser: 8 MB, as the debug build's parser takes a second per MB to read it).
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let word = vec![b'a'; 8 << 20];
    let printable: Vec<u8> = (0..50 << 20).map(|_| b"ab(){}[]:,\" \t"[(next() % 13) as usize]).collect();
    let bytes: Vec<u8> = (0..50 << 20).map(|_| next() as u8).collect();
    for garbage in [printable, bytes, word] {
        let out = validate_bytes(&garbage);
        out.assert_code(2);
        assert!(out.stderr.len() < 4_096, "{} bytes of stderr", out.stderr.len());
        assert_caret_line(&out);
    }
}

#[test]
fn a_file_that_is_not_utf8_is_reported_with_line_and_column() {
    let mut bytes = b"Pipeline(\n    name: \"caf".to_vec();
    bytes.push(0xe9); // Latin-1 `é`
    bytes.extend_from_slice(b"\",\n    steps: [],\n)\n");
    let out = validate_bytes(&bytes);
    out.assert_code(2).assert_stderr_contains("not valid UTF-8 (byte 0xe9)");
    assert!(out.stderr.contains("pipeline.ron:2:15"), "{}", out.dump());
    assert_caret_line(&out);
}

#[test]
fn a_long_name_given_on_the_command_line_is_quoted_short() {
    let text = "Pipeline(name: \"p\", steps: [Step(id: \"a\", kind: Shell(commands: [\"true\"]))])\n";
    let long = "z".repeat(100_000);
    let out = Test::new().pipeline(text).args(&["run", "pipeline.ron", "--force-step", &long]).run();
    out.assert_code(2).assert_stderr_contains("is not a step of `p`");
    assert!(out.stderr.len() < 1_000, "{} bytes of stderr", out.stderr.len());
}

// ---------------------------------------------------------------------------------------------------------------
// Carets on the token at fault; cycles spelled out
// ---------------------------------------------------------------------------------------------------------------

const STAGE: &str = r#"Pipeline(
    name: "stage",
    steps: [
        Step(id: "deploy", kind: Deploy(account: "111111111111", region: "us-east-1", stacks: Listed([
            (name: "Network", template: "network.yaml"),
            (name: "1Data", template: "data.yaml"),
            (name: "Api", template: "api.yaml", depends_on: ["Netwrok"]),
            (name: "Queue", template: "q.yaml", depends_on: ["Worker"]),
            (name: "Worker", template: "w.yaml", depends_on: ["Network", "Queue"]),
        ]))),
    ],
)
"#;

#[test]
fn an_invalid_stack_name_is_pointed_at_not_its_list() {
    let out = Test::new().pipeline(STAGE).args(&["validate", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("stack name `1Data`");
    let (line, column) = position(STAGE, "\"1Data\"");
    assert_diagnostic(&out, STAGE, line, column);
}

#[test]
fn a_typo_in_depends_on_is_pointed_at_with_the_closest_stack() {
    let out = Test::new().pipeline(STAGE).args(&["validate", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("did you mean `Network`?");
    let (line, column) = position(STAGE, "\"Netwrok\"");
    assert_diagnostic(&out, STAGE, line, column);
}

#[test]
fn a_cycle_between_stacks_is_spelled_out_at_the_depends_on_that_closes_it() {
    let out = Test::new().pipeline(STAGE).args(&["validate", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("cycle in depends_on: Queue -> Worker -> Queue");
    let (line, column) = position(STAGE, "\"Worker\"]");
    assert_diagnostic(&out, STAGE, line, column);
}

#[test]
fn a_step_cycle_is_pointed_at_the_need_that_closes_it() {
    let text = r#"Pipeline(
    name: "cycle",
    steps: [
        Step(id: "a", needs: ["root", "c"], kind: Shell(commands: ["true"])),
        Step(id: "root", kind: Shell(commands: ["true"])),
        Step(id: "b", needs: ["a"], kind: Shell(commands: ["true"])),
        Step(id: "c", needs: ["b"], kind: Shell(commands: ["true"])),
    ],
)
"#;
    let out = Test::new().pipeline(text).args(&["validate", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("cycle in needs: a -> b -> c -> a");
    let (line, column) = position(text, "\"c\"]");
    assert_diagnostic(&out, text, line, column);
    assert_eq!(locations(&out).len(), 1, "one cycle, one error\n{}", out.dump());
}

#[test]
fn a_cycle_of_ten_thousand_steps_is_found_and_spelled_out_short() {
    let n = 10_000;
    let steps: String = (0..n)
        .map(|i| format!("Step(id: \"s{i}\", needs: [\"s{}\"], kind: Shell(commands: [\"true\"])),\n", (i + 1) % n))
        .collect();
    let text = format!("Pipeline(name: \"ring\", steps: [\n{steps}])\n");
    let out = Test::new().pipeline(&text).args(&["validate", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("cycle in needs: s0 -> s9999 -> s9998");
    assert!(out.stderr.contains("9981 more"), "{}", out.dump());
    assert!(out.stderr.len() < 2_000, "{} bytes", out.stderr.len());
}

#[test]
fn the_follow_on_errors_of_an_unknown_need_underline_the_reference() {
    let long = "x".repeat(250);
    let text = format!(
        r#"Pipeline(
    name: "follow-on",
    steps: [
        Step(id: "build", kind: Shell(commands: ["true"])),
        Step(id: "test", needs: ["buidl"], kind: Shell(commands: ["echo {long} ${{steps.buidl.outputs.VERSION}} {long}"]), env: {{"V": "v=${{steps.buidl.outputs.V}}"}}),
    ],
)
"#
    );
    let out = Test::new().pipeline(&text).args(&["validate", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("refers to output `VERSION` of unknown step `buidl`");
    for reference in ["${steps.buidl.outputs.VERSION}", "${steps.buidl.outputs.V}"] {
        let (line, column) = position(&text, reference);
        let mut shown = out.stderr.lines().skip_while(|l| !l.contains(&format!("pipeline.ron:{line}:{column}")));
        let caret = shown.nth(3).unwrap_or_else(|| panic!("no caret for {reference}\n{}", out.dump()));
        assert_eq!(caret.matches('^').count(), reference.len(), "{reference}\n{}", out.dump());
    }
}

#[test]
fn an_unset_variable_is_pointed_at_its_reference() {
    let text = "Pipeline(name: \"p\", steps: [Step(id: \"a\", kind: Shell(commands: [\"echo \\\"quoted\\\" ${env:RUNNER_TEST_UNSET_REF}\"]))])\n";
    let out = Test::new().pipeline(text).env_remove("RUNNER_TEST_UNSET_REF").args(&["run", "pipeline.ron"]).run();
    out.assert_code(2).assert_stderr_contains("`RUNNER_TEST_UNSET_REF` is not set");
    let (line, column) = position(text, "${env:");
    assert_diagnostic(&out, text, line, column);
}

// ---------------------------------------------------------------------------------------------------------------
// Unset `${env:...}`: said once, and only by the commands that use the environment
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn run_says_an_unset_variable_once_as_an_error() {
    let test = Test::new()
        .write("pipeline.ron", &std::fs::read_to_string(repo_root().join("pipelines/example.ron")).unwrap())
        .env_remove("EXAMPLE_REPO")
        .args(&["run", "pipeline.ron"]);
    let out = test.run();
    out.assert_code(2);
    assert_eq!(out.stderr.matches("`EXAMPLE_REPO` is not set").count(), 1, "{}", out.dump());
    assert!(!out.stderr.contains("warning"), "{}", out.dump());
    // The variable names a repository: a local checkout does as well.
    out.assert_stderr_contains(
        "nothing ran: set EXAMPLE_REPO and run again (or give the source as a local checkout: --source-dir PATH)",
    );
}

#[test]
fn history_and_status_say_nothing_of_unset_variables() {
    let text = "Pipeline(name: \"p\", steps: [Step(id: \"a\", kind: Shell(commands: [\"echo ${env:RUNNER_TEST_READ_ONLY}\"]))])\n";
    let with = Test::new().pipeline(text).env("RUNNER_TEST_READ_ONLY", "x");
    let state = with.path().join(".runner").display().to_string();
    let file = with.path().join("pipeline.ron").display().to_string();
    with.run_with(&["run", "pipeline.ron"]).assert_code(0);
    let without = Test::new().env_remove("RUNNER_TEST_READ_ONLY");
    for command in ["history", "status"] {
        let out = without.run_with(&["--state-dir", &state, command, &file]);
        out.assert_code(0).assert_stderr_not_contains("RUNNER_TEST_READ_ONLY").assert_stdout_contains("succeeded");
    }
    without.run_with(&["validate", &file]).assert_code(0).assert_stderr_contains("RUNNER_TEST_READ_ONLY");
}
