//! JSON decoding that refuses a repeated object key at any depth. serde_json keeps the last of
//! two equal keys, so `{"name": "ok", "name": "evil"}` would mean one thing to a proxy or log
//! reader that takes the first and another to us; every JSON document the server accepts
//! (request bodies, the seed file) is parsed here instead.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parses `text` into a `Value`, or fails on bad JSON or on the first repeated key. A repeated
/// key is the only error of category `Data` (`serde_json::Error::is_data`): the visitor
/// accepts every JSON type, so nothing else can be the wrong type for it.
pub(crate) fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<UniqueKeys>(text).map(|unique| unique.0)
}

/// A `Value` built by a visitor that fails on a repeated key. serde_json still enforces its
/// nesting limit, since every level is parsed by its own deserializer.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UniqueKeys, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // serde_json only produces finite numbers; `from` would make anything else null.
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key `{key}` is repeated"
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        for text in [
            r#"{"id": "a", "id": "b"}"#,
            r#"{"id": "a", "id": "a"}"#,
            r#"{"a": {"b": 1, "c": {"d": [{"e": 1, "e": 2}]}}}"#,
            r#"[{"x": null, "x": null}]"#,
            r#"{"a\u0062": 1, "ab": 2}"#,
        ] {
            let err = from_str(text).expect_err(text);
            assert!(err.is_data(), "{text}: {err}");
            assert!(err.to_string().contains("is repeated"), "{err}");
        }
    }

    #[test]
    fn everything_else_parses_as_serde_json_would() {
        for text in [
            r#"{"id": "a", "name": "b", "n": [1, -2, 3.5, 18446744073709551615, true, null]}"#,
            r#"{"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}, {"k": 2}]}"#,
            r#"{"e": "\u00e9\ud83d\ude00"}"#,
            "[]",
            "\"text\"",
            "-0",
            "1e300",
        ] {
            let expected: Value = serde_json::from_str(text).unwrap();
            assert_eq!(from_str(text).unwrap(), expected, "{text}");
        }
        // Keys keep their order (preserve_order), as serde_json's own `Value` does.
        let value = from_str(r#"{"z": 1, "a": 2}"#).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["z", "a"]);
        // Bad JSON is still a syntax error, never `Data`.
        for bad in ["{", "1e400", r#""\ud800""#, "{\"a\": 1,}", &"[".repeat(200)] {
            let err = from_str(bad).expect_err(bad);
            assert!(!err.is_data(), "{bad}: {err}");
        }
    }
}
