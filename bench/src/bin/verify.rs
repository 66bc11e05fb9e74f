//! What verifying one JWT costs, layer by layer, for each algorithm, over distinct tokens
//! (so no cache helps): the bare signature check with a public key parsed once (aws-lc-rs'
//! `ParsedPublicKey`, the floor), the same check parsing the key on each call (as
//! `UnparsedPublicKey` does), `jsonwebtoken::decode` with the issuer's validation, and
//! ticketgate's whole miss path (`JwtVerifier::verify`: header, issuer, keys, decode,
//! claims, identity), and that plus building the forwarded headers and inserting into a
//! full cache (`TokenCache::caller` on a token it has never seen, what a storm costs).
//!
//!     cargo run --release -p ticketgate-bench --bin verify
//!
//! Then what a cache hit costs (`TokenCache::cached`, the path of every repeated token), in
//! ns per hit with one thread and with two at once: the cache is shared by every worker. Two
//! ways of sharing it: each thread with tokens of its own (connections of different
//! callers, the common case) and both threads with the same tokens (one caller's
//! connections on both workers, where the entry itself is shared). A control that writes
//! nothing shared (a `HashMap` read by both threads, the same lookups without a cache) says
//! what two threads cost each other on the machine itself, so the cache's own share of the
//! ratio can be read off.
//!
//! Then what a session refresh costs: the new token's verification, the identity digests the
//! rule compares and the extension of the held socket, against the verification alone.
//!
//! Prints three Markdown tables: µs per token with each layer's ratio to the bare check, µs
//! per refresh, and ns per hit.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::signature::{
    self as sig, ParsedPublicKey, UnparsedPublicKey, VerificationAlgorithm,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ticketgate::admission::{Admission, AdmissionConfig};
use ticketgate::auth::jwt::JwtVerifier;
use ticketgate::identity::cache::TokenCache;
use ticketgate::live::{Ending, Held, Refreshed, Sessions};
use ticketgate::metrics::Metrics;

const TOKENS: usize = 2_000;

struct Case {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public key as aws-lc-rs takes it, and its algorithm; `None` for HMAC.
    public: Option<(&'static dyn VerificationAlgorithm, Vec<u8>)>,
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).expect("fixture")
}

fn der(decoding: &DecodingKey) -> Vec<u8> {
    decoding.try_get_as_bytes().expect("a DER key").to_vec()
}

fn hmac_secret() -> Vec<u8> {
    let secret = read("hs.secret");
    secret.strip_suffix(b"\n").unwrap_or(&secret).to_vec()
}

fn cases() -> Vec<Case> {
    let secret = hmac_secret();
    let rsa = DecodingKey::from_rsa_pem(&read("rsa.pub.pem")).expect("RSA key");
    let ec = DecodingKey::from_ec_pem(&read("ec256.pub.pem")).expect("EC key");
    let ed = DecodingKey::from_ed_pem(&read("ed25519.pub.pem")).expect("Ed key");
    vec![
        Case {
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            public: None,
        },
        Case {
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(&read("rsa.key.pem")).expect("RSA"),
            public: Some((&sig::RSA_PKCS1_2048_8192_SHA256, der(&rsa))),
            decoding: rsa,
        },
        Case {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(&read("ec256.key.pem")).expect("EC"),
            public: Some((&sig::ECDSA_P256_SHA256_FIXED, der(&ec))),
            decoding: ec,
        },
        Case {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(&read("ed25519.key.pem")).expect("Ed"),
            public: Some((&sig::ED25519, der(&ed))),
            decoding: ed,
        },
    ]
}

fn issuer(alg: Algorithm) -> String {
    format!("bench-{alg:?}")
}

/// Tokens issued at `now`, the instant they are later checked at: one clock reading for
/// both, so a slow (debug) run cannot reach a token before its `iat`.
fn tokens(case: &Case, now: u64) -> Vec<String> {
    (0..TOKENS)
        .map(|i| {
            let claims = serde_json::json!({
                "iss": issuer(case.alg), "aud": "bench", "sub": format!("user-{i}"),
                "email": format!("user-{i}@bench.test"), "iat": now, "exp": now + 3600,
            });
            jsonwebtoken::encode(&Header::new(case.alg), &claims, &case.encoding).expect("token")
        })
        .collect()
}

