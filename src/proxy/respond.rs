//! Writes the router's own answers to the client.

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

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
    let empty = answer.body.is_empty();
    session
        .write_response_header(Box::new(header), empty)
        .await?;
    if !empty {
        session.write_response_body(Some(answer.body), true).await?;
    }
    Ok(())
}
