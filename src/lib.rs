//! session-router: gives every editing session of a site its own live preview URL by routing
//! `edit.{client}.<domain>/session/{thread}/…` to that session's dev-server container.
//!
//! The library holds everything; the binary only parses the command line and calls [`server`].

pub mod access;
pub mod access_log;
pub mod admin;
pub mod background;
pub mod cli;
pub mod config;
pub mod decide;
pub mod downstream;
pub mod drain;
pub mod fastpath;
pub mod headers;
pub mod health;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod pages;
pub mod probe;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod shared;
pub mod store;
pub mod table;
pub mod upgrades;
pub mod upstream;
pub mod ws_socket;

#[cfg(test)]
mod test_sockets;
