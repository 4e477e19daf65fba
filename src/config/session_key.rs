//! The session key template (`{client}-{thread}`): renders a request's store key, and tells
//! whether that key names the request's session alone or could also be another pair's.

/// The session key template, e.g. `{client}-{thread}`: literal text around the two placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeyTemplate {
    parts: Vec<KeyPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyPart {
    Literal(String),
    Client,
    Thread,
}

/// Splits counted before a key is known to be ambiguous: one is the request's own.
const AMBIGUOUS_AT: usize = 2;

impl SessionKeyTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(KeyPart::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
            parts.push(match &rest[open + 1..open + close] {
                "client" => KeyPart::Client,
                "thread" => KeyPart::Thread,
                other => return Err(format!("unknown placeholder `{{{other}}}`")),
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(KeyPart::Literal(rest.to_owned()));
        }
        if !parts.contains(&KeyPart::Thread) {
            return Err(format!("`{template}` must contain {{thread}}"));
        }
        Ok(SessionKeyTemplate { parts })
    }

    /// Writes the key for one request into `out`, reusing its allocation.
    pub fn render_into(&self, client: &str, thread: &str, out: &mut String) {
        out.clear();
        for part in &self.parts {
            out.push_str(match part {
                KeyPart::Literal(s) => s,
                KeyPart::Client => client,
                KeyPart::Thread => thread,
            });
        }
    }

    pub fn render(&self, client: &str, thread: &str) -> String {
        let mut out = String::with_capacity(client.len() + thread.len() + 8);
        self.render_into(client, thread, &mut out);
        out
    }

    /// Whether the key names the client. Without it every client's host renders the same key
    /// for a thread, so no key of this template is unambiguous.
    pub fn includes_client(&self) -> bool {
        self.parts.contains(&KeyPart::Client)
    }

    /// Whether (`client`, `thread`) is the only pair of ids this template renders into their
    /// key, so that an item found under it can be this request's session and no one else's.
    ///
    /// `{client}-{thread}` renders (`acme`, `x-1`) and (`acme-x`, `1`) alike; an item under such
    /// a key must name its owner (`clientId`) to be routed. Unambiguous means: the template
    /// names both ids, neither id contains any of its literal text, and the key splits back
    /// into ids one way only. The last test catches what the second misses: a literal that
    /// overlaps an id's edge (`{client}aa{thread}` with client `xa`) and placeholders with no
    /// literal between them (`{client}{thread}`).
    pub fn is_unambiguous(&self, client: &str, thread: &str) -> bool {
        self.includes_client()
            && !self
                .literals()
                .any(|l| client.contains(l) || thread.contains(l))
            && count_splits(&self.parts, &self.render(client, thread), Ids::default()) == 1
    }

    fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            KeyPart::Literal(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// The ids bound so far while splitting a key: a placeholder written twice must match itself.
#[derive(Debug, Clone, Copy, Default)]
struct Ids<'k> {
    client: Option<&'k str>,
    thread: Option<&'k str>,
}

impl<'k> Ids<'k> {
    fn get(&self, part: &KeyPart) -> Option<&'k str> {
        match part {
            KeyPart::Client => self.client,
            KeyPart::Thread => self.thread,
            KeyPart::Literal(_) => None,
        }
    }

    fn with(mut self, part: &KeyPart, id: &'k str) -> Self {
        match part {
            KeyPart::Client => self.client = Some(id),
            KeyPart::Thread => self.thread = Some(id),
            KeyPart::Literal(_) => {}
        }
        self
    }
}

/// The ways `key` splits into ids under `parts`, counted up to [`AMBIGUOUS_AT`]. Ids of any
/// bytes count, empty ones too, although requests carry neither: overcounting only refuses an
/// item that lacks `clientId`, undercounting would route one to the wrong client.
fn count_splits<'k>(parts: &[KeyPart], key: &'k str, ids: Ids<'k>) -> usize {
    let Some((part, rest)) = parts.split_first() else {
        return usize::from(key.is_empty());
    };
    if let KeyPart::Literal(l) = part {
        return key
            .strip_prefix(l.as_str())
            .map_or(0, |k| count_splits(rest, k, ids));
    }
    if let Some(id) = ids.get(part) {
        return key
            .strip_prefix(id)
            .map_or(0, |k| count_splits(rest, k, ids));
    }
    let mut found = 0;
    for end in id_ends(rest.first(), key) {
        found += count_splits(rest, &key[end..], ids.with(part, &key[..end]));
        if found >= AMBIGUOUS_AT {
            break;
        }
    }
    found
}

/// Where an id at the start of `key` may end: before an occurrence of the literal that follows
/// it (overlapping ones included), at the end of the key when nothing follows, anywhere when
/// another placeholder does.
fn id_ends<'a>(next: Option<&'a KeyPart>, key: &'a str) -> impl Iterator<Item = usize> + 'a {
    (0..=key.len()).filter(move |&end| {
        key.is_char_boundary(end)
            && match next {
                None => end == key.len(),
                Some(KeyPart::Literal(l)) => key[end..].starts_with(l.as_str()),
                Some(_) => true,
            }
    })
}

#[cfg(test)]
mod tests;
