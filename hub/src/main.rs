//! `patron-hub`: parses the command line, sets up tracing, runs the chosen command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use patron_hub::app::{ADMIN_HASH, App, open_hub};
use patron_hub::config::HubConfig;
use patron_hub::enrollment::secret_hash;
use patron_hub::service::Hub;
use patron_hub::store::sqlite::SqliteStore;
use patron_hub::tls;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "patron-hub", version, about = "Patron central hub")]
struct Cli {
    /// Configuration file (TOML; default /etc/patron/hub.toml if present; see
    /// `patron-hub example-config`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (database, CA, keys); overrides the configuration's.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the hub's CA, server certificate, database, chain member keys and HQ
    /// admin token.
    Init {
        /// Names and addresses stores will reach the hub by (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Manages stores.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Prints a member code: a short-lived proof, checked offline by every store, that
    /// the member is at the counter (what the member's page will show as a QR code).
    MemberCode {
        /// The member's id.
        member_id: String,
        /// Seconds the code is valid (at most 600).
        #[arg(long, default_value_t = patron_domain::member_code::DEFAULT_VALID_SECS)]
        valid_secs: u64,
    },
    /// Lists the anomalies stores raised about their lanes (a lane earning far above its
    /// usual day, a lane looking members up without selling), newest first.
    Alerts {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Reviews the store facts the hub kept in quarantine instead of applying them.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Manages HQ rule sets.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Manages HQ tier thresholds.
    Tiers {
        #[command(subcommand)]
        command: TiersCommand,
    },
    /// Rebuilds the projections kept per fact (registrations by phone, merged profiles,
    /// member aliases), then those behind the ingest cursor (members' activity), from
    /// the facts. It holds the database's writer while it runs: pushes wait (and
    /// are retried by the stores), so run it in a quiet hour or with the hub stopped.
    Rebuild,
    /// Manages HQ points settings (earn and redeem rates, expiry).
    Points {
        #[command(subcommand)]
        command: PointsCommand,
    },
    /// Serves enrollment and sync. Flags override the configuration.
    Serve {
        /// Listen address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Plain HTTP instead of TLS: for development on one machine only.
        #[arg(long)]
        insecure_dev: bool,
        /// Share of a member's free points a store may lease, per mille (0: no leases).
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=1000))]
        lease_share_permille: Option<i64>,
        /// How long a lease lasts at the store, in minutes (the hub counts it 10 minutes
        /// longer).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=7 * 24 * 60))]
        lease_minutes: Option<i64>,
        /// Member fetches (lookups of other stores' members) each store may make per
        /// minute; 0: no limit.
        #[arg(long)]
        fetches_per_minute: Option<u32>,
    },
    /// Prints the commented example configuration.
    ExampleConfig,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Publishes a rule set (JSON file) to a ring; its stores price with it once synced.
    Publish {
        /// The rule-set file.
        file: PathBuf,
        /// The ring it targets (`all` for every store).
        #[arg(long, default_value = "all")]
        ring: String,
    },
}

#[derive(Subcommand)]
enum TiersCommand {
    /// Publishes tier thresholds (JSON: window_months, silver, gold, diamond in fen).
    Publish {
        /// The file.
        file: PathBuf,
        /// The ring they apply to (`all` for every store).
        #[arg(long, default_value = "all")]
        ring: String,
    },
}

