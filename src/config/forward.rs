//! The `forward:` section: which headers carry the caller's identity upstream.

use bytes::Bytes;
use http::HeaderName;

use super::{Problems, file};
use crate::identity::{ForwardConfig, IdentityHeader};

pub(super) fn forward_config(raw: file::Forward, problems: &mut Problems) -> ForwardConfig {
    let subject_header = header_name(
        raw.subject_header.as_deref().unwrap_or("X-Auth-Subject"),
        "forward.subject_header",
        problems,
    );
    let claim_headers = raw
        .claim_headers
        .iter()
        .filter_map(|(claim, header)| {
            let name = header_name(header, &format!("forward.claim_headers.{claim}"), problems);
            Some((claim.clone(), name?))
        })
        .collect();
    ForwardConfig {
        subject_header: subject_header.unwrap_or_else(|| IdentityHeader {
            name: HeaderName::from_static("x-auth-subject"),
            spelling: Bytes::from_static(b"X-Auth-Subject"),
        }),
        claim_headers,
        forward_authorization: raw.forward_authorization,
    }
}

/// Header names that carry identity must not be ones the proxy or HTTP itself depends on.
fn header_name(value: &str, key: &str, problems: &mut Problems) -> Option<IdentityHeader> {
    const RESERVED: [&str; 7] = [
        "authorization",
        "host",
        "connection",
        "upgrade",
        "content-length",
        "transfer-encoding",
        "cookie",
    ];
    match HeaderName::from_bytes(value.as_bytes()) {
        Ok(name) if RESERVED.contains(&name.as_str()) => {
            problems.add(
                key,
                format!("{value:?} is reserved and cannot carry identity"),
            );
            None
        }
        Ok(name) => Some(IdentityHeader {
            name,
            spelling: Bytes::copy_from_slice(value.as_bytes()),
        }),
        Err(_) => {
            problems.add(key, format!("{value:?} is not a valid header name"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{GOOD, refused};

    #[test]
    fn identity_headers_must_be_valid_and_not_reserved() {
        for reserved in [
            "Authorization",
            "host",
            "Connection",
            "Upgrade",
            "Cookie",
            "Transfer-Encoding",
        ] {
            refused(
                &format!("{GOOD}forward:\n  subject_header: {reserved}\n"),
                "forward.subject_header",
                "is reserved",
            );
        }
        refused(
            &format!("{GOOD}forward:\n  claim_headers:\n    email: \"X Email\"\n"),
            "forward.claim_headers.email",
            "not a valid header name",
        );
    }
}
