//! Stream records into route changes: the Streams SDK's attribute values become the DynamoDB
//! SDK's (two crates, two identical types), so the Scan's decoders read stream images as well.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as Value;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, OperationType, Record};

use super::super::decode::{self, Item};
use crate::store::Change;

/// Which of the two followed tables a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TableKind {
    Sessions,
    Containers,
}

impl TableKind {
    /// The `table` label of the stream metrics.
    pub(super) fn label(self) -> &'static str {
        match self {
            TableKind::Sessions => "sessions",
            TableKind::Containers => "containers",
        }
    }
}

/// A value of a kind added to DynamoDB after this SDK was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an attribute value of an unknown kind")]
pub(super) struct UnknownKind;

/// One attribute value, moved (not copied) into the DynamoDB SDK's type.
pub(super) fn value(v: StreamValue) -> Result<Value, UnknownKind> {
    Ok(match v {
        StreamValue::S(s) => Value::S(s),
        StreamValue::N(n) => Value::N(n),
        StreamValue::B(b) => Value::B(b),
        StreamValue::Bool(b) => Value::Bool(b),
        StreamValue::Null(n) => Value::Null(n),
        StreamValue::Ss(v) => Value::Ss(v),
        StreamValue::Ns(v) => Value::Ns(v),
        StreamValue::Bs(v) => Value::Bs(v),
        StreamValue::L(list) => Value::L(list.into_iter().map(value).collect::<Result<_, _>>()?),
        StreamValue::M(map) => Value::M(item(map)?),
        _ => return Err(UnknownKind),
    })
}

/// A whole image, as the decoders of [`decode`] take it.
pub(super) fn item(image: HashMap<String, StreamValue>) -> Result<Item, UnknownKind> {
    image
        .into_iter()
        .map(|(name, v)| Ok((name, value(v)?)))
        .collect()
}

/// What one stream record means for the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mapped {
    /// A change to apply: an item's new value, or its removal.
    Applied(Change),
    /// The new image did not decode: the key is routed as if deleted, and `reason` logged.
    Skipped { change: Change, reason: String },
    /// Not a change of anything routed: no key, or an event this router does not know.
    Ignored,
    /// An insert or modify without its new image: the stream's view type leaves images out,
    /// so the stream cannot say what an item became.
    NoNewImage,
}

/// Maps one record of `kind`'s table, whose items are keyed by `key_attr`.
pub(super) fn map(record: Record, kind: TableKind, key_attr: &str) -> Mapped {
    let Some(data) = record.dynamodb else {
        return Mapped::Ignored;
    };
    let key = data.keys.as_ref().and_then(|keys| key_of(keys, key_attr));
    match record.event_name {
        Some(OperationType::Insert | OperationType::Modify) => match data.new_image {
            Some(image) => {
                let mapped = upsert(kind, key_attr, image, key);
                let before = data
                    .old_image
                    .and_then(|old| image_change(kind, key_attr, old).ok());
                match (&mapped, before) {
                    // Only attributes the router does not route by changed (its own activity
                    // and wake stamps, most often): nothing to apply or to forget.
                    (Mapped::Applied(after), Some(before)) if *after == before => Mapped::Ignored,
                    _ => mapped,
                }
            }
            None => Mapped::NoNewImage,
        },
        Some(OperationType::Remove) => {
            key.map_or(Mapped::Ignored, |k| Mapped::Applied(removal(kind, k)))
        }
        _ => Mapped::Ignored,
    }
}

/// The item's key, from the record's `Keys`: present even when the image is not.
fn key_of(keys: &HashMap<String, StreamValue>, key_attr: &str) -> Option<String> {
    match keys.get(key_attr) {
        Some(StreamValue::S(k)) if !k.is_empty() => Some(k.clone()),
        _ => None,
    }
}

fn upsert(
    kind: TableKind,
    key_attr: &str,
    image: HashMap<String, StreamValue>,
    key: Option<String>,
) -> Mapped {
    match (image_change(kind, key_attr, image), key) {
        (Ok(change), _) => Mapped::Applied(change),
        (Err(reason), Some(key)) => Mapped::Skipped {
            change: removal(kind, key),
            reason,
        },
        (Err(_), None) => Mapped::Ignored,
    }
}

/// The change an image stands for, or why it does not decode.
fn image_change(
    kind: TableKind,
    key_attr: &str,
    image: HashMap<String, StreamValue>,
) -> Result<Change, String> {
    item(image)
        .map_err(|e| e.to_string())
        .and_then(|item| decoded(kind, &item, key_attr).map_err(|e| e.to_string()))
}

fn decoded(kind: TableKind, item: &Item, key_attr: &str) -> Result<Change, decode::DecodeError> {
    Ok(match kind {
        TableKind::Sessions => {
            let (key, record) = decode::session(item, key_attr)?;
            Change::Session {
                key: key.into_boxed_str(),
                record: Some(record),
            }
        }
        TableKind::Containers => {
            let (id, record) = decode::container(item, key_attr)?;
            Change::Container {
                id: id.into_boxed_str(),
                record: Some(record),
            }
        }
    })
}

fn removal(kind: TableKind, key: String) -> Change {
    let key = key.into_boxed_str();
    match kind {
        TableKind::Sessions => Change::Session { key, record: None },
        TableKind::Containers => Change::Container {
            id: key,
            record: None,
        },
    }
}

#[cfg(test)]
mod tests;