/// The lowest of three measurements: the run least disturbed by the rest of the machine.
fn best_of_three(mut measure: impl FnMut() -> f64) -> f64 {
    (0..3).map(|_| measure()).fold(f64::INFINITY, f64::min)
}

/// Microseconds per call of `f` over every token, best of three passes.
fn per_token(tokens: &[String], mut f: impl FnMut(&str)) -> f64 {
    best_of_three(|| {
        let started = Instant::now();
        for token in tokens {
            f(black_box(token));
        }
        started.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64
    })
}

/// Microseconds per call of `f` with a cache that is full and has never seen the token, as
/// in a reconnect storm: each pass fills a fresh cache with the last quarter of the tokens,
/// then times the rest. Best of three passes.
fn misses_into_full_cache(tokens: &[String], f: impl Fn(&TokenCache, &str)) -> f64 {
    let (timed, filler) = tokens.split_at(tokens.len() * 3 / 4);
    best_of_three(|| {
        let cache = TokenCache::new(filler.len());
        filler.iter().for_each(|t| f(&cache, t));
        let started = Instant::now();
        for token in timed {
            f(&cache, black_box(token));
        }
        started.elapsed().as_secs_f64() * 1e6 / timed.len() as f64
    })
}

fn split(token: &str) -> (&[u8], Vec<u8>) {
    let (message, signature) = token.rsplit_once('.').expect("three parts");
    (
        message.as_bytes(),
        URL_SAFE_NO_PAD.decode(signature).expect("signature"),
    )
}

/// A config with one issuer per algorithm (`bench-<alg>`, audience `bench`, the fixture
/// keys) and an `email` claim header.
fn config() -> ticketgate::config::Config {
    let dir = tempfile_dir();
    let f = fixtures().canonicalize().expect("fixtures");
    let f = f.display();
    let issuers: String = [
        ("HS256", format!("secret_file: \"{f}/hs.secret\"")),
        ("RS256", format!("public_key_files: [\"{f}/rsa.pub.pem\"]")),
        ("ES256", format!("public_key_files: [\"{f}/ec256.pub.pem\"]")),
        ("EdDSA", format!("public_key_files: [\"{f}/ed25519.pub.pem\"]")),
    ]
    .iter()
    .map(|(alg, key)| {
        format!("    - issuer: \"bench-{alg}\"\n      audiences: [\"bench\"]\n      algorithms: [{alg}]\n      {key}\n")
    })
    .collect();
    let path = dir.join("verify.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: \"127.0.0.1:1\"\nupstream: \"127.0.0.1:2\"\nadmin:\n  listen: \"127.0.0.1:3\"\n\
             jwt:\n  issuers:\n{issuers}routes:\n  - prefix: /\n    auth: jwt\n\
             forward:\n  claim_headers:\n    email: X-Auth-Email\n"
        ),
    )
    .expect("config");
    let config = ticketgate::config::load(&path).expect("valid config");
    let _ = std::fs::remove_dir_all(&dir);
    config
}

const HITS_PER_THREAD: usize = 400_000;

/// Which tokens each of several threads looks up.
#[derive(Clone, Copy)]
enum Sharing {
    /// Each thread a disjoint share of the tokens.
    OwnTokens,
    /// Every thread all the tokens, each from its own offset.
    SameTokens,
}

