//! AWS plumbing shared by the AWS step kinds: sessions per (account, region, role), built once and cached, with
//! credentials from the standard chain (env, profiles incl. SSO, container credentials, IMDS) and STS AssumeRole.
//! `AWS_ENDPOINT_URL` (read by aws-config) or the pipeline's `aws_endpoint_url` points every client elsewhere.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sdk_sts::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tokio::sync::Mutex;

/// The CDK bootstrap qualifier when none is given.
pub const DEFAULT_QUALIFIER: &str = "hnb659fds";

/// An AWS partition, as a region belongs to it: the second field of every ARN (`arn:aws-cn:iam::...`) and the DNS
/// suffix of its endpoints (`s3.cn-north-1.amazonaws.com.cn`). The one rule every ARN and host name runner builds
/// goes through (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html>,
/// <https://docs.aws.amazon.com/general/latest/gr/rande.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// `aws`, `aws-cn`, `aws-us-gov`, `aws-iso`, `aws-iso-b`.
    pub name: &'static str,
    /// `amazonaws.com`, `amazonaws.com.cn`, ...
    pub dns_suffix: &'static str,
}

impl Partition {
    /// The partition of a region, from its name (`cn-north-1` -> `aws-cn`); an unknown prefix is the commercial one.
    pub fn of(region: &str) -> Partition {
        let (name, dns_suffix) = if region.starts_with("cn-") {
            ("aws-cn", "amazonaws.com.cn")
        } else if region.starts_with("us-gov-") {
            ("aws-us-gov", "amazonaws.com")
        } else if region.starts_with("us-isob-") {
            ("aws-iso-b", "sc2s.sgov.gov")
        } else if region.starts_with("us-iso-") {
            ("aws-iso", "c2s.ic.gov")
        } else {
            ("aws", "amazonaws.com")
        };
        Partition { name, dns_suffix }
    }
}

/// An IAM role's ARN in the partition of `region`: `arn:{partition}:iam::{account}:role/{name}`.
pub fn role_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:{}:iam::{account}:role/{name}", Partition::of(region).name)
}

/// An AWS managed policy's ARN in the partition of `region`: `arn:{partition}:iam::aws:policy/{name}`.
pub fn managed_policy_arn(region: &str, name: &str) -> String {
    format!("arn:{}:iam::aws:policy/{name}", Partition::of(region).name)
}

/// The host name of a service's endpoint in a region: `{service}.{region}.{dns suffix}`.
pub fn endpoint_host(service: &str, region: &str) -> String {
    format!("{service}.{region}.{}", Partition::of(region).dns_suffix)
}

/// What a session acts as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub account: String,
    pub region: String,
    /// Role to assume; `None`: the caller's credentials.
    pub role: Option<String>,
    pub external_id: Option<String>,
    /// STS session name (`runner-<pipeline>-<step>`).
    pub session_name: String,
    pub endpoint: Option<String>,
}

impl Target {
    fn describe(&self) -> String {
        match &self.role {
            Some(role) => format!("role {role} in account {}", self.account),
            None => format!("the caller's credentials in account {}", self.account),
        }
    }
}

/// Configured access to one account and region.
#[derive(Debug, Clone)]
pub struct Session {
    pub config: SdkConfig,
    pub target: Target,
    expires: Option<SystemTime>,
}

impl Session {
    pub fn cloudformation(&self) -> aws_sdk_cloudformation::Client {
        aws_sdk_cloudformation::Client::new(&self.config)
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.config).force_path_style(self.endpoint().is_some()).build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The custom endpoint in use, if any.
    pub fn endpoint(&self) -> Option<String> {
        self.target.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok().filter(|e| !e.is_empty()))
    }
}

/// (region, endpoint) of a caller configuration; `None` region: the environment's.
type BaseKey = (Option<String>, Option<String>);

