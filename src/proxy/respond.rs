//! Writes the router's own answers to the client, and every request's access-log line.

use std::time::Duration;

use http::header::HOST;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE,
};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::{RequestCtx, SessionProxy};
use crate::access_log::{AccessLog, AccessRecord};
use crate::outcome::Outcome;
use crate::pages::Answer;

/// Sends `answer` as the complete response. Every self-made answer is `no-store`: a page saying
/// "starting" must never be served from a cache once the container is up.
pub async fn write_answer(session: &mut Session, answer: Answer) -> Result<()> {
    let mut header = ResponseHeader::build(answer.status, Some(5))?;
    header.insert_header(CACHE_CONTROL, "no-store")?;
    header.insert_header(CONTENT_LENGTH, answer.body.len())?;
    if let Some(ct) = answer.content_type {
        header.insert_header(CONTENT_TYPE, ct)?;
    }
    if let Some(secs) = answer.retry_after {
        header.insert_header(RETRY_AFTER, secs)?;
    }
    if let Some(location) = answer.location {
        header.insert_header(LOCATION, location)?;
    }
    if let Some(cookie) = answer.set_cookie {
        header.insert_header(SET_COOKIE, cookie)?;
    }
    let empty = answer.body.is_empty();
    session
        .write_response_header(Box::new(header), empty)
        .await?;
    if !empty {
        session.write_response_body(Some(answer.body), true).await?;
    }
    Ok(())
}

impl SessionProxy {
    pub(super) fn log_access(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        outcome: Outcome,
        status: u16,
        elapsed: Duration,
    ) {
        // Checked first so that nothing is formatted when access logging is off.
        if !AccessLog::enabled() {
            return;
        }
        let req = session.req_header();
        self.shared.access_log.record(&AccessRecord {
            outcome,
            status,
            method: req.method.as_str(),
            host: req
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("-"),
            path: req.uri.path(),
            elapsed,
            upstream: ctx.upstream.as_ref().map(|u| u.addr),
        });
    }
}
