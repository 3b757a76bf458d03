//! A scripted AWS double for the behaviours the emulator cannot show (see `../shared/reference` moto notes):
//! an HTTP server on loopback that answers the AWS query protocol (STS and CloudFormation) with responses
//! transcribed from AWS's API reference, in the order a test scripts them. The real SDK in the real binary talks
//! to it through `AWS_ENDPOINT_URL`; nothing in the product knows it is a double.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One scripted HTTP answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// Extra response headers (S3 answers in headers: ETag, checksums).
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A request the double received: the action and its form parameters.
#[derive(Clone, Debug)]
pub struct Request {
    pub action: String,
    pub params: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    /// Per action, the answers still to give; the last one repeats (for polling).
    script: HashMap<String, VecDeque<Reply>>,
    requests: Vec<Request>,
}

pub struct ScriptedAws {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl ScriptedAws {
    pub fn start() -> ScriptedAws {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        ScriptedAws { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// Point a test's runner at the double with example credentials (AWS's documentation keys), no retries, and
    /// nothing read from the machine's AWS configuration.
    pub fn env(&self, test: crate::common::Test) -> crate::common::Test {
        test.env("AWS_ENDPOINT_URL", &self.endpoint())
            .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    }

    /// Answer `action` with these replies in order (the last repeats).
    pub fn script(&self, action: &str, replies: Vec<Reply>) -> &Self {
        self.state.lock().unwrap().script.insert(action.to_string(), replies.into());
        self
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn actions(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.action).collect()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut target = None;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request_line = line.trim_end().to_string();
        let mut expect_continue = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("x-amz-target") {
                    target = v.trim().rsplit('.').next().map(str::to_string);
                }
                if k.eq_ignore_ascii_case("expect") && v.trim().eq_ignore_ascii_case("100-continue") {
                    expect_continue = true;
                }
            }
        }
        if expect_continue && writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return;
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        // The query protocol (STS, CloudFormation) posts a form with Action; the JSON protocol (CodeBuild)
        // names the action in X-Amz-Target and posts JSON, kept whole under "json".
        let (action, params) = match target {
            Some(action) => {
                (action, HashMap::from([("json".to_string(), String::from_utf8_lossy(&body).into_owned())]))
            }
            None => {
                let params: HashMap<String, String> = String::from_utf8_lossy(&body)
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (decode(k), decode(v)))
                    .collect();
                (params.get("Action").cloned().unwrap_or_else(|| s3_operation(&request_line)), params)
            }
        };
        let reply = {
            let mut s = state.lock().unwrap();
            s.requests.push(Request { action: action.clone(), params: params.clone() });
            match s.script.get_mut(&action) {
                Some(q) if q.len() > 1 => q.pop_front().unwrap(),
                Some(q) if !q.is_empty() => q[0].clone(),
                _ => error(400, "Sender", "InvalidAction", &format!("the double has no script for {action}")),
            }
        };
        let extra: String = reply.headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nx-amzn-RequestId: 4f4a6d0c-0000-4000-8000-000000000000\r\n{extra}\r\n",
            reply.status,
            if reply.body.starts_with('{') { "application/x-amz-json-1.1" } else { "text/xml" },
            reply.body.len()
        );
        let body_allowed = !request_line.starts_with("HEAD ");
        let body = if body_allowed { reply.body.as_bytes() } else { &[] };
        if writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(body)).is_err() {
            return;
        }
    }
}

/// The S3 REST operation of a request line (`PUT /bucket/key?partNumber=2&uploadId=u HTTP/1.1` -> `UploadPart`).
fn s3_operation(request_line: &str) -> String {
    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let has = |k: &str| query.split('&').any(|kv| kv == k || kv.starts_with(&format!("{k}=")));
    let op = match method {
        "HEAD" => "HeadObject",
        "GET" if has("encryption") => "GetBucketEncryption",
        "GET" => "GetObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" => "PutObject",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        _ => "Unknown",
    };
    op.to_string()
}

/// An S3 REST error (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
pub fn s3_error(status: u16, code: &str, message: &str) -> Reply {
    Reply {
        status,
        body: format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>"),
        headers: Vec::new(),
    }
}

/// An S3 REST success with an XML (or empty) body.
pub fn s3_ok(status: u16, body: &str) -> Reply {
    Reply { status, body: body.to_string(), headers: Vec::new() }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const CFN_NS: &str = "http://cloudformation.amazonaws.com/doc/2010-05-15/";
const REQUEST_ID: &str =
    "<ResponseMetadata><RequestId>4f4a6d0c-0000-4000-8000-000000000000</RequestId></ResponseMetadata>";

/// An AWS query-protocol error (https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/CommonErrors.html).
pub fn error(status: u16, kind: &str, code: &str, message: &str) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: format!(
            "<ErrorResponse xmlns=\"{CFN_NS}\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>4f4a6d0c-0000-4000-8000-000000000000</RequestId></ErrorResponse>"
        ),
    }
}

fn ok(action: &str, ns: &str, result: &str) -> Reply {
    Reply {
        status: 200,
        headers: Vec::new(),
        body: format!(
            "<{action}Response xmlns=\"{ns}\"><{action}Result>{result}</{action}Result>{REQUEST_ID}</{action}Response>"
        ),
    }
}

/// https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html (example response).
pub fn caller_identity(account: &str) -> Reply {
    ok(
        "GetCallerIdentity",
        STS_NS,
        &format!("<Arn>arn:aws:sts::{account}:assumed-role/deploy/runner</Arn><UserId>AROA3XFRBF535PLBIFPI4:runner</UserId><Account>{account}</Account>"),
    )
}

