//! Source steps against a real OpenSSH server: one `sshd` per test, run as the current user on a free loopback port
//! with its own configuration, host key and `authorized_keys` in a temp dir, serving a bare repository made with git.
//! Keys from a file (with and without a passphrase), a key the server does not accept, the ssh-agent, and the
//! server's host key checked against `~/.ssh/known_hosts` of the HOME the runner is given (libgit2 refuses a host
//! that is not there, or whose key changed).
//!
//! sshd, ssh-keygen, ssh-keyscan, ssh-agent and ssh-add come from OpenSSH: `scripts/install-test-deps` installs them.

mod common;

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tempfile::TempDir;

/// How long sshd and ssh-agent may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------------------------
// OpenSSH: programs, keys, the server, the agent
// ---------------------------------------------------------------------------------------------------------------

/// The absolute path of an OpenSSH program (sshd lives in /usr/sbin, often not on a user's PATH). A missing one
/// fails the test: these tests never skip.
fn openssh(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .and_then(|p| fs::canonicalize(p).ok())
        .unwrap_or_else(|| panic!("`{name}` (OpenSSH) is not installed: run scripts/install-test-deps"))
}

/// Runs an OpenSSH tool; fails the test when it fails; returns its stdout.
fn run_tool(name: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(openssh(name));
    command.args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap_or_else(|e| panic!("run {name}: {e}"));
    assert!(
        output.status.success(),
        "{name} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The user the tests (and so sshd and the runner) run as: the only user a non-root sshd can log in.
fn current_user() -> &'static str {
    static USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    USER.get_or_init(|| {
        let output = Command::new("id").arg("-un").output().expect("run id -un");
        assert!(output.status.success(), "id -un failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    })
}

/// A key pair made with ssh-keygen.
struct Key {
    private: PathBuf,
    /// The `authorized_keys` / `known_hosts` form: `ssh-ed25519 AAAA... comment`.
    public: String,
    /// `SHA256:...`, as sshd logs it when it accepts the key.
    fingerprint: String,
}

impl Key {
    /// A new key of `kind` (`ed25519`, `rsa`, ...) in `dir`, encrypted with `passphrase` unless it is empty.
    fn generate(dir: &Path, name: &str, kind: &str, passphrase: &str) -> Key {
        Key::generate_with(dir, name, &["-t", kind], passphrase)
    }

    /// A new key made by `ssh-keygen <type_args>` (`-t rsa -m PEM`: the older PEM format).
    fn generate_with(dir: &Path, name: &str, type_args: &[&str], passphrase: &str) -> Key {
        let private = dir.join(name);
        let path = private.to_str().unwrap();
        let comment = format!("runner-test-{name}");
        let mut args = vec!["-q", "-N", passphrase, "-C", &comment, "-f", path];
        args.extend_from_slice(type_args);
        run_tool("ssh-keygen", &args, &[]);
        let public = fs::read_to_string(private.with_extension("pub")).unwrap().trim().to_string();
        let listed = run_tool("ssh-keygen", &["-l", "-E", "sha256", "-f", &format!("{path}.pub")], &[]);
        let fingerprint = listed.split_whitespace().nth(1).expect("a fingerprint from ssh-keygen -l").to_string();
        assert!(fingerprint.starts_with("SHA256:"), "{listed}");
        Key { private, public, fingerprint }
    }

    fn path(&self) -> &str {
        self.private.to_str().unwrap()
    }
}

/// A real sshd on 127.0.0.1:`port`, as the current user, with everything in its own temp dir. Killed on drop.
struct SshServer {
    child: Child,
    dir: TempDir,
    port: u16,
    host_key: Key,
}

impl SshServer {
    fn start() -> SshServer {
        let sshd = openssh("sshd");
        let dir = tempfile::Builder::new().prefix("runner-test-sshd-").tempdir().unwrap();
        let host_key = Key::generate(dir.path(), "host_ed25519_key", "ed25519", "");
        fs::write(dir.path().join("authorized_keys"), "").unwrap();
        if unsafe { libc::geteuid() } == 0 {
            // Run as root, sshd wants its privilege-separation directory (systemd makes it when it starts ssh).
            fs::create_dir_all("/run/sshd").expect("create /run/sshd for sshd");
        }
        // A free port can be taken by someone else before sshd binds it: then sshd exits, and we try another.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
            let config = dir.path().join("sshd_config");
            fs::write(&config, sshd_config(dir.path(), port, &host_key)).unwrap();
            let log = dir.path().join("sshd.log");
            let _ = fs::remove_file(&log);
            // -D: stay in the foreground (this child is sshd itself); -E: log to a file; -f: only our config.
            let mut child = Command::new(&sshd)
                .args(["-D", "-f", config.to_str().unwrap(), "-E", log.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(fs::File::create(dir.path().join("sshd.stderr")).unwrap()))
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", sshd.display()));
            match wait_for_banner(&mut child, port) {
                Ok(()) => return SshServer { child, dir, port, host_key },
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(format!("port {port}: {why}\n{}", server_log(dir.path())));
                }
            }
        }
        panic!("sshd did not start:\n{}", failures.join("\n"));
    }

    /// Lets `key` log in.
    fn authorize(&self, key: &Key) {
        let path = self.dir.path().join("authorized_keys");
        let mut keys = fs::read_to_string(&path).unwrap();
        keys.push_str(&key.public);
        keys.push('\n');
        fs::write(path, keys).unwrap();
    }

    /// What sshd logged, for failure messages.
    fn log(&self) -> String {
        server_log(self.dir.path())
    }

    /// sshd logged that it let `key` in (`Accepted publickey for <user> ... SHA256:...`).
    fn accepted(&self, key: &Key) -> bool {
        let log = fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default();
        log.lines().any(|l| l.contains("Accepted publickey for ") && l.contains(&key.fingerprint))
    }

    /// sshd logged that `key` was offered and refused (`Failed publickey for <user> ... SHA256:...`).
    fn refused(&self, key: &Key) -> bool {
        let log = fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default();
        log.lines().any(|l| l.contains("Failed publickey for ") && l.contains(&key.fingerprint))
    }

    /// What `ssh-keyscan -p PORT 127.0.0.1` says (`-H`: hashed, as ssh writes known_hosts with `HashKnownHosts
    /// yes`, Debian's default), checked to be the host key this server was given.
    fn keyscan(&self, hashed: bool) -> String {
        let port = self.port.to_string();
        let mut args = vec!["-t", "ed25519", "-p", &port];
        if hashed {
            args.push("-H");
        }
        args.push("127.0.0.1");
        let scanned = run_tool("ssh-keyscan", &args, &[]);
        let key_data = self.host_key.public.split_whitespace().nth(1).unwrap();
        assert!(scanned.contains(key_data), "ssh-keyscan found another host key: {scanned}");
        let prefix = if hashed { "|1|".to_string() } else { format!("[127.0.0.1]:{port} ") };
        assert!(scanned.starts_with(&prefix), "unexpected ssh-keyscan output: {scanned}");
        scanned
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        // sshd forks a process per connection. Those end with their connection (the runner has exited by now): let
        // the listener reap them first, so that none is left behind as an orphan; then kill whatever remains.
        let listener = self.child.id() as i32;
        wait_until(Duration::from_secs(5), || children_of(listener).is_empty());
        for pid in children_of(listener) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The live (not zombie) child processes of `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // `pid (comm) S ppid ...`: comm may contain spaces and parentheses, the state follows the last `)`.
            let mut fields = stat[stat.rfind(')').map_or(0, |i| i + 1)..].split_whitespace();
            let state = fields.next();
            fields.next().and_then(|p| p.parse::<i32>().ok()) == Some(parent) && !matches!(state, Some("Z" | "X"))
        })
        .collect()
}

/// Waits until sshd answers on `port` with its SSH banner; an error when it exits or the deadline passes.
fn wait_for_banner(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("sshd exited with {status}"));
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut banner = [0u8; 8];
            if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no SSH banner on port {port} after {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What sshd logged in `dir` (and printed before it could log).
fn server_log(dir: &Path) -> String {
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!("--- sshd.log\n{}--- sshd stderr\n{}", read("sshd.log"), read("sshd.stderr"))
}

fn sshd_config(dir: &Path, port: u16, host_key: &Key) -> String {
    let dir = dir.display();
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {host}\n\
         PidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         AllowUsers {user}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         StrictModes no\n\
         UsePAM no\n\
         UseDNS no\n\
         PrintMotd no\n\
         LogLevel VERBOSE\n",
        host = host_key.private.display(),
        user = current_user(),
    )
}

/// A real ssh-agent listening on a socket in a temp dir. Killed on drop.
struct SshAgent {
    child: Child,
    socket: PathBuf,
    _dir: TempDir,
}

impl SshAgent {
    fn start() -> SshAgent {
        let dir = tempfile::Builder::new().prefix("runner-test-agent-").tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        // -D: stay in the foreground (this child is the agent itself); -a: listen on our socket.
        let mut child = Command::new(openssh("ssh-agent"))
            .args(["-D", "-a", socket.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start ssh-agent: {e}"));
        // Ready when `ssh-add -l` reaches it: exit 1 ("no identities"), not 2 ("cannot connect").
        let ready = wait_until(START_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("ssh-agent exited with {status}");
            }
            socket.exists()
                && Command::new(openssh("ssh-add"))
                    .arg("-l")
                    .env("SSH_AUTH_SOCK", &socket)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.code() == Some(1))
        });
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ssh-agent did not answer on {} within {START_TIMEOUT:?}", socket.display());
        }
        SshAgent { child, socket, _dir: dir }
    }

    fn add(&self, key: &Key) {
        run_tool("ssh-add", &["-q", key.path()], &[("SSH_AUTH_SOCK", &self.socket)]);
        let listed = run_tool("ssh-add", &["-l", "-E", "sha256"], &[("SSH_AUTH_SOCK", &self.socket)]);
        assert!(listed.contains(&key.fingerprint), "the agent does not hold the key: {listed}");
    }

    fn socket(&self) -> &str {
        self.socket.to_str().unwrap()
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The repository served over SSH, and the pipeline that clones it
// ---------------------------------------------------------------------------------------------------------------

/// A bare repository served by a real sshd: `main` with two commits (`file.txt` says `main`), `dev` from the first.
/// `home` is the HOME given to the runner: its `.ssh/known_hosts` holds the server's host key, written by
/// `ssh-keyscan` as a user would.
struct Remote {
    work: GitRepo,
    root: TempDir,
    server: SshServer,
    home: TempDir,
    /// Where the tests' client keys live (outside the runner's directory).
    keys: TempDir,
}

fn remote() -> Remote {
    let work = main_and_dev_repository();
    let root = bare_clone(&work);
    let server = SshServer::start();
    let home = tempfile::Builder::new().prefix("runner-test-home-").tempdir().unwrap();
    fs::create_dir_all(home.path().join(".ssh")).unwrap();
    fs::write(home.path().join(".ssh/known_hosts"), server.keyscan(false)).unwrap();
    let keys = tempfile::Builder::new().prefix("runner-test-keys-").tempdir().unwrap();
    Remote { work, root, server, home, keys }
}

impl Remote {
    /// `ssh://<user>@127.0.0.1:<port>/<absolute path of the bare repository>`.
    fn url(&self) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            current_user(),
            self.server.port,
            self.root.path().join("infra.git").display()
        )
    }

    /// A new unencrypted ed25519 key (or encrypted with `passphrase`).
    fn key(&self, name: &str, passphrase: &str) -> Key {
        Key::generate(self.keys.path(), name, "ed25519", passphrase)
    }

    fn home(&self) -> &str {
        self.home.path().to_str().unwrap()
    }

    fn known_hosts(&self) -> PathBuf {
        self.home.path().join(".ssh").join("known_hosts")
    }

    /// How a failure names the repository and the reference (the user name in the URL is shown as `***`).
    fn what(&self) -> String {
        format!("127.0.0.1:{}{} at branch `main`", self.server.port, self.root.path().join("infra.git").display())
    }
}

/// A pipeline fetching `url` at `main` with `auth` (a RON value), then a step that copies `file.txt` and the
/// Source's COMMIT_ID to files in `out_dir`.
fn pipeline(url: &str, auth: &str, out_dir: &str) -> String {
    format!(
        r#"Pipeline(
    name: "ssh",
    steps: [
        Step(id: "source", kind: Source(repository: "{url}", reference: Branch("main"), auth: {auth})),
        Step(
            id: "inspect",
            needs: ["source"],
            kind: Shell(commands: [
                "cp file.txt {out_dir}/seen.txt",
                "printf '%s' \"$COMMIT_ID\" > {out_dir}/commit.txt",
                "git log --format=%H -1 > {out_dir}/git-log.txt",
            ]),
        ),
    ],
)
"#
    )
}

