//! The progress bars on a real terminal (a pseudo-terminal, read through a terminal emulator): the run's clock
//! ticks while its steps do, and Ctrl-C leaves no bar of the last frame on the screen.

mod common;

use std::io::Read;
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const ROWS: u16 = 30;
const COLS: u16 = 120;

/// `runner run pipeline.ron` in `test`'s directory with stderr on a terminal (stdout, the summary, to a file);
/// `interrupt_when` names a file whose appearance sends SIGINT. Returns what reached the terminal.
fn run_on_a_terminal(test: &Test, interrupt_when: Option<&str>) -> Vec<u8> {
    run_on_a_terminal_expecting(test, interrupt_when, 0)
}

/// [`run_on_a_terminal`] for a run that ends with exit code `code` (when not interrupted).
fn run_on_a_terminal_expecting(test: &Test, interrupt_when: Option<&str>, code: i32) -> Vec<u8> {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    let (mut master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
    let screen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut child = Command::new(runner_bin())
        .args(["run", "pipeline.ron"])
        .current_dir(test.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(test.path().join("stdout.txt")).unwrap())
        .stderr(slave)
        .env_remove("CI")
        .env_remove("CODEBUILD_BUILD_ID")
        .env_remove("RUST_LOG")
        .env("TERM", "xterm-256color")
        .spawn()
        .expect("run runner");
    if let Some(marker) = interrupt_when {
        assert!(wait_until(Duration::from_secs(20), || test.exists(marker)), "the step never started");
        // Let a few frames be drawn with the step running.
        let drawn = screen.lock().unwrap().len();
        wait_until(Duration::from_secs(5), || screen.lock().unwrap().len() > drawn + 200);
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    let status = child.wait().unwrap();
    assert!(interrupt_when.is_some() || status.code() == Some(code), "runner ended with {status:?}, not {code}");
    // Whatever is still in flight from the last writes.
    let mut last = (screen.lock().unwrap().len(), Instant::now());
    wait_until(Duration::from_secs(5), || {
        let len = screen.lock().unwrap().len();
        if len != last.0 {
            last = (len, Instant::now());
        }
        last.1.elapsed() > Duration::from_millis(300)
    });
    let bytes = screen.lock().unwrap().clone();
    bytes
}

/// The screen after `bytes`, as text.
fn final_screen(bytes: &[u8]) -> String {
    let mut parser = vt100::Parser::new(ROWS, COLS, 0);
    parser.process(bytes);
    parser.screen().contents()
}

#[test]
fn the_runs_clock_ticks_while_its_steps_run() {
    let test = Test::new()
        .pipeline(r#"Pipeline(name: "slow", steps: [Step(id: "wait", kind: Shell(commands: ["sleep 3"]))])"#);
    let bytes = run_on_a_terminal(&test, None);
    // Every frame of the overall bar while the step runs (0 of 1 nodes done), as the terminal got them.
    let text = strip_ansi(&String::from_utf8_lossy(&bytes));
    let clocks: Vec<&str> = text
        .split(['\r', '\n'])
        .filter(|l| l.contains("0/1 nodes"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        clocks.iter().any(|c| *c == "2s" || *c == "3s"),
        "the run's clock while a 3 s step runs: {clocks:?}\n{text}"
    );
    // Not drawn before the run knows its nodes (a full bar at 0/0).
    assert!(!text.contains("0/0 nodes"), "{text}");
}

#[test]
fn ctrl_c_leaves_no_progress_bar_on_the_screen() {
    let test = Test::new().pipeline(
        r#"Pipeline(name: "stopped", steps: [
    Step(id: "hang", kind: Shell(commands: ["touch started; sleep 60"])),
    Step(id: "after", needs: ["hang"], kind: Shell(commands: ["true"])),
])"#,
    );
    let bytes = run_on_a_terminal(&test, Some("started"));
    let screen = final_screen(&bytes);
    assert!(screen.contains("interrupted: stopping running steps"), "{screen}");
    assert!(!screen.contains("/2 nodes"), "the overall bar is gone:\n{screen}");
    let spinner_lines: Vec<&str> =
        screen.lines().filter(|l| l.contains("hang") && !l.contains("cancelled") && !l.contains("failed")).collect();
    assert!(spinner_lines.is_empty(), "the step's bar is gone: {spinner_lines:?}\n{screen}");
}

#[test]
fn a_failed_step_retried_shows_its_last_attempts_lines_once() {
    let test = Test::new().pipeline(
        r#"Pipeline(name: "retried", steps: [
    Step(id: "fails", kind: Shell(commands: ["n=$(cat attempts 2>/dev/null || echo 0); n=$((n + 1)); echo $n > attempts; echo attempt $n output; false"]), retries: 1, retry_backoff: "10ms"),
])"#,
    );
    let screen = final_screen(&run_on_a_terminal_expecting(&test, None, 1));
    assert!(screen.contains("| attempt 2 output"), "the last attempt's lines:\n{screen}");
    assert!(!screen.contains("| attempt 1 output"), "not the first attempt's again:\n{screen}");
}
