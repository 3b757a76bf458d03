//! Deleting one CloudFormation stack for `runner destroy`, like `cdk destroy`: DeleteStack, then waited for.
//! A stack with termination protection is left as it is (AWS would refuse: "Stack [X] cannot be deleted while
//! TerminationProtection is enabled"); one that is not there is already gone. Not a step kind: nothing in a
//! pipeline deletes stacks, the command does.
//! <https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DeleteStack.html>

use std::time::{Duration, Instant};

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{ResourceStatus, StackStatus};

use crate::aws::{aws_reason, Session};

/// How a stack ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// DeleteStack ran and the stack is gone.
    Deleted,
    /// There was no such stack.
    Absent,
    /// Termination protection is on: left as it is.
    Protected,
}

/// How long a deletion is waited for before runner gives up on it (CloudFormation goes on).
const WAIT_AT_MOST: Duration = Duration::from_secs(3600);

/// Delete stack `name` and wait until it is gone; `Err` quotes AWS's reason (the stack's status reason and those
/// of the resources that could not be deleted).
pub async fn delete_stack(session: &Session, name: &str) -> Result<Deleted, String> {
    let cfn = session.cloudformation();
    let describe = |name: &str| cfn.describe_stacks().stack_name(name).send();
    let stack = match describe(name).await {
        Ok(out) => out.stacks().first().cloned(),
        Err(e) if gone(&e) => None,
        Err(e) => return Err(format!("cannot read stack {name}: {}", aws_reason(&e))),
    };
    let Some(stack) = stack else { return Ok(Deleted::Absent) };
    if stack.stack_status() == Some(&StackStatus::DeleteComplete) {
        return Ok(Deleted::Absent);
    }
    if stack.enable_termination_protection() == Some(true) {
        return Ok(Deleted::Protected);
    }
    // Deleted by its id from here on: a new stack of the same name is another stack.
    let id = stack.stack_id().unwrap_or(name).to_string();
    cfn.delete_stack()
        .stack_name(&id)
        .send()
        .await
        .map_err(|e| format!("DeleteStack of {name} failed: {}", aws_reason(&e)))?;
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        let status = match describe(&id).await {
            Ok(out) => out.stacks().first().and_then(|s| s.stack_status().cloned()),
            Err(e) if gone(&e) => None,
            Err(e) => return Err(format!("cannot read stack {name}: {}", aws_reason(&e))),
        };
        match status {
            None | Some(StackStatus::DeleteComplete) => return Ok(Deleted::Deleted),
            Some(StackStatus::DeleteFailed) => return Err(failure(session, &id, name).await),
            _ if started.elapsed() > WAIT_AT_MOST => {
                return Err(format!("stack {name} is still being deleted after {}s", WAIT_AT_MOST.as_secs()))
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// AWS's "Stack with id X does not exist".
fn gone<E: ProvideErrorMetadata>(
    e: &aws_sdk_cloudformation::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> bool {
    e.as_service_error().and_then(|s| s.message()).is_some_and(|m| m.contains("does not exist"))
}

/// Why a deletion failed: the stack's status reason and each resource's that failed to delete.
async fn failure(session: &Session, id: &str, name: &str) -> String {
    let cfn = session.cloudformation();
    let mut reasons = Vec::new();
    if let Ok(out) = cfn.describe_stacks().stack_name(id).send().await {
        if let Some(reason) = out.stacks().first().and_then(|s| s.stack_status_reason()) {
            reasons.push(reason.to_string());
        }
    }
    if let Ok(out) = cfn.describe_stack_events().stack_name(id).send().await {
        for e in out.stack_events().iter().filter(|e| e.resource_status() == Some(&ResourceStatus::DeleteFailed)) {
            let resource = e.logical_resource_id().unwrap_or("?");
            let reason = e.resource_status_reason().unwrap_or("no reason given");
            let line = format!("{resource}: {reason}");
            if !reasons.contains(&line) {
                reasons.push(line);
            }
        }
    }
    if reasons.is_empty() {
        format!("stack {name} could not be deleted (DELETE_FAILED)")
    } else {
        format!("stack {name} could not be deleted (DELETE_FAILED): {}", reasons.join("; "))
    }
}
