//! Serde helper: a `String` field that holds JSON text travels as that JSON itself,
//! not as an escaped string. Ledger entries nest JSON details inside JSON facts inside
//! JSON pushes; escaped at every level, a quote became four bytes on the wire.
//!
//! Serializing a field whose text is not valid JSON is an error (nothing is sent).

use serde::de::Deserializer;
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Serializes JSON text as raw JSON.
pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    let raw = RawValue::from_string(text.to_owned()).map_err(S::Error::custom)?;
    raw.serialize(s)
}

/// Reads any JSON value back as its exact text.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    Ok(raw.get().to_owned())
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct T {
        #[serde(with = "super")]
        body: String,
    }

    #[test]
    fn json_text_travels_unescaped_and_comes_back_byte_exact() {
        let t = T {
            body: r#"{"a": [1, 2], "b":"x"}"#.into(),
        };
        let wire = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(wire, r#"{"body":{"a": [1, 2], "b":"x"}}"#);
        let back: T = serde_json::from_str(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, t);
        let bad = T {
            body: "not json".into(),
        };
        assert!(serde_json::to_string(&bad).is_err());
    }
}
