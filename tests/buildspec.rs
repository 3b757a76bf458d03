//! Inside AWS CodeBuild: the shipped `buildspec.yml`, parsed and its phases' commands run under `sh` the way
//! CodeBuild runs them (one shell for every command, stopping at the first that fails) with the `CODEBUILD_*`
//! variables set; the Source step uses CodeBuild's checkout; the run becomes a JUnit report where the buildspec's
//! `reports` section says CodeBuild picks it up.

mod common;
mod emulator;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use emulator::Moto;
use yaml_rust2::{Yaml, YamlLoader};

/// What the tests need from `buildspec.yml`.
struct Buildspec {
    /// `env.variables`.
    variables: BTreeMap<String, String>,
    /// Commands of the phases, in CodeBuild's order (install, pre_build, build, post_build).
    commands: Vec<String>,
    /// Where each report's files are: `base-directory/files[i]`, with its `file-format`.
    reports: Vec<(PathBuf, String)>,
}

fn buildspec() -> Buildspec {
    let text =
        std::fs::read_to_string(repo_root().join("buildspec.yml")).expect("buildspec.yml at the repository root");
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("buildspec.yml is not YAML: {e}"));
    let doc = &docs[0];
    assert_eq!(doc["version"].as_f64(), Some(0.2), "buildspec version 0.2");
    let variables = doc["env"]["variables"]
        .as_hash()
        .map(|h| h.iter().map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string())).collect())
        .unwrap_or_default();
    let phases = doc["phases"].as_hash().expect("phases");
    for name in phases.keys() {
        let name = name.as_str().unwrap_or("");
        assert!(["install", "pre_build", "build", "post_build"].contains(&name), "unknown phase {name}");
    }
    let mut commands = Vec::new();
    for phase in ["install", "pre_build", "build", "post_build"] {
        if let Some(list) = doc["phases"][phase]["commands"].as_vec() {
            commands.extend(list.iter().map(|c| c.as_str().expect("commands are strings").to_string()));
        }
    }
    let reports = doc["reports"]
        .as_hash()
        .expect("a reports section")
        .values()
        .flat_map(|group| {
            let base = PathBuf::from(group["base-directory"].as_str().unwrap_or("."));
            let format = group["file-format"].as_str().unwrap_or("").to_string();
            let files: Vec<Yaml> = group["files"].as_vec().cloned().unwrap_or_default();
            files.into_iter().map(move |f| (base.join(f.as_str().unwrap()), format.clone()))
        })
        .collect();
    Buildspec { variables, commands, reports }
}

/// Runs every command of the buildspec in one `sh`, like CodeBuild: the first failing command ends the build with
/// its status. `env`: the build's environment (the buildspec's variables are defaults under it).
fn run_buildspec(spec: &Buildspec, src: &Path, env: &[(&str, String)], remove: &[&str]) -> Output {
    let mut script = String::new();
    for command in &spec.commands {
        script.push_str(command);
        script.push_str("\nrc=$?; if [ $rc -ne 0 ]; then echo \"command failed with $rc\" >&2; exit $rc; fi\n");
    }
    let out_dir = tempfile::tempdir().unwrap();
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(&script)
        .current_dir(src)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out_dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(out_dir.path().join("stderr")).unwrap())
        .env_remove("CI")
        .env_remove("RUST_LOG")
        .env_remove("RUNNER_BIN");
    for key in remove {
        sh.env_remove(key);
    }
    for (k, v) in &spec.variables {
        sh.env(k, v);
    }
    for (k, v) in env {
        sh.env(k, v);
    }
    let started = std::time::Instant::now();
    let mut child = sh.spawn().expect("run sh");
    let deadline = started + RUN_TIMEOUT * 2;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the buildspec's commands still ran after {:?}", RUN_TIMEOUT * 2);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let read = |name: &str| std::fs::read_to_string(out_dir.path().join(name)).unwrap_or_default();
    Output {
        stdout: read("stdout"),
        stderr: read("stderr"),
        code: status.code(),
        signal: None,
        elapsed: started.elapsed(),
        command: "sh -c <buildspec.yml commands>".into(),
    }
}