#[derive(Subcommand)]
enum PointsCommand {
    /// Publishes points settings (JSON: earn_points, earn_per_fen, expiry_months,
    /// expiring_notice_days, redeem_points, redeem_value_fen) to a ring.
    Publish {
        /// The file.
        file: PathBuf,
        /// The ring they apply to (`all` for every store).
        #[arg(long, default_value = "all")]
        ring: String,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Registers a store and prints its one-time enrollment token.
    Add {
        /// Store id, e.g. S001.
        store_id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Rollout ring (pilot, wave1, …, all).
        #[arg(long, default_value = "all")]
        ring: String,
        /// Hours the enrollment token works.
        #[arg(long, default_value_t = 24)]
        valid_hours: i64,
    },
    /// Lists every store with its last sync, lag and pending facts.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints a new one-time enrollment token for a store (the outstanding one stops
    /// working), e.g. for a replaced store PC.
    Token {
        /// Store id.
        store_id: String,
        /// Hours the token works.
        #[arg(long, default_value_t = 24)]
        valid_hours: i64,
    },
    /// Cancels a store's outstanding enrollment token.
    CancelToken {
        /// Store id.
        store_id: String,
    },
    /// Revokes a store (a stolen PC, a closed store): its credential is refused at
    /// once, what it still pushes is kept in quarantine for review, and it cannot
    /// enroll again.
    Revoke {
        /// Store id.
        store_id: String,
    },
    /// Rotates the store's member keys: the store receives the next generation with
    /// its next sync, re-wraps what it holds in the background and drops the old keys
    /// (docs/keys.md). A store holding the chain's keys moves to keys of its own.
    RotateKeys {
        /// Store id.
        store_id: String,
    },
    /// Stops the store's credential at once and prints a one-time enrollment token;
    /// the store syncs again after `patron-edge enroll` with it (its data stays).
    RotateCredential {
        /// Store id.
        store_id: String,
        /// Hours the token works.
        #[arg(long, default_value_t = 24)]
        valid_hours: i64,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Lists the facts kept in quarantine (not applied), oldest first.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}

/// `h` hours in ms (a token lifetime out of range is refused where it is checked).
fn hours_ms(h: i64) -> i64 {
    h.saturating_mul(3_600_000)
}

fn hub(dirs: &(PathBuf, PathBuf), need_ca: bool) -> anyhow::Result<Hub> {
    open_hub(&dirs.0, &dirs.1, need_ca)
}

fn random_token() -> anyhow::Result<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    Ok(format!(
        "hq_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = HubConfig::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir {
        cfg.data_dir = d;
    }
    let dir = cfg.data_dir.clone();
    // Every command but `serve` (which prepares them itself) and `example-config`
    // works on the data directory and the key directory beside it.
    let dirs = || -> anyhow::Result<(PathBuf, PathBuf)> {
        Ok((
            dir.clone(),
            patron_hub::keys::prepare(&dir, &cfg.key_dir())?,
        ))
    };
    match cli.command {
        Command::ExampleConfig => print!("{}", patron_hub::config::EXAMPLE_TOML),
        Command::Init { hosts } => {
            let (_, keys) = dirs()?;
            let fp = tls::init(&dir, &keys, &hosts)?;
            SqliteStore::open(&dir).context("creating the hub database")?;
            patron_hub::chain_keys::create(&keys).context("the chain's member keys")?;
            // The root the stores' own keys are derived from: back it up with chain.key.
            patron_hub::keyring::Keyring::load(&keys, true).context("the stores' root key")?;
            let token = random_token()?;
            let hash = hex::encode(secret_hash(&token));
            std::fs::write(dir.join(ADMIN_HASH), hash)?;
            println!(
                "hub initialised in {} (keys in {}: back them up apart from the database)",
                dir.display(),
                keys.display()
            );
            println!("CA fingerprint (SHA-256): {fp}");
            println!("HQ admin token (shown once): {token}");
        }
        Command::Store {
            command:
                StoreCommand::Add {
                    store_id,
                    name,
                    ring,
                    valid_hours,
                },
        } => {
            let token = hub(&dirs()?, false)?.enrollment.add_store(
                &store_id,
                &name,
                &ring,
                hours_ms(valid_hours),
            )?;
            println!("store {store_id} added to ring {ring}");
            println!("enrollment token (one use): {token}");
            println!(
                "it works for {valid_hours} h; `patron-hub store token {store_id}` issues another"
            );
        }
        Command::Store {
            command:
                StoreCommand::Token {
                    store_id,
                    valid_hours,
                },
        } => {
            let token = hub(&dirs()?, false)?.enrollment.issue_token(
                &store_id,
                hours_ms(valid_hours),
                false,
            )?;
            println!("enrollment token (one use): {token}");
            println!(
                "it works for {valid_hours} h; any earlier token of {store_id} no longer does"
            );
        }
        Command::Store {
            command: StoreCommand::CancelToken { store_id },
        } => {
            if hub(&dirs()?, false)?.enrollment.cancel_token(&store_id)? {
                println!("the enrollment token of {store_id} no longer works");
            } else {
                println!("{store_id} had no enrollment token outstanding");
            }
        }
        Command::Store {
            command: StoreCommand::Revoke { store_id },
        } => {
            if hub(&dirs()?, false)?.enrollment.revoke(&store_id)? {
                println!(
                    "store {store_id} revoked: refused from now on; its pushes are quarantined"
                );
            } else {
                anyhow::bail!("no such store, or it was revoked already: {store_id}");
            }
        }
        Command::Store {
            command: StoreCommand::RotateKeys { store_id },
        } => {
            let g = hub(&dirs()?, false)?.enrollment.rotate_keys(&store_id)?;
            println!(
                "store {store_id}: member keys generation {g} offered; it takes them at its next sync (`store list` shows when it holds them)"
            );
        }
        Command::Store {
            command:
                StoreCommand::RotateCredential {
                    store_id,
                    valid_hours,
                },
        } => {
            let token = hub(&dirs()?, false)?.enrollment.issue_token(
                &store_id,
                hours_ms(valid_hours),
                true,
            )?;
            println!("the credential of {store_id} no longer works; enroll the store again with");
            println!("enrollment token (one use): {token}");
            println!("it works for {valid_hours} h");
        }
        Command::MemberCode {
            member_id,
            valid_secs,
        } => {
            println!(
                "{}",
                hub(&dirs()?, false)?.member_code(&member_id, valid_secs)?
            );
        }
        Command::Alerts { json, max } => {
            let list = hub(&dirs()?, false)?.lane_alerts(max)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<10} {:<12} {:<10} {:<22} {:>10} {:>10}",
                    "store", "lane", "day", "anomaly", "figure", "against"
                );
                // Lane names and days are a store's words: no control character
                // of theirs reaches HQ's terminal.
                let shown = |s: &str| -> String {
                    s.chars()
                        .map(|c| if c.is_control() { '?' } else { c })
                        .collect()
                };
                for a in list {
                    println!(
                        "{:<10} {:<12} {:<10} {:<22} {:>10} {:>10}",
                        shown(&a.store_id),
                        shown(&a.lane),
                        shown(&a.day),
                        shown(&a.anomaly),
                        a.figure,
                        a.against
                    );
                }
            }
        }
        Command::Quarantine {
            command: QuarantineCommand::List { json, max },
        } => {
            let list = hub(&dirs()?, false)?.quarantined(max)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:>10} {:<10} {:>8} {:<18} reason",
                    "position", "store", "seq", "kind"
                );
                for q in list {
                    println!(
                        "{:>10} {:<10} {:>8} {:<18} {}",
                        q.position, q.store_id, q.seq, q.kind, q.reason
                    );
                }
            }
        }
        Command::Store {
            command: StoreCommand::List { json },
        } => {
            let list = hub(&dirs()?, false)?.enrollment.stores()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<10} {:<20} {:<8} {:<8} {:>10} {:>8} {:>10} {:>11} {:<9}",
                    "store",
                    "name",
                    "ring",
                    "enrolled",
                    "lag",
                    "pending",
                    "facts",
                    "quarantined",
                    "keys"
                );
                for s in list {
                    let lag = s.lag_ms.map_or("never".to_string(), |l| {
                        format!("{:.1}s", l as f64 / 1000.0)
                    });
                    let enrolled = match (s.revoked_at, s.enrolled) {
                        (Some(_), _) => "revoked".to_string(),
                        (None, e) => e.to_string(),
                    };
                    // `chain`: a store still holding every store's key (docs/keys.md);
                    // `g1>g2`: rotating from generation 1 to 2.
                    let name = |g: u32| match g {
                        0 => "chain".to_string(),
                        g => format!("g{g}"),
                    };
                    let keys = match (s.key_generation, s.key_offered) {
                        (None, _) => "-".to_string(),
                        (Some(g), None) => name(g),
                        (Some(g), Some(o)) => format!("{}>{}", name(g), name(o)),
                    };
                    println!(
                        "{:<10} {:<20} {:<8} {:<8} {:>10} {:>8} {:>10} {:>11} {:<9}",
                        s.store_id,
                        s.name,
                        s.ring,
                        enrolled,
                        lag,
                        s.pending,
                        s.facts,
                        s.quarantined,
                        keys
                    );
                }
            }
        }
        Command::Rules {
            command: RulesCommand::Publish { file, ring },
        } => {
            let json = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let version = hub(&dirs()?, false)?
                .documents
                .publish_rule_set(&ring, &json)?;
            println!("rule set {version} published to ring {ring}");
        }
        Command::Tiers {
            command: TiersCommand::Publish { file, ring },
        } => {
            let json = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            hub(&dirs()?, false)?
                .documents
                .publish_tier_rules(&ring, &json)?;
            println!("tier rules published to ring {ring}");
        }
        Command::Rebuild => {
            let r = hub(&dirs()?, false)?.rebuild_projections()?;
            println!(
                "{} facts read: {} registrations, {} members' profiles, {} aliases, {} claims rebuilt; {} unreadable",
                r.facts, r.registrations, r.profiles, r.aliases, r.claims, r.unreadable
            );
            let mut unreadable = r.unreadable;
            for (name, step) in hub(&dirs()?, false)?.rebuild_behind()? {
                println!(
                    "{name}: {} facts folded up to position {}; {} unreadable",
                    step.folded, step.position, step.unreadable
                );
                unreadable += step.unreadable;
            }
            if unreadable > 0 {
                anyhow::bail!("{unreadable} held facts do not parse (see the log)");
            }
        }
        Command::Points {
            command: PointsCommand::Publish { file, ring },
        } => {
            let json = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            hub(&dirs()?, false)?
                .documents
                .publish_points_rules(&ring, &json)?;
            println!("points settings published to ring {ring}");
        }
        Command::Serve {
            listen,
            insecure_dev,
            lease_share_permille,
            lease_minutes,
            fetches_per_minute,
        } => {
            cfg.listen = listen.unwrap_or(cfg.listen);
            cfg.insecure_dev |= insecure_dev;
            cfg.lease_share_permille = lease_share_permille.unwrap_or(cfg.lease_share_permille);
            cfg.lease_minutes = lease_minutes.unwrap_or(cfg.lease_minutes);
            cfg.fetches_per_minute = fetches_per_minute.unwrap_or(cfg.fetches_per_minute);
            let app = App::open(&cfg)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("binding {}", cfg.listen))?;
                let addr = listener.local_addr()?;
                let scheme = if cfg.insecure_dev { "http" } else { "https" };
                // Tests and scripts read this line for the address.
                println!("patron-hub listening on {scheme}://{addr}");
                app.run(listener, patron_web::shutdown_signal()).await
            })?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("patron-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
