//! One error type for everything the core does, each saying what the app
//! (or its user) should do next.

use xianlu_domain::wire::Problem;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Nothing is wrong with the request: try again later (the outbox does).
    RetryLater,
    /// Log in again; the session is over.
    LogIn,
    /// The object changed meanwhile: reload it and decide again.
    Reload,
    /// The request itself is wrong: change it.
    FixRequest,
    /// This user may not do this.
    NotAllowed,
    /// The object is gone or out of reach (e.g. re-assigned to someone else).
    Gone,
    /// The server speaks another protocol version: update the app.
    UpdateApp,
    /// Local storage failed: the device needs attention.
    CheckDevice,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The server could not be reached or the connection broke.
    #[error("the server cannot be reached: {0}")]
    Network(String),
    /// The server answered with a problem document.
    #[error("{} ({}): {}", problem.title, problem.code, problem.detail)]
    Server { problem: Box<Problem> },
    /// The server's answer is not something this version understands.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The server speaks a different protocol version.
    #[error("the server speaks protocol version {server}; this app speaks {ours}; update the app")]
    Incompatible { server: u32, ours: u32 },
    /// Not logged in, or the session ended (logout, revocation, expiry).
    #[error("not logged in: {0}")]
    Unauthenticated(String),
    /// Local storage failed or holds something unreadable.
    #[error("local storage: {0}")]
    Storage(String),
    /// The caller asked for something the core cannot do (e.g. cancel a change already sent).
    #[error("{0}")]
    Refused(String),
}

impl CoreError {
    /// What to do about it.
    pub fn next_step(&self) -> NextStep {
        match self {
            CoreError::Network(_) => NextStep::RetryLater,
            CoreError::Server { problem } => next_step_for(problem.status, &problem.code),
            CoreError::Protocol(_) => NextStep::UpdateApp,
            CoreError::Incompatible { .. } => NextStep::UpdateApp,
            CoreError::Unauthenticated(_) => NextStep::LogIn,
            CoreError::Storage(_) => NextStep::CheckDevice,
            CoreError::Refused(_) => NextStep::FixRequest,
        }
    }

    /// Whether trying the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.next_step() == NextStep::RetryLater
    }

    /// The stable code of a server refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            CoreError::Server { problem } => Some(&problem.code),
            _ => None,
        }
    }
}

/// What to do about a server's refusal, by its status and stable code.
pub fn next_step_for(status: u16, code: &str) -> NextStep {
    match (status, code) {
        (_, "idempotency_in_flight") => NextStep::RetryLater,
        (408 | 429, _) | (500..=599, _) => NextStep::RetryLater,
        (401, _) => NextStep::LogIn,
        (403, _) => NextStep::NotAllowed,
        (404 | 410, _) => NextStep::Gone,
        (409, _) => NextStep::Reload,
        _ => NextStep::FixRequest,
    }
}

#[cfg(feature = "native")]
impl From<rusqlite::Error> for CoreError {
    fn from(error: rusqlite::Error) -> Self {
        CoreError::Storage(error.to_string())
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
