//! `POST /v1/embeddings`, OpenAI-shaped: `input` a string or a list of
//! strings, `encoding_format` float or base64 (little-endian f32, as
//! OpenAI's), usage in tokens of the embedding model, `model` the
//! embedding model's id (`embed.model`) or absent. The model runs in its
//! own executive, started by the first request ([`EmbedWorker`]); until it
//! is up, or when it cannot be had, the answer is 503 with the reason.
//! Texts longer than `embed.max_length` tokens are cut there.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::embed::TextKind;
use crate::embed::worker::{EmbedWorker, Embedded};

/// Most texts in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub input: Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
}

/// The request's texts, checked.
fn texts_of(input: &Value) -> Result<Vec<String>, ApiError> {
    let bad_ids = || {
        ApiError::unsupported(
            "input",
            "token ids as input are not supported: send the text (a string or a list of strings)",
        )
    };
    let texts = match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::invalid("input", "'input' is an empty list"));
        }
        Value::Array(items) if items.iter().all(|v| v.is_number() || v.is_array()) => {
            return Err(bad_ids());
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ApiError::invalid(
                    format!("input[{i}]"),
                    format!("input[{i}] must be a string"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                "input",
                "'input' must be a string or a list of strings",
            ));
        }
    };
    if texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!("{} texts: at most {MAX_INPUTS} per request", texts.len()),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(
            format!("input[{i}]"),
            "an empty string has no embedding",
        ));
    }
    Ok(texts)
}

/// Check a request against the served models; the texts and whether the
/// vectors go out as base64.
pub fn check(
    r: &EmbeddingRequest,
    embed_model: &str,
    chat_model: &str,
) -> Result<(Vec<String>, bool), ApiError> {
    if let Some(m) = &r.model
        && m != embed_model
    {
        if m == chat_model {
            return Err(ApiError::invalid(
                "model",
                format!(
                    "'{m}' is the chat model; embeddings come from '{embed_model}' (GET /v1/models)"
                ),
            ));
        }
        return Err(ApiError::not_found(
            Some("model"),
            "model_not_found",
            format!(
                "model '{m}' is not served here; embeddings come from '{embed_model}' (GET /v1/models)"
            ),
        ));
    }
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format '{other}': use 'float' or 'base64'"),
            ));
        }
    };
    Ok((texts_of(&r.input)?, base64))
}

/// The response body for `got`.
pub fn body(got: &Embedded, model: &str, base64: bool) -> Value {
    let data: Vec<Value> = got
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": got.tokens, "total_tokens": got.tokens},
    })
}

/// Run a checked request: the body, or 503 when the model is not to be had.
pub async fn answer(
    worker: &EmbedWorker,
    texts: Vec<String>,
    dimensions: Option<u64>,
    model: &str,
    base64: bool,
) -> Result<Value, ApiError> {
    let got = worker
        .embed(texts, TextKind::Document)
        .await
        .map_err(|m| ApiError::unavailable(format!("the embedding model is not available: {m}")))?;
    let dim = got.vectors.first().map(Vec::len).unwrap_or(0);
    if let Some(d) = dimensions
        && d as usize != dim
    {
        return Err(ApiError::unsupported(
            "dimensions",
            format!("this model's vectors have {dim} dimensions; 'dimensions' cannot change that"),
        ));
    }
    Ok(body(&got, model, base64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> EmbeddingRequest {
        serde_json::from_value(v).expect("request")
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let (t, b64) = check(&req(json!({"input": "hi"})), "e", "c").expect("plain");
        assert_eq!((t, b64), (vec!["hi".to_string()], false));
        let (t, b64) = check(
            &req(json!({"input": ["a", "b"], "model": "e", "encoding_format": "base64"})),
            "e",
            "c",
        )
        .expect("list");
        assert_eq!((t.len(), b64), (2, true));
        let e = check(&req(json!({"input": "x", "model": "c"})), "e", "c").expect_err("chat");
        assert!(e.message.contains("chat model") && e.param.as_deref() == Some("model"));
        let e = check(&req(json!({"input": "x", "model": "z"})), "e", "c").expect_err("unknown");
        assert_eq!(e.code, Some("model_not_found"));
        let e = check(&req(json!({"input": [1, 2]})), "e", "c").expect_err("ids");
        assert_eq!(e.code, Some("unsupported_parameter"));
        let e = check(&req(json!({"input": ["a", ""]})), "e", "c").expect_err("empty");
        assert_eq!(e.param.as_deref(), Some("input[1]"));
        let e = check(
            &req(json!({"input": "a", "encoding_format": "hex"})),
            "e",
            "c",
        )
        .expect_err("format");
        assert_eq!(e.param.as_deref(), Some("encoding_format"));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let got = Embedded {
            vectors: vec![vec![1.0, -2.5]],
            tokens: 3,
            model: "m".into(),
        };
        let v = body(&got, "m", true);
        let s = v["data"][0]["embedding"].as_str().expect("base64 string");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("decode");
        let back: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(back, vec![1.0, -2.5]);
        assert_eq!(v["usage"]["total_tokens"], 3);
        assert_eq!(
            body(&got, "m", false)["data"][0]["embedding"],
            json!([1.0, -2.5])
        );
    }
}