/// Sessions built so far, shared by every node of a run.
#[derive(Default)]
pub struct Sessions {
    base: Mutex<HashMap<BaseKey, SdkConfig>>,
    sessions: Mutex<HashMap<Target, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

/// Why a session could not be had: one message naming the account and role.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AccessError(pub String);

impl Sessions {
    async fn base(&self, region: Option<&str>, endpoint: Option<&str>) -> SdkConfig {
        let key = (region.map(str::to_string), endpoint.map(str::to_string));
        let mut base = self.base.lock().await;
        if let Some(c) = base.get(&key) {
            return c.clone();
        }
        // 10 s to connect, not the SDK's ~3 s: a busy CodeBuild host or a laptop on a slow link otherwise fails a
        // deploy that waiting would have finished (a refused connection still fails at once).
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_string()));
        }
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        let config = loader.load().await;
        base.insert(key, config.clone());
        config
    }

    /// The caller's own configuration (the standard credential chain, no role), for reads such as Secrets Manager;
    /// `region` left out: the region of the environment or profile.
    pub async fn caller(&self, region: Option<&str>, endpoint: Option<&str>) -> SdkConfig {
        self.base(region, endpoint).await
    }

    /// Whether the standard chain has credentials at all: checked once before the accounts are, so that a machine
    /// without any hears it once (what is missing, where runner looked), not once per account and role.
    pub async fn check_credentials(&self, endpoint: Option<&str>) -> Result<(), AccessError> {
        let config = self.base(None, endpoint).await;
        let Some(provider) = config.credentials_provider() else {
            return Err(AccessError(no_credentials()));
        };
        provider.provide_credentials().await.map(|_| ()).map_err(|e| AccessError(describe_credentials_error(&e)))
    }

    /// A session acting in `target.account`, checked with GetCallerIdentity; cached until its credentials near
    /// their expiry.
    pub async fn get(&self, target: &Target) -> Result<Session, AccessError> {
        if let Some(s) = self.sessions.lock().await.get(target) {
            let fresh = s.expires.is_none_or(|e| e > SystemTime::now() + Duration::from_secs(300));
            if fresh {
                return Ok(s.clone());
            }
        }
        let base = self.base(Some(&target.region), target.endpoint.as_deref()).await;
        let (config, expires) = match &target.role {
            None => (base, None),
            Some(role) => {
                let sts = aws_sdk_sts::Client::new(&base);
                let out = sts
                    .assume_role()
                    .role_arn(role)
                    .role_session_name(&target.session_name)
                    .set_external_id(target.external_id.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        let hint = if is_service_error(&e) {
                            format!(
                                "\n  hint: the account must trust the deployment account: bootstrap it with \
                                 `cdk bootstrap aws://{a}/{r} --trust <deployment account>` (or `runner bootstrap \
                                 aws://{a}/{r} --trust <deployment account>`)",
                                a = target.account,
                                r = target.region
                            )
                        } else {
                            String::new()
                        };
                        AccessError(format!(
                            "cannot assume role {role} in account {}: {}{hint}",
                            target.account,
                            aws_reason(&e)
                        ))
                    })?;
                let c = out
                    .credentials()
                    .ok_or_else(|| AccessError(format!("AssumeRole of {role} returned no credentials")))?;
                let expires = SystemTime::try_from(*c.expiration()).ok();
                let creds = Credentials::new(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token().to_string()),
                    expires,
                    "runner-assume-role",
                );
                let config = base.to_builder().credentials_provider(SharedCredentialsProvider::new(creds)).build();
                (config, expires)
            }
        };
        let identity = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AccessError(format!("cannot act with {}: {}", target.describe(), aws_reason(&e))))?;
        let actual = identity.account().unwrap_or_default();
        // An empty account: whatever account the credentials act in (CodeBuild dispatch with the caller's role).
        if !target.account.is_empty() && actual != target.account {
            return Err(AccessError(format!(
                "{} act in account {actual}, not in account {}",
                match &target.role {
                    Some(role) => format!("credentials of role {role}"),
                    None => "the caller's credentials".to_string(),
                },
                target.account
            )));
        }
        let session = Session { config, target: target.clone(), expires };
        self.sessions.lock().await.insert(target.clone(), session.clone());
        Ok(session)
    }
}

