//! Parameters and shared definitions: `include` takes another file's parameters and steps, `values` gives the
//! parameters their values, `${param:NAME}` uses them in any field. What `validate`, `plan`, `graph` and `run` say
//! about them, with positions in the file where each problem is written.

mod common;

use common::*;

/// A shared definition: two parameters without a default, one with, an Approval only where it is required.
const SHARED: &str = r#"// The steps every environment runs.
Pipeline(
    parameters: {
        "environment": (description: "the stage: dev, test or prod"),
        "branch": (description: "the branch the stage deploys"),
        "region": (default: "us-east-1", description: "the stage's region"),
        "approval": (default: "false", description: "whether a person approves the deploy"),
        "target": (default: "${param:environment}-${param:region}"),
    },
    steps: [
        Step(id: "build", kind: Shell(commands: ["echo building ${param:branch} for ${param:target}"])),
        Step(
            id: "approve",
            needs: ["build"],
            kind: Approval(message: "deploy to ${param:environment}?", required: "${param:approval}"),
        ),
        Step(
            id: "deploy-${param:environment}",
            needs: ["approve"],
            kind: Shell(commands: ["echo deploying to ${param:region}", "echo TARGET=${param:target} >> $RUNNER_OUTPUT"]),
            env: {"STAGE": "${param:environment}"},
        ),
    ],
)
"#;

const PROD: &str = r#"// Only what is prod's.
Pipeline(
    name: "prod",
    include: ["shared.ron"],
    values: {
        "environment": "prod",
        "branch": "production",
        "approval": "true",
    },
)
"#;

const DEV: &str = r#"Pipeline(
    name: "dev",
    include: ["shared.ron"],
    values: {"environment": "dev", "branch": "dev", "region": "eu-west-1"},
)
"#;

fn shared() -> Test {
    Test::new().write("pipelines/shared.ron", SHARED).write("pipelines/prod.ron", PROD).write("pipelines/dev.ron", DEV)
}

#[test]
fn plan_shows_the_values_each_environment_gives_the_shared_steps() {
    let t = shared();
    let out = t.run_with(&["plan", "pipelines/prod.ron"]);
    out.assert_success();
    out.assert_stdout_contains("pipeline `prod`: 3 steps");
    out.assert_stdout_contains("environment  = prod  (the stage: dev, test or prod)");
    out.assert_stdout_contains("region       = us-east-1  (the stage's region)");
    out.assert_stdout_contains("target       = prod-us-east-1");
    out.assert_stdout_contains("echo building production for prod-us-east-1");
    out.assert_stdout_contains("deploy-prod");
    out.assert_stdout_contains("wait for a person's approval: deploy to prod?");
    assert!(!out.stdout.contains("${param:"), "an unresolved parameter in the plan\n{}", out.dump());

    let out = t.run_with(&["plan", "pipelines/dev.ron"]);
    out.assert_success();
    out.assert_stdout_contains("target       = dev-eu-west-1");
    out.assert_stdout_contains("deploy-dev");
    out.assert_stdout_contains("no approval needed here (required: false)");
}

#[test]
fn graph_shows_the_resolved_step_ids() {
    let t = shared();
    for format in ["text", "dot", "mermaid"] {
        let out = t.run_with(&["graph", "pipelines/dev.ron", "--format", format]);
        out.assert_success();
        out.assert_stdout_contains("deploy-dev");
        assert!(!out.stdout.contains("param:"), "{format}: an unresolved parameter\n{}", out.dump());
    }
}

#[test]
fn a_run_gets_the_values_in_commands_env_and_outputs() {
    let t = shared();
    let out = t.run_with(&["run", "pipelines/dev.ron", "--output", "json"]);
    out.assert_success();
    let statuses = out.statuses();
    assert_eq!(statuses.get("approve").map(String::as_str), Some("succeeded"), "{}", out.dump());
    let deploy = out.finished("deploy-dev");
    assert_eq!(deploy["outputs"]["TARGET"], "dev-eu-west-1", "{}", out.dump());
    out.assert_stdout_contains("building dev for dev-eu-west-1");
    out.assert_stdout_contains("deploying to eu-west-1");
    let approve = out.finished("approve");
    assert_eq!(approve["outputs"]["APPROVED_BY"], "not required", "{}", out.dump());
}

