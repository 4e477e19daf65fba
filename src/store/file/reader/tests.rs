//! The event reader held to the general parse: generated documents, large files, other shapes.

use proptest::prelude::*;

use super::*;
use crate::store::file::document::parse_any_shape;

/// Keys that differ only in how they are written, so that some documents define one twice.
const KEYS: &[&str] = &[
    "a",
    "\"a\"",
    "'b'",
    "\"c d\"",
    "acme-t1",
    "\"\\u0041\"",
    "k1",
    "k2",
    "k3",
    "k4",
    "k5",
];
/// Each field with how often a table has it, and values of its type.
type Fields = &'static [(&'static str, f64, &'static [&'static str])];
const SESSION_FIELDS: Fields = &[
    (
        "container_id",
        0.95,
        &["\"c1\"", "'c2'", "\"\\u0041cme\"", "\"\"\"c3\"\"\""],
    ),
    ("client_id", 0.7, &["\"acme\"", "'globex'"]),
    (
        "expires_at",
        0.5,
        &["1700000000", "0x10", "1_000", "18446744073709551615"],
    ),
];
const CONTAINER_FIELDS: Fields = &[
    ("ip", 0.8, &["\"10.0.0.1\"", "\"::1\""]),
    ("port", 0.6, &["4321", "0o777", "+80"]),
    ("status", 0.6, &["\"running\"", "\"starting\"", "'stopped'"]),
];
/// Other shapes TOML allows for the same tables, and mistakes.
const ODD_LINES: &[&str] = &[
    "[sessions]",
    "[containers]",
    "[sessions.a.x]",
    "[other]",
    "[[sessions]]",
    "[\"sessions\".e]",
    "[ containers . c9 ]",
    "a.container_id = \"c1\"",
    "f = { container_id = \"c1\" }",
    "bogus = 1",
    "port = 1.5",
    "ip = true",
    "status = [1]",
    "# a comment",
    "= =",
    "[sessions",
    "port = 70000",
    "port = -1",
    "ip = \"10.0.0\"",
    "status = \"zombie\"",
    "expires_at = -1",
    "client_id = 'x'",
];

/// One `[parent.key]` table whose fields are each present or not.
fn table(parent: &'static str, fields: Fields) -> BoxedStrategy<String> {
    let values: Vec<_> = fields
        .iter()
        .map(|&(name, weight, values)| {
            prop::option::weighted(weight, prop::sample::select(values))
                .prop_map(move |v| v.map(|v| format!("{name} = {v}\n")).unwrap_or_default())
        })
        .collect();
    (prop::sample::select(KEYS), values)
        .prop_map(move |(key, lines)| format!("[{parent}.{key}]\n{}", lines.concat()))
        .boxed()
}

/// Documents mostly of the simple shape, some with an odd line put in somewhere.
fn document() -> impl Strategy<Value = String> {
    let tables = prop::collection::vec(
        prop_oneof![
            table("sessions", SESSION_FIELDS),
            table("containers", CONTAINER_FIELDS)
        ],
        0..8,
    );
    let odd = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            prop::sample::select(ODD_LINES),
        ),
        0..3,
    );
    (tables, odd).prop_map(|(mut lines, odd)| {
        for (at, line) in odd {
            let at = at.index(lines.len() + 1);
            lines.insert(at, format!("{line}\n"));
        }
        lines.concat()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever the reader accepts, the general parse accepts and reads the same.
    #[test]
    fn agrees_with_the_general_parse(text in document()) {
        if let Some(fast) = read(&text) {
            let general = parse_any_shape(&text);
            prop_assert!(general.is_ok(), "{text}\nreader accepted, general: {general:?}");
            let general = general.unwrap();
            prop_assert_eq!(&fast.sessions, &general.sessions, "{}", text);
            prop_assert_eq!(&fast.containers, &general.containers, "{}", text);
        }
    }
}

#[test]
fn reads_the_shape_the_platform_writes() {
    let text = "[sessions.\"acme-t1\"]\ncontainer_id = \"c1\"\nclient_id = \"acme\"\n\
                expires_at = 1700000000 # seconds\n\n[containers.\"c1\"]\nip = \"10.0.0.5\"\n\
                port = 4000\nstatus = \"running\"\n[containers.c2]\r\nstatus = \"starting\"\n";
    let fast = read(text).expect("the simple shape");
    let general = parse_any_shape(text).unwrap();
    assert_eq!(fast.sessions, general.sessions);
    assert_eq!(fast.containers, general.containers);
    assert_eq!(fast.sessions["acme-t1"].expires_at, Some(1_700_000_000));
    assert_eq!(fast.containers["c1"].port, Some(4000));
}

#[test]
fn reads_a_large_file_chunk_by_chunk() {
    let text: String = (0..2000)
        .map(|i| {
            format!(
                "[sessions.\"acme-t{i}\"]\ncontainer_id = \"c{i}\"\nclient_id = \"acme\"\n\
                 [containers.\"c{i}\"]\nip = \"10.0.{}.{}\"\nport = 4321\n",
                i / 256,
                i % 256
            )
        })
        .collect();
    assert!(
        Source::new(&text).lex().count() > CHUNK_TOKENS * 4,
        "several chunks"
    );
    let fast = read(&text).expect("the simple shape");
    let general = parse_any_shape(&text).unwrap();
    assert_eq!(fast.sessions.len(), 2000);
    assert_eq!(fast.sessions, general.sessions);
    assert_eq!(fast.containers, general.containers);

    // A `[` that starts a line inside an array is not a header: the chunk before it does not
    // parse, and the general parse judges the file.
    let with_array = format!("{text}ports = [\n[1],\n]\n");
    assert!(read(&with_array).is_none());
    assert!(parse_any_shape(&with_array).is_err());
}

#[test]
fn leaves_other_shapes_and_mistakes_to_the_general_parse() {
    for text in [
        "[sessions]\na = { container_id = \"c1\" }",
        "[sessions.a]\ncontainer_id = \"c1\"\n[sessions.a]\ncontainer_id = \"c2\"",
        "[sessions.a]\nclient_id = \"acme\"",
        "[containers.c1]\nport = 70000",
        "[containers.c1]\nstatus = \"zombie\"",
        "[sessions.a]\ncontainer_id = \"c1\"\ncontainer_id = \"c1\"",
    ] {
        assert!(read(text).is_none(), "{text}");
    }
}
