//! Tracing setup. Stores log JSON lines; nothing personal is ever a field (handlers
//! are instrumented with `skip_all`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs a JSON subscriber writing to `sink`, filtered by `RUST_LOG` (default `info`).
pub fn init<W>(sink: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(sink)
        .try_init();
}
