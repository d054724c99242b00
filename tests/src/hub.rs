//! A real `patron-hub` in a temp dir: initialised (its own CA), serving TLS on a random
//! port, restartable on the same port so enrolled edges find it again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use patron_protocol::hub::StoreStatus;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use crate::{Resp, bin_dir, spawn_listening};

/// A hub process and its data directory.
pub struct TestHub {
    /// Keeps the data directory alive.
    pub dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The HQ admin token from `init`.
    pub admin_token: String,
    /// The hub CA (PEM).
    pub ca_pem: String,
    /// A client that trusts the hub CA only.
    pub http: reqwest::Client,
    child: Option<Child>,
    /// Extra `serve` arguments for the next start.
    serve_args: Vec<String>,
    /// Environment for the process from its next start (e.g. where its logs go).
    pub env: Vec<(String, String)>,
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The text after `prefix` on the first line that has it.
fn field(text: &str, prefix: &str) -> Result<String> {
    text.lines()
        .find_map(|l| l.split_once(prefix).map(|(_, v)| v.trim().to_string()))
        .with_context(|| format!("no `{prefix}` in: {text}"))
}

impl TestHub {
    /// Initialises and starts a hub on a random port.
    pub async fn spawn() -> Result<TestHub> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(bin_dir()?.join("patron-hub"));
        cmd.arg("--data-dir")
            .arg(dir.path().join("hub"))
            .arg("init");
        let out = run_ok(&mut cmd)?;
        let admin_token = field(&out, "HQ admin token (shown once): ")?;
        let ca_pem = std::fs::read_to_string(dir.path().join("hub/ca.pem"))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // Below the 1 s kept-alive idle limit some tests give the hub, so a test that
            // waits a second never reuses a connection the hub is closing at that moment.
            .pool_idle_timeout(Duration::from_millis(500))
            .tls_backend_preconfigured(tls)
            .build()?;
        let mut hub = TestHub {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token,
            ca_pem,
            http,
            child: None,
            serve_args: Vec::new(),
            env: Vec::new(),
        };
        hub.start().await?;
        Ok(hub)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(bin_dir()?.join("patron-hub"));
        cmd.arg("--data-dir").arg(self.data_dir());
        cmd.env_remove("RUST_LOG");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    /// Starts the process (on the port it had, after the first start) and waits until
    /// it listens.
    pub async fn start(&mut self) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(["serve", "--listen", &self.addr.to_string()]);
        cmd.args(&self.serve_args);
        let (child, addr) = spawn_listening(cmd, "patron-hub listening on https://").await?;
        self.addr = addr.parse()?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the hub with these extra `serve` arguments from its next start on.
    pub fn set_serve_args(&mut self, args: &[&str]) {
        self.serve_args = args.iter().map(|a| (*a).to_string()).collect();
    }

    /// SIGKILLs the hub.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the hub with SIGTERM and waits up to 10 s; the exit code (`None`: it did
    /// not exit by itself, or a signal ended it).
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// `https://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    /// Runs `patron-hub ARGS` against this hub's data directory (as HQ would);
    /// its standard output, or why it failed.
    pub fn hq(&self, args: &[&str]) -> Result<String> {
        run_ok(self.command()?.args(args))
    }

    /// The enrollment token in `patron-hub` output.
    pub fn token_in(out: &str) -> Result<String> {
        field(out, "enrollment token (one use): ")
    }

    /// Registers a store in ring `pilot`; returns its enrollment token.
    pub fn add_store(&self, store_id: &str) -> Result<String> {
        self.add_store_in(store_id, "pilot")
    }

    /// Registers a store in `ring`; returns its enrollment token.
    pub fn add_store_in(&self, store_id: &str, ring: &str) -> Result<String> {
        let out = run_ok(self.command()?.args([
            "store",
            "add",
            store_id,
            "--name",
            &format!("Store {store_id}"),
            "--ring",
            ring,
        ]))?;
        field(&out, "enrollment token (one use): ")
    }

    /// Publishes tier thresholds (a file) to `ring` with the CLI.
    pub fn publish_tiers(&self, file: &std::path::Path, ring: &str) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(["tiers", "publish"])
            .arg(file)
            .args(["--ring", ring]);
        run_ok(&mut cmd).map(|_| ())
    }

    /// Rebuilds the hub's per-fact projections with the CLI; its report line.
    pub fn rebuild(&self) -> Result<String> {
        let mut cmd = self.command()?;
        cmd.arg("rebuild");
        run_ok(&mut cmd)
    }

