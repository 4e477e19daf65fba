//! The command line: the router's own `--config` beside Pingora's standard flags.

use std::path::PathBuf;

use clap::Parser;
use pingora::server::configuration::Opt;

#[derive(Debug, Parser)]
#[command(
    name = "session-router",
    version,
    about = "Routes each editing session's preview URL to its dev server"
)]
pub struct Cli {
    /// Router settings (TOML). Without it, the defaults compiled from conf/router.toml.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Pingora's flags: -c PATH (server YAML), -d, -u, -t.
    #[command(flatten)]
    pub server: Opt,
}
