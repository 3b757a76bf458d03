//! Answers to approval requests. A step that needs a person registers at the desk and waits; whoever can answer
//! (the terminal reporter's prompt, `--approve`, `runner approve` from another shell) answers there. Steps never
//! talk to the terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A person's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub approved: bool,
    /// Who or what answered, for the log: `the terminal`, `--approve`, `runner approve`.
    pub by: String,
}

/// Where approval requests wait for their answers.
#[derive(Debug, Clone, Default)]
pub struct ApprovalDesk {
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>,
}

impl ApprovalDesk {
    /// Wait for an answer about `node`.
    pub fn register(&self, node: &str) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(node.to_string(), tx);
        rx
    }

    /// Answer `node`; false when nothing waits for it.
    pub fn answer(&self, node: &str, answer: Answer) -> bool {
        let tx = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(node);
        tx.is_some_and(|tx| tx.send(answer).is_ok())
    }

    /// Whether `node` waits for an answer.
    pub fn is_waiting(&self, node: &str) -> bool {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).contains_key(node)
    }
}
