//! Mints the bench's login JWTs: for one algorithm, `count` distinct valid tokens (one per
//! line), signed with the test fixture keys and valid for an hour.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

#[derive(Parser)]
struct Args {
    /// HS256, RS256, ES256 or EdDSA.
    #[arg(long)]
    alg: String,
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// The folder with the fixture keys (tests/fixtures).
    #[arg(long)]
    keys: PathBuf,
    #[arg(long)]
    issuer: String,
    #[arg(long, default_value = "bench")]
    audience: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let alg: Algorithm = args.alg.parse()?;
    let read = |name: &str| std::fs::read(args.keys.join(name));
    let key = match alg {
        Algorithm::HS256 => {
            let secret = read("hs.secret")?;
            EncodingKey::from_secret(secret.strip_suffix(b"\n").unwrap_or(&secret))
        }
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rsa.key.pem")?)?,
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec256.key.pem")?)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&read("ed25519.key.pem")?)?,
        other => return Err(format!("no bench key for {other:?}").into()),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..args.count {
        let claims = serde_json::json!({
            "iss": args.issuer,
            "aud": args.audience,
            "sub": format!("user-{i}"),
            "email": format!("user-{i}@bench.test"),
            "iat": now,
            "exp": now + 3600,
        });
        writeln!(
            out,
            "{}",
            jsonwebtoken::encode(&Header::new(alg), &claims, &key)?
        )?;
    }
    Ok(())
}
