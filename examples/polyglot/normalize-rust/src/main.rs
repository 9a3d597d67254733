//! poly/normalize-rust, stage 3 of examples/polyglot (Rust): the record from
//! poly/tokenize-go in; its tokens normalised (lower case, elongations shortened,
//! shorthands written out), piped on to poly/score-python. Answers with what the rest of
//! the pipeline answers.

use algomesh_runner::serde_json::{Map, Value as Json};
use algomesh_runner::{json, Algorithm, Call, Error, Value};

const NEXT: &str = "poly/score-python";

/// Shorthands written out (a token that is one of these becomes the word).
const SHORTHANDS: &[(&str, &str)] = &[
    ("u", "you"), ("ur", "your"), ("r", "are"), ("gr8", "great"), ("luv", "love"),
    ("thx", "thanks"), ("ty", "thanks"), ("pls", "please"), ("plz", "please"), ("b4", "before"),
    ("gud", "good"), ("awsome", "awesome"), ("dont", "don't"), ("cant", "can't"),
    ("isnt", "isn't"), ("doesnt", "doesn't"), ("didnt", "didn't"), ("wasnt", "wasn't"),
];

/// One token normalised: lower case, ’ as ', runs of 3+ of a letter cut to 2 ("soooo" ->
/// "soo"), and a shorthand written out.
fn normalize(token: &str) -> String {
    let lower: String = token.to_lowercase().replace('’', "'");
    let mut out = String::with_capacity(lower.len());
    let mut run = (None, 0usize);
    for c in lower.chars() {
        run = if run.0 == Some(c) { (Some(c), run.1 + 1) } else { (Some(c), 1) };
        if run.1 <= 2 || !c.is_alphabetic() {
            out.push(c);
        }
    }
    match SHORTHANDS.iter().find(|(short, _)| *short == out) {
        Some((_, long)) => (*long).to_owned(),
        None => out,
    }
}

/// A word in capitals ("LOVE", not "I" or "3PM"): emphasis, as VADER counts it.
fn shouted(token: &str) -> bool {
    token.chars().count() >= 2 && token.chars().all(|c| c.is_uppercase() || c == '\'' || c == '’')
}

struct Normalize;

impl Algorithm for Normalize {
    fn apply(&self, call: &Call, input: Value) -> Result<Value, Error> {
        let Value::Json(Json::Object(mut record)) = input else {
            return Err(Error::msg("poly/normalize-rust takes the record of poly/tokenize-go (a JSON object)"));
        };
        let tokens: Vec<String> = match record.get("tokens") {
            Some(Json::Array(items)) => items.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
            _ => return Err(Error::msg("poly/normalize-rust: the record has no \"tokens\" list")),
        };
        let mut normalized = Vec::with_capacity(tokens.len());
        let mut rewrites = Vec::new();
        let mut loud = Vec::new();
        for token in &tokens {
            let n = normalize(token);
            if n != token.to_lowercase() {
                rewrites.push(json!([token, n]));
            }
            if shouted(token) {
                loud.push(Json::String(n.clone()));
            }
            normalized.push(Json::String(n));
        }
        record.insert("normalized".into(), Json::Array(normalized));
        record.insert("rewrites".into(), Json::Array(rewrites));
        record.insert("shouted".into(), Json::Array(loud));
        push_stage(&mut record);
        // `?`: an error of a later stage is answered as it came.
        Ok(call.pipe(NEXT, Value::Json(Json::Object(record)))?)
    }
}

fn push_stage(record: &mut Map<String, Json>) {
    let me = format!(
        "{}@{} (rust)",
        std::env::var("ALGOMESH_ALGORITHM").unwrap_or_default(),
        std::env::var("ALGOMESH_VERSION").unwrap_or_default()
    );
    match record.get_mut("stages") {
        Some(Json::Array(stages)) => stages.push(Json::String(me)),
        _ => {
            record.insert("stages".into(), json!([me]));
        }
    }
}

fn main() {
    algomesh_runner::serve(Normalize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(normalize("LOVE"), "love");
        assert_eq!(normalize("Soooooo"), "soo");
        assert_eq!(normalize("gr8"), "great");
        assert_eq!(normalize("Don’t"), "don't");
        assert_eq!(normalize("!!!!"), "!!!!");
        assert_eq!(normalize("good"), "good");
        assert!(shouted("AMAZING") && !shouted("I") && !shouted("Love") && !shouted("3PM"));
    }
}
