//! `patron-hub`: the central node. Its sync server, storage and enrollment come with
//! the sync issue; until then the binary only reports that, so that scripts and the
//! workspace already know its name.

use std::process::ExitCode;

fn main() -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("version") => {
            println!("patron-hub {version}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "patron-hub {version}: the hub is not built yet (sync issue); \
                 stores run on their own until it is."
            );
            ExitCode::from(2)
        }
    }
}
