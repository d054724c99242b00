//! Harness for multi-process tests: real `patron-edge` binaries in temp dirs on port 0,
//! driven over real HTTP.
//!
//! The binaries are the workspace's own build (`target/<profile>/patron-edge`); the
//! harness builds them once per test run with the same cargo that runs the tests, so a
//! test never drives a stale binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub mod hub;
pub mod proxy;

/// Sync settings that make an enrolled test edge push and poll within milliseconds.
pub const FAST_SYNC: &str = "[sync]\npush_delay_ms = 10\nheartbeat_ms = 200\nretry_min_ms = 100\nretry_max_ms = 400\ntimeout_ms = 2000\n";

/// Directory holding the workspace's binaries.
pub fn bin_dir() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_binaries().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_binaries() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/e2e-<hash> → target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("locating target dir")?
        .to_path_buf();
    let profile_release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "patron-edge",
        "--bin",
        "patron-edge",
        // The clock tests need (PATRON_CLOCK_SKEW_MS); shipped builds leave it out.
        "--features",
        "patron-edge/test-clock",
        "-p",
        "patron-hub",
        "--bin",
        "patron-hub",
    ]);
    if profile_release {
        cmd.arg("--release");
    }
    // `cargo test` gives this process the test crate's package variables; ring's
    // build script watches several of them, so passing them on would make this build
    // rebuild ring and everything above it (and the next outer build rebuild it back).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k == "CARGO_MANIFEST_DIR"
            || k == "CARGO_MANIFEST_LINKS"
            || k == "OUT_DIR"
            || k == "CARGO_CRATE_NAME"
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_MANIFEST_PATH"
            || k == "CARGO_BIN_NAME"
            || k == "CARGO_TARGET_TMPDIR"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let status = cmd
        .status()
        .context("running cargo build for the binaries")?;
    if !status.success() {
        bail!("cargo build of the binaries failed");
    }
    Ok(dir)
}

/// Unix milliseconds of `y-m-d h:mi:s` at the store's offset (+08:00).
pub fn store_time(y: i32, m: u8, d: u8, h: u8, mi: u8, s: u8) -> Result<i64> {
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m)?, d)?;
    let t = time::PrimitiveDateTime::new(date, time::Time::from_hms(h, mi, s)?)
        .assume_offset(time::UtcOffset::from_hms(8, 0, 0)?);
    Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000)?)
}

/// The skew (`PATRON_CLOCK_SKEW_MS`, test builds only) that puts an edge's clock at
/// `target` (unix ms) now.
pub fn skew_to(target: i64) -> Result<String> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    Ok((target - now).to_string())
}

/// With this variable in a spawned server's environment (a path), its standard error,
/// its logs, goes to that file (appended).
pub const LOG_FILE_ENV: &str = "PATRON_TEST_LOG_FILE";

/// Asserts that a command was refused and says why: its error names `why` (a command
/// that failed for another reason, a crash included, fails the test).
#[track_caller]
pub fn refused<T: std::fmt::Debug>(r: Result<T>, why: &str, what: &str) {
    match r {
        Ok(v) => panic!("{what}: not refused ({v:?})"),
        Err(e) => {
            let text = format!("{e:#}");
            assert!(
                text.contains(why),
                "{what}: refused for another reason: {text}"
            );
            assert!(!text.contains("panicked"), "{what}: a panic: {text}");
        }
    }
}

/// A plain-HTTP client for the edges (reqwest is built without a default TLS crypto
/// provider; ring is installed once per process, as the binaries do).
pub fn http_client() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?)
}

/// Spawns `cmd` (stdout piped; stderr shown with `TEST_LOG`) and waits up to 60 s for
/// the line starting with `prefix`; returns the child and the rest of that line.
pub async fn spawn_listening(mut cmd: Command, prefix: &'static str) -> Result<(Child, String)> {
    // A test that reads the logs names a file for them in the process's environment.
    let log_file = cmd
        .get_envs()
        .find(|(k, _)| *k == LOG_FILE_ENV)
        .and_then(|(_, v)| v.map(PathBuf::from));
    let stderr = match log_file {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None if std::env::var_os("TEST_LOG").is_some() => Stdio::inherit(),
        None => Stdio::null(),
    };
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // Keep reading to the end: a full pipe would block the child.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.to_string());
                sent = true;
            }
        }
    });
    match tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60))).await? {
        Ok(rest) => Ok((child, rest)),
        Err(_) => {
            let _ = child.kill();
            bail!("{cmd:?} did not print `{prefix}`");
        }
    }
}

