//! Shared helpers of the integration tests, in the style of the `just` project's tests:
//!
//! ```ignore
//! let test = Test::new().pipeline(RON).args(&["run", "pipeline.ron"]);
//! test.run().assert_code(0);
//! assert!(test.path().join("marker").exists());
//! ```
//!
//! Every run gets a fresh temporary directory as its current directory, stdin from /dev/null and `CI=1` (so the
//! output is the plain, line-per-event one), unless a test overrides it. Nothing here sleeps to wait for something:
//! use [`wait_until`], which polls against a deadline.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a single `runner` invocation may take before the test kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn runner_bin() -> &'static str {
    env!("CARGO_BIN_EXE_runner")
}

/// The root of the repository (where `pipelines/` and `tests/snapshots/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------------------------
// Test builder
// ---------------------------------------------------------------------------------------------------------------

pub struct Test {
    tempdir: TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    timeout: Duration,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Self {
        let tempdir = tempfile::Builder::new().prefix("runner-test-").tempdir().expect("create temp dir");
        Test { tempdir, args: Vec::new(), env: Vec::new(), env_remove: Vec::new(), timeout: RUN_TIMEOUT }
    }

    /// The temporary directory the runner runs in.
    pub fn path(&self) -> &Path {
        self.tempdir.path()
    }

    /// The temporary directory as a string, to format absolute paths into pipelines.
    pub fn dir(&self) -> String {
        self.path().to_str().expect("utf-8 temp dir").to_owned()
    }

    /// Writes `pipeline.ron` in the temporary directory.
    pub fn pipeline(self, text: &str) -> Self {
        self.write("pipeline.ron", text)
    }

    /// Writes a file (creating parent directories) relative to the temporary directory.
    pub fn write(self, relative: &str, contents: &str) -> Self {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Makes sure the runner does not inherit this variable from the test's environment.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_remove.push(key.to_owned());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads a file relative to the temporary directory, if it exists.
    pub fn read(&self, relative: &str) -> Option<String> {
        fs::read_to_string(self.path().join(relative)).ok()
    }

    pub fn exists(&self, relative: &str) -> bool {
        self.path().join(relative).exists()
    }

    fn command(&self, out_dir: &Path) -> Command {
        self.command_with(out_dir, &self.args)
    }

    fn command_with(&self, out_dir: &Path, args: &[String]) -> Command {
        let mut command = Command::new(runner_bin());
        command
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(out_dir.join("stdout")).expect("create stdout file")))
            .stderr(Stdio::from(fs::File::create(out_dir.join("stderr")).expect("create stderr file")))
            // Deterministic diagnostics unless a test asks for them.
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env("CI", "1");
        for key in &self.env_remove {
            command.env_remove(key);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Runs the binary to completion (or fails the test after the timeout) and returns what it printed.
    ///
    /// stdout and stderr go to files, not pipes, so a leftover grandchild holding them open can never hang a test.
    pub fn run(&self) -> Output {
        self.spawn().wait_for_exit(self.timeout)
    }

    /// Starts the binary as a child process, for tests that signal it.
    pub fn spawn(&self) -> Running {
        self.spawn_args(self.args.clone())
    }

    /// Starts the binary with other arguments than the test's (same directory and environment).
    pub fn spawn_with(&self, args: &[&str]) -> Running {
        self.spawn_args(args.iter().map(|a| (*a).to_owned()).collect())
    }

    /// Runs the binary to completion with other arguments than the test's.
    pub fn run_with(&self, args: &[&str]) -> Output {
        self.spawn_with(args).wait_for_exit(self.timeout)
    }

    fn spawn_args(&self, args: Vec<String>) -> Running {
        let out_dir = tempfile::Builder::new().prefix("runner-test-output-").tempdir().expect("create output dir");
        let child =
            self.command_with(out_dir.path(), &args).spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", runner_bin()));
        Running { child, out_dir, started: Instant::now(), args }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A running runner
// ---------------------------------------------------------------------------------------------------------------

pub struct Running {
    child: Child,
    out_dir: TempDir,
    started: Instant,
    args: Vec<String>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the runner process (only to it, not to its group).
    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed: {}", self.pid(), std::io::Error::last_os_error());
    }

    /// What the runner printed so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.out_dir.path().join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.out_dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for the runner to exit (reaping it); `None` if it is still running at the deadline.
    pub fn try_wait_for(&mut self, timeout: Duration) -> Option<Output> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(self.output(status));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the runner to exit; kills it and fails the test if it is still running at the deadline.
    pub fn wait_for_exit(mut self, timeout: Duration) -> Output {
        match self.try_wait_for(timeout) {
            Some(output) => output,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`runner {}` still running after {timeout:?}; killed it\n--- stdout\n{}\n--- stderr\n{}",
                    self.args.join(" "),
                    self.stdout(),
                    self.stderr()
                );
            }
        }
    }

