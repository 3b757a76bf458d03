//! A new user's setup, as README tells it: what each install script installs, the emulator sequence README
//! documents run as written, and the build profiles (a small release binary to ship, symbols only for benches).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn listed(script: &str) -> Vec<String> {
    let out = Command::new(repo_root().join("scripts").join(script)).arg("--list").output().expect("run the script");
    assert!(out.status.success(), "{script} --list: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).unwrap()
}

#[test]
fn the_demo_installs_only_what_the_demo_needs_and_readme_says_what_each_script_installs() {
    let demo = listed("install-demo-deps");
    let test = listed("install-test-deps");
    for server in ["openssh-server", "graphviz"] {
        assert!(!demo.iter().any(|p| p == server), "the demo does not install {server}: {demo:?}");
        assert!(test.iter().any(|p| p == server), "the tests do: {test:?}");
    }
    assert!(demo.iter().all(|p| test.contains(p)), "the tests need what the demo needs");
    let script = std::fs::read_to_string(repo_root().join("scripts/demo")).unwrap();
    assert!(script.contains("scripts/install-demo-deps"), "scripts/demo installs with install-demo-deps");
    assert!(!script.contains("install-test-deps"), "scripts/demo does not run the test installer");
    let build = script.lines().find(|l| l.trim_start().starts_with("cargo build")).expect("scripts/demo builds runner");
    assert!(!build.contains("--quiet") && !build.contains(" -q"), "scripts/demo shows cargo's progress: {build}");
    // README's table: each script's row names what it adds.
    let readme = readme();
    let row = |script: &str| {
        readme
            .lines()
            .find(|l| l.starts_with(&format!("| `scripts/{script}`")))
            .unwrap_or_else(|| panic!("README has no row for scripts/{script}"))
            .to_string()
    };
    let build = listed("install-build-deps");
    for p in build.iter().filter(|p| *p != "git") {
        assert!(row("install-build-deps").contains(p.as_str()), "README: install-build-deps installs {p}");
    }
    for p in demo.iter().filter(|p| !build.contains(p) && *p != "python3") {
        assert!(row("install-demo-deps").contains(p.as_str()), "README: install-demo-deps installs {p}");
    }
    for p in test.iter().filter(|p| !demo.contains(p)) {
        assert!(row("install-test-deps").contains(p.as_str()), "README: install-test-deps installs {p}");
    }
}

/// The virtualenv `scripts/moto` should use: the one the tests' emulator comes from.
fn venv() -> PathBuf {
    match std::env::var_os("RUNNER_MOTO_PYTHON") {
        Some(python) => PathBuf::from(python).parent().and_then(Path::parent).unwrap().to_path_buf(),
        None => PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/runner-venv"),
    }
}

#[test]
fn the_documented_emulator_sequence_works_as_written() {
    let readme = readme();
    let block: String = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(code, _)| code))
        .find(|code| code.contains("eval \"$(scripts/moto start)\""))
        .expect("README shows how to point commands at the emulator")
        .to_string();
    // A copy of what the sequence reads: the pipelines, their templates, and scripts/moto.
    let work = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("pipelines"), &work.path().join("pipelines"));
    copy_datalake_app(work.path());
    std::fs::create_dir_all(work.path().join("scripts")).unwrap();
    std::fs::copy(repo_root().join("scripts/moto"), work.path().join("scripts/moto")).unwrap();
    let bin_dir = Path::new(runner_bin()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out_dir = tempfile::tempdir().unwrap();
    let mut sh = Command::new("bash");
    sh.arg("-euc")
        .arg(format!("trap 'scripts/moto stop' EXIT\n{block}"))
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out_dir.path().join("out")).unwrap())
        .stderr(std::fs::File::create(out_dir.path().join("err")).unwrap())
        .env("PATH", path)
        .env("RUNNER_VENV", venv())
        .env("MOTO_STATE_DIR", work.path().join(".moto"))
        .env("CI", "1")
        // The synth's assembly under a home of the test's own; node_modules where every run finds them.
        .env("HOME", work.path().join("home"))
        .env("DATALAKE_NODE_MODULES_CACHE", node_modules_cache())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"] {
        sh.env_remove(var);
    }
    sh.env_remove("AWS_DEFAULT_REGION").env_remove("AWS_ENDPOINT_URL").env_remove("RUST_LOG");
    let status = sh.status().unwrap();
    let out = std::fs::read_to_string(out_dir.path().join("out")).unwrap();
    let err = std::fs::read_to_string(out_dir.path().join("err")).unwrap();
    assert!(status.success(), "README's sequence failed ({status}):\n{block}\n--- stdout\n{out}\n--- stderr\n{err}");
    assert!(out.contains("[deploy/Prod-S3BucketZones] succeeded"), "{out}\n{err}");
    assert!(out.contains("[smoke-test] succeeded"), "{out}\n{err}");
}

