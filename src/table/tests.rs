use super::*;
use crate::store::fixtures::{running as container, session};
use std::sync::Arc;

fn snapshot(sessions: &[(&str, &str)], containers: &[(&str, &str)]) -> StoreSnapshot {
    let mut s = StoreSnapshot::default();
    for (k, c) in sessions {
        s.sessions.insert((*k).into(), session(c));
    }
    for (id, ip) in containers {
        s.containers.insert((*id).into(), container(ip));
    }
    s
}

#[test]
fn a_change_is_seen_by_new_readers_and_not_by_a_version_already_held() {
    let mut table = RouteTable::from(Arc::new(snapshot(&[("a-1", "c1")], &[("c1", "10.0.0.1")])));
    let held = table.clone();
    let moved = Change::Container {
        id: "c1".into(),
        record: Some(container("10.0.0.2")),
    };
    assert!(table.apply(&moved));
    assert!(
        !table.apply(&moved),
        "the same change twice changes nothing"
    );
    assert_eq!(table.container("c1"), Some(&container("10.0.0.2")));
    assert_eq!(held.container("c1"), Some(&container("10.0.0.1")));
    let deleted = Change::Session {
        key: "a-1".into(),
        record: None,
    };
    assert!(table.apply(&deleted));
    assert_eq!(table.session("a-1"), None);
    assert_eq!(held.session("a-1"), Some(&session("c1")));
    assert!(
        !table.apply(&deleted),
        "deleting what is gone changes nothing"
    );
}

#[test]
fn a_full_load_corrects_only_what_differs() {
    let mut table = RouteTable::from(Arc::new(snapshot(
        &[("a-1", "c1"), ("a-2", "c2"), ("a-3", "c3")],
        &[("c1", "10.0.0.1"), ("c2", "10.0.0.2")],
    )));
    let loaded = Arc::new(snapshot(
        &[("a-1", "c1"), ("a-2", "c9"), ("a-4", "c1")],
        &[("c1", "10.0.0.1"), ("c2", "10.0.0.2")],
    ));
    let corrections = table.reconcile(loaded.clone());
    assert_eq!(
        corrections,
        Corrections {
            changed: 2,
            removed: 1
        }
    );
    assert_eq!(table.session("a-2"), Some(&session("c9")));
    assert_eq!(table.session("a-3"), None);
    assert_eq!(table.session("a-4"), Some(&session("c1")));
    assert_eq!(
        table.reconcile(loaded).total(),
        0,
        "nothing left to correct"
    );
    assert_eq!((table.session_count(), table.container_count()), (3, 2));
}

#[test]
fn many_changes_fold_into_a_new_base_that_says_the_same() {
    let mut table = RouteTable::from(Arc::new(snapshot(&[], &[("c0", "10.0.0.1")])));
    let held = table.clone();
    for i in 0..FOLD_AT + 10 {
        table.apply(&Change::Session {
            key: format!("a-{i}").into(),
            record: Some(session("c0")),
        });
    }
    table.apply(&Change::Container {
        id: "c0".into(),
        record: None,
    });
    assert!(table.changed.len() < FOLD_AT, "folded");
    assert_eq!(table.session_count(), FOLD_AT + 10);
    assert_eq!(table.session("a-0"), Some(&session("c0")));
    assert_eq!(table.container("c0"), None);
    assert_eq!(table.container_count(), 0);
    assert_eq!(held.container("c0"), Some(&container("10.0.0.1")));
    assert_eq!(held.session("a-0"), None);
}
