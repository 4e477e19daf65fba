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

    /// Health probe: GET this http:// URL, exit 0 on a 200 answer and 1 otherwise, then stop.
    /// The container image's HEALTHCHECK uses it, as there is no curl in its runtime.
    #[arg(long, value_name = "URL")]
    pub probe: Option<String>,

    /// Pingora's flags: -c PATH (server YAML), -d, -u, -t.
    #[command(flatten)]
    pub server: Opt,
}