    fn output(&self, status: ExitStatus) -> Output {
        use std::os::unix::process::ExitStatusExt;
        Output {
            stdout: strip_ansi(&self.stdout()),
            stderr: strip_ansi(&self.stderr()),
            code: status.code(),
            signal: status.signal(),
            elapsed: self.started.elapsed(),
            command: format!("runner {}", self.args.join(" ")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave the runner running (or a zombie) behind a failed test.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Output and assertions
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the runner was killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub elapsed: Duration,
    pub command: String,
}

impl Output {
    /// A description of the run, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "`{}` exited with {:?} (signal {:?}) after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.code, self.signal, self.elapsed, self.stdout, self.stderr
        )
    }

    /// stdout and stderr together.
    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{}", self.dump());
        self
    }

    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "stdout does not contain {needle:?}\n{}", self.dump());
        self
    }

    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr does not contain {needle:?}\n{}", self.dump());
        self
    }

    /// stdout or stderr contains `needle`.
    pub fn assert_output_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle) || self.stderr.contains(needle),
            "neither stdout nor stderr contains {needle:?}\n{}",
            self.dump()
        );
        self
    }

    pub fn assert_stderr_contains_ci(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "stderr does not contain {needle:?} (ignoring case)\n{}",
            self.dump()
        );
        self
    }

    pub fn assert_output_contains_ci(&self, needle: &str) -> &Self {
        assert!(
            self.combined().to_lowercase().contains(&needle.to_lowercase()),
            "neither stdout nor stderr contains {needle:?} (ignoring case)\n{}",
            self.dump()
        );
        self
    }

    pub fn assert_stderr_not_contains(&self, needle: &str) -> &Self {
        assert!(!self.stderr.contains(needle), "stderr unexpectedly contains {needle:?}\n{}", self.dump());
        self
    }

    /// Every non-empty stdout line parsed as JSON; fails the test on a line that is not.
    /// Final status of each node, from `--output json` events.
    pub fn statuses(&self) -> std::collections::BTreeMap<String, String> {
        self.json_lines()
            .into_iter()
            .filter(|e| e["event"] == "node_finished")
            .map(|e| (e["node"].as_str().unwrap().to_string(), e["status"].as_str().unwrap().to_string()))
            .collect()
    }

    /// The `node_finished` event of `node`, from `--output json` events.
    pub fn finished(&self, node: &str) -> serde_json::Value {
        self.json_lines()
            .into_iter()
            .find(|e| e["event"] == "node_finished" && e["node"] == node)
            .unwrap_or_else(|| panic!("no node_finished for {node}:\n{}", self.dump()))
    }

    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}\n{}", self.dump()))
            })
            .collect()
    }
}

/// Removes ANSI escape sequences (colours), should the runner print any.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then a final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Positions in pipeline text, diagnostics
// ---------------------------------------------------------------------------------------------------------------

