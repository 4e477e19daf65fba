//! The `session-router` binary: parse flags, load config, run the Pingora server.

use std::process::ExitCode;

use clap::Parser;
use session_router::cli::Cli;
use session_router::server;

// Pingora allocates and frees about a hundred small blocks per proxied request; mimalloc serves
// them from per-thread free lists for far fewer instructions than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let (config, server_conf) = match server::load(&cli) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("session-router: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.server.test {
        println!("session-router: configuration ok");
        return ExitCode::SUCCESS;
    }
    match server::build(cli, config, server_conf) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("session-router: {e}");
            ExitCode::from(2)
        }
    }
}
