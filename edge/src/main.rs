//! `patron-edge`: parses the command line and configuration, sets up tracing, and runs
//! the chosen command. Everything else lives in the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use patron_edge::domain::clock;
use patron_edge::domain::promo::ruleset::RuleSet;
use patron_edge::service::{Role, add_lane, revoke_lane};
use patron_edge::{Config, Edge, config, demo, telemetry};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "patron-edge", version, about = "Patron store edge node")]
struct Cli {
    /// Configuration file (default: /etc/patron/edge.toml if it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Key directory, outside the data directory (overrides the configuration;
    /// default `<data_dir>.keys`).
    #[arg(long, global = true)]
    key_dir: Option<PathBuf>,
    /// Store id (overrides the configuration).
    #[arg(long, global = true)]
    store_id: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the POS API.
    Serve {
        /// Listen address (overrides the configuration).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Manages POS lanes and their tokens.
    Lane {
        #[command(subcommand)]
        command: LaneCommand,
    },
    /// Starts an edge with demo data in ./demo-data (keys in ./demo-data.keys) and
    /// prints working curl examples.
    Demo {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: SocketAddr,
    },
    /// Enrolls this store with a hub: exchanges the one-time token from
    /// `patron-hub store add` for a sync credential and pins the hub's CA.
    Enroll {
        /// The hub's base URL, e.g. https://hub.example.com:7443.
        #[arg(long)]
        hub: String,
        /// A file holding the enrollment token, or `-` to read it from standard input
        /// (a token on the command line would show in the process list and the shell's
        /// history).
        #[arg(long)]
        token_file: PathBuf,
        /// Allow a plain http:// hub (development on one machine only).
        #[arg(long)]
        insecure_dev: bool,
    },
    /// The privacy audit: who looked up which member.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The POS API's HTTPS certificate.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Prints the commented example configuration.
    ExampleConfig,
    /// Derives every member's ledger snapshot (balance, lots, tier spend) from the
    /// facts again, then exits. Run it with the edge stopped, e.g. after restoring a
    /// database by hand; the edge also derives any snapshot it finds missing.
    RebuildLedgers,
    /// Registers N synthetic members (for benchmarks), then exits.
    #[command(hide = true)]
    SeedMembers {
        /// How many.
        #[arg(long)]
        count: u64,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Lists recorded lookups, newest first: time, lane, member (or `-` when nobody
    /// was found), how (phone or id), why (sale or service) and what was shown.
    Lookups {
        /// Only lookups of this member.
        #[arg(long)]
        member: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Prints the fingerprints a POS pins, the CA file it imports, the names and the
    /// validity of the certificate the POS API serves (made now if it does not exist).
    Show,
}

#[derive(Subcommand)]
enum LaneCommand {
    /// Creates a lane and prints its token once.
    Add {
        /// Lane name, e.g. lane-01.
        name: String,
        /// pos, cashier or admin.
        #[arg(long, default_value = "pos")]
        role: String,
    },
    /// Revokes a lane: its token stops working (within 10 s on a running edge).
    Revoke {
        /// Lane name.
        name: String,
    },
}

fn load_config(cli: &Cli, demo: bool) -> anyhow::Result<Config> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if demo {
        cfg.data_dir = PathBuf::from("demo-data");
    }
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(k) = &cli.key_dir {
        cfg.key_dir = Some(k.clone());
    }
    if let Some(s) = &cli.store_id {
        cfg.store_id = s.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("patron-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::ExampleConfig => {
            print!("{}", config::EXAMPLE_TOML);
            Ok(())
        }
        Command::Lane {
            command: LaneCommand::Add { name, role },
        } => {
            let cfg = load_config(&cli, false)?;
            let role = Role::parse(role).context("role must be pos, cashier or admin")?;
            let token = add_lane(&cfg, name, role)?;
            println!(
                "lane {name} ({}) created. Its token, shown only this once:",
                role.as_str()
            );
            println!("{token}");
            Ok(())
        }
        Command::Lane {
            command: LaneCommand::Revoke { name },
        } => {
            let cfg = load_config(&cli, false)?;
            if !revoke_lane(&cfg, name)? {
                anyhow::bail!("no active lane named {name:?}");
            }
            println!("lane {name} revoked");
            Ok(())
        }
        Command::Serve { listen } => {
            let mut cfg = load_config(&cli, false)?;
            if let Some(l) = listen {
                cfg.listen = *l;
            }
            runtime()?.block_on(serve(cfg, None))
        }
        Command::Demo { listen } => {
            let mut cfg = load_config(&cli, true)?;
            cfg.listen = *listen;
            runtime()?.block_on(serve(cfg, Some(())))
        }
        Command::Enroll {
            hub,
            token_file,
            insecure_dev,
        } => {
            let cfg = load_config(&cli, false)?;
            let token = read_token(token_file)?;
            let token = &token;
            let keys = patron_edge::keys::prepare(&cfg.data_dir, &cfg.key_dir(), &cfg.store_id)?;
            let done = runtime()?.block_on(patron_edge::hub::enroll::enroll(
                &cfg.data_dir,
                &keys,
                &cfg.store_id,
                hub,
                token,
                *insecure_dev,
                &cfg.tls.names(&cfg.listen),
            ))?;
            let link = &done.link;
            println!(
                "store {} enrolled with {} (ring {}); `patron-edge serve` now syncs",
                link.store_id, link.url, link.ring
            );
            match &done.lan_ca {
                Ok(ca) => println!(
                    "the POS API's certificate is now issued by the hub's store-LAN CA {ca} \
                     (a running edge serves it after a restart; `patron-edge tls show`)"
                ),
                Err(why) => eprintln!(
                    "warning: {why}; the POS API keeps its own certificate (`patron-edge tls show`)"
                ),
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Lookups { member, limit },
        } => {
            let cfg = load_config(&cli, false)?;
            let member = member
                .as_deref()
                .map(str::parse::<patron_protocol::MemberId>)
                .transpose()
                .map_err(|_| anyhow::anyhow!("--member must be a member id (UUID)"))?;
            let rows = patron_edge::service::recent_lookups(&cfg, member, *limit)?;
            for r in rows {
                let at =
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.at) * 1_000_000)
                        .ok()
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_else(|| r.at.to_string());
                let member = r
                    .member
                    .as_deref()
                    .and_then(|b| uuid::Uuid::from_slice(b).ok())
                    .map_or_else(|| "-".to_string(), |u| u.to_string());
                println!(
                    "{at}\t{}\t{member}\t{}\t{}\t{}",
                    r.lane, r.via, r.purpose, r.shown
                );
            }
            Ok(())
        }
        Command::Tls {
            command: TlsCommand::Show,
        } => {
            let cfg = load_config(&cli, false)?;
            let keys = patron_edge::keys::prepare(&cfg.data_dir, &cfg.key_dir(), &cfg.store_id)?;
            let id = patron_edge::lan_tls::LanIdentity::load_or_create(
                &cfg.data_dir,
                &keys.join(patron_edge::keys::LAN_KEY_FILE),
                &cfg.store_id,
                &cfg.tls.names(&cfg.listen),
            )?;
            let d = id.describe()?;
            println!("certificate sha256  {}", d.certificate_sha256);
            println!("public key sha256   {}", d.public_key_sha256);
            println!("CA sha256           {}", d.ca_sha256);
            println!("CA                  {}", d.ca_name);
            println!("CA file             {}", d.ca_file.display());
            println!("names               {}", d.names.join(", "));
            println!("valid               {} to {}", d.not_before, d.not_after);
            if !cfg.tls.enabled {
                println!("note: tls.enabled = false: the POS API serves plain HTTP");
            }
            Ok(())
        }
        Command::RebuildLedgers => {
            let cfg = load_config(&cli, false)?;
            let people = runtime()?.block_on(async move {
                let edge = Edge::open(cfg)?;
                anyhow::Ok(edge.rebuild_ledgers().await?)
            })?;
            println!("{people} members' ledger snapshots derived from the facts");
            Ok(())
        }
        Command::SeedMembers { count } => {
            let cfg = load_config(&cli, false)?;
            runtime()?.block_on(seed_members(cfg, *count))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn serve(cfg: Config, demo_mode: Option<()>) -> anyhow::Result<()> {
    telemetry::init(std::io::stderr);
    let listen = cfg.listen;
    let demo_token = match demo_mode {
        Some(()) => Some(add_lane(
            &cfg,
            &format!("demo-{}", std::process::id()),
            Role::Admin,
        )?),
        None => None,
    };
    let edge = Arc::new(open_edge(cfg)?);
    if demo_token.is_some() {
        let set: RuleSet = serde_json::from_str(demo::RULES)?;
        edge.load_rules(set)
            .await
            .map_err(|e| anyhow::anyhow!("demo rules: {e}"))?;
    }
    // The configured rule set (after the demo's: the configuration wins), the hub
    // worker when enrolled.
    let app = patron_edge::app::App::start(edge).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // Before anything is printed: an edge that may not serve says so and exits.
    let (transport, tls) = app.transport(addr)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(token) = &demo_token {
        let lane = app
            .edge
            .authenticate(token)
            .await?
            .map(|l| l.id)
            .context("demo lane")?;
        let ids = demo::seed(&app.edge, lane).await?;
        print_demo(addr, scheme, &app.edge.core.cfg.data_dir, token, &ids);
    }
    // Tests and scripts read this line to learn the bound port.
    println!("patron-edge listening on {scheme}://{addr}");
    std::io::stdout().flush().ok();
    tracing::info!(%addr, transport = transport.as_str(), "listening");
    app.serve(listener, tls, patron_web::shutdown_signal())
        .await
}

/// The enrollment token from `path` (`-`: standard input), trimmed.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let raw = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(std::io::stdin(), 4096), &mut s)
            .context("reading the token from standard input")?;
        s
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the token from {}", path.display()))?
    };
    let token = raw.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("no enrollment token in {}", path.display());
    }
    Ok(token)
}

fn print_demo(
    addr: SocketAddr,
    scheme: &str,
    data_dir: &Path,
    token: &str,
    ids: &[patron_protocol::MemberId],
) {
    let base = format!("{scheme}://{addr}");
    // curl reads the CA to trust from CURL_CA_BUNDLE: the edge's own, as a POS would.
    let ca = data_dir.join(patron_edge::lan_tls::TLS_DIR).join("ca.pem");
    let ca = std::fs::canonicalize(&ca).unwrap_or(ca);
    let ca = ca.display();
    let first = ids.first().map(|m| m.to_string()).unwrap_or_default();
    let receipt = format!("R-DEMO-{}", std::process::id());
    println!(
        r#"
Patron edge demo — store S001 with {n} demo members (13800138000 has a purchase history).

  export PATRON={base}
  export TOKEN={token}
  export CURL_CA_BUNDLE={ca}

  curl -s $PATRON/healthz
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
       -d '{{"phone":"13800138000","purpose":"service"}}' $PATRON/v1/members/lookup
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
       -d '{{"member_id":"{first}","lines":[{{"sku":"A1","category":"skincare","qty":2,"unit_price":9900}}],"redeem_points":500}}' \
       $PATRON/v1/checkout/quote
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -H 'Idempotency-Key: {receipt}' \
       -d '{{"member_id":"{first}","receipt_id":"{receipt}","lines":[{{"sku":"A1","qty":2,"unit_price":9900}}],"redeem_points":500}}' \
       $PATRON/v1/checkout/commit
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -H 'Idempotency-Key: refund-{receipt}' \
       -d '{{"receipt_id":"{receipt}","lines":[{{"sku":"A1","qty":1}}]}}' $PATRON/v1/refunds
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
       -d '{{"type":"check_in"}}' $PATRON/v1/members/{first}/events
  curl -s $PATRON/v1/openapi.json | head -c 300; echo
"#,
        n = ids.len()
    );
}

/// `PATRON_CLOCK_SKEW_MS` shifts the edge's wall clock, to test a store whose clock is
/// wrong (the multi-process fault test runs one an hour ahead), in builds with the
/// `test-clock` feature only: a shipped binary ignores it (and says so).
const CLOCK_SKEW_ENV: &str = "PATRON_CLOCK_SKEW_MS";

fn open_edge(cfg: Config) -> anyhow::Result<Edge> {
    let skew: i64 = match std::env::var(CLOCK_SKEW_ENV) {
        Ok(v) if cfg!(feature = "test-clock") => v
            .trim()
            .parse()
            .with_context(|| format!("{CLOCK_SKEW_ENV} must be a number of milliseconds"))?,
        Ok(_) => {
            tracing::warn!("{CLOCK_SKEW_ENV} is set and ignored: this build keeps the real clock");
            0
        }
        Err(_) => 0,
    };
    if skew == 0 {
        return Edge::open(cfg).context("opening the store");
    }
    tracing::warn!(
        skew_ms = skew,
        "{CLOCK_SKEW_ENV} is set: this edge's clock is shifted"
    );
    Edge::open_with_clock(cfg, Box::new(move || clock::now_millis() + skew))
        .context("opening the store")
}

async fn seed_members(cfg: Config, count: u64) -> anyhow::Result<()> {
    use patron_protocol::pos::{Consents, RegisterMember};
    let edge = Arc::new(Edge::open(cfg)?);
    let mut set = tokio::task::JoinSet::new();
    let mut done = 0u64;
    for i in 0..count {
        let edge = edge.clone();
        set.spawn(async move {
            let req = RegisterMember {
                phone: format!("1{:010}", 3_000_000_000 + i),
                name: None,
                birthday: None,
                channel: None,
                referrer_code: None,
                consents: Consents {
                    terms: true,
                    marketing: false,
                    policy_version: None,
                },
            };
            // Seeding is the operator's, as the store's manager (no lane: id 0).
            let seeder = patron_edge::service::Actor {
                lane: 0,
                role: Role::Admin,
            };
            match edge.register(None, seeder, req).await {
                Ok(_) | Err(patron_edge::service::EdgeError::MemberExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        });
        while set.len() >= 512 {
            if let Some(r) = set.join_next().await {
                r??;
                done += 1;
            }
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
        done += 1;
    }
    println!("seeded {done} members");
    Ok(())
}