    /// Publishes points settings (a file) to `ring` with the CLI.
    pub fn publish_points(&self, file: &std::path::Path, ring: &str) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(["points", "publish"])
            .arg(file)
            .args(["--ring", ring]);
        run_ok(&mut cmd).map(|_| ())
    }

    /// Publishes a rule set file to `ring` with the CLI.
    pub fn publish_rules(&self, file: &std::path::Path, ring: &str) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(["rules", "publish"])
            .arg(file)
            .args(["--ring", ring]);
        run_ok(&mut cmd).map(|_| ())
    }

    /// `GET /v1/stores` with the admin token.
    pub async fn stores(&self) -> Result<Vec<StoreStatus>> {
        let r = self
            .http
            .get(self.url("/v1/stores"))
            .bearer_auth(&self.admin_token)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("GET /v1/stores: {}", r.status());
        }
        Ok(r.json().await?)
    }

    /// POSTs raw bytes to `path` with an optional bearer credential.
    pub async fn post_raw(&self, path: &str, bearer: Option<&str>, body: Vec<u8>) -> Result<Resp> {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let closes = r.headers().get("connection").is_some_and(|v| v == "close");
        let retry_after = crate::retry_after(&r);
        let bytes = r.bytes().await?;
        Ok(Resp {
            status,
            replayed: false,
            closes,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            retry_after,
        })
    }

    /// Enrolls `store_id` over HTTP (as an edge would) and returns its credential.
    pub async fn enroll_raw(&self, store_id: &str) -> Result<String> {
        let token = self.add_store(store_id)?;
        let secret = token.rsplit_once('.').context("token")?.0;
        let r = self
            .post_raw(
                "/v1/enroll",
                None,
                serde_json::to_vec(&serde_json::json!({"secret": secret, "store_id": store_id}))?,
            )
            .await?;
        if r.status != 201 {
            bail!("enroll: {} {}", r.status, r.json);
        }
        Ok(r.json["credential"]
            .as_str()
            .context("credential")?
            .to_string())
    }

    /// The store with sync credential `store` looks a member up by `phone`, as an edge
    /// does when a cashier types the phone: the hub lets it serve the member from then
    /// on.
    pub async fn look_up_as(&self, store: &str, phone: &str) -> Result<()> {
        let body = serde_json::json!({"phone_idx": "", "phone": phone, "after": 0});
        let r = self
            .post_raw("/v1/members/fetch", Some(store), serde_json::to_vec(&body)?)
            .await?;
        if r.status != 200 {
            bail!("fetch: {} {}", r.status, r.json);
        }
        if r.json["facts"].as_array().is_none_or(|f| f.is_empty()) {
            bail!("fetch: no member has that phone");
        }
        Ok(())
    }

    /// Facts the hub holds, per `(node, incarnation)`, read from its database.
    pub fn facts_by_origin(&self) -> Result<Vec<(String, String, i64)>> {
        let conn = rusqlite::Connection::open_with_flags(
            self.data_dir().join("hub.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut stmt = conn.prepare(
            "SELECT o.node, o.incarnation, count(f.id) FROM origins o LEFT JOIN facts f ON f.origin = o.id
              GROUP BY o.id ORDER BY o.node",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Points balance of `member` over the facts the hub holds and applied (earn −
    /// spend − reverse; quarantined facts count for no one; the tests' members have no
    /// expired lots).
    pub fn balance(&self, member: &str) -> Result<i64> {
        let conn = rusqlite::Connection::open_with_flags(
            self.data_dir().join("hub.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        Ok(conn.query_row(
            "SELECT coalesce(sum(coalesce(json_extract(body, '$.earn'), 0)
                              - coalesce(json_extract(body, '$.spend'), 0)
                              - coalesce(json_extract(body, '$.reverse'), 0)), 0)
               FROM facts WHERE json_extract(body, '$.member') = ?1 AND quarantine IS NULL",
            [member],
            |r| r.get(0),
        )?)
    }

    /// `GET /v1/overdraws` with the HQ admin token.
    pub async fn overdraws(&self) -> Result<serde_json::Value> {
        Ok(self
            .http
            .get(self.url("/v1/overdraws"))
            .bearer_auth(&self.admin_token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Waits until `check` holds or `within` passes.
    pub async fn wait_for<F, Fut>(within: Duration, mut check: F) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let start = Instant::now();
        loop {
            if check().await? {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                bail!("not reached within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.kill();
    }
}