/// Runs the pipeline with `auth` against `remote`, HOME set to the remote's home (its known_hosts) and no
/// ssh-agent inherited from the test's environment unless `configure` gives one.
fn run_source(remote: &Remote, auth: &str, configure: impl FnOnce(Test) -> Test) -> (Test, Output) {
    let test = Test::new();
    let text = pipeline(&remote.url(), auth, &test.dir());
    let test =
        test.pipeline(&text).args(&["run", "pipeline.ron"]).env("HOME", remote.home()).env_remove("SSH_AUTH_SOCK");
    let test = configure(test);
    let out = test.run();
    (test, out)
}

/// The checkout is `main` of the served repository, seen by the downstream step.
fn assert_cloned_main(remote: &Remote, test: &Test, out: &Output) {
    out.assert_code(0);
    let main = remote.work.rev_parse("main");
    assert_eq!(test.read("seen.txt").as_deref(), Some("main\n"), "file.txt of the checkout\n{}", out.dump());
    assert_eq!(test.read("commit.txt"), Some(main.clone()), "COMMIT_ID\n{}", out.dump());
    assert_eq!(test.read("git-log.txt").map(|s| s.trim().to_string()), Some(main), "HEAD of the workspace");
    out.assert_output_contains(&remote.url());
}

/// The Source failed with `reason` (in the line the runner prints for the failed step, on stdout with the other
/// events of the run), naming the repository and the branch; the downstream step did not run.
fn assert_fetch_failed(remote: &Remote, test: &Test, out: &Output, reason: &str) {
    out.assert_code(1);
    let line = out.stdout.lines().find(|l| l.contains("[source] failed")).unwrap_or_else(|| {
        panic!("no failure line for the Source\n{}", out.dump());
    });
    assert!(line.contains("cannot fetch ssh://"), "{line}");
    assert!(line.contains(&format!("{}: {reason}", remote.what())), "expected {reason:?} in {line:?}\n{}", out.dump());
    out.assert_stdout_contains("[inspect] skipped");
    assert!(!test.exists("seen.txt"), "the downstream step ran\n{}", out.dump());
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_source_clones_over_ssh_with_a_key_file() {
    let remote = remote();
    let key = remote.key("id_ed25519", "");
    remote.server.authorize(&key);
    let (test, out) = run_source(&remote, &format!(r#"SshKey(path: "{}")"#, key.path()), |t| t);
    assert_cloned_main(&remote, &test, &out);
    assert!(remote.server.accepted(&key), "sshd did not log the key as accepted\n{}", remote.server.log());
}

#[test]
fn rsa_and_ecdsa_key_files_work_too_in_the_openssh_and_the_pem_format() {
    let remote = remote();
    let kinds: [&[&str]; 4] = [
        &["-t", "rsa", "-b", "3072"],
        &["-t", "rsa", "-b", "3072", "-m", "PEM"],
        &["-t", "ecdsa"],
        &["-t", "ecdsa", "-m", "PEM"],
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let key = Key::generate_with(remote.keys.path(), &format!("id_{i}"), kind, "");
        remote.server.authorize(&key);
        let (test, out) = run_source(&remote, &format!(r#"SshKey(path: "{}")"#, key.path()), |t| t);
        assert_eq!(out.code, Some(0), "ssh-keygen {kind:?}\n{}", out.dump());
        assert_cloned_main(&remote, &test, &out);
        assert!(
            remote.server.accepted(&key),
            "{kind:?}: sshd did not log the key as accepted\n{}",
            remote.server.log()
        );
    }
}

#[test]
fn a_source_clones_over_ssh_with_a_passphrase_protected_key() {
    let remote = remote();
    let passphrase = unique_secret("pass");
    let key = remote.key("id_ed25519_protected", &passphrase);
    remote.server.authorize(&key);
    let auth = format!(r#"SshKey(path: "{}", passphrase: Env("RUNNER_TEST_SSH_PASSPHRASE"))"#, key.path());
    let (test, out) = run_source(&remote, &auth, |t| t.env("RUNNER_TEST_SSH_PASSPHRASE", &passphrase));
    assert_cloned_main(&remote, &test, &out);
    assert!(remote.server.accepted(&key), "sshd did not log the key as accepted\n{}", remote.server.log());
    assert_secret_nowhere(test.path(), &out, &passphrase);
    assert_run_recorded(test.path());
}

#[test]
fn a_wrong_passphrase_fails_the_source_and_appears_nowhere() {
    let remote = remote();
    let passphrase = unique_secret("right");
    let key = remote.key("id_ed25519_protected", &passphrase);
    remote.server.authorize(&key);
    let wrong = unique_secret("wrong");
    let auth = format!(r#"SshKey(path: "{}", passphrase: Env("RUNNER_TEST_SSH_PASSPHRASE"))"#, key.path());
    let (test, out) = run_source(&remote, &auth, |t| t.env("RUNNER_TEST_SSH_PASSPHRASE", &wrong));
    // libssh2 cannot decrypt the key, so libgit2 never offers it; the runner names the key and the likely cause.
    let reason =
        format!("cannot use the SSH key {}: a wrong passphrase, or a key format libssh2 cannot read", key.path());
    assert_fetch_failed(&remote, &test, &out, &reason);
    assert!(!remote.server.accepted(&key), "sshd accepted the key\n{}", remote.server.log());
    assert_secret_nowhere(test.path(), &out, &wrong);
    assert_run_recorded(test.path());
}

#[test]
fn a_key_the_server_does_not_accept_fails_with_a_clear_error() {
    let remote = remote();
    let authorized = remote.key("id_authorized", "");
    remote.server.authorize(&authorized);
    let stranger = remote.key("id_stranger", "");
    let (test, out) = run_source(&remote, &format!(r#"SshKey(path: "{}")"#, stranger.path()), |t| t);
    let reason = format!("the remote rejected the credentials (the SSH key {})", stranger.path());
    assert_fetch_failed(&remote, &test, &out, &reason);
    assert!(!remote.server.accepted(&stranger), "sshd accepted the stranger's key\n{}", remote.server.log());
    assert!(remote.server.refused(&stranger), "sshd did not log the key as refused\n{}", remote.server.log());
}

#[test]
fn a_source_clones_over_ssh_through_the_agent() {
    let remote = remote();
    let key = remote.key("id_in_agent", "");
    remote.server.authorize(&key);
    let agent = SshAgent::start();
    agent.add(&key);
    // Only the agent has the key now.
    fs::remove_file(&key.private).unwrap();
    let (test, out) = run_source(&remote, "SshAgent", |t| t.env("SSH_AUTH_SOCK", agent.socket()));
    assert_cloned_main(&remote, &test, &out);
    assert!(remote.server.accepted(&key), "sshd did not log the agent's key as accepted\n{}", remote.server.log());
}

#[test]
fn a_hashed_known_hosts_entry_as_ssh_writes_it_is_enough() {
    let remote = remote();
    let key = remote.key("id_ed25519", "");
    remote.server.authorize(&key);
    fs::write(remote.known_hosts(), remote.server.keyscan(true)).unwrap();
    let (test, out) = run_source(&remote, &format!(r#"SshKey(path: "{}")"#, key.path()), |t| t);
    assert_cloned_main(&remote, &test, &out);
}

#[test]
fn an_unknown_ssh_host_key_is_refused_before_any_key_is_offered() {
    let remote = remote();
    let key = remote.key("id_ed25519", "");
    remote.server.authorize(&key);
    let auth = format!(r#"SshKey(path: "{}")"#, key.path());
    // Another key for this host and port, as after a man in the middle or a reinstalled server.
    let impostor = Key::generate(remote.keys.path(), "impostor_host_key", "ed25519", "");
    let key_data = |k: &Key| k.public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let changed = format!("[127.0.0.1]:{} {}\n", remote.server.port, key_data(&impostor));
    let other_host = format!("[127.0.0.2]:{} {}\n", remote.server.port, key_data(&remote.server.host_key));
    let cases = [
        ("no known_hosts", None),
        ("another key in known_hosts", Some(changed)),
        ("only another host", Some(other_host)),
    ];
    for (case, known_hosts) in cases {
        match &known_hosts {
            None => fs::remove_file(remote.known_hosts()).unwrap(),
            Some(text) => fs::write(remote.known_hosts(), text).unwrap(),
        }
        let (test, out) = run_source(&remote, &auth, |t| t);
        assert_fetch_failed(&remote, &test, &out, "the SSH server's host key is not in ~/.ssh/known_hosts");
        out.assert_stdout_contains("ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts");
        let log = remote.server.log();
        assert!(!log.contains("Accepted key ") && !remote.server.accepted(&key), "{case}: the key was offered\n{log}");
    }
}