/// What CodeBuild checks out: this repository's pipelines, CDK app (without node_modules) and buildspec, committed;
/// `CODEBUILD_SRC_DIR`.
fn codebuild_source() -> GitRepo {
    let src = GitRepo::new();
    common::copy_dir(&repo_root().join("pipelines"), &src.path().join("pipelines"));
    common::copy_datalake_app(src.path());
    std::fs::copy(repo_root().join("buildspec.yml"), src.path().join("buildspec.yml")).unwrap();
    src.git(&["add", "-A"]);
    src.git(&["commit", "-q", "-m", "infrastructure as CodeBuild sees it"]);
    src
}

fn codebuild_env(src: &GitRepo) -> Vec<(&'static str, String)> {
    vec![
        ("CODEBUILD_BUILD_ID", "datalake-prod:0f1e2d3c-4b5a-6978-8899-aabbccddeeff".into()),
        ("CODEBUILD_SRC_DIR", src.path_str()),
        ("CODEBUILD_RESOLVED_SOURCE_VERSION", src.head()),
        ("CODEBUILD_SOURCE_VERSION", "refs/heads/production".into()),
        ("CODEBUILD_WEBHOOK_HEAD_REF", "refs/heads/production".into()),
        ("CODEBUILD_INITIATOR", "codepipeline/datalake".into()),
    ]
}

/// The JUnit report the buildspec's `reports` section points at, read back.
fn report(spec: &Buildspec, src: &Path, out: &Output) -> Junit {
    assert_eq!(spec.reports.len(), 1, "one report file: {:?}", spec.reports);
    let (file, format) = &spec.reports[0];
    assert_eq!(format, "JUNITXML");
    let xml = std::fs::read_to_string(src.join(file))
        .unwrap_or_else(|e| panic!("no report at {} ({e})\n{}", file.display(), out.dump()));
    parse_junit(&xml)
}

