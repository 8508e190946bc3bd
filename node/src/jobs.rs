//! Long operations a CLI command asks a running node to do (`fsck`, `gc`, `rm`,
//! `pull`): the node answers one HTTP request with newline-delimited JSON, a
//! [`JobLine::Progress`] line now and then and one [`JobLine::Report`] (or
//! [`JobLine::Error`]) at the end. One request is one run and its answer is its
//! progress: there is no job to poll or to forget.
//!
//! [`JobSender`] is the node's side; [`crate::cli`] reads the lines back.

use std::ops::ControlFlow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// One line of a job's answer: `{"progress":{..}}`, `{"report":{..}}` or `{"error":".."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobLine<P, R> {
    /// How far the job is.
    Progress(P),
    /// The job finished.
    Report(Box<R>),
    /// The job failed.
    Error(String),
}

/// Progress lines waiting for a slow client before newer ones are dropped.
const BACKLOG: usize = 16;

/// The node's end of a job's answer.
pub struct JobSender<P, R> {
    tx: mpsc::Sender<Bytes>,
    _lines: std::marker::PhantomData<fn(P, R)>,
}

/// The answer's body: the encoded lines as they come.
pub type JobBody = mpsc::Receiver<Bytes>;

impl<P: Serialize, R: Serialize> JobSender<P, R> {
    /// A sender and the body it feeds.
    pub fn new() -> (Self, JobBody) {
        let (tx, rx) = mpsc::channel(BACKLOG);
        (
            JobSender {
                tx,
                _lines: std::marker::PhantomData,
            },
            rx,
        )
    }

    fn encode(line: &JobLine<P, R>) -> Bytes {
        // Plain structs of numbers and strings: serialising them cannot fail.
        let mut v = serde_json::to_vec(line).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    /// Sends a progress line unless the client is behind (then it only misses this
    /// one). Breaks when the client has gone away.
    pub fn progress(&self, p: P) -> ControlFlow<()> {
        match self.tx.try_send(Self::encode(&JobLine::Progress(p))) {
            Err(TrySendError::Closed(_)) => ControlFlow::Break(()),
            Ok(()) | Err(TrySendError::Full(_)) => ControlFlow::Continue(()),
        }
    }

    /// Whether the client has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn last_line(result: Result<R, String>) -> Bytes {
        Self::encode(&match result {
            Ok(r) => JobLine::Report(Box::new(r)),
            Err(e) => JobLine::Error(e),
        })
    }

    /// Sends the last line, waiting for room. From blocking code.
    pub fn finish_blocking(self, result: Result<R, String>) {
        // The client may be gone; the node's log has the outcome then.
        let _ = self.tx.blocking_send(Self::last_line(result));
    }

    /// Sends the last line, waiting for room. From async code.
    pub async fn finish(self, result: Result<R, String>) {
        let _ = self.tx.send(Self::last_line(result)).await;
    }
}
