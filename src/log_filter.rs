//! What `TICKETGATE_LOG` may switch on. Pingora's, the HTTP libraries' and the Redis
//! client's `debug` and `trace` lines dump request headers — `Authorization` and ticket URLs
//! included — so their modules are never let below `info`, whatever module path a directive
//! names: env_logger applies the most specific path, so capping only the crate roots would
//! let `pingora_proxy::proxy_h1=debug` through.

use log::LevelFilter;

/// Crates whose verbose lines can hold credentials; `pingora` covers every `pingora_*`.
pub const CHATTY: [&str; 9] = [
    "pingora",
    "h2",
    "hyper",
    "reqwest",
    "redis",
    "rustls",
    "tungstenite",
    "tokio_tungstenite",
    "http",
];

/// `spec` (env_logger's `level` / `module` / `module=level` directives, comma-separated)
/// with every directive under a chatty crate capped at `info`.
pub fn capped(spec: &str) -> String {
    spec.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|directive| {
            let (module, level) = match directive.split_once('=') {
                Some((module, level)) => (module.trim(), level.trim().parse().ok()),
                None => match directive.parse::<LevelFilter>() {
                    Ok(_) => return directive.to_string(),
                    // A bare module name switches on all of its levels.
                    Err(_) => (directive, Some(LevelFilter::Trace)),
                },
            };
            if !is_chatty(module) {
                return directive.to_string();
            }
            let level = level.unwrap_or(LevelFilter::Trace).min(LevelFilter::Info);
            format!("{module}={}", level.as_str().to_ascii_lowercase())
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `module` lies under a chatty crate (`pingora_proxy::proxy_h1`, `hyper_util`).
pub fn is_chatty(module: &str) -> bool {
    let root = module.split("::").next().unwrap_or(module);
    CHATTY.iter().any(|crate_name| {
        root == *crate_name
            || root
                .strip_prefix(crate_name)
                .is_some_and(|rest| rest.starts_with('_'))
    })
}

#[cfg(test)]
mod tests {
    use super::capped;

    #[test]
    fn directives_under_chatty_crates_stop_at_info() {
        let cases = [
            ("debug", "debug"),
            (
                "pingora_proxy::proxy_h1=debug",
                "pingora_proxy::proxy_h1=info",
            ),
            ("pingora_proxy::proxy_h1", "pingora_proxy::proxy_h1=info"),
            (
                "hyper_util=TRACE,ticketgate=debug",
                "hyper_util=info,ticketgate=debug",
            ),
            ("redis::aio=warn", "redis::aio=warn"),
            ("h2=nonsense", "h2=info"),
            ("httparse=debug, tokio=trace", "httparse=debug,tokio=trace"),
            ("pingoraX=debug", "pingoraX=debug"),
        ];
        for (spec, want) in cases {
            assert_eq!(capped(spec), want, "{spec}");
        }
    }
}
