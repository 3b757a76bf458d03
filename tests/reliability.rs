//! One run at a time per pipeline and state dir, and a run record that survives a crash (issue 12 items 5 and
//! 6): two runs started together, reading commands while a run holds the lock, a runner killed 50-150 ms after
//! it started, and every prefix of every file a recorded run leaves behind read by the next start.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// The first of `runs` to exit, with its index; the others keep running.
fn first_to_exit(runs: &mut [Running], timeout: Duration) -> (usize, Output) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        for (i, run) in runs.iter_mut().enumerate() {
            if let Some(out) = run.try_wait_for(Duration::ZERO) {
                return (i, out);
            }
        }
        assert!(std::time::Instant::now() < deadline, "no run exited within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A step that says it started, then holds the run until `release` exists.
const HOLD: &str = r#"Pipeline(name: "held", steps: [
    Step(id: "hold", kind: Shell(commands: ["echo $PPID >> started", "while [ ! -f release ]; do sleep 0.02; done"])),
    Step(id: "after", needs: ["hold"], kind: Shell(commands: ["echo after >> ran.txt"])),
])"#;

fn run_ids(dir: &Path) -> Vec<String> {
    run_dirs(dir).iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The pipeline lock
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn of_two_runs_started_together_one_runs_and_the_other_is_refused_naming_it() {
    let test = Test::new().pipeline(HOLD).args(&["run", "pipeline.ron"]);
    let mut runs = vec![test.spawn(), test.spawn()];
    let (refused, out) = first_to_exit(&mut runs, RUN_TIMEOUT);
    out.assert_code(2).assert_stderr_contains("another run of `held` is in progress (pid ");
    let holder = runs.remove(1 - refused);
    assert!(
        out.stderr.contains(&format!("pid {}", holder.pid())),
        "the message names the holder {}\n{}",
        holder.pid(),
        out.dump()
    );
    assert!(wait_until(Duration::from_secs(30), || test.exists("started")), "the holder's step started");
    let ids = run_ids(test.path());
    assert_eq!(ids.len(), 1, "one run recorded: {ids:?}");
    assert!(out.stderr.contains(&format!("run {}", ids[0])), "the message names the run {}\n{}", ids[0], out.dump());
    std::fs::write(test.path().join("release"), "").unwrap();
    holder.wait_for_exit(RUN_TIMEOUT).assert_code(0);
    assert_eq!(test.read("ran.txt").as_deref(), Some("after\n"), "the refused run ran nothing");
    let history = test.run_with(&["history", "pipeline.ron"]);
    history.assert_code(0);
    assert_eq!(history.stdout.matches("succeeded").count(), 1, "{}", history.dump());
}

#[test]
fn with_wait_a_second_run_queues_behind_the_first_under_its_own_run_id() {
    let test = Test::new().pipeline(HOLD).args(&["run", "pipeline.ron"]);
    let first = test.spawn();
    assert!(wait_until(Duration::from_secs(30), || test.exists("started")), "the first run's step started");
    let second = test.spawn_with(&["run", "pipeline.ron", "--wait"]);
    assert!(
        wait_until(Duration::from_secs(30), || second
            .stderr()
            .contains("waiting: another run of `held` is in progress")),
        "the second run says it waits\n{}",
        second.stderr()
    );
    assert_eq!(run_ids(test.path()).len(), 1, "the waiting run recorded nothing yet");
    std::fs::write(test.path().join("release"), "").unwrap();
    first.wait_for_exit(RUN_TIMEOUT).assert_code(0);
    second.wait_for_exit(RUN_TIMEOUT).assert_code(0);
    let ids = run_ids(test.path());
    assert_eq!(ids.len(), 2, "two runs, two ids: {ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(test.read("ran.txt").as_deref(), Some("after\nafter\n"));
    let history = test.run_with(&["history", "pipeline.ron"]);
    assert_eq!(history.stdout.matches("succeeded").count(), 2, "{}", history.dump());
}

#[test]
fn approve_status_and_history_work_while_a_run_holds_the_lock() {
    let pipeline = r#"Pipeline(name: "gated", steps: [
        Step(id: "build", kind: Shell(commands: ["echo built"])),
        Step(id: "gate", needs: ["build"], kind: Approval(message: "go on?")),
        Step(id: "deploy", needs: ["gate"], kind: Shell(commands: ["echo deployed >> ran.txt"])),
    ])"#;
    // Not in CI: the Approval waits for `runner approve`.
    let test = Test::new().pipeline(pipeline).env_remove("CI").args(&["run", "pipeline.ron", "--output", "plain"]);
    let run = test.spawn();
    let waiting = || {
        run_dirs(test.path())
            .first()
            .and_then(|d| engine::record::RunState::load(d).ok())
            .is_some_and(|s| s.nodes.get("gate").is_some_and(|g| g.status == "running"))
    };
    assert!(wait_until(Duration::from_secs(30), waiting), "the gate waits\n{}", run.stderr());
    let id = run_ids(test.path()).remove(0);

    let status = test.run_with(&["status", "pipeline.ron"]);
    status.assert_code(0).assert_stdout_contains(&format!("run {id}")).assert_stdout_contains("unfinished");
    let history = test.run_with(&["history", "pipeline.ron"]);
    history.assert_code(0).assert_stdout_contains(&id);
    let another = test.run_with(&["run", "pipeline.ron"]);
    another.assert_code(2).assert_stderr_contains(&format!("pid {}, run {id}", run.pid()));
    test.run_with(&["approve", "pipeline.ron", "gate"]).assert_code(0).assert_stdout_contains("approved `gate`");

    run.wait_for_exit(RUN_TIMEOUT).assert_code(0);
    assert_eq!(test.read("ran.txt").as_deref(), Some("deployed\n"));
    assert_eq!(run_ids(test.path()), [id], "the refused run recorded nothing");
}

