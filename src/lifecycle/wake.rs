//! Waking a stopped container on a visit. The router asks the platform through a waker (an SQS
//! message or a signed HTTP POST); across the fleet one wake per session per cooldown is sent,
//! decided by a conditional write of `wakeRequestedAt` that exactly one router wins. A request
//! never waits on any of it: the engine that answers the visit starts the wake and moves on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ring::hmac;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{OnceCell, Semaphore};

use super::epoch_millis;
use crate::config::{WakeKind, WakeSection};
use crate::metrics::Metrics;
use crate::store::{RouteStore, Stamp};

/// Wakes being sent at once; past it a wake is counted failed rather than queued.
const IN_FLIGHT: usize = 64;
/// How long a sent wake waits for its first routed response before it is forgotten.
const PENDING_FOR: Duration = Duration::from_secs(15 * 60);
/// The signature header of HTTP wakes.
pub const SIGNATURE_HEADER: &str = "x-session-router-signature";

/// What the platform is asked: the contract's body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WakeBody {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_id: String,
    pub client_id: String,
    pub thread_id: String,
    /// Epoch milliseconds.
    pub requested_at: u64,
}

#[derive(Debug, Error)]
pub enum WakeError {
    #[error("sqs: {0}")]
    Sqs(String),
    #[error("http: {0}")]
    Http(String),
    #[error("the wake endpoint answered {0}")]
    Status(u16),
}

/// Where wakes go.
pub enum Waker {
    Sqs {
        /// Built on first use, inside the server's runtime.
        client: OnceCell<aws_sdk_sqs::Client>,
        queue_url: String,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        url: String,
        key: hmac::Key,
    },
}

