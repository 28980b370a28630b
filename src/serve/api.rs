//! The requests the API takes, and the checks that turn one into a
//! [`Job`]: every field OpenAI defines is either honoured, or refused by
//! name (400) when this server does not implement it, never silently
//! ignored. Fields OpenAI does not define are ignored, as its other
//! local implementations do.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::engine::{Input, Job};
use crate::model::chat::Message;
use crate::shard_b::sampling::SamplingParams;

/// At most this many stop strings (OpenAI's limit).
const MAX_STOPS: usize = 4;

/// A request body: JSON, and an object.
pub fn body(bytes: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("", format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::invalid(
            "",
            "the body must be a JSON object ({...})",
        ));
    }
    Ok(v)
}

/// Read the fields of `T` from a body; an error names the field
/// (`messages[0].role`). Fields `T` does not have are left for others.
pub fn fields<T: DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names a missing field in its message, at the parent's path.
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next());
        match missing {
            Some(field) => {
                let param = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                ApiError::invalid(param.clone(), format!("{param} is missing (required)"))
            }
            None => ApiError::invalid(path.clone(), format!("{path}: {inner}")),
        }
    })
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A string, or a list of parts (only text parts are taken).
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub tool_calls: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Sampling and length fields both endpoints share.
#[derive(Debug, Deserialize)]
pub struct Common {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Not OpenAI's; llama.cpp's and vLLM's.
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Not OpenAI's; vLLM's: generate past the end tokens.
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// A string or a list of strings.
    #[serde(default)]
    pub stop: Option<Value>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u64>,
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub functions: Option<Value>,
    #[serde(default)]
    pub function_call: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub audio: Option<Value>,
    #[serde(default)]
    pub modalities: Option<Value>,
    #[serde(default)]
    pub prediction: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// A string (or a list of one); token ids are refused.
    pub prompt: Value,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub best_of: Option<u64>,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// A checked request: the job, and how to answer.
#[derive(Debug)]
pub struct Checked {
    pub job: Job,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
}

/// What the checks need to know of the server.
pub struct Limits<'a> {
    /// The served model's id.
    pub model: &'a str,
    /// The embedding model's id (`/v1/embeddings` only).
    pub embed_model: &'a str,
    /// Tokens a stream may hold (`shard_a.kv_capacity`).
    pub capacity: usize,
}

fn refuse_if(cond: bool, param: &str, message: &str) -> Result<(), ApiError> {
    if cond {
        Err(ApiError::unsupported(param, message))
    } else {
        Ok(())
    }
}

fn has(v: &Option<Value>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_null())
}

impl ChatRequest {
    pub fn check(self, common: Common, limits: &Limits) -> Result<Checked, ApiError> {
        refuse_if(
            self.logprobs == Some(true) || self.top_logprobs.is_some_and(|n| n > 0),
            if self.logprobs == Some(true) {
                "logprobs"
            } else {
                "top_logprobs"
            },
            "log probabilities are not supported by this server; leave logprobs out",
        )?;
        for (v, name) in [
            (&self.tools, "tools"),
            (&self.tool_choice, "tool_choice"),
            (&self.functions, "functions"),
            (&self.function_call, "function_call"),
        ] {
            // An empty tool list, or tool_choice "none", asks for no tools.
            let harmless = match (name, v.as_ref()) {
                ("tools", Some(Value::Array(a))) => a.is_empty(),
                ("tool_choice", Some(Value::String(c))) => c == "none",
                _ => false,
            };
            if has(v) && !harmless {
                return Err(ApiError::unsupported(
                    name,
                    format!("{name}: tool and function calling is not supported by this server"),
                ));
            }
        }
        for (v, name) in [
            (&self.audio, "audio"),
            (&self.modalities, "modalities"),
            (&self.prediction, "prediction"),
        ] {
            if has(v) && !(name == "modalities" && v.as_ref().is_some_and(is_text_only)) {
                return Err(ApiError::unsupported(
                    name,
                    format!("{name} is not supported by this server: it answers with text"),
                ));
            }
        }
        if let Some(f) = &self.response_format {
            let kind = f.get("type").and_then(Value::as_str).unwrap_or("");
            if !(f.is_null() || kind == "text") {
                return Err(ApiError::unsupported(
                    "response_format",
                    format!(
                        "response_format type '{kind}' is not supported: this server cannot constrain output to JSON; use {{\"type\": \"text\"}} or leave it out"
                    ),
                ));
            }
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages is empty: give at least one message",
            ));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" | "function" => {
                    return Err(ApiError::unsupported(
                        &format!("messages[{i}].role"),
                        format!(
                            "messages[{i}].role '{}': tool results are not supported by this server (no tool calling)",
                            m.role
                        ),
                    ));
                }
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!(
                            "messages[{i}].role '{other}' is not a role: use system, developer, user or assistant"
                        ),
                    ));
                }
            };
            if has(&m.tool_calls) {
                return Err(ApiError::unsupported(
                    &format!("messages[{i}].tool_calls"),
                    format!(
                        "messages[{i}].tool_calls: tool calling is not supported by this server"
                    ),
                ));
            }
            let content = text_of(m.content.as_ref(), &format!("messages[{i}].content"))?;
            messages.push(Message::new(role, &content));
        }
        if self.max_completion_tokens.is_some() && common.max_tokens.is_some() {
            return Err(ApiError::invalid(
                "max_tokens",
                "give max_tokens or max_completion_tokens, not both",
            ));
        }
        let (param, max) = match self.max_completion_tokens {
            Some(n) => ("max_completion_tokens", Some(n)),
            None => ("max_tokens", common.max_tokens),
        };
        common.check(Input::Chat(messages), param, max, limits)
    }
}

