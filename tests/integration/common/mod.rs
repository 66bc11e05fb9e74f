//! The test harness: real servers on ephemeral loopback ports, and ticketgate itself run as
//! the built binary so that every byte it prints can be checked for leaked credentials.

pub mod config;
pub mod raw;
pub mod redis;
pub mod secrets;
pub mod tls;
pub mod tokens;
pub mod upstream;
pub mod ws;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const STARTUP_DEADLINE: Duration = Duration::from_secs(15);

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The ticket secret every test gate is configured with.
pub fn ticket_secret() -> Vec<u8> {
    ticketgate::auth::keys::read_key_file(&fixtures().join("ticket.secret"))
        .expect("ticket secret fixture")
}

pub fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// A port nothing listens on right now. The tiny race between this and the bind is the
/// price of letting ticketgate bind its own listeners, as it does in production.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// Polls `check` every 20 ms until it returns true or `deadline` passes.
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running ticketgate process with its output captured to files.
pub struct Gate {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    child: Option<Child>,
}

impl Gate {
    /// Starts ticketgate on `file` (its `listen` and `admin` replaced by free ports) and
    /// waits until it serves.
    pub async fn start(file: &config::File) -> Gate {
        Gate::start_with_env(file, &[]).await
    }

    /// Starts ticketgate with extra environment variables (`TICKETGATE_LOG`, say). A port
    /// taken between `free_port` and the bind (by a test running beside) makes the process
    /// exit: it is started again on other ports.
    pub async fn start_with_env(file: &config::File, env: &[(&str, &str)]) -> Gate {
        for _ in 0..3 {
            let (port, admin_port) = (free_port(), free_port());
            let file = config::File {
                listen: format!("127.0.0.1:{port}"),
                admin: config::Admin {
                    listen: format!("127.0.0.1:{admin_port}"),
                    ..file.admin.clone()
                },
                ..file.clone()
            };
            let yaml = serde_yaml_ng::to_string(&file).expect("config as YAML");
            let mut gate = Gate::spawn_yaml(&yaml, port, admin_port, env);
            if gate.serves().await {
                return gate;
            }
        }
        panic!("ticketgate did not start on three pairs of ports");
    }

    /// Waits until both listeners answer; false if the process exited first.
    async fn serves(&mut self) -> bool {
        let proxy = format!("127.0.0.1:{}", self.port);
        let admin = self.admin_url("/healthz");
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().expect("try_wait").is_some()
            {
                self.child = None;
                return false;
            }
            let admin_up = reqwest::get(&admin).await.is_ok_and(|r| r.status() == 200);
            if admin_up && tokio::net::TcpStream::connect(&proxy).await.is_ok() {
                return true;
            }
            assert!(
                started.elapsed() < STARTUP_DEADLINE,
                "ticketgate did not listen in time; output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs ticketgate on `yaml` as written, for the files no `File` can express.
    pub fn spawn_yaml(yaml: &str, port: u16, admin_port: u16, env: &[(&str, &str)]) -> Gate {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("ticketgate.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).expect("stdout file");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
            .args(["run", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn ticketgate");
        Gate {
            dir,
            port,
            admin_port,
            child: Some(child),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ticketgate.yaml")
    }

    /// Rewrites the config file through `edit` (the gate reads it on SIGHUP).
    pub fn edit_config(&self, edit: impl FnOnce(&mut config::File)) {
        let before = std::fs::read_to_string(self.config_path()).expect("read config");
        let mut file: config::File = serde_yaml_ng::from_str(&before).expect("config parses");
        edit(&mut file);
        let yaml = serde_yaml_ng::to_string(&file).expect("config as YAML");
        assert_ne!(before, yaml, "the edit changed nothing");
        std::fs::write(self.config_path(), yaml).expect("write config");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub async fn readyz(&self) -> u16 {
        reqwest::get(self.admin_url("/readyz"))
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    pub async fn wait_for_readyz(&self, status: u16) {
        wait_for(
            &format!("/readyz {status}"),
            Duration::from_secs(15),
            || async { self.readyz().await == status },
        )
        .await;
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics body")
    }

    /// Fails the test unless the metrics hold each of `lines` as a whole line.
    pub async fn assert_metrics(&self, lines: &[&str]) -> String {
        let metrics = self.metrics().await;
        for line in lines {
            assert!(
                metrics.lines().any(|l| l == *line),
                "{line} missing from:\n{metrics}"
            );
        }
        metrics
    }

    /// Every byte ticketgate wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        let mut all = String::new();
        for name in ["stdout.log", "stderr.log"] {
            if let Ok(mut f) = std::fs::File::open(self.dir.path().join(name)) {
                let _ = f.read_to_string(&mut all);
            }
        }
        all
    }

    /// Lines of the access log (stdout) parsed as JSON.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("stdout.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the access log has at least `n` lines (lines are written at request end,
    /// which may be just after the client saw the response).
    pub async fn wait_for_log_lines(&self, n: usize) -> Vec<serde_json::Value> {
        wait_for("access log lines", Duration::from_secs(5), || async {
            self.access_log().len() >= n
        })
        .await;
        self.access_log()
    }

    /// Fails the test if any of `secrets` appears anywhere in ticketgate's output.
    pub fn assert_never_printed(&self, secrets: &[&str]) {
        let output = self.output();
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(
                !output.contains(secret),
                "ticketgate printed a credential; output:\n{output}"
            );
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("still running");
        Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill");
    }

    /// The exit status once the process has exited, polling until `deadline`; `None` if it
    /// is still running then.
    pub async fn exit_within(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every gate, when its test ends, is checked against every credential the suite handed
/// out so far: no ticket or JWT may appear anywhere in what it printed.
impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            return;
        }
        let output = self.output();
        let leaked = secrets::all()
            .into_iter()
            .find(|secret| output.contains(secret.as_str()));
        assert!(
            leaked.is_none(),
            "ticketgate printed a credential; output:\n{output}"
        );
    }
}

/// Runs `ticketgate check` on a config file; returns (success, stdout + stderr).
pub fn check(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run check");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// GETs `url` with an optional bearer token; returns status, headers and body.
pub async fn get(url: &str, token: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

/// The upstream echo's JSON for a request that got through.
pub fn echoed(body: &str) -> serde_json::Value {
    serde_json::from_str(body).expect("upstream echo JSON")
}

impl Gate {
    /// Waits for the process to exit by itself.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child
            .take()
            .expect("still running")
            .wait()
            .expect("exit status")
    }
}