#[test]
fn a_required_approval_from_a_parameter_still_waits_for_a_person() {
    // In CI nobody can answer: the step fails at once, saying how to approve.
    let t = shared();
    let out = t.run_with(&["run", "pipelines/prod.ron", "--output", "json"]);
    out.assert_code(1);
    assert_eq!(out.statuses().get("approve").map(String::as_str), Some("failed"), "{}", out.dump());
    out.assert_output_contains("--approve approve");
    let out = t.run_with(&["run", "pipelines/prod.ron", "--output", "json", "--approve", "approve"]);
    out.assert_success();
    assert_eq!(out.finished("deploy-prod")["outputs"]["TARGET"], "prod-us-east-1");
}

#[test]
fn an_unknown_parameter_in_a_shared_step_gets_the_closest_name_at_its_position() {
    let shared = SHARED.replace("echo deploying to ${param:region}", "echo deploying to ${param:regoin}");
    let t = Test::new().write("pipelines/shared.ron", &shared).write("pipelines/prod.ron", PROD);
    let out = t.run_with(&["validate", "pipelines/prod.ron"]);
    out.assert_code(2);
    out.assert_stderr_contains("error: unknown parameter `regoin`");
    out.assert_stderr_contains("did you mean `region`?");
    let (line, column) = position(&shared, "${param:regoin}");
    assert_diagnostic_in(&out, "pipelines/shared.ron", &shared, line, column);
    // The caret spans the reference, not the whole command.
    out.assert_stderr_contains(&format!(" {} did you mean", "^".repeat("${param:regoin}".len())));
}