fn is_text_only(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().all(|m| m.as_str() == Some("text")))
}

/// The text of a message's content: a string, or a list of parts of
/// which only text parts are taken.
fn text_of(c: Option<&Value>, param: &str) -> Result<String, ApiError> {
    let wrong = || {
        ApiError::invalid(
            param,
            format!(
                "{param} must be a string or a list of {{\"type\": \"text\", \"text\": ...}} parts"
            ),
        )
    };
    match c {
        None | Some(Value::Null) => Err(ApiError::invalid(
            param,
            format!("{param} is missing: give the message's text"),
        )),
        Some(Value::String(t)) => Ok(t.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str).ok_or_else(wrong)?;
                if kind != "text" {
                    return Err(ApiError::unsupported(
                        &format!("{param}[{j}].type"),
                        format!(
                            "{param}[{j}].type '{kind}': only text parts are supported by this server"
                        ),
                    ));
                }
                let text = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid(
                        format!("{param}[{j}].text"),
                        format!("{param}[{j}].text must be a string"),
                    )
                })?;
                out.push_str(text);
            }
            Ok(out)
        }
        Some(_) => Err(wrong()),
    }
}

impl CompletionRequest {
    pub fn check(self, common: Common, limits: &Limits) -> Result<Checked, ApiError> {
        refuse_if(
            self.echo == Some(true),
            "echo",
            "echo is not supported by this server",
        )?;
        refuse_if(
            self.suffix.as_ref().is_some_and(|s| !s.is_empty()),
            "suffix",
            "suffix (insertion) is not supported by this server",
        )?;
        refuse_if(
            self.best_of.is_some_and(|n| n > 1),
            "best_of",
            "best_of > 1 is not supported by this server: it generates one completion per request",
        )?;
        refuse_if(
            has(&self.logprobs),
            "logprobs",
            "log probabilities are not supported by this server; leave logprobs out",
        )?;
        let tokens_refused = || {
            ApiError::unsupported(
                "prompt",
                "prompt as token ids is not supported by this server: send the text",
            )
        };
        let text = match self.prompt {
            Value::String(t) => t,
            Value::Array(v) if v.len() == 1 && v[0].is_string() => {
                v[0].as_str().unwrap_or_default().to_string()
            }
            Value::Array(v) if v.iter().all(Value::is_string) => {
                return Err(ApiError::unsupported(
                    "prompt",
                    format!(
                        "prompt is a list of {} texts: this server completes one prompt per request; send them one at a time",
                        v.len()
                    ),
                ));
            }
            Value::Array(v) if v.iter().all(|x| x.is_number() || x.is_array()) => {
                return Err(tokens_refused());
            }
            _ => {
                return Err(ApiError::invalid(
                    "prompt",
                    "prompt must be a string (or a list of one string)",
                ));
            }
        };
        if text.is_empty() {
            return Err(ApiError::invalid(
                "prompt",
                "prompt is empty: give some text",
            ));
        }
        // OpenAI's completions default to 16 tokens.
        let max = Some(common.max_tokens.unwrap_or(16));
        common.check(Input::Text(text), "max_tokens", max, limits)
    }
}

impl Common {
    fn check(
        self,
        input: Input,
        max_param: &str,
        max_tokens: Option<u64>,
        limits: &Limits,
    ) -> Result<Checked, ApiError> {
        if let Some(m) = &self.model
            && m == limits.embed_model
            && m != limits.model
        {
            return Err(ApiError::invalid(
                "model",
                format!(
                    "'{m}' is the embedding model (POST /v1/embeddings); chat and completions come from '{}'",
                    limits.model
                ),
            ));
        }
        if let Some(m) = &self.model
            && m != limits.model
        {
            return Err(ApiError::not_found(
                Some("model"),
                "model_not_found",
                format!(
                    "model '{m}' is not served here; this server serves '{}' (GET /v1/models)",
                    limits.model
                ),
            ));
        }
        refuse_if(
            self.n.is_some_and(|n| n != 1),
            "n",
            "n must be 1: this server generates one choice per request",
        )?;
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(ApiError::unsupported(
                "logit_bias",
                "logit_bias is not supported by this server; leave it out or send {}",
            ));
        }
        let max_new_tokens = match max_tokens {
            Some(0) => {
                return Err(ApiError::invalid(
                    max_param,
                    format!("{max_param} must be at least 1"),
                ));
            }
            Some(n) => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(limits.capacity),
            // Until the context is full.
            None => limits.capacity,
        };
        let stop_strings = match self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(v)) if v.iter().all(Value::is_string) => v
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "stop",
                    "stop must be a string or a list of strings",
                ));
            }
        };
        if stop_strings.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "stop has {} strings: at most {MAX_STOPS} are allowed",
                    stop_strings.len()
                ),
            ));
        }
        if stop_strings.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop", "stop strings must not be empty"));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        let sampling = SamplingParams {
            temperature,
            top_k: self.top_k.unwrap_or(0),
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            // No seed: a fresh one, so answers vary as OpenAI's do.
            seed: self
                .seed
                .map(|s| s as u64)
                .unwrap_or_else(|| fastrand::u64(..)),
        };
        if temperature > 2.0 {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature = {temperature}: must be in [0, 2]"),
            ));
        }
        sampling
            .validate()
            .map_err(|e| ApiError::invalid(e.param, e.to_string()))?;
        let stream = self.stream.unwrap_or(false);
        let include_usage = self
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options is only allowed with stream: true",
            ));
        }
        Ok(Checked {
            job: Job {
                input,
                max_new_tokens,
                sampling,
                stop_strings,
                ignore_eos: self.ignore_eos.unwrap_or(false),
            },
            stream,
            include_usage,
            user: self.user,
        })
    }
}