#[test]
fn the_release_build_ships_without_debug_info_and_only_benchmarks_keep_symbols() {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let section = |name: &str| -> String {
        let start = manifest.find(&format!("[profile.{name}]")).unwrap_or_else(|| panic!("[profile.{name}]"));
        manifest[start..].lines().skip(1).take_while(|l| !l.starts_with('[')).collect::<Vec<_>>().join("\n")
    };
    let release = section("release");
    assert!(release.contains("debug = false") && release.contains("strip = true"), "{release}");
    let bench = section("bench");
    assert!(bench.contains("debug = 1") && bench.contains("strip = false"), "{bench}");
}

/// Each crate of the dependency tree with the features cargo resolves for it: `(name version, features)`.
fn resolved_features(edges: &str) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args(["tree", "--workspace", "--locked", "--offline", "--prefix", "none", "-e", edges, "-f", "{p}|{f}"])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree -e {edges}: {}", String::from_utf8_lossy(&out.stderr));
    let mut crates = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((package, features)) = line.trim_end_matches(" (*)").split_once('|') else { continue };
        let package = package.split(" (").next().unwrap().to_string();
        let entry = crates.entry(package).or_default();
        entry.extend(features.split(',').filter(|f| !f.is_empty()).map(str::to_string));
    }
    crates
}

#[test]
fn the_demos_build_and_the_tests_resolve_one_feature_set_so_shared_crates_compile_once() {
    let build = resolved_features("normal,build");
    let tests = resolved_features("normal,build,dev");
    assert!(build.len() > 100 && tests.len() > build.len(), "{} and {} crates", build.len(), tests.len());
    let drifted: Vec<String> = build
        .iter()
        .filter_map(|(package, features)| {
            let with_tests = &tests[package];
            (with_tests != features).then(|| {
                let added: Vec<&String> = with_tests.difference(features).collect();
                format!("{package}: the tests add {added:?}")
            })
        })
        .collect();
    assert!(
        drifted.is_empty(),
        "declare these features in Cargo.toml's unification block, or `cargo test` compiles them (and all above \
         them) a second time:\n{}",
        drifted.join("\n")
    );
}

#[test]
fn install_node_says_which_node_once_and_not_again_when_quiet() {
    let run = |args: &[&str]| Command::new(repo_root().join("scripts/install-node")).args(args).output().unwrap();
    let (said, quiet) = (run(&[]), run(&["--quiet"]));
    assert!(said.status.success() && quiet.status.success(), "{said:?}\n{quiet:?}");
    assert!(String::from_utf8_lossy(&said.stderr).contains("install-node: using node"), "{said:?}");
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "", "--quiet says nothing when nothing is downloaded");
    assert_eq!(said.stdout, quiet.stdout, "both print the same PATH entry");
}

#[test]
fn the_node_modules_link_the_synth_leaves_in_the_clone_is_ignored_by_git() {
    // datalake/npm-ci-cached links node_modules (not a directory) to the cache; `node_modules/` would not match it.
    let status = Command::new("git")
        .current_dir(repo_root())
        .args(["check-ignore", "-q", "--no-index", "datalake/node_modules"])
        .status()
        .unwrap();
    assert!(status.success(), "git status shows datalake/node_modules after a run");
}