/// https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html (example response).
pub fn assumed_role(account: &str) -> Reply {
    ok(
        "AssumeRole",
        STS_NS,
        &format!("<Credentials><SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW</SessionToken><SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey><Expiration>2099-07-15T23:28:33.359Z</Expiration><AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId></Credentials><AssumedRoleUser><Arn>arn:aws:sts::{account}:assumed-role/deploy/runner</Arn><AssumedRoleId>ARO123EXAMPLE123:runner</AssumedRoleId></AssumedRoleUser><PackedPolicySize>8</PackedPolicySize>"),
    )
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStacks.html (example response).
pub fn stack(name: &str, status: &str, reason: Option<&str>) -> Reply {
    let reason = reason.map(|r| format!("<StackStatusReason>{r}</StackStatusReason>")).unwrap_or_default();
    ok(
        "DescribeStacks",
        CFN_NS,
        &format!("<Stacks><member><StackName>{name}</StackName><StackId>arn:aws:cloudformation:us-east-1:111111111111:stack/{name}/a69442d0-0b8f-11e0-8ce7-4200ed3aff47</StackId><CreationTime>2026-11-25T10:00:00Z</CreationTime><StackStatus>{status}</StackStatus>{reason}<DisableRollback>false</DisableRollback><EnableTerminationProtection>false</EnableTerminationProtection><Outputs><member><OutputKey>BucketName</OutputKey><OutputValue>data-{name}</OutputValue></member></Outputs></member></Stacks>"),
    )
}

/// [`stack`] with parameters (`ParameterKey`, `ParameterValue`), as DescribeStacks lists them.
pub fn stack_with_parameters(name: &str, status: &str, parameters: &[(&str, &str)]) -> Reply {
    let members: String = parameters
        .iter()
        .map(|(k, v)| format!("<member><ParameterKey>{k}</ParameterKey><ParameterValue>{v}</ParameterValue></member>"))
        .collect();
    let mut reply = stack(name, status, None);
    reply.body =
        reply.body.replace("<DisableRollback>", &format!("<Parameters>{members}</Parameters><DisableRollback>"));
    reply
}

/// An HTTP 500 with an HTML page and no AWS error in it, as an overloaded endpoint (or the emulator) answers.
pub fn server_error() -> Reply {
    Reply {
        status: 500,
        headers: Vec::new(),
        body: "<!doctype html><html><title>500 Internal Server Error</title><h1>Internal Server Error</h1><p>The server encountered an internal error.</p></html>".to_string(),
    }
}

/// DescribeStacks for a stack that is not there: AWS answers ValidationError "Stack with id X does not exist".
pub fn no_stack(name: &str) -> Reply {
    error(400, "Sender", "ValidationError", &format!("Stack with id {name} does not exist"))
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStackEvents.html: events, newest
/// first, each (logical id, resource type, status, reason).
pub fn events(stack: &str, list: &[(&str, &str, &str, &str)]) -> Reply {
    let now =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + std::time::Duration::from_secs(1)).to_string();
    let members: String = list
        .iter()
        .enumerate()
        .rev()
        .map(|(i, (id, kind, status, reason))| {
            format!("<member><EventId>{id}-{status}-{i}</EventId><StackId>arn:aws:cloudformation:us-east-1:111111111111:stack/{stack}/a69442d0</StackId><StackName>{stack}</StackName><LogicalResourceId>{id}</LogicalResourceId><PhysicalResourceId>{id}-phys</PhysicalResourceId><ResourceType>{kind}</ResourceType><Timestamp>{now}</Timestamp><ResourceStatus>{status}</ResourceStatus><ResourceStatusReason>{reason}</ResourceStatusReason></member>")
        })
        .collect();
    ok("DescribeStackEvents", CFN_NS, &format!("<StackEvents>{members}</StackEvents>"))
}

/// An action answered with just its result element (CreateStack, DeleteStack, ExecuteChangeSet, ...).
pub fn done(action: &str, result: &str) -> Reply {
    ok(action, CFN_NS, result)
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeChangeSet.html
pub fn change_set(status: &str, reason: Option<&str>) -> Reply {
    let reason = reason.map(|r| format!("<StatusReason>{r}</StatusReason>")).unwrap_or_default();
    ok(
        "DescribeChangeSet",
        CFN_NS,
        &format!("<ChangeSetName>cs</ChangeSetName><Status>{status}</Status>{reason}<ExecutionStatus>AVAILABLE</ExecutionStatus><Changes><member><Type>Resource</Type><ResourceChange><Action>Modify</Action><LogicalResourceId>Bucket</LogicalResourceId><ResourceType>AWS::S3::Bucket</ResourceType><Replacement>False</Replacement></ResourceChange></member></Changes>"),
    )
}

/// https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_GetTemplate.html: the template as
/// submitted (`TemplateStage` Original).
pub fn template(body: &str) -> Reply {
    let escaped = body.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    ok("GetTemplate", CFN_NS, &format!("<TemplateBody>{escaped}</TemplateBody><StagesAvailable><member>Original</member><member>Processed</member></StagesAvailable>"))
}

/// A JSON-protocol answer (CodeBuild), e.g. https://docs.aws.amazon.com/codebuild/latest/APIReference/API_BatchGetBuilds.html
pub fn json(body: serde_json::Value) -> Reply {
    Reply { status: 200, body: body.to_string(), headers: Vec::new() }
}
