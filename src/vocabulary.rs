//! One vocabulary: every label value an operator reads — access-log `reason`s, metric label
//! values, JSON `error` codes — is spelt once, by the enum that declares it. This test reads
//! the sources and fails when one is spelt again as a string literal elsewhere, where it
//! could drift from the enum. (Route `auth` modes are read through `AuthMode::ALL` too, but
//! their words, `none`, `jwt`, `ticket`, mean too much else to scan for.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::admission;
use crate::auth::AuthError;
use crate::auth::error::TicketRejection;
use crate::boundary::Refused;
use crate::live::{CloseReason, SocketEnd};
use crate::refusal::Rejection;
use crate::tls::refusal::Refusal;

/// Each vocabulary with the file that declares it.
fn vocabularies() -> Vec<(&'static str, BTreeSet<&'static str>)> {
    vec![
        ("auth/error.rs", {
            let mut words: BTreeSet<_> = AuthError::all().map(AuthError::reason).collect();
            words.extend(TicketRejection::ALL.map(TicketRejection::label));
            words
        }),
        (
            "live.rs",
            SocketEnd::ALL
                .map(SocketEnd::label)
                .into_iter()
                .chain(CloseReason::ALL.map(CloseReason::label))
                .collect(),
        ),
        ("boundary.rs", Refused::ALL.map(Refused::reason).into()),
        (
            "admission.rs",
            admission::Refusal::ALL
                .map(admission::Refusal::label)
                .into(),
        ),
        ("tls/refusal.rs", Refusal::ALL.map(Refusal::label).into()),
        (
            "refusal.rs",
            Rejection::all()
                .flat_map(|r| [r.reason(), r.error_code()])
                .collect(),
        ),
    ]
}

/// Literals that spell a label's word with another meaning, each with the reason.
const OTHER_MEANINGS: &[(&str, &str, &str)] = &[
    ("error", "refusal.rs", "the JSON body's key"),
    (
        "error",
        "demo/upstream.rs",
        "the demo identity provider's JSON key",
    ),
    (
        "error",
        "metrics.rs",
        "a JWKS refresh's result, a label of another family",
    ),
    (
        "not_found",
        "demo/upstream.rs",
        "the demo identity provider's own code",
    ),
    ("other", "auth/claims.rs", "a claim name in tests"),
    ("subject", "access_log.rs", "the access-log field"),
    ("subject", "admin.rs", "the /revoke body's field"),
    ("subject", "demo/upstream.rs", "the demo's JSON field"),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_label_is_spelt_once_by_its_enum() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let vocabularies = vocabularies();
    let declared: Vec<(&str, &str)> = vocabularies
        .iter()
        .flat_map(|(file, words)| words.iter().map(move |word| (*word, *file)))
        .collect();
    let mut respelt = Vec::new();
    for path in &files {
        let name = path
            .strip_prefix(&src)
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        if name == "vocabulary.rs" {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for (word, home) in &declared {
            let literal = format!("\"{word}\"");
            let elsewhere = name != *home
                && !declared.iter().any(|(w, h)| w == word && *h == name)
                && !OTHER_MEANINGS
                    .iter()
                    .any(|(w, file, _)| w == word && *file == name);
            if elsewhere && text.contains(&literal) {
                respelt.push(format!("{literal} in src/{name} (declared in src/{home})"));
            }
        }
    }
    assert!(
        respelt.is_empty(),
        "labels spelt again:\n{}",
        respelt.join("\n")
    );
}
