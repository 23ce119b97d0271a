//! Errors of the webhook channel, with the HTTP status each one maps to.

/// Why a webhook request was refused or the channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong signature, or a stale timestamp: the sender is not who it claims.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The request is authentic but its body cannot be used.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The channel's own configuration is unusable (bad callback URL, empty secret, …).
    #[error("webhook channel configuration: {0}")]
    Config(String),
}

impl WebhookError {
    /// The status the relay's HTTP server should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            WebhookError::Unauthorized(_) => 401,
            WebhookError::BadRequest(_) => 400,
            // Not the sender's fault: our side is misconfigured.
            WebhookError::Config(_) => 500,
        }
    }
}
