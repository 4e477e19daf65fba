//! A reader for the shape in which the platform writes `sessions.toml`: `[sessions.KEY]` and
//! `[containers.ID]` tables of plain `key = value` lines. It builds records from the TOML
//! parser's events as they come, without the document tree that a general parse builds first,
//! which is most of what a general parse of a large file costs (BENCHMARKS.md). A file in any
//! other shape, and every file with an error, is left to the general parse, so that both accept
//! the same files and every error is worded in one place.

use std::borrow::Cow;

use toml_parser::decoder::{Encoding, ScalarKind};
use toml_parser::lexer::{Token, TokenKind};
use toml_parser::parser::{parse_document, EventReceiver, ValidateWhitespace};
use toml_parser::{ErrorSink, ParseError, Raw, Source, Span};

use super::document::{ContainerEntry, SessionEntry, TableBuilder};
use crate::store::StoreSnapshot;

/// Tokens parsed at a time, so that the token buffer stays small and warm in the cache. A chunk
/// ends before a `[` that starts a line: a table header, where the parser has no state to carry
/// over. (Were it inside a multi-line array instead, the chunk would not parse, and the general
/// parse would take the file.)
const CHUNK_TOKENS: usize = 512;

/// The table, or `None` when the text is not in the simple shape or not valid.
pub(super) fn read(text: &str) -> Option<StoreSnapshot> {
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
    access: Option<Cow<'i, str>>,
    access_generation: Option<u64>,
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
                    access: fields.access,
                    access_generation: fields.access_generation,
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
        let (string, integer) = match kind {
            ScalarKind::String => (Some(value), None),
            ScalarKind::Integer(radix) => (None, Some((value, radix.value()))),
            _ => (None, None),
        };
        match (&mut self.entry, key) {
            (Some(Entry::Session(_, s)), "container_id") => fill(&mut s.container_id, string),
            (Some(Entry::Session(_, s)), "client_id") => fill(&mut s.client_id, string),
            (Some(Entry::Session(_, s)), "expires_at") => fill(
                &mut s.expires_at,
                integer.and_then(|(v, radix)| u64::from_str_radix(&v, radix).ok()),
            ),
            (Some(Entry::Session(_, s)), "access") => fill(&mut s.access, string),
            (Some(Entry::Session(_, s)), "access_generation") => fill(
                &mut s.access_generation,
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
mod tests;
