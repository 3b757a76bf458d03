//! Child processes of steps: each runs in its own process group, dies with the runner (`PR_SET_PDEATHSIG` for the
//! child, and a guardian process that kills whole groups left behind if the runner itself is killed), streams its
//! output line by line into the event stream, and is terminated as a group on timeout or Ctrl-C.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use engine::event::Stream;
use engine::step::{EventSink, StopReason, StopSignal};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// Time between SIGTERM and SIGKILL when a step is stopped.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// The hidden subcommand the runner binary answers as the guardian.
pub const GUARDIAN_ARG: &str = "__guardian";

static GUARDIAN_PROGRAM: OnceLock<PathBuf> = OnceLock::new();
static GUARDIAN: Mutex<Option<std::process::ChildStdin>> = Mutex::new(None);

/// Let steps start a guardian (the runner binary, run with [`GUARDIAN_ARG`]) before their first process.
pub fn enable_guardian(program: PathBuf) {
    let _ = GUARDIAN_PROGRAM.set(program);
}

fn tell_guardian(line: &str) {
    let Some(program) = GUARDIAN_PROGRAM.get() else {
        return;
    };
    let mut guard = GUARDIAN.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let mut cmd = std::process::Command::new(program);
        cmd.arg(GUARDIAN_ARG).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        // Its own group: a Ctrl-C at the terminal reaches the runner, which decides; not the guardian.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        match cmd.spawn() {
            Ok(mut child) => *guard = child.stdin.take(),
            Err(e) => {
                tracing::warn!("cannot start the process guardian: {e}");
                return;
            }
        }
    }
    if let Some(stdin) = guard.as_mut() {
        let _ = writeln!(stdin, "{line}").and_then(|_| stdin.flush());
    }
}

/// The guardian's life: remember the process groups the runner announces (`+PGID`, `-PGID` lines on stdin) and,
/// when stdin closes because the runner ended for any reason, SIGKILL every group still announced.
pub fn guardian_main() {
    let mut groups = BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(pgid) = line.strip_prefix('+').and_then(|p| p.parse::<i32>().ok()) {
            groups.insert(pgid);
        } else if let Some(pgid) = line.strip_prefix('-').and_then(|p| p.parse::<i32>().ok()) {
            groups.remove(&pgid);
        }
    }
    for pgid in groups {
        signal_group(pgid, libc::SIGKILL);
    }
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: killpg only sends a signal; a group that is gone gives ESRCH, which is fine.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// How a process ended.
#[derive(Debug)]
pub enum ProcessEnd {
    Exited(ExitStatus),
    Stopped(StopReason),
}

/// Run `cmd` to its end in its own process group, streaming stdout/stderr lines to `events`, honouring `stop`.
/// Whatever the command left running in its group is killed when it ends.
pub async fn run(mut cmd: Command, events: &EventSink, stop: &StopSignal) -> std::io::Result<ProcessEnd> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    tell_guardian(&format!("+{pgid}"));
    let out = tokio::spawn(forward(child.stdout.take(), events.clone(), Stream::Stdout));
    let err = tokio::spawn(forward(child.stderr.take(), events.clone(), Stream::Stderr));
    let mut stop = stop.clone();
    let end = tokio::select! {
        status = child.wait() => ProcessEnd::Exited(status?),
        reason = stop.stronger_than(None) => {
            let reason = terminate(&mut child, pgid, reason, &mut stop).await;
            ProcessEnd::Stopped(reason)
        }
    };
    signal_group(pgid, libc::SIGKILL);
    tell_guardian(&format!("-{pgid}"));
    let _ = out.await;
    let _ = err.await;
    Ok(end)
}

/// SIGTERM the group, then SIGKILL after the grace period or at a stronger stop. Returns the strongest reason.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: i32,
    reason: StopReason,
    stop: &mut StopSignal,
) -> StopReason {
    if reason == StopReason::Kill {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
        return reason;
    }
    signal_group(pgid, libc::SIGTERM);
    tokio::select! {
        _ = child.wait() => reason,
        _ = tokio::time::sleep(TERMINATE_GRACE) => {
            signal_group(pgid, libc::SIGKILL);
            let _ = child.wait().await;
            reason
        }
        stronger = stop.stronger_than(Some(reason)) => {
            signal_group(pgid, libc::SIGKILL);
            let _ = child.wait().await;
            stronger.max(reason)
        }
    }
}

async fn forward<R: AsyncRead + Unpin>(pipe: Option<R>, events: EventSink, stream: Stream) {
    let Some(pipe) = pipe else { return };
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while buf.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    buf.pop();
                }
                events.log(stream, String::from_utf8_lossy(&buf).into_owned()).await;
            }
        }
    }
}

/// Describe an exit status for people: `exited with code 3`, `was killed by signal 9`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended abnormally".to_string(),
    }
}
