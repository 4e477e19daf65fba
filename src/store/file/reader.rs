//! A reader for the shape in which the platform writes `sessions.toml`: `[sessions.KEY]` and
//! `[containers.ID]` tables of plain `key = value` lines. It builds records from the TOML
//! parser's events as they come, without the document tree that a general parse builds first
//! (which makes a general parse of 100k sessions three times as slow). A file in any other shape, and every file with
//! an error, is left to the general parse, so that both accept the same files and every error is
//! worded in one place.

use std::borrow::Cow;

use toml_parser::decoder::{Encoding, ScalarKind};
use toml_parser::lexer::{Token, TokenKind};
use toml_parser::parser::{parse_document, EventReceiver, ValidateWhitespace};
use toml_parser::{ErrorSink, ParseError, Raw, Source, Span};

use super::document::{ContainerEntry, SessionEntry, TableBuilder};
use crate::background::Yielder;
use crate::store::StoreSnapshot;

/// Tokens parsed at a time, so that the token buffer stays small and warm in the cache. A chunk
/// ends before a `[` that starts a line: a table header, where the parser has no state to carry
/// over. (Were it inside a multi-line array instead, the chunk would not parse, and the general
/// parse would take the file.)
const CHUNK_TOKENS: usize = 4096;

/// The table, or `None` when the text is not in the simple shape or not valid. Offers the core
/// back through `yielder` between chunks.
pub(super) fn read(text: &str, yielder: &mut Yielder) -> Option<StoreSnapshot> {
    let source = Source::new(text);
    let mut reader = Reader::new(source);
    let mut chunk = Vec::with_capacity(CHUNK_TOKENS * 2);
    let mut line_start = true;
    for token in source.lex() {
        let kind = token.kind();
        if kind == TokenKind::LeftSquareBracket && line_start && chunk.len() >= CHUNK_TOKENS {
            if !reader.parse(&chunk) {
                return None;
            }
            chunk.clear();
            yielder.pause();
        }
        line_start = kind == TokenKind::Newline;
        chunk.push(token);
    }
    if !reader.parse(&chunk) {
        return None;
    }
    reader.close_entry();
    (!reader.off_shape).then(|| reader.table.finish())
}

/// Notes that the parser found an error; the general parse will say which.
struct Invalid(bool);

impl ErrorSink for Invalid {
    fn report_error(&mut self, _: ParseError) {
        self.0 = true;
    }
}

#[derive(Clone, Copy)]
enum Parent {
    Sessions,
    Containers,
}

/// The table being filled in: its header named a session or a container.
enum Entry<'i> {
    Session(Cow<'i, str>, SessionFields<'i>),
    Container(Cow<'i, str>, ContainerEntry<'i>),
}

#[derive(Default)]
struct SessionFields<'i> {
    container_id: Option<Cow<'i, str>>,
    client_id: Option<Cow<'i, str>>,
    expires_at: Option<u64>,
}

struct Reader<'i> {
    source: Source<'i>,
    table: TableBuilder,
    /// The keys of a `[...]` header while it is being read.
    header: Option<Vec<Cow<'i, str>>>,
    entry: Option<Entry<'i>>,
    /// The key of a `key = value` line, until its value comes.
    key: Option<Cow<'i, str>>,
    /// Whether the bare `[sessions]` and `[containers]` headers have been seen, by [`Parent`].
    parents_seen: [bool; 2],
    off_shape: bool,
}

impl<'i> Reader<'i> {
    fn new(source: Source<'i>) -> Self {
        Reader {
            source,
            table: TableBuilder::default(),
            header: None,
            entry: None,
            key: None,
            parents_seen: [false; 2],
            off_shape: false,
        }
    }

    /// Reads the events of `tokens`; false once the text is known to be off the shape.
    fn parse(&mut self, tokens: &[Token]) -> bool {
        let source = self.source;
        let mut invalid = Invalid(false);
        parse_document(
            tokens,
            &mut ValidateWhitespace::new(self, source),
            &mut invalid,
        );
        self.off_shape |= invalid.0;
        !self.off_shape
    }

