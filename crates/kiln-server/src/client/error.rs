//! What a [`super::Client`] call can fail with.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (`{"error": {"code", "message", ...}}`).
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        extra: Map<String, Value>,
    },
    /// A streamed answer (exec) ended with an `error` line after its 200 status.
    #[error("{message} ({code}, in the stream)")]
    Stream { code: String, message: String },
    #[error("cannot reach the kiln server at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    /// Not a `source`: the message already holds it, and a printed chain would say it twice.
    #[error("talking to the kiln server: {0}")]
    Io(std::io::Error),
    /// An answer that is not what the API says.
    #[error("the kiln server sent an unexpected answer: {0}")]
    Protocol(String),
    /// A bad server URL.
    #[error("{0}")]
    Config(String),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code (`not_found`, `invalid_transition`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } | ClientError::Stream { code, .. } => Some(code),
            _ => None,
        }
    }
}
