//! The router's only writes to the sessions table: conditional stamps of activity and wake
//! claims. Each is one UpdateItem whose condition keeps the value from moving back and from
//! creating an item for a session that no longer exists.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::unavailable;
use crate::config::DynamoDbSection;
use crate::store::{Stamp, StoreError};

pub(super) async fn stamp(
    client: &Client,
    settings: &DynamoDbSection,
    key: &str,
    stamp: Stamp,
    value: u64,
    below: u64,
) -> Result<bool, StoreError> {
    let sent = client
        .update_item()
        .table_name(&settings.sessions_table)
        .key(
            &settings.session_key_attribute,
            AttributeValue::S(key.to_owned()),
        )
        .update_expression("SET #stamp = :value")
        .condition_expression(
            "attribute_exists(#key) AND (attribute_not_exists(#stamp) OR #stamp < :below)",
        )
        .expression_attribute_names("#stamp", stamp.attribute())
        .expression_attribute_names("#key", &settings.session_key_attribute)
        .expression_attribute_values(":value", AttributeValue::N(value.to_string()))
        .expression_attribute_values(":below", AttributeValue::N(below.to_string()))
        .send()
        .await;
    match sent {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(unavailable(e)),
    }
}
