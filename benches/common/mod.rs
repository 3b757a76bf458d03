//! The emulator as the benches use it: moto's server from the test virtualenv (`scripts/moto install`) on a free
//! loopback port, stopped when dropped.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A program of the virtualenv (`RUNNER_MOTO_PYTHON` names its python, as for the tests).
pub fn venv_bin(name: &str) -> PathBuf {
    let python = std::env::var_os("RUNNER_MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/runner-venv/bin/python"));
    python.with_file_name(name)
}

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Start the server; `None` (with a line saying why) when it is not installed.
    pub fn start() -> Option<Moto> {
        let server = venv_bin("moto_server");
        if !server.exists() {
            eprintln!("skipping: {} is missing (scripts/moto install)", server.display());
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Moto { child, port })
    }

    pub fn endpoint(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// Run Python with boto3 against the server (`kw` holds the client arguments); its stdout, trimmed.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3\nkw = dict(endpoint_url='{}', region_name='us-east-1', aws_access_key_id='bench', \
             aws_secret_access_key='bench')\n{code}\n",
            self.endpoint()
        );
        let out = Command::new(venv_bin("python")).arg("-c").arg(script).output().expect("python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