#[test]
fn the_shipped_buildspec_runs_the_prod_pipeline_on_codebuilds_checkout_and_reports_each_step() {
    let spec = buildspec();
    assert_eq!(spec.variables.get("PIPELINE").map(String::as_str), Some("prod"), "the default pipeline");
    let moto = Moto::start();
    let src = codebuild_source();
    let home = tempfile::tempdir().unwrap();
    let mut env = codebuild_env(&src);
    env.push(("RUNNER_BIN", runner_bin().to_string()));
    env.push(("AWS_ENDPOINT_URL", moto.endpoint()));
    env.push(("AWS_ACCESS_KEY_ID", "testing".into()));
    env.push(("AWS_SECRET_ACCESS_KEY", "testing".into()));
    env.push(("AWS_REGION", "us-east-1".into()));
    env.push(("AWS_DEFAULT_REGION", "us-east-1".into()));
    env.push(("AWS_MAX_ATTEMPTS", "1".into()));
    env.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    env.push(("AWS_CONFIG_FILE", "/dev/null".into()));
    env.push(("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()));
    // A manual approval before the build asked already.
    env.push(("RUNNER_ARGS", "--approve approve".into()));
    // The synth's assembly in the test's home; node_modules where every run on this machine finds them.
    env.push(("HOME", home.path().to_str().unwrap().to_string()));
    env.push(("DATALAKE_NODE_MODULES_CACHE", node_modules_cache()));
    // The deployment account's configuration and the prod account's bootstrap, as an administrator set them up.
    // Their runs are kept apart from the build's (the source's .runner holds the build's run alone).
    let setup_state = home.path().join("setup");
    for args in [
        vec!["run", "pipelines/configure.ron", "--output", "plain"],
        vec![
            "bootstrap",
            "aws://333333333333/us-east-1",
            "--trust",
            "123456789012",
            "--role",
            "arn:aws:iam::333333333333:role/OrganizationAccountAccessRole",
        ],
    ] {
        let mut setup = Command::new(runner_bin());
        setup.arg("--state-dir").arg(&setup_state).args(&args).current_dir(src.path()).stdin(Stdio::null());
        setup.env_remove("CI");
        for (k, v) in &env {
            if k.starts_with("AWS_") {
                setup.env(k, v);
            }
        }
        let done = setup.output().unwrap();
        assert!(done.status.success(), "runner {args:?}: {}", String::from_utf8_lossy(&done.stderr));
    }
    // No DATALAKE_REPO: the Source must not clone.
    let out = run_buildspec(&spec, src.path(), &env, &["DATALAKE_REPO", "AWS_PROFILE", "AWS_SESSION_TOKEN"]);
    out.assert_code(0).assert_stdout_contains("[source] using CodeBuild's checkout");
    assert!(!src.path().join(".runner/workspaces").exists(), "the Source cloned instead of using the checkout");
    // Plain lines (for CloudWatch Logs): timestamped and prefixed by the step.
    assert!(out.stdout.lines().any(|l| l.contains(" [deploy/Prod-S3BucketZones] succeeded")), "{}", out.dump());

    let junit = report(&spec, src.path(), &out);
    let names: Vec<&str> = junit.cases.iter().map(|c| c.name.as_str()).collect();
    for node in [
        "source",
        "synth",
        "approve",
        "deploy/Prod-Vpc",
        "deploy/Prod-S3BucketZones",
        "deploy/Prod-DynamoDb",
        "deploy/Prod-Iam",
        "outputs",
        "smoke-test",
    ] {
        assert!(names.contains(&node), "no test case for {node}: {names:?}");
    }
    assert!(
        junit.cases.iter().all(|c| c.classname == "prod" && c.failure.is_none() && c.skipped.is_none()),
        "{junit:#?}"
    );

    let state_file = single_run_dir(src.path()).join("state.json");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state_file).unwrap()).unwrap();
    let outputs = &state["nodes"]["source"]["outputs"];
    assert_eq!(outputs["COMMIT_ID"].as_str(), Some(src.head().as_str()), "COMMIT_ID is CodeBuild's resolved version");
    assert_eq!(outputs["BRANCH"].as_str(), Some("production"), "BRANCH from the webhook's head ref");
    assert_eq!(outputs["COMMIT_AUTHOR"].as_str(), Some("Runner Test <runner-test@example.com>"));
}

#[test]
fn the_buildspec_uses_a_prebuilt_runner_and_a_failing_pipeline_fails_the_build_with_a_report() {
    let spec = buildspec();
    let src = codebuild_source();
    std::fs::create_dir_all(src.path().join("bin")).unwrap();
    std::fs::copy(runner_bin(), src.path().join("bin/runner")).unwrap();
    std::fs::write(
        src.path().join("pipelines/broken.ron"),
        r#"Pipeline(
    name: "broken",
    steps: [
        Step(id: "source", kind: Source(repository: "${env:NOT_SET_IN_CODEBUILD}")),
        Step(id: "check", needs: ["source"], kind: Shell(commands: ["test -f buildspec.yml", "echo 'checks failed' >&2; exit 4"])),
        Step(id: "after", needs: ["check"], kind: Shell(commands: ["true"])),
    ],
)
"#,
    )
    .unwrap();
    let mut env = codebuild_env(&src);
    env.push(("PIPELINE", "broken".into()));
    let out = run_buildspec(&spec, src.path(), &env, &["NOT_SET_IN_CODEBUILD"]);
    assert_ne!(out.code, Some(0), "a failed pipeline must fail the build\n{}", out.dump());
    out.assert_stdout_contains("using the prebuilt");
    let junit = report(&spec, src.path(), &out);
    assert!(junit.case("source").failure.is_none(), "{junit:#?}");
    let check = junit.case("check");
    assert!(check.failure.as_ref().is_some_and(|(m, _)| m.contains("exit")), "{check:?}");
    assert!(check.system_out.contains("checks failed"), "{check:?}");
    assert!(junit.case("after").skipped.is_some());
}

