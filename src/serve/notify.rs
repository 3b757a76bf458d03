//! Notifications configured in the pipeline file (`notifications: [...]`): a Slack-compatible webhook POST and an
//! SNS Publish, on a failed run, an approval waiting, a success after a failure. Each is sent on its own task: a
//! slow or failing receiver never holds the run up, and a failure is logged (without the webhook's URL, a secret),
//! never the run's.

use std::time::Duration;

use engine::model::{Notification, NotifyOn};

use super::Server;

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    Failed,
    ApprovalWaiting,
    Fixed,
}

impl Occasion {
    fn matches(self, on: &[NotifyOn]) -> bool {
        let wanted = match self {
            Occasion::Failed => NotifyOn::Failed,
            Occasion::ApprovalWaiting => NotifyOn::ApprovalWaiting,
            Occasion::Fixed => NotifyOn::Fixed,
        };
        on.is_empty() || on.contains(&wanted)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Occasion::Failed => "failed",
            Occasion::ApprovalWaiting => "approval_waiting",
            Occasion::Fixed => "fixed",
        }
    }
}

/// How long one notification may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Send `text` (and the link to the run's page) to every notification of the pipeline that wants `occasion`.
pub fn send(
    server: &std::sync::Arc<Server>,
    pipeline: &str,
    notifications: &[Notification],
    occasion: Occasion,
    text: String,
    link: Option<String>,
) {
    for (i, n) in notifications.iter().enumerate() {
        let (on, what) = match n {
            Notification::Webhook { on, .. } => (on, format!("webhook notification #{}", i + 1)),
            Notification::Sns { on, topic_arn, .. } => (on, format!("SNS notification to {topic_arn}")),
        };
        if !occasion.matches(on) {
            continue;
        }
        let (server, pipeline, n, text, link) =
            (std::sync::Arc::clone(server), pipeline.to_string(), n.clone(), text.clone(), link.clone());
        tokio::spawn(async move {
            let sent = tokio::time::timeout(TIMEOUT, deliver(&server, &pipeline, &n, occasion, &text, link.as_deref()))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {}s", TIMEOUT.as_secs())));
            if let Err(e) = sent {
                eprintln!("{pipeline}: the {what} ({}) failed: {e}", occasion.as_str());
                tracing::warn!(pipeline = %pipeline, "the {what} failed: {e}");
            }
        });
    }
}

async fn deliver(
    server: &Server,
    pipeline: &str,
    notification: &Notification,
    occasion: Occasion,
    text: &str,
    link: Option<&str>,
) -> Result<(), String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    match notification {
        Notification::Webhook { url, .. } => {
            let url =
                steps::source::secret_value(url, "webhook URL", &server.base_dir, &server.aws, endpoint.as_deref())
                    .await?;
            post_webhook(&url, &slack_text(text, link)).await
        }
        Notification::Sns { topic_arn, region, .. } => {
            let region = region.clone().or_else(|| topic_arn.split(':').nth(3).map(str::to_string));
            let config = server.aws.caller(region.as_deref(), endpoint.as_deref()).await;
            let client = aws_sdk_sns::Client::new(&config);
            let message = serde_json::json!({
                "pipeline": pipeline,
                "occasion": occasion.as_str(),
                "text": text,
                "url": link,
            });
            let subject: String =
                format!("runner: {pipeline} {}", occasion.as_str().replace('_', " ")).chars().take(100).collect();
            client
                .publish()
                .topic_arn(topic_arn)
                .subject(subject)
                .message(message.to_string())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("SNS Publish: {}", steps::aws::aws_reason(&e)))
        }
    }
}

/// Slack's message text: `<url|label>` is a link in Slack's markup.
fn slack_text(text: &str, link: Option<&str>) -> serde_json::Value {
    let text = match link {
        Some(url) => format!("{text}\n<{url}|open the run>"),
        None => text.to_string(),
    };
    serde_json::json!({ "text": text })
}

async fn post_webhook(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| e.to_string())?;
    let response = client.post(url).json(body).send().await.map_err(describe_reqwest)?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

/// A request error without its URL (a webhook URL is a secret), with its causes.
fn describe_reqwest(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_on_list_means_every_occasion() {
        assert!(Occasion::Fixed.matches(&[]));
        assert!(Occasion::Failed.matches(&[NotifyOn::Failed]));
        assert!(!Occasion::ApprovalWaiting.matches(&[NotifyOn::Failed, NotifyOn::Fixed]));
    }

    #[test]
    fn slack_messages_carry_the_link_in_slack_markup() {
        let body = slack_text("`dev` run r failed", Some("http://h/pipelines/dev/runs/r"));
        assert_eq!(body["text"], "`dev` run r failed\n<http://h/pipelines/dev/runs/r|open the run>");
    }
}
