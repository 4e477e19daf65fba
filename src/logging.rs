//! Log output: env_logger's plain lines, or one JSON object per line for log shippers. Both
//! read `RUST_LOG` for levels; the structured fields of a record (its `log` key-values, such as
//! the access log's outcome and status) become text `key=value` pairs or JSON members.

use std::io::Write;

use env_logger::fmt::Formatter;
use log::kv::{self, Key, Value, VisitSource, VisitValue};
use serde_json::Number;

use crate::config::LogFormat;

/// Installs the process-wide logger. Call once, before any thread that logs starts.
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(write_json);
    }
    // A second init (tests that call this twice) keeps the first logger; nothing to report.
    let _ = builder.try_init();
}

/// Members every JSON line starts with, in this order.
const FIXED: [&str; 4] = ["ts", "level", "target", "msg"];

/// One record as a JSON object: `ts`, `level`, `target`, `msg`, then every key-value field in
/// the order the record gives them (a field named like a fixed member is left out).
fn write_json(buf: &mut Formatter, record: &log::Record<'_>) -> std::io::Result<()> {
    let mut members: Vec<(String, serde_json::Value)> = vec![
        (FIXED[0].into(), buf.timestamp_millis().to_string().into()),
        (FIXED[1].into(), record.level().as_str().into()),
        (FIXED[2].into(), record.target().into()),
        (FIXED[3].into(), record.args().to_string().into()),
    ];
    // A field that fails to convert is left out rather than losing the whole line.
    let _ = record.key_values().visit(&mut Fields(&mut members));
    buf.write_all(b"{")?;
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            buf.write_all(b",")?;
        }
        serde_json::to_writer(&mut *buf, key)?;
        buf.write_all(b":")?;
        serde_json::to_writer(&mut *buf, value)?;
    }
    buf.write_all(b"}\n")
}

/// Adds each key-value of a record as a JSON member, typed where `log` knows the type.
struct Fields<'a>(&'a mut Vec<(String, serde_json::Value)>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        if FIXED.contains(&key.as_str()) {
            return Ok(());
        }
        let mut json = Json(serde_json::Value::Null);
        value.visit(&mut json)?;
        self.0.push((key.as_str().to_owned(), json.0));
        Ok(())
    }
}

struct Json(serde_json::Value);

impl<'v> VisitValue<'v> for Json {
    fn visit_any(&mut self, value: Value<'_>) -> Result<(), kv::Error> {
        self.0 = value.to_string().into();
        Ok(())
    }
    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.0 = serde_json::Value::Null;
        Ok(())
    }
    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }
    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }
    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        // JSON has no NaN or infinity: those become strings.
        self.0 = Number::from_f64(value).map_or_else(|| value.to_string().into(), Into::into);
        Ok(())
    }
    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }
    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(record: &log::Record<'_>) -> serde_json::Map<String, serde_json::Value> {
        let mut members = Vec::new();
        record
            .key_values()
            .visit(&mut Fields(&mut members))
            .expect("visit");
        members.into_iter().collect()
    }

    #[test]
    fn typed_fields_stay_typed_and_text_is_escaped() {
        let kvs: &[(&str, Value<'_>)] = &[
            ("status", Value::from(404u16)),
            ("duration_ms", Value::from(1.5f64)),
            ("path", Value::from("/a\"b\n")),
            ("nan", Value::from(f64::NAN)),
            ("msg", Value::from("not a second msg")),
        ];
        let args = format_args!("request");
        let record = log::Record::builder()
            .args(args)
            .key_values(&kvs)
            .target("access")
            .build();
        let map = fields(&record);
        assert_eq!(map["status"], 404);
        assert_eq!(map["duration_ms"], 1.5);
        assert_eq!(map["path"], "/a\"b\n");
        assert_eq!(map["nan"], "NaN");
        assert!(
            !map.contains_key("msg"),
            "fixed members are not overwritten"
        );
        let text = serde_json::to_string(&map).expect("encode");
        assert!(!text.contains('\n'), "one line: {text}");
    }
}
