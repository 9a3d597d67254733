//! Inputs and outputs: JSON values, text and bytes (the mesh's three payload types).

use crate::pb::{ContentType, Payload};

/// An algorithm's input or output.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A JSON value (`CONTENT_TYPE_JSON`).
    Json(serde_json::Value),
    /// A UTF-8 string (`CONTENT_TYPE_TEXT`).
    Text(String),
    /// Bytes (`CONTENT_TYPE_BINARY`).
    Binary(Vec<u8>),
}

impl Value {
    /// A JSON value from anything serde_json can turn into one (`serde_json::json!`, a
    /// number, a `Vec`, a `HashMap`...).
    pub fn json(v: impl Into<serde_json::Value>) -> Value {
        Value::Json(v.into())
    }

    /// The JSON value, if this is one.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Value::Json(v) => Some(v),
            _ => None,
        }
    }

    /// The string, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is binary.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// "json", "text" or "binary".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Json(_) => "json",
            Value::Text(_) => "text",
            Value::Binary(_) => "binary",
        }
    }

    /// As a JSON value for nesting in JSON output: text becomes a JSON string, bytes a
    /// JSON array of numbers.
    pub fn into_json(self) -> serde_json::Value {
        match self {
            Value::Json(v) => v,
            Value::Text(s) => serde_json::Value::String(s),
            Value::Binary(b) => serde_json::Value::from(b),
        }
    }
}

impl Default for Value {
    /// JSON `null`.
    fn default() -> Self {
        Value::Json(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        Value::Json(v)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Binary(b)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Binary(b.to_vec())
    }
}

/// Malformed input: the reason is INVALID_INPUT.
pub(crate) struct InvalidInput(pub String);

pub(crate) fn decode(p: Payload) -> Result<Value, InvalidInput> {
    let ct = ContentType::try_from(p.content_type).unwrap_or(ContentType::Unspecified);
    match ct {
        ContentType::Binary => Ok(Value::Binary(p.data)),
        ContentType::Text => String::from_utf8(p.data)
            .map(Value::Text)
            .map_err(|e| InvalidInput(format!("text payload is not UTF-8: {e}"))),
        ContentType::Json => {
            let text = std::str::from_utf8(&p.data)
                .map_err(|e| InvalidInput(format!("json payload is not UTF-8: {e}")))?;
            serde_json::from_str(text)
                .map(Value::Json)
                .map_err(|e| InvalidInput(format!("payload declared JSON is not valid JSON: {e}")))
        }
        _ => Err(InvalidInput(format!("unsupported content type {}", p.content_type))),
    }
}

pub(crate) fn encode(v: Value) -> Payload {
    match v {
        Value::Json(v) => Payload {
            content_type: ContentType::Json as i32,
            // A serde_json::Value always serializes (its map keys are strings, its numbers finite).
            data: serde_json::to_vec(&v).expect("a serde_json::Value serializes"),
        },
        Value::Text(s) => Payload { content_type: ContentType::Text as i32, data: s.into_bytes() },
        Value::Binary(b) => Payload { content_type: ContentType::Binary as i32, data: b },
    }
}