#[test]
fn the_buildspec_fetches_a_shipped_runner_from_runner_bin_url_instead_of_compiling_it() {
    let spec = buildspec();
    let src = codebuild_source();
    let artifacts = tempfile::tempdir().unwrap();
    let shipped = artifacts.path().join("runner");
    std::fs::copy(runner_bin(), &shipped).unwrap();
    std::fs::write(
        src.path().join("pipelines/small.ron"),
        r#"Pipeline(name: "small", steps: [
    Step(id: "source", kind: Source(repository: "${env:NOT_SET_IN_CODEBUILD}")),
    Step(id: "check", needs: ["source"], kind: Shell(commands: ["test -f buildspec.yml"])),
])"#,
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut env = codebuild_env(&src);
    env.push(("PIPELINE", "small".into()));
    env.push(("RUNNER_BIN_URL", format!("file://{}", shipped.display())));
    env.push(("HOME", home.path().display().to_string()));
    // No cargo on PATH: a build that tried to compile runner would fail.
    env.push(("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()));
    let out = run_buildspec(&spec, src.path(), &env, &["CARGO_HOME", "RUSTUP_HOME", "NOT_SET_IN_CODEBUILD"]);
    out.assert_success();
    out.assert_stdout_contains(&format!("using runner from file://{}", shipped.display()));
    assert!(home.path().join(".local/bin/runner").exists(), "{}", out.dump());
    let junit = report(&spec, src.path(), &out);
    assert!(junit.case("check").failure.is_none(), "{junit:#?}");
}

#[test]
fn the_buildspec_caches_cargos_downloads_and_the_build_it_compiles() {
    let text = std::fs::read_to_string(repo_root().join("buildspec.yml")).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let paths: Vec<&str> =
        doc["cache"]["paths"].as_vec().expect("a cache section").iter().filter_map(Yaml::as_str).collect();
    for kept in ["/root/.cargo/registry/**/*", "target/**/*"] {
        assert!(paths.contains(&kept), "{kept} is cached: {paths:?}");
    }
    // The build goes where the cache keeps it.
    let install = doc["phases"]["install"]["commands"][0].as_str().unwrap();
    assert!(install.contains("CARGO_TARGET_DIR=\"$PWD/target\""), "{install}");
}

/// Runs `runner run pipeline.ron` in `dir` with its stderr on a pseudo-terminal (so that it could draw progress
/// bars) and `CI` unset; returns its stdout.
fn run_on_a_terminal(dir: &Path, codebuild: bool) -> String {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    let (mut master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
    // Drain the terminal so the runner never blocks writing to it.
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = master.read_to_end(&mut sink);
    });
    let stdout = dir.join("stdout.txt");
    let mut command = Command::new(runner_bin());
    command
        .args(["run", "pipeline.ron"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(slave)
        .env_remove("CI")
        .env_remove("CODEBUILD_BUILD_ID");
    if codebuild {
        command.env("CODEBUILD_BUILD_ID", "p:1").env("CODEBUILD_SRC_DIR", dir);
    }
    let status = command.status().expect("run runner");
    assert!(status.success(), "runner failed: {status:?}");
    drop(command);
    let _ = drain.join();
    std::fs::read_to_string(stdout).unwrap()
}

#[test]
fn inside_codebuild_the_output_is_plain_lines_even_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.ron"),
        r#"Pipeline(name: "lines", steps: [Step(id: "only", kind: Shell(commands: ["echo hello from the step"]))])"#,
    )
    .unwrap();
    let outside = run_on_a_terminal(dir.path(), false);
    assert!(!outside.contains("[only] hello from the step"), "a terminal outside CodeBuild gets bars:\n{outside}");
    let inside = run_on_a_terminal(dir.path(), true);
    assert!(inside.contains("[only] hello from the step"), "no plain lines in CodeBuild:\n{inside}");
}