#[test]
fn the_lock_goes_with_a_killed_run_and_the_next_run_takes_it() {
    let test = Test::new().pipeline(HOLD).args(&["run", "pipeline.ron"]);
    let first = test.spawn();
    assert!(wait_until(Duration::from_secs(30), || test.exists("started")), "the step started");
    first.signal(libc::SIGKILL);
    drop(first);
    std::fs::write(test.path().join("release"), "").unwrap();
    let out = test.run_with(&["run", "pipeline.ron", "--resume"]);
    out.assert_code(0).assert_stderr_contains("resuming run held-");
}

// ---------------------------------------------------------------------------------------------------------------
// Killed early
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_run_killed_50_to_150_ms_after_start_is_resumed_or_started_again() {
    let pipeline = r#"Pipeline(name: "early", steps: [
        Step(id: "a", kind: Shell(commands: ["echo a >> ran.txt"])),
        Step(id: "b", needs: ["a"], kind: Shell(commands: ["echo b >> ran.txt"])),
        Step(id: "c", needs: ["b"], kind: Shell(commands: ["echo c >> ran.txt"])),
    ])"#;
    for delay in [50, 75, 100, 125, 150] {
        let test = Test::new().pipeline(pipeline).args(&["run", "pipeline.ron"]);
        let run = test.spawn();
        // The moment of the kill is what is tested: a fixed delay, not a wait for something.
        std::thread::sleep(Duration::from_millis(delay));
        let _ = unsafe { libc::kill(run.pid(), libc::SIGKILL) };
        let _ = run.wait_for_exit(RUN_TIMEOUT);
        for dir in run_dirs(test.path()) {
            assert!(dir.join("state.json").is_file(), "{delay} ms: {} has no state.json", dir.display());
        }
        let history = test.run_with(&["history", "pipeline.ron"]);
        history.assert_code(0);
        assert!(!history.stdout.contains("cannot read"), "{delay} ms\n{}", history.dump());
        let resumed = test.run_with(&["run", "pipeline.ron", "--resume"]);
        let last_succeeded = resumed.stderr.contains("nothing to resume: the last run");
        if !last_succeeded {
            resumed.assert_code(0);
            assert!(
                resumed.stderr.contains("resuming run early-") || resumed.stderr.contains("starting a new run"),
                "{delay} ms\n{}",
                resumed.dump()
            );
        }
        let last = run_dirs(test.path()).pop().expect("a run");
        let state = engine::record::RunState::load(&last).unwrap();
        assert_eq!(state.status, "succeeded", "{delay} ms");
        let leftovers: Vec<_> = std::fs::read_dir(test.path().join(".runner/runs"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".new"))
            .collect();
        assert!(leftovers.is_empty(), "{delay} ms: the killed run's staging directory is left: {leftovers:?}");
        test.run_with(&["status", "pipeline.ron"]).assert_code(0);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Every prefix of every file
// ---------------------------------------------------------------------------------------------------------------

/// a (outputs and a log in more than ASCII) -> b (incremental: a fingerprint) -> c (held until `release`).
const RECORDED: &str = r#"Pipeline(name: "recorded", steps: [
    Step(id: "a", kind: Shell(commands: ["echo 'GREETING=grüße, 世界' >> $RUNNER_OUTPUT", "echo 'héllo wörld'"])),
    Step(id: "b", needs: ["a"], incremental: true, kind: Shell(commands: ["echo b >> ran.txt"])),
    Step(id: "c", needs: ["b"], kind: Shell(commands: ["touch c-started", "while [ ! -f release ]; do sleep 0.02; done", "echo c >> ran.txt"])),
])"#;

