//! The command line: the router's own `--config` beside Pingora's standard flags, and the
//! subcommands that make preview-link keys and tokens for operators and tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pingora::server::configuration::Opt;

use crate::access::mint::{self, Link};

/// Environment variable holding the private key `token` signs with (base64 PKCS#8).
pub const SIGNING_KEY_ENV: &str = "SESSION_ROUTER_SIGNING_KEY";

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

    #[command(flatten)]
    pub server: ServerFlags,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Pingora's standard flags, described for this program (Pingora's own help texts describe the
/// library, not the router).
#[derive(Debug, clap::Args)]
pub struct ServerFlags {
    /// Take over the listening sockets of a running router (zero-downtime upgrade): start this
    /// process with -u, then send SIGQUIT to the old one within 5 s.
    #[arg(short, long)]
    pub upgrade: bool,

    /// Run in the background (fork and detach); the pid goes to pingora.yaml's pid_file.
    #[arg(short, long)]
    pub daemon: bool,

    /// Check the settings (router TOML and server YAML) and exit: 0 when the router would start.
    #[arg(short, long)]
    pub test: bool,

    /// Server settings (Pingora YAML: threads, pid_file, upgrade_sock, grace periods).
    #[arg(short, long, value_name = "PATH")]
    pub conf: Option<String>,

    /// Accepted and ignored, as `cargo test` may pass it.
    #[arg(long, hide = true)]
    pub nocapture: bool,
}

impl From<ServerFlags> for Opt {
    fn from(flags: ServerFlags) -> Self {
        Opt {
            upgrade: flags.upgrade,
            daemon: flags.daemon,
            nocapture: flags.nocapture,
            test: flags.test,
            conf: flags.conf,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make an Ed25519 key pair for signing preview links. Prints JSON: the private key (base64
    /// PKCS#8, for the editing app's secret store) and the public JWK (for the router's JWKS).
    Keys {
        /// Key id that tokens signed with this key name.
        #[arg(long)]
        kid: String,
    },
    /// Mint a preview-link token as the editing app does, signed with the private key in
    /// SESSION_ROUTER_SIGNING_KEY. Prints the token.
    Token {
        #[arg(long)]
        client: String,
        #[arg(long)]
        thread: String,
        /// Key id of the signing key, as in the router's JWKS.
        #[arg(long)]
        kid: String,
        /// Lifetime, e.g. 5m.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The session's accessGeneration the token is for.
        #[arg(long, default_value_t = 0)]
        gen: u64,
        #[arg(long, default_value = "session-router")]
        audience: String,
    },
}

/// Runs a subcommand: prints its result on stdout, or the reason it failed on stderr.
pub fn run(command: &Command) -> ExitCode {
    let out = match command {
        Command::Keys { kid } => mint::new_key(kid).map(|key| key.to_string()),
        Command::Token {
            client,
            thread,
            kid,
            ttl,
            gen,
            audience,
        } => {
            let Ok(private_key) = std::env::var(SIGNING_KEY_ENV) else {
                eprintln!(
                    "session-router: set {SIGNING_KEY_ENV} to the signing key (base64 PKCS#8)"
                );
                return ExitCode::from(2);
            };
            let link = Link {
                audience,
                client,
                thread,
                ttl: *ttl,
                gen: *gen,
            };
            mint::token(&private_key, kid, &link)
        }
    };
    match out {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("session-router: {e}");
            ExitCode::from(2)
        }
    }
}
