//! The `admin:` section's token: what `POST /revoke` must present.

use std::path::Path;

use super::{Problems, secret_file};
use crate::revocations::AdminToken;

/// As short a secret as the ticket secret is refused: it ends sessions on every replica.
const MIN_ADMIN_TOKEN_BYTES: usize = 32;

pub(super) fn admin_token(
    raw: Option<String>,
    base: &Path,
    problems: &mut Problems,
) -> Option<AdminToken> {
    let path = raw?;
    let token = secret_file(
        &path,
        base,
        "admin.token_file",
        MIN_ADMIN_TOKEN_BYTES,
        problems,
    );
    Some(AdminToken::new(token))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, problems, refused};

    fn with_token(file: &str) -> String {
        GOOD.replace(
            "  listen: \"127.0.0.1:9090\"\n",
            &format!("  listen: \"127.0.0.1:9090\"\n  token_file: {file}\n"),
        )
    }

    #[test]
    fn a_good_token_file_passes() {
        assert_eq!(problems(&with_token("ticket.secret")), Vec::<String>::new());
    }

    #[test]
    fn a_short_or_missing_token_file_is_named() {
        refused(
            &with_token("short.secret"),
            "admin.token_file",
            "at least 32 bytes",
        );
        refused(
            &with_token("missing.token"),
            "admin.token_file",
            "cannot read",
        );
    }

    #[test]
    fn revocations_need_a_ttl() {
        refused(
            &format!("{GOOD}revocations:\n  ttl_seconds: 0\n"),
            "revocations.ttl_seconds",
            "at least 1",
        );
    }
}