/// AWS's own reason for an error, quoted: `Code: message`; for an answer without one (an emulator's HTTP 500
/// page), the status and the body's text; for no answer at all (no credentials, endpoint unreachable, timeout),
/// the whole error chain.
pub fn aws_reason<E>(e: &aws_sdk_sts::error::SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_sts::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => {
                    let raw = s.raw();
                    let body = raw.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                    format!("HTTP {} with no AWS error in it: {}", raw.status().as_u16(), page_text(&body))
                }
            }
        }
        SdkError::DispatchFailure(_) if credentials_error(e).is_some() => {
            credentials_error(e).map(describe_credentials_error).unwrap_or_default()
        }
        SdkError::DispatchFailure(d) if d.is_user() || chain(e).contains("no credentials found") => no_credentials(),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            // The SDK's error does not name the URL it tried; an endpoint set in the environment is the usual one.
            let endpoint = std::env::var("AWS_ENDPOINT_URL").ok().filter(|u| !u.is_empty());
            let at = endpoint.map(|u| format!(" at {u} (AWS_ENDPOINT_URL)")).unwrap_or_default();
            format!("the AWS endpoint cannot be reached{at}: {}", chain(e))
        }
        _ => chain(e),
    }
}

/// The credentials error somewhere in an error's chain: the standard chain found none, or failed to load them.
fn credentials_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        next = err.source();
    }
    None
}

/// A credentials error for people: what is missing and where runner looked, without the SDK's internals (which
/// provider of the chain gave up last, and how, says nothing to someone who meant to set up another one).
pub fn describe_credentials_error(e: &CredentialsError) -> String {
    match e {
        CredentialsError::InvalidConfiguration(_) => {
            let why = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
            format!("the AWS credentials are not configured correctly: {why}")
        }
        _ => no_credentials(),
    }
}

/// "no AWS credentials": each place of the standard chain runner looked in, as this machine has it.
fn no_credentials() -> String {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let unset = |name: &str| if var(name).is_some() { format!("{name} is set") } else { format!("{name} is not set") };
    let home = var("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    let file = |env: &str, default: &str| {
        var(env).map(std::path::PathBuf::from).unwrap_or_else(|| home.join(".aws").join(default))
    };
    let (credentials, config) = (file("AWS_SHARED_CREDENTIALS_FILE", "credentials"), file("AWS_CONFIG_FILE", "config"));
    let exists = |p: &std::path::Path| if p.exists() { "" } else { " (no such file)" };
    let profile = var("AWS_PROFILE").map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| "default".into());
    let imds = if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        "the EC2 instance metadata service (disabled by AWS_EC2_METADATA_DISABLED)"
    } else {
        "the EC2 instance metadata service (no credentials there: not on EC2, or no instance role)"
    };
    let container = if var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some() {
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set".to_string()
    } else {
        unset("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    };
    format!(
        "no AWS credentials found; runner looked at\n  - the environment: {}, {}\n  - profile `{profile}` in {}{} \
         and {}{} (AWS_PROFILE selects another; SSO profiles need `aws sso login` first)\n  - web identity: {}\n  - \
         container credentials (ECS, CodeBuild): {container}\n  - {imds}\n  hint: export AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or AWS_PROFILE; against the local \
         emulator, `eval \"$(scripts/moto start)\"` exports throwaway ones",
        unset("AWS_ACCESS_KEY_ID"),
        unset("AWS_SECRET_ACCESS_KEY"),
        credentials.display(),
        exists(&credentials),
        config.display(),
        exists(&config),
        unset("AWS_WEB_IDENTITY_TOKEN_FILE"),
    )
}

/// What each attempt of one call got back, so that a failure quotes the first error and not only what an SDK retry
/// of the same request answered. For a call that is not idempotent the retry's answer hides the real one: a
/// CreateStack whose first attempt got HTTP 500 and whose retry got `AlreadyExistsException`. Attach it with
/// `.customize().interceptor(log.clone())`; the retried request is the same one (same ClientRequestToken).
#[derive(Debug, Clone, Default)]
pub struct AttemptLog {
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl AttemptLog {
    /// The failure of the call, from its final error (`last`, as [`aws_reason`] says it): the first attempt's
    /// error first when an earlier attempt failed otherwise.
    pub fn explain(&self, last: String) -> String {
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        match errors.first() {
            Some(first) if errors.len() > 1 && *first != last && !last.contains(first.as_str()) => format!(
                "{first} (the SDK retried the same request {} time{}; the last answer: {last})",
                errors.len() - 1,
                if errors.len() == 2 { "" } else { "s" }
            ),
            _ => last,
        }
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for AttemptLog {
    fn name(&self) -> &'static str {
        "AttemptLog"
    }

    fn read_after_attempt(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if let Some(Err(e)) = context.output_or_error() {
            let text = match context.response() {
                Some(r) => response_reason(r.status().as_u16(), r.body().bytes().unwrap_or_default()),
                None => chain(e),
            };
            if let Ok(mut errors) = self.errors.lock() {
                errors.push(text);
            }
        }
        Ok(())
    }
}

/// AWS's reason in an error response's body, as [`aws_reason`] says it: `Code: message` from a query protocol's
/// XML (`<Code>`, `<Message>`) or a JSON protocol's `__type` / `message`; else the status and the body's text.
fn response_reason(status: u16, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    let element = |name: &str| {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&close)? + start;
        Some(unescape_xml(&body[start..end]))
    };
    let (code, message) = match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => (
            v.get("__type").and_then(|t| t.as_str()).map(|t| t.rsplit('#').next().unwrap_or(t).to_string()),
            v.get("message").or_else(|| v.get("Message")).and_then(|m| m.as_str()).map(str::to_string),
        ),
        Err(_) => (element("Code"), element("Message")),
    };
    match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => format!("HTTP {status} with no AWS error in it: {}", page_text(&body)),
    }
}

fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// An error's messages and its sources', without repeats: `dispatch failure: io error: Connection refused`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Whether an error is AWS refusing (a service error), as opposed to no answer at all.
pub fn is_service_error<E>(e: &aws_sdk_sts::error::SdkError<E, HttpResponse>) -> bool {
    matches!(e, aws_sdk_sts::error::SdkError::ServiceError(_))
}

/// The visible text of an HTML (or plain) body, on one line, at most 300 characters.
fn page_text(body: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    if line.chars().count() > 300 {
        format!("{}...", line.chars().take(300).collect::<String>())
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_hosts_follow_the_partition_of_the_region() {
        assert_eq!(role_arn("us-east-1", "111111111111", "r"), "arn:aws:iam::111111111111:role/r");
        assert_eq!(role_arn("cn-north-1", "111111111111", "r"), "arn:aws-cn:iam::111111111111:role/r");
        assert_eq!(role_arn("us-gov-west-1", "111111111111", "r"), "arn:aws-us-gov:iam::111111111111:role/r");
        assert_eq!(managed_policy_arn("cn-northwest-1", "P"), "arn:aws-cn:iam::aws:policy/P");
        assert_eq!(endpoint_host("s3", "cn-north-1"), "s3.cn-north-1.amazonaws.com.cn");
        assert_eq!(endpoint_host("s3", "us-gov-west-1"), "s3.us-gov-west-1.amazonaws.com");
        assert_eq!(Partition::of("us-isob-east-1").name, "aws-iso-b");
        assert_eq!(Partition::of("us-iso-east-1").name, "aws-iso");
    }

    #[test]
    fn error_bodies_are_read_as_aws_says_them() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>AlreadyExistsException</Code><Message>Stack [A] already exists &amp; more</Message></Error></ErrorResponse>";
        assert_eq!(response_reason(400, xml.as_bytes()), "AlreadyExistsException: Stack [A] already exists & more");
        let json = r#"{"__type": "com.amazonaws#ImageNotFoundException", "message": "no such image"}"#;
        assert_eq!(response_reason(400, json.as_bytes()), "ImageNotFoundException: no such image");
        assert_eq!(
            response_reason(500, b"<html><h1>Internal Server Error</h1></html>"),
            "HTTP 500 with no AWS error in it: Internal Server Error"
        );
        let log = AttemptLog::default();
        log.errors
            .lock()
            .unwrap()
            .extend(["HTTP 500 with no AWS error in it: boom".to_string(), "AlreadyExistsException: x".to_string()]);
        assert_eq!(
            log.explain("AlreadyExistsException: x".into()),
            "HTTP 500 with no AWS error in it: boom (the SDK retried the same request 1 time; the last answer: AlreadyExistsException: x)"
        );
    }

    #[test]
    fn html_error_pages_become_one_line_of_text() {
        let page = "<!doctype html>\n<html><title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1><p>The server failed.</p>";
        assert_eq!(super::page_text(page), "500 Internal Server Error Internal Server Error The server failed.");
    }
}
