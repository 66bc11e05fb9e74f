//! The `ticketgate` command: `run` and `check`, both on one config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ticketgate::lifecycle::OnceIdle;

/// jemalloc, with its background purging thread switched on in `main`: glibc's malloc kept
/// the pages of closed WebSockets (resident memory grew with every wave of connections),
/// mimalloc only purged when the process allocated again; jemalloc gives them back within
/// seconds even when idle, and measured as fast as mimalloc per request (bench/run.sh).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `--version`: ticketgate's, and the versions of the two crates that decide most of its
/// behaviour (from Cargo.lock, by build.rs).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (pingora ",
    env!("TICKETGATE_PINGORA_VERSION"),
    ", jsonwebtoken ",
    env!("TICKETGATE_JSONWEBTOKEN_VERSION"),
    ")"
);

/// What `--help` of a build without the demo says about it.
#[cfg(not(feature = "demo"))]
const AFTER_HELP: &str = "This build has no `demo` command: it is the production binary. To try \
ticketgate in a browser, run scripts/run.sh from the repository (a build with --features demo).";
#[cfg(feature = "demo")]
const AFTER_HELP: &str = "This build has the `demo` command (--features demo): never deploy it, \
its identity provider logs anyone in.";

#[derive(Parser)]
#[command(
    name = "ticketgate",
    version,
    long_version = LONG_VERSION,
    about = "WebSocket-auth sidecar on Pingora",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate the config file and every key or secret it names, then exit.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print the config file's JSON Schema (editors complete and check the YAML with it).
    Schema,
    /// Exit 0 if `url` answers 2xx within two seconds: a health probe for images without curl.
    Probe {
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
    },
    /// Show the whole flow in a browser: ticketgate, an echo upstream and a development
    /// identity provider (for trying out only), no files needed.
    #[cfg(feature = "demo")]
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: std::net::SocketAddr,
        /// Serve https:// and wss:// (and h2) with a self-signed certificate made for this
        /// run; browsers warn about it.
        #[arg(long)]
        tls: bool,
    },
}

fn main() -> ExitCode {
    // Without the background thread jemalloc only purges while allocating. Failing to start
    // it costs memory, not correctness.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = Cli::parse();
    init_logging();
    if !ticketgate::tls::install_process_provider() {
        log::warn!("a TLS crypto provider was installed before aws-lc-rs");
    }
    match cli.command {
        Command::Check { config } => match ticketgate::config::load(&config) {
            Ok(loaded) => {
                println!("{}: ok", config.display());
                println!("{}", loaded.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Probe { url } => probe(&url),
        Command::Schema => {
            print!("{}", ticketgate::config::file::schema());
            ExitCode::SUCCESS
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            listen,
            admin_listen,
            tls,
        } => match ticketgate::demo::run(listen, admin_listen, tls) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ticketgate demo: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => {
            let config = match ticketgate::config::load(&path) {
                Ok(config) => {
                    log::info!("{}", config.summary());
                    config
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match ticketgate::server::run(config, path, OnceIdle::Exit) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ticketgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn probe(url: &str) -> ExitCode {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                reqwest::Client::new()
                    .get(url)
                    .timeout(std::time::Duration::from_secs(2))
                    .send()
                    .await
                    .map_err(|e| e.to_string())
            })
        });
    match answer {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("{url}: {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `TICKETGATE_LOG` sets the level (default `info`); see `ticketgate::log_filter` for why
/// Pingora's, the HTTP libraries' and Redis's modules never go below `info`.
fn init_logging() {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    for chatty in ticketgate::log_filter::CHATTY {
        builder.filter_module(chatty, log::LevelFilter::Info);
    }
    if let Ok(spec) = std::env::var("TICKETGATE_LOG") {
        builder.parse_filters(&ticketgate::log_filter::capped(&spec));
    }
    builder.init();
}
