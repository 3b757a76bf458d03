//! A real AWS emulator per test: moto's server (pinned in `scripts/moto`, installed by `scripts/test`) on a free
//! loopback port, stopped when the test ends. State is checked as the target account with boto3 from the same
//! virtualenv.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Test;

/// A running moto server.
pub struct Moto {
    child: Child,
    pub port: u16,
    python: PathBuf,
}

/// The virtualenv's python: `RUNNER_MOTO_PYTHON`, else the default venv of `scripts/moto`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNNER_MOTO_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("RUNNER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/runner-venv"));
    venv.join("bin/python")
}

impl Moto {
    pub fn start() -> Moto {
        let python = python();
        let server = python.with_file_name("moto_server");
        assert!(server.exists(), "{} is missing: run `scripts/moto install` (scripts/test does it)", server.display());
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto { child, port, python };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not start");
    }

    /// The endpoint as users give it: `localhost`, so CloudFormation template URLs are read path-style.
    pub fn endpoint(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// Point a test's runner at the emulator with throwaway credentials and no retries of the emulator's 500s.
    pub fn env(&self, test: Test) -> Test {
        self.env_without_credentials(test).env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", "testing")
    }

    /// The emulator's endpoint and settings, and no credentials at all.
    pub fn env_without_credentials(&self, test: Test) -> Test {
        test.env("AWS_ENDPOINT_URL", &self.endpoint())
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
    }

    /// Run a boto3 snippet acting in `account` (through AssumeRole; `None`: the default account). The snippet
    /// fills the dict `result`, returned as JSON. `client(name)` gives a client of that account.
    pub fn boto(&self, account: Option<&str>, snippet: &str) -> serde_json::Value {
        self.boto_in(account, "us-east-1", snippet)
    }

    /// [`Moto::boto`] in another region (and so, for `cn-*` and `us-gov-*`, another partition).
    pub fn boto_in(&self, account: Option<&str>, region: &str, snippet: &str) -> serde_json::Value {
        let prelude = format!(
            r#"
import boto3, json
ENDPOINT = "{endpoint}"
ACCOUNT = {account}
REGION = "{region}"
PARTITION = "aws-cn" if REGION.startswith("cn-") else "aws-us-gov" if REGION.startswith("us-gov-") else "aws"
def _session():
    base = dict(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    if ACCOUNT is None:
        return boto3.session.Session(**base)
    sts = boto3.session.Session(**base).client("sts", endpoint_url=ENDPOINT)
    c = sts.assume_role(RoleArn=f"arn:{{PARTITION}}:iam::{{ACCOUNT}}:role/test-inspector", RoleSessionName="test")["Credentials"]
    return boto3.session.Session(region_name=REGION, aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
_s = _session()
def client(name):
    return _s.client(name, endpoint_url=ENDPOINT)
result = {{}}
"#,
            endpoint = self.endpoint(),
            account = account.map_or("None".to_string(), |a| format!("\"{a}\"")),
        );
        let script = format!("{prelude}\n{snippet}\nprint(json.dumps(result, default=str))\n");
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(&script)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("run python");
        assert!(out.status.success(), "boto3 snippet failed:\n{snippet}\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("boto3 snippet printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Moto {
    /// The ARNs of every role assumed so far (moto's state dump, `/moto-api/data.json`), `test-inspector` left out:
    /// what runner really asked STS for, since moto lets any role be assumed.
    pub fn assumed_roles(&self) -> Vec<String> {
        let data = self.boto(
            None,
            r#"
import urllib.request
dump = json.load(urllib.request.urlopen(ENDPOINT + "/moto-api/data.json"))
result["roles"] = sorted({r["role_arn"] for r in dump.get("sts", {}).get("AssumedRole", [])})
"#,
        );
        data["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .filter(|r| !r.ends_with("role/test-inspector"))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `cdk bootstrap` leaves that a deployment needs, made directly in `account` (us-east-1): the file assets
/// bucket, the container assets repository and the bootstrap version parameter (21).
pub fn bootstrap_by_hand(moto: &Moto, account: &str) {
    moto.boto(
        Some(account),
        &format!(
            r#"
client("s3").create_bucket(Bucket="cdk-hnb659fds-assets-{account}-us-east-1")
client("ecr").create_repository(repositoryName="cdk-hnb659fds-container-assets-{account}-us-east-1")
client("ssm").put_parameter(Name="/cdk-bootstrap/hnb659fds/version", Value="21", Type="String")
"#
        ),
    );
}