/// A running (or stopped) edge node with its own data directory.
pub struct TestEdge {
    /// Keeps the data directory alive for the test's duration.
    pub dir: tempfile::TempDir,
    /// Where it listens, while running.
    pub addr: SocketAddr,
    /// The admin token created at spawn.
    pub token: String,
    child: Option<Child>,
    /// HTTP client.
    pub http: reqwest::Client,
    extra_config: String,
    /// The store id.
    pub store_id: String,
    /// Environment for the process (e.g. a skewed clock).
    pub env: Vec<(String, String)>,
    /// Whether the running edge serves HTTPS (read from the line it prints).
    pub https: bool,
    /// The store's name its certificate is for, once enrolled and serving HTTPS.
    pub host: Option<String>,
    /// Whether the harness configures plain HTTP on loopback, as the tests of the POS
    /// API itself do (not for `prepare_https`, nor when the test configures `[tls]`).
    plain_on_loopback: bool,
}

/// A response, flattened for assertions.
#[derive(Debug, Clone)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Whether `Idempotent-Replayed: true` was set.
    pub replayed: bool,
    /// Whether the server said `Connection: close`.
    pub closes: bool,
    /// The JSON body (Null if none or not JSON).
    pub json: Value,
    /// `Retry-After`, in seconds, if it was set.
    pub retry_after: Option<u64>,
}

/// The `Retry-After` seconds of a response, if set.
pub fn retry_after(r: &reqwest::Response) -> Option<u64> {
    r.headers().get("retry-after")?.to_str().ok()?.parse().ok()
}

impl Resp {
    /// The error code of an error response.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestEdge {
    /// Starts a fresh edge `S001` with default rules.
    pub async fn spawn() -> Result<TestEdge> {
        Self::spawn_with("").await
    }

    /// Starts a fresh edge with extra TOML configuration.
    pub async fn spawn_with(extra_config: &str) -> Result<TestEdge> {
        let mut edge = Self::prepare("S001", extra_config)?;
        edge.start().await?;
        Ok(edge)
    }

    /// A fresh edge, configured and with an admin lane, not started.
    pub fn prepare(store_id: &str, extra_config: &str) -> Result<TestEdge> {
        let dir = tempfile::tempdir()?;
        let mut edge = TestEdge {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
            child: None,
            http: http_client()?,
            extra_config: extra_config.to_string(),
            store_id: store_id.to_string(),
            env: Vec::new(),
            https: false,
            host: None,
            plain_on_loopback: !extra_config.contains("[tls]"),
        };
        std::fs::write(edge.config_path(), edge.config_text())?;
        edge.token = edge.add_lane("test-admin", "admin")?;
        Ok(edge)
    }

    /// A fresh edge as a store runs it: HTTPS on the POS API (its default).
    pub fn prepare_https(store_id: &str, extra_config: &str) -> Result<TestEdge> {
        let mut edge = Self::prepare(store_id, extra_config)?;
        edge.plain_on_loopback = false;
        std::fs::write(edge.config_path(), edge.config_text())?;
        Ok(edge)
    }

    /// Runs `patron-edge enroll` against `hub` with a token for this store (ring pilot).
    pub fn enroll(&self, hub: &hub::TestHub) -> Result<()> {
        self.enroll_in(hub, "pilot")
    }

    /// Runs `patron-edge enroll` against `hub` with a token for this store in `ring`.
    pub fn enroll_in(&self, hub: &hub::TestHub, ring: &str) -> Result<()> {
        self.enroll_at(hub, ring, &hub.url(""))
    }

    /// Like [`TestEdge::enroll_in`], reaching the hub at `url` (e.g. through a proxy).
    pub fn enroll_at(&self, hub: &hub::TestHub, ring: &str, url: &str) -> Result<()> {
        let token = hub.add_store_in(&self.store_id, ring)?;
        self.enroll_with(url, &token)
    }

