use proptest::prelude::*;

use super::*;

fn template(t: &str) -> SessionKeyTemplate {
    SessionKeyTemplate::parse(t).unwrap()
}

#[test]
fn the_default_template_is_ambiguous_for_ids_with_a_dash() {
    let t = template("{client}-{thread}");
    assert_eq!(t.render("acme", "x-1"), t.render("acme-x", "1"));
    assert!(!t.is_unambiguous("acme", "x-1"));
    assert!(!t.is_unambiguous("acme-x", "1"));
    assert!(t.is_unambiguous("acme", "t1"));
    assert!(t.is_unambiguous("demo", "hello"));
    assert!(t.is_unambiguous("acme_x", "t_1"));
}

#[test]
fn a_template_without_client_is_never_unambiguous() {
    for t in ["{thread}", "thread#{thread}", "{thread}-{thread}"] {
        assert!(!template(t).is_unambiguous("acme", "t1"), "{t}");
    }
}

#[test]
fn any_literal_of_the_template_in_an_id_makes_it_ambiguous() {
    let t = template("s/{client}::{thread}.k");
    assert!(t.is_unambiguous("acme", "t-1"));
    for (client, thread) in [
        ("acme", "a::b"),
        ("s/x", "t1"),
        ("acme", "t.k"),
        ("a.k", "t"),
    ] {
        assert!(!t.is_unambiguous(client, thread), "{client} {thread}");
    }
}

#[test]
fn a_literal_overlapping_an_id_edge_is_ambiguous() {
    let t = template("{client}aa{thread}");
    // Neither id contains "aa", yet both pairs render "xaaay".
    assert_eq!(t.render("xa", "y"), t.render("x", "ay"));
    assert!(!t.is_unambiguous("xa", "y"));
    assert!(!t.is_unambiguous("x", "ay"));
    assert!(t.is_unambiguous("x", "y"));
}

#[test]
fn placeholders_with_nothing_between_are_ambiguous() {
    let t = template("{client}{thread}");
    assert!(!t.is_unambiguous("acme", "t1"));
    let t = template("{thread}{client}-");
    assert!(!t.is_unambiguous("acme", "t1"));
}

#[test]
fn order_and_repeats_of_placeholders_are_followed() {
    let t = template("{thread}@{client}");
    assert!(t.is_unambiguous("acme", "t1"));
    assert!(!t.is_unambiguous("acme", "t@1"));
    let t = template("{client}/{thread}/{client}");
    assert!(t.is_unambiguous("acme", "t1"));
    assert!(!t.is_unambiguous("acme", "t/1"));
}

/// Every other (client, thread) that renders `key`, by trying every pair of its substrings: an
/// id the template writes appears whole in the key, so no pair is missed.
fn other_pairs(t: &SessionKeyTemplate, client: &str, thread: &str) -> Vec<(String, String)> {
    let key = t.render(client, thread);
    let n = key.len();
    let spans = || (0..=n).flat_map(move |a| (a..=n).map(move |b| (a, b)));
    let mut found = Vec::new();
    for (a, b) in spans() {
        for (c, d) in spans() {
            let (c2, t2) = (&key[a..b], &key[c..d]);
            if (c2, t2) != (client, thread) && t.render(c2, t2) == key {
                found.push((c2.to_owned(), t2.to_owned()));
            }
        }
    }
    found
}

const TEMPLATES: &[&str] = &[
    "{client}-{thread}",
    "{client}_{thread}",
    "{client}--{thread}",
    "{client}ab{thread}",
    "{client}aa{thread}",
    "{client}{thread}",
    "a{client}-{thread}b",
    "{thread}-{client}",
    "{client}-{thread}-{client}",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Unambiguous means no other pair renders the key; and with no literal inside an id, the
    /// split count finds every pair that does.
    #[test]
    fn unambiguous_exactly_when_no_other_pair_renders_the_key(
        t in prop::sample::select(TEMPLATES),
        client in "[ab_-]{1,4}",
        thread in "[ab_-]{1,4}",
    ) {
        let t = template(t);
        let others = other_pairs(&t, &client, &thread);
        if t.is_unambiguous(&client, &thread) {
            prop_assert!(others.is_empty(), "{:?}", others);
        }
        let literal_inside = t.literals().any(|l| client.contains(l) || thread.contains(l));
        if !literal_inside {
            prop_assert_eq!(t.is_unambiguous(&client, &thread), others.is_empty());
        }
    }
}