    fn raw(&self, span: Span, encoding: Option<Encoding>) -> Option<Raw<'i>> {
        let raw = self.source.get(span)?;
        Some(Raw::new_unchecked(raw.as_str(), encoding, span))
    }

    /// Starts the table a header names, if it is one of the shape.
    fn open_table(&mut self, mut keys: Vec<Cow<'i, str>>) {
        let id = (keys.len() == 2).then(|| keys.pop()).flatten();
        let parent = match keys.first().map(|k| &**k) {
            Some("sessions") if keys.len() == 1 => Parent::Sessions,
            Some("containers") if keys.len() == 1 => Parent::Containers,
            _ => return self.off_shape = true,
        };
        self.entry = match (parent, id) {
            (Parent::Sessions, Some(key)) => Some(Entry::Session(key, SessionFields::default())),
            (Parent::Containers, Some(id)) => Some(Entry::Container(id, ContainerEntry::default())),
            // A bare parent header may come once, and opens no entry.
            (_, None) if !self.parents_seen[parent as usize] => {
                self.parents_seen[parent as usize] = true;
                None
            }
            (_, None) => return self.off_shape = true,
        };
    }

    /// Hands the entry being read to the table.
    fn close_entry(&mut self) {
        let added = match self.entry.take() {
            None => true,
            Some(Entry::Session(key, fields)) => fields.container_id.is_some_and(|container_id| {
                let entry = SessionEntry {
                    container_id,
                    client_id: fields.client_id,
                    expires_at: fields.expires_at,
                };
                self.table.add_session(&key, entry).is_ok()
            }),
            Some(Entry::Container(id, entry)) => self.table.add_container(&id, entry).is_ok(),
        };
        self.off_shape |= !added;
    }

    /// Sets one field of the entry; false if the key is unknown or set twice, or the value is not
    /// of the field's type.
    fn set(&mut self, key: &str, kind: ScalarKind, value: Cow<'i, str>) -> bool {
        let string = (kind == ScalarKind::String).then_some(value.clone());
        let integer = match kind {
            ScalarKind::Integer(radix) => Some((value, radix.value())),
            _ => None,
        };
        match (&mut self.entry, key) {
            (Some(Entry::Session(_, s)), "container_id") => fill(&mut s.container_id, string),
            (Some(Entry::Session(_, s)), "client_id") => fill(&mut s.client_id, string),
            (Some(Entry::Session(_, s)), "expires_at") => fill(
                &mut s.expires_at,
                integer.and_then(|(v, radix)| u64::from_str_radix(&v, radix).ok()),
            ),
            (Some(Entry::Container(_, c)), "ip") => {
                fill(&mut c.ip, string.and_then(|s| s.parse().ok()))
            }
            (Some(Entry::Container(_, c)), "port") => fill(
                &mut c.port,
                integer.and_then(|(v, radix)| u16::from_str_radix(&v, radix).ok()),
            ),
            (Some(Entry::Container(_, c)), "status") => fill(&mut c.status, string),
            _ => false,
        }
    }
}

/// Sets a field that was not set yet to a value that was understood.
fn fill<T>(field: &mut Option<T>, value: Option<T>) -> bool {
    match (field.is_none(), value) {
        (true, Some(value)) => {
            *field = Some(value);
            true
        }
        _ => false,
    }
}

impl<'i> EventReceiver for Reader<'i> {
    fn std_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.close_entry();
        self.header = Some(Vec::with_capacity(2));
    }

    fn std_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
        let keys = self.header.take().unwrap_or_default();
        self.open_table(keys);
    }

    fn simple_key(&mut self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) {
        let Some(raw) = self.raw(span, encoding) else {
            return self.off_shape = true;
        };
        let mut key = Cow::Borrowed("");
        raw.decode_key(&mut key, error);
        match &mut self.header {
            Some(keys) => keys.push(key),
            // A key outside an entry's table, or the second part of a dotted key.
            None if self.entry.is_none() || self.key.is_some() => self.off_shape = true,
            None => self.key = Some(key),
        }
    }

    fn scalar(&mut self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) {
        let (Some(key), Some(raw)) = (self.key.take(), self.raw(span, encoding)) else {
            return self.off_shape = true;
        };
        let mut value = Cow::Borrowed("");
        let kind = raw.decode_scalar(&mut value, error);
        if !self.set(&key, kind, value) {
            self.off_shape = true;
        }
    }

    fn key_sep(&mut self, _: Span, _: &mut dyn ErrorSink) {
        if self.header.is_none() {
            self.off_shape = true;
        }
    }

    fn array_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.off_shape = true;
    }

    fn inline_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) -> bool {
        self.off_shape = true;
        false
    }

    fn array_open(&mut self, _: Span, _: &mut dyn ErrorSink) -> bool {
        self.off_shape = true;
        false
    }

    fn error(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.off_shape = true;
    }
}

#[cfg(test)]
mod tests {
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
            if let Some(fast) = read(&text, &mut Yielder::new()) {
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
        let fast = read(text, &mut Yielder::new()).expect("the simple shape");
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
        let fast = read(&text, &mut Yielder::new()).expect("the simple shape");
        let general = parse_any_shape(&text).unwrap();
        assert_eq!(fast.sessions.len(), 2000);
        assert_eq!(fast.sessions, general.sessions);
        assert_eq!(fast.containers, general.containers);

        // A `[` that starts a line inside an array is not a header: the chunk before it does not
        // parse, and the general parse judges the file.
        let with_array = format!("{text}ports = [\n[1],\n]\n");
        assert!(read(&with_array, &mut Yielder::new()).is_none());
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
            assert!(read(text, &mut Yielder::new()).is_none(), "{text}");
        }
    }
}
