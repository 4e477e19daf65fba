//! The `session-router` binary: parse flags, load config, start logging, run the Pingora server.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use session_router::cli::Cli;
use session_router::{logging, probe, server};

/// Per-step limit of `--probe`: well inside a container health check's own timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return session_router::cli::run(command);
    }
    if let Some(url) = &cli.probe {
        return match probe::probe(url, PROBE_TIMEOUT) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("session-router: probe {url}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The log format is a config key, so config errors are reported before logging exists,
    // as plain lines on stderr.
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
    logging::init(config.log.format);
    match server::build(cli, config, server_conf) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(2)
        }
    }
}