/// Every file under the state dir the runner wrote (the run record, logs, fingerprints, the lock).
fn written_files(state: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![state.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A run of RECORDED killed while `c` runs: its record has a journal, logs and a fingerprint.
fn killed_run() -> Test {
    let test = Test::new().pipeline(RECORDED).args(&["run", "pipeline.ron"]);
    let run = test.spawn();
    assert!(wait_until(RUN_TIMEOUT, || test.exists("c-started")), "c started\n{}", run.stderr());
    run.signal(libc::SIGKILL);
    run.wait_for_exit(RUN_TIMEOUT);
    test
}

#[test]
fn every_prefix_of_every_file_of_a_killed_run_is_read_by_the_next_start() {
    let test = killed_run();
    let state_dir = test.path().join(".runner");
    let files = written_files(&state_dir);
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["state.json", "journal.jsonl", "a.log", "recorded.json", "recorded.lock"] {
        assert!(names.iter().any(|n| n == expected), "no {expected} among {names:?}");
    }
    let journal = std::fs::read(files.iter().find(|f| f.ends_with("journal.jsonl")).unwrap()).unwrap();
    assert!(String::from_utf8_lossy(&journal).contains("grüße, 世界"), "the journal holds the outputs");

    let plan = runner::pipeline::load_for(&test.path().join("pipeline.ron"), &[], runner::pipeline::Purpose::ReadRuns)
        .unwrap_or_else(|e| panic!("{e}"))
        .plan;
    let run_dir = run_dirs(test.path()).pop().unwrap();
    let mut prefixes = 0;
    for file in &files {
        let whole = std::fs::read(file).unwrap();
        let is_state = file.ends_with("state.json");
        for cut in 0..=whole.len() {
            std::fs::write(file, &whole[..cut]).unwrap();
            prefixes += 1;
            let at = format!("{} cut at {cut} of {}", file.display(), whole.len());
            let history = runner::runs::history(&state_dir, "recorded");
            assert!(history.contains("recorded-"), "{at}: {history}");
            let loaded = engine::record::RunState::load(&run_dir);
            let status = runner::runs::status(&plan, &state_dir, None);
            let fingerprints = engine::incremental::FingerprintStore::load(&state_dir, "recorded");
            assert!(fingerprints.is_ok(), "{at}: {:?}", fingerprints.err());
            match runner::runs::resume(&plan, &state_dir, false) {
                Ok(runner::runs::Resumable::Run(resume)) => {
                    assert!(loaded.is_ok() && status.is_ok(), "{at}");
                    // What a resume reuses is what the record says succeeded, outputs whole.
                    if let Some(a) = resume.reused.get("a") {
                        assert_eq!(a.outputs["GREETING"], "grüße, 世界", "{at}");
                    }
                }
                Ok(runner::runs::Resumable::Fresh(why)) => {
                    assert!(is_state && cut < whole.len(), "{at}: only a cut state.json starts afresh: {why}");
                    assert!(why.contains("state.json is damaged"), "{at}: {why}");
                }
                Err(e) => panic!("{at}: --resume refused: {e}"),
            }
        }
        std::fs::write(file, &whole).unwrap();
    }
    assert!(prefixes > 1_000, "{prefixes} prefixes");
}

#[test]
fn a_killed_run_with_any_of_its_files_cut_short_resumes_to_success() {
    let original = killed_run();
    let files = written_files(&original.path().join(".runner"));
    let mut cases: Vec<(PathBuf, usize)> = Vec::new();
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len() as usize;
        cases.extend([(file.clone(), 0), (file.clone(), len / 2)]);
    }
    // And the journal cut inside a multi-byte character of the outputs.
    let journal = files.iter().find(|f| f.ends_with("journal.jsonl")).unwrap();
    let bytes = std::fs::read(journal).unwrap();
    let inside = bytes.windows(3).position(|w| w == "世".as_bytes()).unwrap() + 1;
    cases.push((journal.clone(), inside));

    for (file, cut) in cases {
        let test = Test::new();
        copy_dir(original.path(), test.path());
        let copy = test.path().join(file.strip_prefix(original.path()).unwrap());
        let whole = std::fs::read(&copy).unwrap();
        std::fs::write(&copy, &whole[..cut]).unwrap();
        std::fs::write(test.path().join("release"), "").unwrap();
        let at = format!("{} cut at {cut}", copy.display());
        let out = test.run_with(&["run", "pipeline.ron", "--resume"]);
        assert_eq!(out.code, Some(0), "{at}\n{}", out.dump());
        let state = engine::record::RunState::load(&run_dirs(test.path()).pop().unwrap()).unwrap();
        assert_eq!(state.status, "succeeded", "{at}");
        assert!(test.read("ran.txt").unwrap_or_default().ends_with("c\n"), "{at}: c ran");
        let status = test.run_with(&["status", "pipeline.ron"]);
        assert_eq!(status.code, Some(0), "{at}\n{}", status.dump());
    }
}