#[test]
fn a_value_for_an_unknown_parameter_gets_the_closest_name() {
    let prod = PROD.replace(r#""environment": "prod""#, r#""enviroment": "prod""#);
    let t = Test::new().write("pipelines/shared.ron", SHARED).write("pipelines/prod.ron", &prod);
    let out = t.run_with(&["validate", "pipelines/prod.ron"]);
    out.assert_code(2);
    out.assert_stderr_contains("`values` gives unknown parameter `enviroment`");
    out.assert_stderr_contains("did you mean `environment`?");
    let (line, column) = position(&prod, r#""enviroment": "prod""#);
    assert_diagnostic_in(&out, "pipelines/prod.ron", &prod, line, column + r#""enviroment": "#.len());
    // And so `environment` itself has no value: said at its declaration, naming the file to give it in.
    out.assert_stderr_contains("parameter `environment` (the stage: dev, test or prod) has no value");
    out.assert_stderr_contains("give it in `values` of pipelines/prod.ron");
    let (line, column) = position(SHARED, r#"(description: "the stage: dev, test or prod")"#);
    assert_diagnostic_in(&out, "pipelines/shared.ron", SHARED, line, column);
}

#[test]
fn a_parameter_without_a_value_stops_the_run_before_anything_runs() {
    let prod = PROD.replace("        \"branch\": \"production\",\n", "");
    let t = Test::new().write("pipelines/shared.ron", SHARED).write("pipelines/prod.ron", &prod);
    let out = t.run_with(&["run", "pipelines/prod.ron"]);
    out.assert_code(2);
    out.assert_stderr_contains("error: parameter `branch` (the branch the stage deploys) has no value");
    let (line, column) = position(SHARED, r#"(description: "the branch the stage deploys")"#);
    assert_diagnostic_in(&out, "pipelines/shared.ron", SHARED, line, column);
    assert!(!t.exists(".runner/runs"), "a run was recorded though nothing may run\n{}", out.dump());
}

#[test]
fn an_include_cycle_is_spelled_out_at_the_include_that_closes_it() {
    let a =
        "Pipeline(name: \"a\", include: [\"b.ron\"], steps: [Step(id: \"x\", kind: Shell(commands: [\"true\"]))])\n";
    let b = "Pipeline(\n    include: [\"c.ron\"],\n)\n";
    let c = "Pipeline(\n    include: [\"a.ron\"],\n)\n";
    let t = Test::new().write("p/a.ron", a).write("p/b.ron", b).write("p/c.ron", c);
    let out = t.run_with(&["validate", "p/a.ron"]);
    out.assert_code(2);
    out.assert_stderr_contains("error: include cycle: p/a.ron -> p/b.ron -> p/c.ron -> p/a.ron");
    let (line, column) = position(c, "\"a.ron\"");
    assert_diagnostic_in(&out, "p/c.ron", c, line, column);
}

#[test]
fn a_file_that_includes_itself_is_a_cycle_too() {
    let a = "Pipeline(name: \"a\", include: [\"./a.ron\"])\n";
    let t = Test::new().write("a.ron", a);
    let out = t.run_with(&["validate", "a.ron"]);
    out.assert_code(2).assert_stderr_contains("error: include cycle: a.ron -> ./a.ron");
    let (line, column) = position(a, "\"./a.ron\"");
    assert_diagnostic_in(&out, "a.ron", a, line, column);
}

#[test]
fn a_missing_included_file_is_reported_at_its_include_entry() {
    let prod = PROD.replace("shared.ron", "shraed.ron");
    let t = Test::new().write("pipelines/shared.ron", SHARED).write("pipelines/prod.ron", &prod);
    let out = t.run_with(&["validate", "pipelines/prod.ron"]);
    out.assert_code(2).assert_stderr_contains("cannot read included file pipelines/shraed.ron: no such file");
    let (line, column) = position(&prod, "\"shraed.ron\"");
    assert_diagnostic_in(&out, "pipelines/prod.ron", &prod, line, column);
}

#[test]
fn bad_ron_in_an_included_file_is_reported_in_that_file() {
    let shared = SHARED.replace("kind: Shell(commands: [\"echo building", "kind: Shel(commands: [\"echo building");
    let t = Test::new().write("pipelines/shared.ron", &shared).write("pipelines/prod.ron", PROD);
    let out = t.run_with(&["validate", "pipelines/prod.ron"]);
    out.assert_code(2).assert_stderr_contains("did you mean `Shell`?");
    out.assert_stderr_contains(&format!("pipelines/shared.ron:{}:", line_of(&shared, "Shel(")));
}

#[test]
fn parameters_that_refer_to_each_other_in_a_cycle_are_spelled_out() {
    let text = r#"Pipeline(
    name: "loop",
    parameters: {
        "a": (default: "x-${param:b}"),
        "b": (default: "${param:a}-y"),
    },
    steps: [Step(id: "s", kind: Shell(commands: ["echo ${param:a}"]))],
)
"#;
    let out = Test::new().pipeline(text).run_with(&["validate", "pipeline.ron"]);
    out.assert_code(2).assert_stderr_contains("parameters refer to each other in a cycle: a -> b -> a");
}

#[test]
fn a_step_defined_in_two_files_points_at_the_first_definition() {
    let prod = PROD.replace(
        "    values: {",
        "    steps: [Step(id: \"build\", kind: Shell(commands: [\"true\"]))],\n    values: {",
    );
    let t = Test::new().write("pipelines/shared.ron", SHARED).write("pipelines/prod.ron", &prod);
    let out = t.run_with(&["validate", "pipelines/prod.ron"]);
    out.assert_code(2).assert_stderr_contains("duplicate step id `build`");
    out.assert_stderr_contains(&format!("first defined on pipelines/shared.ron:{}", line_of(SHARED, "id: \"build\"")));
    let (line, column) = position(&prod, "\"build\"");
    assert_diagnostic_in(&out, "pipelines/prod.ron", &prod, line, column);
}

#[test]
fn a_parameter_declared_in_two_files_is_an_error() {
    let prod = PROD.replace("    values: {", "    parameters: {\"region\": (default: \"eu-west-1\")},\n    values: {");
    let t = Test::new().write("pipelines/shared.ron", SHARED).write("pipelines/prod.ron", &prod);
    let out = t.run_with(&["validate", "pipelines/prod.ron"]);
    out.assert_code(2).assert_stderr_contains("parameter `region` is declared twice");
    out.assert_stderr_contains("first declared in pipelines/shared.ron; give its value in `values` instead");
}

#[test]
fn a_literal_dollar_brace_stays_literal() {
    let text = r#"Pipeline(
    name: "literal",
    parameters: {"who": (default: "world")},
    steps: [Step(id: "s", kind: Shell(commands: ["echo '$${param:who}' ${param:who}"]))],
)
"#;
    let out = Test::new().pipeline(text).run_with(&["run", "pipeline.ron", "--output", "plain"]);
    out.assert_success().assert_stdout_contains("${param:who} world");
}
