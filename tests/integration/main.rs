//! The integration suite as one test binary: each module covers one area against the real router
//! binary, real upstreams and a real DynamoDB-compatible server. One binary links the dependency
//! tree once, not once per file, which keeps a clean build's disk use and link time down.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod access;
mod activity;
mod address_policy;
mod admin_sessions;
mod cli;
mod deploy;
mod dynamodb;
mod fast_path;
mod hostile;
mod isolation;
mod lifecycle;
mod limits;
mod logs_and_probe;
mod miss_rate;
mod outcomes;
mod propagation;
mod routing;
mod session_keys;
mod shutdown;
mod streams;
mod table;
mod upgrade;
mod wake;
mod websocket;