/// 1-based (line, column) of the `n`th (0-based) occurrence of `needle` in `text`.
pub fn position_nth(text: &str, needle: &str, n: usize) -> (usize, usize) {
    let (offset, _) = text
        .match_indices(needle)
        .nth(n)
        .unwrap_or_else(|| panic!("{needle:?} occurs fewer than {} times in the pipeline", n + 1));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// 1-based (line, column) of the only occurrence of `needle` in `text`.
pub fn position(text: &str, needle: &str) -> (usize, usize) {
    assert_eq!(text.matches(needle).count(), 1, "{needle:?} must occur exactly once in the pipeline");
    position_nth(text, needle, 0)
}

/// The 1-based line of the only occurrence of `needle` in `text`.
pub fn line_of(text: &str, needle: &str) -> usize {
    position(text, needle).0
}

/// `file:line:column` occurs in `haystack` as a whole location (`:1:2` does not match `:1:23`).
fn location_index(lines: &[&str], file: &str, line: usize, column: usize) -> Option<usize> {
    let needle = format!("{file}:{line}:{column}");
    lines.iter().position(|l| {
        l.match_indices(&needle).any(|(i, _)| {
            let after = l[i + needle.len()..].chars().next();
            let before = l[..i].chars().next_back();
            !after.is_some_and(|c| c.is_ascii_digit())
                && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
        })
    })
}

/// Asserts a diagnostic at `pipeline.ron:line:column`, followed (as in the README) by the source line and a caret
/// line whose first `^` sits under `column` of the source line.
pub fn assert_diagnostic(output: &Output, source: &str, line: usize, column: usize) {
    assert_diagnostic_in(output, "pipeline.ron", source, line, column);
}

pub fn assert_diagnostic_in(output: &Output, file: &str, source: &str, line: usize, column: usize) {
    let lines: Vec<&str> = output.stderr.lines().collect();
    let Some(at) = location_index(&lines, file, line, column) else {
        panic!("stderr has no location `{file}:{line}:{column}`\n{}", output.dump());
    };
    let source_line = source.lines().nth(line - 1).expect("line inside the pipeline").trim_end();
    let shown =
        lines.iter().enumerate().skip(at + 1).take(6).find_map(|(i, l)| l.find(source_line).map(|start| (i, start)));
    let Some((shown_at, start)) = shown else {
        panic!(
            "the diagnostic at `{file}:{line}:{column}` does not show source line {line} ({source_line:?})\n{}",
            output.dump()
        );
    };
    let caret =
        lines.iter().skip(shown_at + 1).take(3).find(|l| l.contains('^')).unwrap_or_else(|| {
            panic!("the diagnostic at `{file}:{line}:{column}` has no caret line\n{}", output.dump())
        });
    let caret_col = caret.chars().position(|c| c == '^').unwrap();
    let shown_line = lines[shown_at];
    let expected = shown_line[..start].chars().count() + column - 1;
    assert_eq!(
        caret_col,
        expected,
        "the caret of `{file}:{line}:{column}` is not under column {column}\n{shown_line}\n{caret}\n{}",
        output.dump()
    );
}

/// Asserts a diagnostic on `pipeline.ron:line:<any column>` and a caret line somewhere in stderr (for RON syntax and
/// shape errors, whose column depends on the parser).
pub fn assert_diagnostic_line(output: &Output, line: usize) {
    let prefix = format!("pipeline.ron:{line}:");
    let found = output.stderr.match_indices(&prefix).any(|(i, _)| {
        let before = output.stderr[..i].chars().next_back();
        output.stderr[i + prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
            && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
    });
    assert!(found, "stderr has no location `pipeline.ron:{line}:<column>`\n{}", output.dump());
    assert_caret_line(output);
}

/// stderr has a line made of a gutter and carets, like `   |     ^^^^`.
pub fn assert_caret_line(output: &Output) {
    let has_caret = output.stderr.lines().any(|l| {
        let t = l.trim_start();
        t.contains('^') && t.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '|').starts_with('^')
    });
    assert!(has_caret, "stderr has no caret (`^`) line\n{}", output.dump());
}

/// All `pipeline.ron:L:C` locations in stderr, in the order printed.
pub fn locations(output: &Output) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for (i, _) in output.stderr.match_indices("pipeline.ron:") {
        let rest = &output.stderr[i + "pipeline.ron:".len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().and_then(|s| s.parse::<usize>().ok());
        let column = parts.next().map(|s| s.chars().take_while(|c| c.is_ascii_digit()).collect::<String>());
        if let (Some(line), Some(column)) = (line, column.and_then(|c| c.parse::<usize>().ok())) {
            found.push((line, column));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------------------------
// Polling and processes
// ---------------------------------------------------------------------------------------------------------------

/// Polls `condition` every 20 ms until it holds (`true`) or `timeout` passes (`false`). Never sleep to wait.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process is gone when /proc/<pid> is missing, or when it is a zombie (dead, waiting for a parent to reap it:
/// inside containers PID 1 may never do so).
pub fn process_is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // `pid (comm) S ...`: comm may contain spaces and parentheses, the state follows the last `)`.
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
            matches!(state, Some("Z") | Some("X") | None)
        }
    }
}

/// Reads a pid written by a step (`echo $! > file`), once the file holds a whole number.
pub fn read_pid(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    if !text.ends_with('\n') {
        return None;
    }
    text.trim().parse().ok()
}

/// Kills (SIGKILL) the listed processes when dropped, so that a failing test leaves no `sleep 300` behind.
/// Only ever holds pids of processes the test itself caused to start.
#[derive(Default)]
pub struct KillOnDrop(pub Vec<i32>);

impl KillOnDrop {
    pub fn push(&mut self, pid: i32) {
        self.0.push(pid);
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if pid > 1 && !process_is_gone(pid) {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Runs kept under .runner/
// ---------------------------------------------------------------------------------------------------------------

/// The directories under `<dir>/.runner/runs/`.
pub fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    let runs = dir.join(".runner").join("runs");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&runs)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The only run directory under `<dir>/.runner/runs/`.
pub fn single_run_dir(dir: &Path) -> PathBuf {
    let dirs = run_dirs(dir);
    assert_eq!(dirs.len(), 1, "expected exactly one run under {}/.runner/runs, found {dirs:?}", dir.display());
    dirs.into_iter().next().unwrap()
}

/// A value no other run uses (a token, a passphrase), so that finding it somewhere means it leaked from this test.
pub fn unique_secret(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{}-{nanos:x}-Zq9", std::process::id())
}

/// Neither the runner's output nor any file under `dir` (the run state, logs, outputs, the cache, the workspace)
/// holds `secret`; more than ten files were looked at.
pub fn assert_secret_nowhere(dir: &Path, out: &Output, secret: &str) {
    assert!(!secret.is_empty());
    assert!(!out.combined().contains(secret), "the secret appears in the runner's output\n{}", out.dump());
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().filter_map(|e| e.ok()) {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                files += 1;
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "the secret appears in {}",
                    path.display()
                );
            }
        }
    }
    assert!(files > 10, "expected the run state, logs and cache under {}, found {files} files", dir.display());
}