/// Nanoseconds per call of `op`, averaged over `threads` threads calling it at once.
fn ns_per_call(
    tokens: &[String],
    threads: usize,
    sharing: Sharing,
    op: impl Fn(&str) + Sync,
) -> f64 {
    let op = &op;
    let total: f64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let mine = match sharing {
                    Sharing::OwnTokens => tokens.chunks(tokens.len() / threads).nth(t),
                    Sharing::SameTokens => Some(tokens),
                };
                let mine = mine.expect("a share per thread");
                scope.spawn(move || {
                    let started = Instant::now();
                    for i in 0..HITS_PER_THREAD {
                        op(black_box(&mine[(i * 7 + t * 13) % mine.len()]));
                    }
                    started.elapsed().as_secs_f64() * 1e9 / HITS_PER_THREAD as f64
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    total / threads as f64
}

/// Best of three runs of `ns_per_call`.
fn best_ns(tokens: &[String], threads: usize, sharing: Sharing, op: impl Fn(&str) + Sync) -> f64 {
    best_of_three(|| ns_per_call(tokens, threads, sharing, &op))
}

fn cache_hits(config: &ticketgate::config::Config, verifier: &JwtVerifier, now: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    println!();
    println!(
        "| token | cache hit ns, 1 thread | 2 threads, own tokens | 2 / 1, own tokens | 2 / 1, same tokens | control, 2 / 1 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for case in cases() {
        let tokens: Vec<String> = tokens(&case, now).into_iter().take(1_000).collect();
        let cache = TokenCache::new(config.policy.jwt.cache_size.max(tokens.len()));
        for token in &tokens {
            runtime
                .block_on(cache.caller(token, verifier, &config.policy.forward, now))
                .expect("valid");
        }
        let hit = |token: &str| {
            black_box(
                cache
                    .cached(token, now, |keys| verifier.is_current(keys))
                    .expect("a hit"),
            );
        };
        let one = best_ns(&tokens, 1, Sharing::OwnTokens, hit);
        let own = best_ns(&tokens, 2, Sharing::OwnTokens, hit);
        let same = best_ns(&tokens, 2, Sharing::SameTokens, hit);
        let table: HashMap<&str, usize> = tokens.iter().map(|t| (t.as_str(), t.len())).collect();
        let lookup = |token: &str| {
            black_box(table.get(token).expect("present"));
        };
        let control = best_ns(&tokens, 2, Sharing::OwnTokens, lookup)
            / best_ns(&tokens, 1, Sharing::OwnTokens, lookup);
        println!(
            "| {:?} ({} bytes) | {one:.0} | {own:.0} | {:.2} | {:.2} | {control:.2} |",
            case.alg,
            tokens[0].len(),
            own / one,
            same / one
        );
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ticketgate-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn main() {
    let config = config();
    let verifier = JwtVerifier::new(
        &config.policy.jwt,
        config.policy.forward.claim_names(),
        Vec::new(),
        &Arc::new(Metrics::new()),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let now = jsonwebtoken::get_current_timestamp();
    println!(
        "| algorithm | bare check µs | key parsed per call µs | jsonwebtoken::decode µs | ticketgate miss path µs | miss / bare | + identity, insert into a full cache µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for case in cases() {
        let tokens = tokens(&case, now);
        let (bare, unparsed) = match &case.public {
            Some((alg, key)) => {
                let parsed = ParsedPublicKey::new(*alg, key).expect("parsed key");
                let bare = per_token(&tokens, |t| {
                    let (message, signature) = split(t);
                    parsed.verify_sig(message, &signature).expect("valid");
                });
                let unparsed = per_token(&tokens, |t| {
                    let (message, signature) = split(t);
                    UnparsedPublicKey::new(*alg, key)
                        .verify(message, &signature)
                        .expect("valid");
                });
                (bare, unparsed)
            }
            None => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &hmac_secret());
                let bare = per_token(&tokens, |t| {
                    let (message, signature) = split(t);
                    black_box(aws_lc_rs::hmac::verify(&key, message, &signature).is_ok());
                });
                (bare, bare)
            }
        };
        let mut validation = Validation::new(case.alg);
        validation.set_audience(&["bench"]);
        validation.set_issuer(&[issuer(case.alg)]);
        let decode = per_token(&tokens, |t| {
            jsonwebtoken::decode::<serde_json::Value>(t, &case.decoding, &validation)
                .expect("valid");
        });
        let miss = per_token(&tokens, |t| {
            runtime.block_on(verifier.verify(t, now)).expect("valid");
        });
        let storm = misses_into_full_cache(&tokens, |cache, t| {
            runtime
                .block_on(cache.caller(t, &verifier, &config.policy.forward, now))
                .expect("valid");
        });
        println!(
            "| {:?} | {bare:.1} | {unparsed:.1} | {decode:.1} | {miss:.1} | {:.2} | {storm:.1} |",
            case.alg,
            miss / bare
        );
    }
    refreshes(&verifier, &runtime, now);
    refusals(&verifier, &runtime, now);
    cache_hits(&config, &verifier, now);
}

/// What an admission refusal costs against the verification it spares: the ticket budget is
/// checked before the credentials are, and an empty one refuses at once.
fn refusals(verifier: &JwtVerifier, runtime: &tokio::runtime::Runtime, now: u64) {
    let admission = Admission::default();
    let config = AdmissionConfig {
        tickets_per_second: Some(1.0),
        max_websockets: Some(1_000_000),
        upgrades_per_second: None,
        max_websockets_per_subject: None,
        retry_after: std::time::Duration::from_secs(5),
    };
    let start = ticketgate::clock::now();
    let _ = admission.take_ticket(&config, start);
    let refusals = 1_000_000;
    let refusal_ns = best_of_three(|| {
        let started = Instant::now();
        for _ in 0..refusals {
            let refused = admission.before_verification(black_box(&config), start);
            assert!(refused.is_err());
        }
        started.elapsed().as_secs_f64() * 1e9 / f64::from(refusals)
    });
    println!();
    println!("| algorithm | verification µs | refusal ns | refusal / verification |");
    println!("|---|---:|---:|---:|");
    for case in cases() {
        let tokens = tokens(&case, now);
        let verification = per_token(&tokens, |t| {
            runtime.block_on(verifier.verify(t, now)).expect("valid");
        });
        println!(
            "| {:?} | {verification:.1} | {refusal_ns:.0} | {:.4} |",
            case.alg,
            refusal_ns / 1000.0 / verification
        );
    }
}

/// What a session refresh costs beside the verification it needs: the new token verified
/// (the miss path, as a refresh's token is new), the two identity digests the rule compares,
/// and the extension of the held socket. One held socket per token, so no refresh meets the
/// per-session budget.
fn refreshes(verifier: &JwtVerifier, runtime: &tokio::runtime::Runtime, now: u64) {
    println!();
    println!("| algorithm | verification µs | refresh µs | refresh / verification |");
    println!("|---|---:|---:|---:|");
    for case in cases() {
        let tokens = tokens(&case, now);
        let sessions = Sessions::default();
        let mut held = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let verified = runtime
                .block_on(verifier.verify(token, now))
                .expect("valid");
            let ending = Arc::new(Ending::default());
            ending.upgrading(Some(now * 1000 + 60_000));
            let (who, told) = (verified.identity.who(), verified.identity.told());
            sessions.hold(format!("session-{i}"), Held::new(&ending, who, told));
            held.push((token.as_str(), format!("session-{i}"), ending));
        }
        let verification = per_token(&tokens, |t| {
            runtime.block_on(verifier.verify(t, now)).expect("valid");
        });
        let refresh = best_of_three(|| {
            let started = Instant::now();
            for (token, handle, _) in &held {
                let verified = runtime
                    .block_on(verifier.verify(black_box(token), now))
                    .expect("valid");
                let identity = &verified.identity;
                let at_ms = now * 1000 + 120_000;
                let refreshed =
                    sessions.refresh(handle, &identity.who(), &identity.told(), at_ms, now * 1000);
                assert!(matches!(refreshed, Refreshed::Extended(_)), "{refreshed:?}");
            }
            started.elapsed().as_secs_f64() * 1e6 / held.len() as f64
        });
        println!(
            "| {:?} | {verification:.1} | {refresh:.1} | {:.2} |",
            case.alg,
            refresh / verification
        );
    }
}
