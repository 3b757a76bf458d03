//! `runner run --junit FILE`: the run as a JUnit XML report, read back with an XML parser.

mod common;

use common::*;

const MIXED: &str = r#"Pipeline(
    name: "mixed",
    steps: [
        Step(id: "build", kind: Shell(commands: ["echo 'building <everything> & more'", "sleep 0.2"])),
        Step(id: "test", needs: ["build"], kind: Shell(commands: ["echo 'about to fail' >&2", "exit 3"])),
        Step(id: "deploy", needs: ["test"], kind: Shell(commands: ["touch deployed"])),
        Step(id: "docs", kind: Shell(commands: ["true"])),
    ],
)
"#;

#[test]
fn junit_writes_one_test_case_per_step_with_failures_and_skips() {
    let test = Test::new().pipeline(MIXED).args(&["run", "pipeline.ron", "--junit", "reports/runner.xml"]);
    let out = test.run();
    out.assert_code(1);
    let xml = test.read("reports/runner.xml").unwrap_or_else(|| panic!("no report written\n{}", out.dump()));
    let report = parse_junit(&xml);

    let names: Vec<&str> = report.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["build", "test", "deploy", "docs"], "{xml}");
    assert!(report.cases.iter().all(|c| c.classname == "mixed"), "classname is the pipeline\n{xml}");
    assert_eq!(report.suite.get("name").map(String::as_str), Some("mixed"), "{xml}");
    assert_eq!(report.suite.get("tests").map(String::as_str), Some("4"), "{xml}");
    assert_eq!(report.suite.get("failures").map(String::as_str), Some("1"), "{xml}");
    assert_eq!(report.suite.get("skipped").map(String::as_str), Some("1"), "{xml}");

    let build = report.case("build");
    assert!(build.failure.is_none() && build.skipped.is_none(), "{build:?}");
    assert!(build.time >= 0.2 && build.time < 30.0, "build's time is in seconds: {}\n{xml}", build.time);
    assert!(build.system_out.contains("building <everything> & more"), "the log, escaped and read back: {build:?}");

    let failed = report.case("test");
    let (message, text) = failed.failure.clone().unwrap_or_else(|| panic!("`test` has no <failure>\n{xml}"));
    assert!(message.contains("exit") && message.contains('3'), "failure message: {message:?}\n{xml}");
    assert!(text.contains(&message), "the failure's text holds the whole error: {text:?}");
    assert!(failed.system_out.contains("about to fail"), "{failed:?}");

    let skipped = report.case("deploy");
    assert!(skipped.skipped.as_deref().is_some_and(|m| m.contains("skipped")), "{skipped:?}\n{xml}");
    assert!(skipped.failure.is_none());
    assert!(!test.exists("deployed"));

    assert!(report.case("docs").failure.is_none() && report.case("docs").skipped.is_none());
}

#[test]
fn junit_report_of_a_successful_run_has_no_failures() {
    let text = r#"Pipeline(name: "green", steps: [Step(id: "only", kind: Shell(commands: ["true"]))])"#;
    let test = Test::new().pipeline(text).args(&["run", "pipeline.ron", "--junit", "out.xml"]);
    let out = test.run();
    out.assert_code(0);
    let report = parse_junit(&test.read("out.xml").unwrap_or_default());
    assert_eq!(report.suite.get("failures").map(String::as_str), Some("0"));
    assert_eq!(report.suite.get("skipped").map(String::as_str), Some("0"));
    assert_eq!(report.cases.len(), 1);
    assert!(report.case("only").failure.is_none());
}

#[test]
fn junit_marks_steps_cancelled_by_fail_fast_as_skipped() {
    let text = r#"Pipeline(
    name: "fast",
    steps: [
        Step(id: "fails", kind: Shell(commands: ["exit 1"])),
        Step(id: "slow", kind: Shell(commands: ["sleep 20"])),
    ],
)
"#;
    let test = Test::new().pipeline(text).args(&["run", "pipeline.ron", "--fail-fast", "--junit", "out.xml"]);
    let out = test.run();
    out.assert_code(1);
    let report = parse_junit(&test.read("out.xml").unwrap_or_else(|| panic!("no report\n{}", out.dump())));
    assert!(report.case("fails").failure.is_some());
    let slow = report.case("slow");
    assert!(slow.skipped.as_deref().is_some_and(|m| m.contains("cancelled")), "{slow:?}\n{}", out.dump());
}

#[test]
fn junit_replaces_an_existing_report_whole() {
    let text = r#"Pipeline(name: "again", steps: [Step(id: "only", kind: Shell(commands: ["true"]))])"#;
    let test = Test::new().pipeline(text).write("out.xml", &"<old/>".repeat(10_000)).args(&[
        "run",
        "pipeline.ron",
        "--junit",
        "out.xml",
    ]);
    test.run().assert_code(0);
    let xml = test.read("out.xml").unwrap_or_default();
    assert!(!xml.contains("<old/>"), "{xml}");
    parse_junit(&xml);
    let leftovers: Vec<_> = std::fs::read_dir(test.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}
