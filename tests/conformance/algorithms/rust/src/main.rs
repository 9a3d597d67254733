//! The runner conformance algorithm in Rust (tests/conformance/README.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use algomesh_runner::{json, Algorithm, Call, Error, Value};

static LOADS: AtomicU64 = AtomicU64::new(0);

struct Conformance;

impl Algorithm for Conformance {
    fn load(&mut self) -> Result<(), Error> {
        LOADS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn apply(&self, call: &Call, input: Value) -> Result<Value, Error> {
        let v = match input {
            Value::Text(s) => return Ok(Value::Text(s)),
            Value::Binary(mut b) => {
                b.reverse();
                return Ok(Value::Binary(b));
            }
            Value::Json(v) => v,
        };
        let Some(op) = v.get("op").filter(|_| v.is_object()) else {
            return Ok(Value::Json(v));
        };
        let str_of = |key: &str| v.get(key).and_then(|s| s.as_str()).unwrap_or_default().to_owned();
        Ok(match op.as_str().unwrap_or_default() {
            "echo" => Value::Json(v["value"].clone()),
            "text" => Value::Text(match &v["value"] {
                algomesh_runner::serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            "bytes" => Value::Binary(str_of("value").into_bytes()),
            "loads" => Value::json(LOADS.load(Ordering::SeqCst)),
            "raise" => return Err(Error::msg(str_of("message"))),
            "crash" => std::process::exit(3),
            "print" => {
                call.println(str_of("value"));
                Value::json("printed")
            }
            "pipe" => {
                let result = call.pipe(&str_of("target"), Value::Json(v["input"].clone()))?;
                Value::Json(json!({"via": "rust", "result": result.into_json()}))
            }
            "sleep" => {
                std::thread::sleep(Duration::from_millis(v["ms"].as_u64().unwrap_or(0)));
                Value::json("slept")
            }
            _ => Value::Json(v),
        })
    }
}

fn main() {
    algomesh_runner::serve(Conformance)
}
