use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as Value;
use aws_sdk_dynamodbstreams::primitives::Blob;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, Record, StreamRecord,
};

use super::*;
use crate::store::fixtures::session;
use crate::store::{ContainerRecord, ContainerStatus};

fn s(v: &str) -> StreamValue {
    StreamValue::S(v.to_owned())
}

fn image(pairs: &[(&str, StreamValue)]) -> HashMap<String, StreamValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn record(
    event: OperationType,
    keys: &[(&str, StreamValue)],
    new: Option<&[(&str, StreamValue)]>,
) -> Record {
    let data = StreamRecord::builder()
        .set_keys(Some(image(keys)))
        .set_new_image(new.map(image))
        .sequence_number("100")
        .build();
    Record::builder().event_name(event).dynamodb(data).build()
}

#[test]
fn every_kind_of_value_converts() {
    let nested = StreamValue::M(image(&[
        (
            "l",
            StreamValue::L(vec![s("a"), StreamValue::N("1".into())]),
        ),
        ("null", StreamValue::Null(true)),
    ]));
    let cases = [
        (s("x"), Value::S("x".into())),
        (StreamValue::N("4.5".into()), Value::N("4.5".into())),
        (
            StreamValue::B(Blob::new(b"ab".to_vec())),
            Value::B(Blob::new(b"ab".to_vec())),
        ),
        (StreamValue::Bool(true), Value::Bool(true)),
        (StreamValue::Null(true), Value::Null(true)),
        (
            StreamValue::Ss(vec!["a".into(), "b".into()]),
            Value::Ss(vec!["a".into(), "b".into()]),
        ),
        (
            StreamValue::Ns(vec!["1".into()]),
            Value::Ns(vec!["1".into()]),
        ),
        (
            StreamValue::Bs(vec![Blob::new(b"z".to_vec())]),
            Value::Bs(vec![Blob::new(b"z".to_vec())]),
        ),
        (
            nested,
            Value::M(HashMap::from([
                (
                    "l".to_owned(),
                    Value::L(vec![Value::S("a".into()), Value::N("1".into())]),
                ),
                ("null".to_owned(), Value::Null(true)),
            ])),
        ),
    ];
    for (from, want) in cases {
        assert_eq!(value(from.clone()).unwrap(), want, "{from:?}");
    }
}

#[test]
fn inserts_and_modifies_carry_the_new_image() {
    let new = [("sessionId", s("acme-t1")), ("containerId", s("c1"))];
    for event in [OperationType::Insert, OperationType::Modify] {
        let r = record(event, &[("sessionId", s("acme-t1"))], Some(&new));
        let want = Change::Session {
            key: "acme-t1".into(),
            record: Some(session("c1")),
        };
        assert_eq!(
            map(r, TableKind::Sessions, "sessionId"),
            Mapped::Applied(want)
        );
    }
    let new = [
        ("containerId", s("c1")),
        ("containerIp", s("10.0.0.7")),
        ("status", s("stopping")),
    ];
    let r = record(
        OperationType::Insert,
        &[("containerId", s("c1"))],
        Some(&new),
    );
    let want = Change::Container {
        id: "c1".into(),
        record: Some(ContainerRecord {
            ip: Some("10.0.0.7".parse().unwrap()),
            port: None,
            status: ContainerStatus::Stopping,
        }),
    };
    assert_eq!(
        map(r, TableKind::Containers, "containerId"),
        Mapped::Applied(want)
    );
}

#[test]
fn removals_take_the_key_from_keys() {
    let r = record(OperationType::Remove, &[("containerId", s("c9"))], None);
    let want = Change::Container {
        id: "c9".into(),
        record: None,
    };
    assert_eq!(
        map(r, TableKind::Containers, "containerId"),
        Mapped::Applied(want)
    );
}

#[test]
fn an_item_that_does_not_decode_routes_as_deleted() {
    let bad = [
        ("sessionId", s("acme-t1")),
        ("containerId", StreamValue::Bool(true)),
    ];
    let r = record(
        OperationType::Modify,
        &[("sessionId", s("acme-t1"))],
        Some(&bad),
    );
    match map(r, TableKind::Sessions, "sessionId") {
        Mapped::Skipped { change, reason } => {
            assert_eq!(
                change,
                Change::Session {
                    key: "acme-t1".into(),
                    record: None
                }
            );
            assert!(reason.contains("containerId"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn records_without_a_key_or_event_are_ignored() {
    let r = record(OperationType::Remove, &[("other", s("x"))], None);
    assert_eq!(map(r, TableKind::Sessions, "sessionId"), Mapped::Ignored);
    let bad = [("containerId", StreamValue::Bool(true))];
    let r = record(OperationType::Insert, &[], Some(&bad));
    assert_eq!(map(r, TableKind::Sessions, "sessionId"), Mapped::Ignored);
    let r = Record::builder().event_name(OperationType::Insert).build();
    assert_eq!(map(r, TableKind::Sessions, "sessionId"), Mapped::Ignored);
}

#[test]
fn an_upsert_without_its_new_image_says_so() {
    let r = record(OperationType::Modify, &[("sessionId", s("acme-t1"))], None);
    assert_eq!(map(r, TableKind::Sessions, "sessionId"), Mapped::NoNewImage);
}

#[test]
fn a_modify_of_attributes_not_routed_by_is_ignored() {
    let keys = [("sessionId", s("acme-t1"))];
    let before = [("sessionId", s("acme-t1")), ("containerId", s("c1"))];
    let stamped = [
        ("sessionId", s("acme-t1")),
        ("containerId", s("c1")),
        ("lastActivityAt", StreamValue::N("1796147453".into())),
    ];
    let with_old = |new: &[(&str, StreamValue)]| {
        let data = StreamRecord::builder()
            .set_keys(Some(image(&keys)))
            .set_old_image(Some(image(&before)))
            .set_new_image(Some(image(new)))
            .sequence_number("101")
            .build();
        Record::builder()
            .event_name(OperationType::Modify)
            .dynamodb(data)
            .build()
    };
    assert_eq!(
        map(with_old(&stamped), TableKind::Sessions, "sessionId"),
        Mapped::Ignored
    );
    let repointed = [("sessionId", s("acme-t1")), ("containerId", s("c2"))];
    assert_eq!(
        map(with_old(&repointed), TableKind::Sessions, "sessionId"),
        Mapped::Applied(Change::Session {
            key: "acme-t1".into(),
            record: Some(session("c2")),
        })
    );
}
