use std::time::{Duration, Instant};

use super::*;

fn open(id: &str, parent: Option<&str>) -> Listed {
    Listed {
        id: id.to_owned(),
        parent: parent.map(str::to_owned),
        closed: false,
    }
}

fn closed(id: &str, parent: Option<&str>) -> Listed {
    Listed {
        closed: true,
        ..open(id, parent)
    }
}

fn ids(set: &ShardSet, indices: &[usize]) -> Vec<String> {
    indices.iter().map(|&i| set.shards[i].id.clone()).collect()
}

fn end(set: &mut ShardSet, id: &str) {
    let shard = set.iter_mut().find(|s| s.id == id).unwrap();
    shard.position = Position::Ended;
}

#[test]
fn positioning_skips_closed_shards_and_starts_open_ones_at_the_newest_record() {
    let now = Instant::now();
    let set = ShardSet::positioned(vec![closed("a", None), open("b", Some("a"))], now);
    assert_eq!(set.shards[0].position, Position::Skipped);
    assert_eq!(set.shards[1].position, Position::Pending);
    assert_eq!(set.shards[1].resume, Start::Latest);
    assert_eq!(ids(&set, &set.due(now)), ["b"]);
}

#[test]
fn a_child_is_read_only_after_its_parent_ends() {
    let now = Instant::now();
    let mut set = ShardSet::positioned(vec![open("p", None)], now);
    let added = set.merge(vec![open("p", None), open("c", Some("p"))], now);
    assert_eq!(added, Ok(1));
    assert_eq!(ids(&set, &set.due(now)), ["p"]);
    assert_eq!(set.next_due(), Some(now));
    end(&mut set, "p");
    assert_eq!(ids(&set, &set.due(now)), ["c"]);
    let child = &set.shards[1];
    assert_eq!(
        (&child.position, &child.resume),
        (&Position::Pending, &Start::TrimHorizon)
    );
}

#[test]
fn grandchildren_listed_at_once_come_in_lineage_order() {
    let now = Instant::now();
    let mut set = ShardSet::positioned(vec![open("p", None)], now);
    let listing = vec![
        closed("p", None),
        open("g", Some("c")),
        closed("c", Some("p")),
    ];
    assert_eq!(set.merge(listing, now), Ok(2));
    assert_eq!(ids(&set, &set.due(now)), ["p"]);
    end(&mut set, "p");
    assert_eq!(ids(&set, &set.due(now)), ["c"]);
    end(&mut set, "c");
    assert_eq!(ids(&set, &set.due(now)), ["g"]);
}

#[test]
fn an_open_shard_of_unknown_lineage_is_refused() {
    let now = Instant::now();
    let mut set = ShardSet::positioned(vec![open("a", None)], now);
    let err = set.merge(vec![open("a", None), open("x", Some("nobody"))], now);
    assert_eq!(err, Err(UnknownLineage("x".into())));
    // A closed one only holds old records: it is known from then on, and never read.
    let mut set = ShardSet::positioned(vec![open("a", None)], now);
    assert_eq!(
        set.merge(vec![open("a", None), closed("old", None)], now),
        Ok(0)
    );
    assert!(set.due(now).iter().all(|&i| set.shards[i].id != "old"));
}

#[test]
fn finished_shards_are_forgotten_once_unlisted_but_open_ones_are_kept() {
    let now = Instant::now();
    let mut set = ShardSet::positioned(vec![closed("old", None), open("a", None)], now);
    assert_eq!(set.merge(vec![], now), Ok(0));
    assert_eq!(set.shards.len(), 1);
    assert_eq!(set.shards[0].id, "a");
}

#[test]
fn caught_up_is_the_oldest_read_of_every_open_shard() {
    let now = Instant::now();
    let later = now + Duration::from_secs(1);
    let mut set = ShardSet::positioned(vec![open("a", None), open("b", None)], now);
    assert_eq!(set.caught_up(), None);
    set.shards[0].caught_up = Some(later);
    assert_eq!(set.caught_up(), None);
    set.shards[1].caught_up = Some(now);
    assert_eq!(set.caught_up(), Some(now));
    end(&mut set, "b");
    assert_eq!(set.caught_up(), Some(later));
}

#[test]
fn a_shard_read_to_its_end_awaits_its_children() {
    let now = Instant::now();
    let mut set = ShardSet::positioned(vec![open("p", None)], now);
    end(&mut set, "p");
    assert!(set.awaiting_children());
    assert_eq!(set.caught_up(), None);
    set.merge(vec![closed("p", None), open("c", Some("p"))], now)
        .unwrap();
    assert!(!set.awaiting_children());
}

#[test]
fn shards_not_yet_due_wait() {
    let now = Instant::now();
    let mut set = ShardSet::positioned(vec![open("a", None)], now);
    let later = now + Duration::from_millis(500);
    set.shards[0].due = later;
    assert!(set.due(now).is_empty());
    assert_eq!(set.next_due(), Some(later));
    assert_eq!(set.pick_mut(&[0]).len(), 1);
}
