//! Errors of the Telegram channel, and the one place a token is scrubbed from text.

/// Why the channel could not be built or stopped polling.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// The channel's own configuration is unusable (empty token, bad API URL, …).
    #[error("telegram channel configuration: {0}")]
    Config(String),
    /// The Bot API says the token is wrong (401): nothing can work until it is fixed.
    #[error(
        "the Telegram Bot API refused the bot token (401 Unauthorized): check channels.telegram.token"
    )]
    InvalidToken,
}

/// An error text is kept to this many characters: teloxide quotes a whole unparseable response
/// (an HTML error page, a malformed batch of updates with users' messages) in its errors.
const MAX_ERROR_CHARS: usize = 300;

/// `text` with every occurrence of `token` (and of its secret half, after the `:`) replaced by
/// `***`, then cut to [`MAX_ERROR_CHARS`]. teloxide puts the token in request URLs, which
/// surface in network errors.
pub fn redact(text: &str, token: &str) -> String {
    let mut out = text.to_string();
    if !token.is_empty() {
        out = out.replace(token, "***");
        if let Some((_, secret)) = token.split_once(':')
            && secret.len() >= 8
        {
            out = out.replace(secret, "***");
        }
    }
    // Cut after scrubbing, so that no token is ever half shown.
    if let Some((cut, _)) = out.char_indices().nth(MAX_ERROR_CHARS) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_error_texts_are_cut() {
        let page = format!("invalid JSON (raw: \"<html>{}</html>\")", "é".repeat(5000));
        let shown = redact(&page, "123:secret-part-xyz");
        assert_eq!(shown.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn redacts_the_token_and_its_secret_half() {
        let token = "123456:AAF7-g0gYncWnm5IyfZlpPRqRRv6kNAGlao";
        let text = format!("error sending request for url (http://x/bot{token}/GetMe)");
        assert_eq!(
            redact(&text, token),
            "error sending request for url (http://x/bot***/GetMe)"
        );
        let half = "…/bot123456%3AAAF7-g0gYncWnm5IyfZlpPRqRRv6kNAGlao/…";
        assert!(!redact(half, token).contains("g0gYnc"));
        assert_eq!(redact("nothing here", ""), "nothing here");
    }
}
