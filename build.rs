//! Reads the versions of pingora and jsonwebtoken from Cargo.lock for `ticketgate --version`.

fn main() {
    println!("cargo::rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (name, variable) in [
        ("pingora", "TICKETGATE_PINGORA_VERSION"),
        ("jsonwebtoken", "TICKETGATE_JSONWEBTOKEN_VERSION"),
    ] {
        let version = locked_version(&lock, name).unwrap_or("unknown");
        println!("cargo::rustc-env={variable}={version}");
    }
}

/// The version on the line after `name = "<name>"` in a Cargo.lock.
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let entry = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    lines.find(|line| *line == entry)?;
    lines
        .next()?
        .strip_prefix("version = \"")?
        .strip_suffix('"')
}