    /// Runs `patron-edge enroll` against the hub at `url` with `token`, given on
    /// standard input as an installer would pipe it.
    pub fn enroll_with(&self, url: &str, token: &str) -> Result<()> {
        use std::io::Write as _;
        let mut child = self
            .command()?
            .args(["enroll", "--hub", url, "--token-file", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("enroll's stdin")?
            .write_all(format!("{token}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("enroll failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("edge.toml")
    }

    fn config_text(&self) -> String {
        // Plain HTTP is allowed on loopback: the tests of the POS API itself use it,
        // and `prepare_https` edges test HTTPS, the default.
        let tls = if self.plain_on_loopback {
            "\n[tls]\nenabled = false\n"
        } else {
            ""
        };
        // Tests poll lookups by phone every 50 ms while they wait for sync; the budget
        // per lane has a test of its own.
        let privacy = if self.extra_config.contains("[privacy]") {
            ""
        } else {
            "\n[privacy]\nphone_lookups_per_lane_per_minute = 0\n"
        };
        format!(
            "store_id = {:?}\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\n{}\n{tls}{privacy}",
            self.store_id,
            self.data_dir().display().to_string(),
            self.extra_config
        )
    }

    /// The edge's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The edge's key directory (the default: beside the data directory).
    pub fn key_dir(&self) -> PathBuf {
        self.dir.path().join("data.keys")
    }

    /// `patron-edge --config <this edge's>`, to run as the test likes.
    pub fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(bin_dir()?.join("patron-edge"));
        cmd.arg("--config").arg(self.config_path());
        cmd.env_remove("RUST_LOG");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    /// Runs `patron-edge ARGS` expecting it to refuse and exit within 30 s (a server
    /// that must not start); its standard error, or an error if it kept running or
    /// succeeded.
    pub async fn refused(&self, args: &[&str]) -> Result<String> {
        let mut child = self
            .command()?
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("patron-edge {args:?} kept running");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut err)?;
        if status.success() {
            bail!("patron-edge {args:?} succeeded");
        }
        Ok(err)
    }

    /// Runs `patron-edge ARGS` (a command that exits) and returns what it printed, or
    /// an error with its standard error if it failed.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.command()?.args(args).output()?;
        if !out.status.success() {
            bail!(
                "patron-edge {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Runs `patron-edge lane add` and returns the printed token.
    pub fn add_lane(&self, name: &str, role: &str) -> Result<String> {
        let out = self
            .command()?
            .args(["lane", "add", name, "--role", role])
            .output()?;
        if !out.status.success() {
            bail!("lane add failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8(out.stdout)?;
        let token = stdout
            .lines()
            .nth(1)
            .context("no token line")?
            .trim()
            .to_string();
        Ok(token)
    }

    /// Runs `patron-edge lane revoke`.
    pub fn revoke_lane(&self, name: &str) -> Result<()> {
        let out = self.command()?.args(["lane", "revoke", name]).output()?;
        if !out.status.success() {
            bail!(
                "lane revoke failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts (or restarts) the process on a fresh port and waits until it listens.
    pub async fn start(&mut self) -> Result<()> {
        self.start_with(&[]).await
    }

    /// Like [`TestEdge::start`], with extra arguments to `serve` (e.g. `--listen`).
    pub async fn start_with(&mut self, args: &[&str]) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.arg("serve").args(args);
        let (child, url) = spawn_listening(cmd, "patron-edge listening on ").await?;
        let (scheme, addr) = url
            .split_once("://")
            .context("no scheme in the listen line")?;
        self.https = scheme == "https";
        self.addr = addr.parse()?;
        self.child = Some(child);
        self.host = None;
        if self.https {
            // As a POS does: trust the CA the edge's certificate names, nothing else, and
            // reach an enrolled edge by the store's name the hub certified.
            let ca = std::fs::read(self.data_dir().join("tls/ca.pem"))?;
            let shown = self.run(&["tls", "show"])?;
            let name = shown
                .lines()
                .find_map(|l| l.strip_prefix("names"))
                .and_then(|n| {
                    n.split(',')
                        .map(str::trim)
                        .find(|n| n.ends_with(".edge.patron.internal"))
                })
                .map(str::to_string);
            let mut b = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .tls_certs_only([reqwest::Certificate::from_pem(&ca)?]);
            if let Some(n) = &name {
                b = b.resolve(n, self.addr);
            }
            self.http = b.build()?;
            self.host = name;
        }
        Ok(())
    }

    /// SIGKILLs the process: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process gracefully (SIGTERM) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `http://addr` (or `https://`, by the store's certified name once enrolled) +
    /// `path`.
    pub fn url(&self, path: &str) -> String {
        match (&self.host, self.https) {
            (Some(host), true) => format!("https://{host}:{}{path}", self.addr.port()),
            (_, true) => format!("https://{}{path}", self.addr),
            _ => format!("http://{}{path}", self.addr),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Resp> {
        let r = req.send().await?;
        let status = r.status().as_u16();
        let replayed = r
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let closes = r.headers().get("connection").is_some_and(|v| v == "close");
        let retry_after = retry_after(&r);
        let bytes = r.bytes().await?;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            replayed,
            closes,
            json,
            retry_after,
        })
    }

    /// GET with the admin token.
    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.token))
            .await
    }

    /// POST JSON with the admin token and an optional idempotency key.
    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> Result<Resp> {
        let mut req = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await
    }

    /// PUT JSON with the admin token.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Resp> {
        self.send(
            self.http
                .put(self.url(path))
                .bearer_auth(&self.token)
                .json(body),
        )
        .await
    }

    /// The same edge, addressed with another token.
    pub fn as_token(&self, token: &str) -> Client<'_> {
        Client {
            edge: self,
            token: token.to_string(),
        }
    }

    /// PATCH JSON with the admin token.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Resp> {
        self.send(
            self.http
                .patch(self.url(path))
                .bearer_auth(&self.token)
                .json(body),
        )
        .await
    }

    /// Sends a raw request (any method, headers and body bytes).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Resp> {
        let mut req = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                self.url(path),
            )
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    /// Registers a member and returns its id.
    pub async fn register(&self, phone: &str, name: Option<&str>) -> Result<String> {
        let mut body = serde_json::json!({"phone": phone, "consents": {"terms": true}});
        if let Some(n) = name {
            body["name"] = n.into();
        }
        let r = self.post("/v1/members", &body, None).await?;
        if r.status != 201 {
            bail!("register {phone}: {} {}", r.status, r.json);
        }
        Ok(r.json["member_id"]
            .as_str()
            .context("member_id")?
            .to_string())
    }

    /// Commits a one-line sale of `price` fen for `member`, redeeming `redeem` points,
    /// with the receipt number as its idempotency key; returns (status, body).
    pub async fn sale(
        &self,
        member: &str,
        receipt: &str,
        price: i64,
        redeem: i64,
    ) -> Result<(u16, Value)> {
        let body = serde_json::json!({"member_id": member, "receipt_id": receipt,
            "redeem_points": redeem, "lines": [{"sku": "A1", "qty": 1, "unit_price": price}]});
        let r = self
            .post("/v1/checkout/commit", &body, Some(receipt))
            .await?;
        Ok((r.status, r.json))
    }

    /// The member this edge answers for `phone`: (member id, points balance).
    pub async fn by_phone(&self, phone: &str) -> Result<(String, i64)> {
        let r = self
            .post(
                "/v1/members/lookup",
                &serde_json::json!({"phone": phone}),
                None,
            )
            .await?;
        if r.status != 200 {
            bail!("lookup at {}: {} {}", self.store_id, r.status, r.json);
        }
        Ok((
            r.json["member_id"]
                .as_str()
                .context("member_id")?
                .to_string(),
            r.json["points"]["balance"].as_i64().context("balance")?,
        ))
    }

    /// Waits (up to 15 s) until the hub is reachable from this edge and holds every fact
    /// it wrote.
    pub async fn synced(&self) -> Result<()> {
        hub::TestHub::wait_for(Duration::from_secs(15), || async {
            let h = self.get("/healthz").await?.json["hub"].clone();
            Ok(h["pending_facts"] == 0 && h["reachable"] == true)
        })
        .await
        .map(|_| ())
    }

    /// Waits (up to 15 s) until this edge sees the hub as reachable, or as gone.
    pub async fn hub_reachable(&self, reachable: bool) -> Result<()> {
        hub::TestHub::wait_for(Duration::from_secs(15), || async {
            Ok(self.get("/healthz").await?.json["hub"]["reachable"] == reachable)
        })
        .await
        .map(|_| ())
    }

    /// Number of facts this store has written in its current incarnation (read from
    /// its database, read-only).
    pub async fn facts_written(&self) -> Result<u64> {
        let conn = self.db()?;
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM facts WHERE origin = (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'origin_id')",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// A connection to this store's database, encrypted at rest, under its keys (as
    /// `patron-edge` commands beside a running edge open it).
    pub fn db(&self) -> Result<rusqlite::Connection> {
        Ok(patron_edge::store::connect_at(&self.data_dir(), &self.key_dir(), false)?.1)
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("edge.sqlite")
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An edge addressed with a given token.
pub struct Client<'a> {
    edge: &'a TestEdge,
    token: String,
}

impl Client<'_> {
    /// GET.
    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.edge
            .send(
                self.edge
                    .http
                    .get(self.edge.url(path))
                    .bearer_auth(&self.token),
            )
            .await
    }

    /// PUT JSON.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Resp> {
        self.edge
            .send(
                self.edge
                    .http
                    .put(self.edge.url(path))
                    .bearer_auth(&self.token)
                    .json(body),
            )
            .await
    }

    /// POST JSON with an optional idempotency key.
    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> Result<Resp> {
        let mut req = self
            .edge
            .http
            .post(self.edge.url(path))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.edge.send(req).await
    }
}