impl Waker {
    /// The configured waker; `None` for `kind = "none"`. Validation made sure what each kind
    /// needs is there.
    pub fn from_config(w: &WakeSection) -> Option<Waker> {
        match w.kind {
            WakeKind::None => None,
            WakeKind::Sqs => Some(Waker::Sqs {
                client: OnceCell::new(),
                queue_url: w.queue_url.clone().unwrap_or_default(),
                timeout: w.timeout,
            }),
            WakeKind::Http => {
                let client = reqwest::Client::builder()
                    .timeout(w.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .ok()?;
                let secret = w.secret.as_deref().unwrap_or_default();
                Some(Waker::Http {
                    client,
                    url: w.url.clone().unwrap_or_default(),
                    key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
                })
            }
        }
    }

    pub async fn send(&self, body: &WakeBody) -> Result<(), WakeError> {
        let json = serde_json::to_string(body).map_err(|e| WakeError::Http(e.to_string()))?;
        match self {
            Waker::Sqs {
                client,
                queue_url,
                timeout,
            } => {
                let client = client.get_or_init(|| sqs_client(*timeout)).await;
                let mut send = client
                    .send_message()
                    .queue_url(queue_url)
                    .message_body(json);
                if queue_url.ends_with(".fifo") {
                    // One group per session keeps its wakes in order; the id and time make the
                    // deduplication id, so a retried send is not delivered twice.
                    let dedup = format!("{}-{}", body.session_id, body.requested_at);
                    send = send
                        .message_group_id(&body.session_id)
                        .message_deduplication_id(dedup);
                }
                send.send().await.map(|_| ()).map_err(|e| {
                    WakeError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                })
            }
            Waker::Http { client, url, key } => {
                let signature = signature(key, json.as_bytes());
                let resp = client
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .body(json)
                    .send()
                    .await
                    .map_err(|e| WakeError::Http(e.to_string()))?;
                match resp.status().as_u16() {
                    200..=299 => Ok(()),
                    status => Err(WakeError::Status(status)),
                }
            }
        }
    }
}

async fn sqs_client(timeout: Duration) -> aws_sdk_sqs::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(timeout)
        .build();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// `sha256=<hex HMAC-SHA256 of the body>`.
pub fn signature(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Who the wake is for.
#[derive(Debug, Clone)]
pub struct WakeFor {
    pub key: String,
    pub client: String,
    pub thread: String,
}

/// Decides and sends wakes, and times cold starts.
pub struct Wakes {
    waker: Option<Waker>,
    store: Arc<dyn RouteStore>,
    cooldown: Duration,
    /// When this router last asked for each session: a visit inside the cooldown goes no
    /// further than this map.
    recent: Mutex<HashMap<Box<str>, Instant>>,
    /// Wakes this router sent and whose first routed response has not come yet.
    pending: DashMap<Box<str>, Instant>,
    in_flight: Semaphore,
    metrics: Arc<Metrics>,
}

impl Wakes {
    pub fn new(
        waker: Option<Waker>,
        store: Arc<dyn RouteStore>,
        cooldown: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Wakes {
            waker,
            store,
            cooldown,
            recent: Mutex::new(HashMap::new()),
            pending: DashMap::new(),
            in_flight: Semaphore::new(IN_FLIGHT),
            metrics,
        }
    }

    /// Whether a waker is configured: without one, a stopped session stays paused.
    pub fn enabled(&self) -> bool {
        self.waker.is_some()
    }

    /// A visit that does not wake (a bot, HEAD, an asset), counted.
    pub fn ignore(&self) {
        self.metrics.wake_request("ignored");
    }

    /// Asks for a wake of the session in the background.
    pub fn request(self: &Arc<Self>, to: WakeFor) {
        if !self.enabled() {
            return;
        }
        if !self.note_recent(&to.key) {
            self.metrics.wake_request("cooldown");
            return;
        }
        let Ok(permit) = self.in_flight.try_acquire() else {
            self.metrics.wake_request("failed");
            return;
        };
        permit.forget();
        let wakes = self.clone();
        let asked = Instant::now();
        tokio::spawn(async move {
            let result = wakes.claim_and_send(&to, asked).await;
            wakes.in_flight.add_permits(1);
            wakes.metrics.wake_request(result);
        });
    }

    /// Records this router's ask; false when it asked within the cooldown.
    fn note_recent(&self, key: &str) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        let now = Instant::now();
        if recent.get(key).is_some_and(|at| now - *at < self.cooldown) {
            return false;
        }
        if recent.len() >= IN_FLIGHT * 64 {
            let cooldown = self.cooldown;
            recent.retain(|_, at| now - *at < cooldown);
        }
        recent.insert(key.into(), now);
        true
    }

    async fn claim_and_send(&self, to: &WakeFor, asked: Instant) -> &'static str {
        let Some(waker) = &self.waker else {
            return "ignored";
        };
        let now = epoch_millis();
        let cooldown = self.cooldown.as_millis() as u64;
        let claim = self.store.stamp(
            &to.key,
            Stamp::WakeRequested,
            now,
            now.saturating_sub(cooldown),
        );
        match claim.await {
            Ok(true) => {}
            Ok(false) => return "deduplicated",
            Err(e) => {
                log::warn!("wake of {}: could not claim it: {e}", to.key);
                return "failed";
            }
        }
        let body = WakeBody {
            kind: "session.wake",
            session_id: to.key.clone(),
            client_id: to.client.clone(),
            thread_id: to.thread.clone(),
            requested_at: now,
        };
        match waker.send(&body).await {
            Ok(()) => {
                log::info!("asked the platform to wake session {}", to.key);
                // A wake whose container never came is not a cold start to time.
                self.pending.retain(|_, at| at.elapsed() < PENDING_FOR);
                self.pending.insert(to.key.as_str().into(), asked);
                "sent"
            }
            Err(e) => {
                log::warn!("wake of {} failed: {e}", to.key);
                "failed"
            }
        }
    }

    /// A response came from the session's container: ends the cold start this router timed, if
    /// any.
    pub fn routed(&self, key: &str) {
        if self.pending.is_empty() {
            return;
        }
        if let Some((_, asked)) = self.pending.remove(key) {
            self.metrics.cold_start(asked.elapsed().as_secs_f64());
        }
    }

    /// When this router last asked for the session, how long ago.
    pub fn asked_ago(&self, key: &str) -> Option<Duration> {
        let recent = self.recent.lock().ok()?;
        recent.get(key).map(Instant::elapsed)
    }
}

/// A wake being sent: the visitor's page waits for it, and the fleet-wide claim is already
/// made, so no other router would send it within the cooldown.
impl crate::drain::InFlight for Wakes {
    fn in_flight(&self) -> usize {
        IN_FLIGHT - self.in_flight.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_has_the_contracts_names() {
        let body = WakeBody {
            kind: "session.wake",
            session_id: "acme-t1".into(),
            client_id: "acme".into(),
            thread_id: "t1".into(),
            requested_at: 1_700_000_000_000,
        };
        let json: serde_json::Value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "session.wake", "sessionId": "acme-t1", "clientId": "acme",
                "threadId": "t1", "requestedAt": 1_700_000_000_000u64})
        );
    }
}