/// The only run under `dir` kept its state: `state.json` and `journal.jsonl`.
pub fn assert_run_recorded(dir: &Path) {
    let run = single_run_dir(dir);
    for record in ["state.json", "journal.jsonl"] {
        assert!(run.join(record).is_file(), "no {record} in {}", run.display());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Git repositories
// ---------------------------------------------------------------------------------------------------------------

/// The repository the remote Source tests fetch: `main` with two commits (`file.txt` says `main`), `dev` from the
/// first (`file.txt` says `dev`), `main` checked out.
pub fn main_and_dev_repository() -> GitRepo {
    let work = GitRepo::new();
    work.commit_file("file.txt", "first\n", "first commit");
    work.branch("dev");
    work.commit_file("file.txt", "main\n", "second: main");
    work.checkout("dev");
    work.commit_file("file.txt", "dev\n", "third: dev");
    work.checkout("main");
    work
}

/// A bare clone of `work` at `<returned dir>/infra.git`, as a server serves it.
pub fn bare_clone(work: &GitRepo) -> TempDir {
    let root = tempfile::Builder::new().prefix("runner-test-git-root-").tempdir().unwrap();
    git_in(root.path(), &["clone", "-q", "--bare", &work.path_str(), "infra.git"]);
    root
}

/// A real git repository in a temporary directory, made with the `git` CLI. Works without any git configuration
/// on the machine (identity and defaults are passed on every command).
pub struct GitRepo {
    dir: TempDir,
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl GitRepo {
    /// `git init` with `main` as the initial branch.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("runner-test-repo-").tempdir().expect("create repo dir");
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> String {
        self.path().to_str().expect("utf-8 repo path").to_owned()
    }

    /// Runs `git` in the repository; fails the test when it fails; returns its trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(self.path(), args)
    }

    /// Writes `name` with `contents`, commits everything, returns the new commit's sha.
    pub fn commit_file(&self, name: &str, contents: &str, message: &str) -> String {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        fs::write(&path, contents).expect("write file in repo");
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    /// Creates a branch at HEAD without switching to it.
    pub fn branch(&self, name: &str) {
        self.git(&["branch", name]);
    }

    pub fn checkout(&self, name: &str) {
        self.git(&["checkout", "-q", name]);
    }

    /// Creates and switches to a new branch.
    pub fn checkout_new_branch(&self, name: &str) {
        self.git(&["checkout", "-q", "-b", name]);
    }

    /// An annotated tag at HEAD.
    pub fn tag(&self, name: &str) {
        self.git(&["tag", "-a", name, "-m", &format!("release {name}")]);
    }

    /// A lightweight tag at HEAD.
    pub fn lightweight_tag(&self, name: &str) {
        self.git(&["tag", name]);
    }

    /// The commit a revision points to (tags peeled).
    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(&["rev-parse", &format!("{rev}^{{commit}}")])
    }

    pub fn head(&self) -> String {
        self.rev_parse("HEAD")
    }
}

/// Runs `git` in `dir` with a fixed identity and no global or system configuration.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Runner Test",
            "-c",
            "user.email=runner-test@example.com",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Runner Test")
        .env("GIT_AUTHOR_EMAIL", "runner-test@example.com")
        .env("GIT_COMMITTER_NAME", "Runner Test")
        .env("GIT_COMMITTER_EMAIL", "runner-test@example.com")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run git {args:?}: {e} (is git installed? see scripts/install-test-deps)"));
    assert!(
        output.status.success(),
        "git {args:?} failed in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------------------------

/// Compares `actual` with `tests/snapshots/<name>.txt`; with `UPDATE_SNAPSHOTS=1`, writes the file instead.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = repo_root().join("tests").join("snapshots").join(format!("{name}.txt"));
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        fs::create_dir_all(path.parent().unwrap()).expect("create tests/snapshots");
        fs::write(&path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("updated snapshot {}", path.display());
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; record it with `UPDATE_SNAPSHOTS=1 cargo test` and review it\n--- actual\n{actual}",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "output differs from snapshot {} (run with UPDATE_SNAPSHOTS=1 to accept)\n--- expected\n{expected}\n--- actual\n{actual}\n--- diff (line: expected | actual)\n{}",
            path.display(),
            line_diff(&expected, actual)
        );
    }
}

fn line_diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i).copied(), a.get(i).copied());
        if x != y {
            out.push_str(&format!("{}: {:?} | {:?}\n", i + 1, x.unwrap_or("<none>"), y.unwrap_or("<none>")));
        }
    }
    if out.is_empty() {
        out.push_str("(only line endings differ)\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// JUnit XML reports
// ---------------------------------------------------------------------------------------------------------------

/// A JUnit XML report read back with a real XML parser.
#[derive(Debug, Default)]
pub struct Junit {
    /// Attributes of the (only) `<testsuite>`.
    pub suite: std::collections::BTreeMap<String, String>,
    pub cases: Vec<JunitCase>,
}

#[derive(Debug, Default, Clone)]
pub struct JunitCase {
    pub name: String,
    pub classname: String,
    pub time: f64,
    /// `failure` / `skipped` with its `message` attribute and its text.
    pub failure: Option<(String, String)>,
    pub skipped: Option<String>,
    pub system_out: String,
}

impl Junit {
    pub fn case(&self, name: &str) -> &JunitCase {
        self.cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no test case {name:?} in {self:#?}"))
    }
}

/// Parses a JUnit report; fails the test when it is not well-formed XML or has no single `<testsuite>`.
pub fn parse_junit(xml: &str) -> Junit {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut report = Junit::default();
    let mut suites = 0;
    let mut path: Vec<String> = Vec::new();
    let attrs = |e: &quick_xml::events::BytesStart| -> std::collections::BTreeMap<String, String> {
        e.attributes()
            .map(|a| {
                let a = a.unwrap_or_else(|err| panic!("bad attribute in the JUnit report: {err}\n{xml}"));
                let value = a.unescape_value().unwrap_or_else(|err| panic!("bad attribute value: {err}\n{xml}"));
                (String::from_utf8_lossy(a.key.as_ref()).into_owned(), value.into_owned())
            })
            .collect()
    };
    loop {
        let event = reader.read_event().unwrap_or_else(|e| panic!("the JUnit report is not XML: {e}\n{xml}"));
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            let a = attrs(&e);
            match name.as_str() {
                "testsuite" => {
                    suites += 1;
                    report.suite = a;
                }
                "testcase" => report.cases.push(JunitCase {
                    name: a.get("name").cloned().unwrap_or_default(),
                    classname: a.get("classname").cloned().unwrap_or_default(),
                    time: a.get("time").and_then(|t| t.parse().ok()).unwrap_or(-1.0),
                    ..Default::default()
                }),
                "failure" => {
                    let case = report.cases.last_mut().expect("failure outside a testcase");
                    case.failure = Some((a.get("message").cloned().unwrap_or_default(), String::new()));
                }
                "skipped" => {
                    let case = report.cases.last_mut().expect("skipped outside a testcase");
                    case.skipped = Some(a.get("message").cloned().unwrap_or_default());
                }
                _ => {}
            }
            if !empty {
                path.push(name);
            }
            continue;
        }
        match event {
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let text = t.xml_content().unwrap_or_else(|e| panic!("bad text in the JUnit report: {e}")).into_owned();
                let case = report.cases.last_mut();
                match (path.last().map(String::as_str), case) {
                    (Some("failure"), Some(c)) => c.failure.as_mut().unwrap().1.push_str(&text),
                    (Some("system-out"), Some(c)) => c.system_out.push_str(&text),
                    _ => {}
                }
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match String::from_utf8_lossy(&r).as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => panic!("unknown entity &{other}; in the JUnit report\n{xml}"),
                    },
                };
                let case = report.cases.last_mut();
                match (path.last().map(String::as_str), case) {
                    (Some("failure"), Some(c)) => c.failure.as_mut().unwrap().1.push_str(&text),
                    (Some("system-out"), Some(c)) => c.system_out.push_str(&text),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(suites, 1, "expected one <testsuite> in the JUnit report\n{xml}");
    report
}

/// Copy a directory tree (a working copy of the repository's `pipelines/`, an assembly).
/// This repository's CDK app (`datalake/`) into `root/datalake`, as a checkout holds it: without node_modules or an
/// assembly (`npm-ci-cached` links node_modules from `$HOME/.cache`, or `DATALAKE_NODE_MODULES_CACHE`).
pub fn copy_datalake_app(root: &Path) {
    let to = root.join("datalake");
    for entry in fs::read_dir(repo_root().join("datalake")).unwrap().filter_map(|e| e.ok()) {
        let name = entry.file_name();
        if ["node_modules", "cdk.out", "cdk.context.json"].contains(&name.to_str().unwrap_or_default()) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            fs::create_dir_all(&to).unwrap();
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Where node_modules of the CDK app are kept for every test run on this machine (the user's `$HOME/.cache`): a test
/// that runs the synth with a home of its own points `DATALAKE_NODE_MODULES_CACHE` here, so only the first run on a
/// machine installs them.
pub fn node_modules_cache() -> String {
    format!("{}/.cache/runner-datalake/node_modules", std::env::var("HOME").expect("HOME"))
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}
