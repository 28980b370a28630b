//! Answering a generation request once its stream runs: the whole answer
//! at the end, or SSE chunks as the text comes; OpenAI's objects either
//! way, and one log line per request when it ends (or its client leaves).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::{Value, json};

use super::bridge::{Bridge, Ticket, Update};
use super::error::ApiError;
use super::stop::StopText;
use super::{Notice, NoticeSink, RequestLine};
use crate::pipeline::{Finish, StreamReport};

/// Marks a response whose request is logged here (when its stream ends),
/// not by the log middleware.
#[derive(Clone, Copy)]
pub(super) struct Logged;

/// Which endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Chat,
    Completion,
}

/// What a generation request has so far; logged once, when it ends.
pub(super) struct Record {
    pub(super) bridge: Arc<Bridge>,
    pub(super) notice: NoticeSink,
    pub(super) peer: SocketAddr,
    pub(super) kind: Kind,
    pub(super) t0: Instant,
    pub(super) user: Option<String>,
    pub(super) prompt_tokens: usize,
    pub(super) completion_tokens: usize,
    pub(super) finish: Option<&'static str>,
    pub(super) status: u16,
    pub(super) decode_tok_s: f64,
}

impl Drop for Record {
    fn drop(&mut self) {
        self.bridge.metrics.request_done(self.status);
        (self.notice)(Notice::Request(RequestLine {
            peer: self.peer,
            method: "POST".into(),
            path: match self.kind {
                Kind::Chat => "/v1/chat/completions".into(),
                Kind::Completion => "/v1/completions".into(),
            },
            status: self.status,
            ms: self.t0.elapsed().as_secs_f64() * 1e3,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            finish: self.finish.unwrap_or("disconnected").to_string(),
            decode_tok_s: self.decode_tok_s,
            user: self.user.take(),
        }));
    }
}

pub(super) fn logged(mut r: Response) -> Response {
    r.extensions_mut().insert(Logged);
    r
}

/// How a stream ended, in OpenAI's words; an error when it did not end well.
fn finish_reason(report: &StreamReport, stop: &StopText) -> Result<&'static str, ApiError> {
    match report.finish {
        _ if stop.stopped() => Ok("stop"),
        Finish::Eos | Finish::StopString => Ok("stop"),
        Finish::Length | Finish::Context => Ok("length"),
        Finish::Cancelled => Err(ApiError::unavailable(
            "the request was cancelled: the server is shutting down",
        )),
        Finish::Error => Err(ApiError::internal(format!(
            "generation failed: {}",
            report.error.as_deref().unwrap_or("no reason given")
        ))),
    }
}

/// The ids and names every object of one answer carries.
pub(super) struct Answer {
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) model: String,
    pub(super) kind: Kind,
}

impl Answer {
    fn usage(prompt: usize, completion: usize) -> Value {
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }

    /// The fields every object of the answer carries, around `choices`.
    fn envelope(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": fingerprint(),
            "choices": choices,
        })
    }

    /// The whole answer (non-streaming).
    fn object(&self, text: &str, finish: &str, usage: Value) -> Value {
        let mut v = match self.kind {
            Kind::Chat => self.envelope(
                "chat.completion",
                json!([{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": finish,
                }]),
            ),
            Kind::Completion => self.envelope(
                "text_completion",
                json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]),
            ),
        };
        v["usage"] = usage;
        v
    }

    fn chunk_object(&self) -> &'static str {
        match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        }
    }

    /// One streamed chunk: `text` (and the role, first) or the finish.
    fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool, usage: bool) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        let mut v = self.envelope(self.chunk_object(), json!([choice]));
        if usage {
            v["usage"] = Value::Null;
        }
        v
    }

    /// The last chunk of `include_usage`: no choices, the usage.
    fn usage_chunk(&self, prompt: usize, completion: usize) -> Value {
        let mut v = self.envelope(self.chunk_object(), json!([]));
        v["usage"] = Answer::usage(prompt, completion);
        v
    }
}

fn fingerprint() -> String {
    format!("hybrid-tui-{}", env!("CARGO_PKG_VERSION"))
}

/// A non-streaming answer: wait for the end, answer once.
pub(super) async fn whole(
    a: Answer,
    mut ticket: Ticket,
    mut record: Record,
    mut stop: StopText,
) -> Response {
    let mut text = String::new();
    loop {
        match ticket.rx.recv().await {
            Some(Update::Text(t)) => text.push_str(&stop.push(&t)),
            Some(Update::Done(report)) => {
                text.push_str(&stop.finish());
                record.completion_tokens = report.tokens.len();
                record.decode_tok_s = report.metrics.decode_tok_s;
                return match finish_reason(&report, &stop) {
                    Ok(finish) => {
                        record.finish = Some(finish);
                        let usage = Answer::usage(record.prompt_tokens, record.completion_tokens);
                        logged(axum::Json(a.object(&text, finish, usage)).into_response())
                    }
                    Err(e) => {
                        record.finish = Some("error");
                        record.status = e.status.as_u16();
                        logged(e.into_response())
                    }
                };
            }
            Some(Update::Failed(m)) => {
                let e = ApiError::unavailable(format!("the engine stopped: {m}"));
                record.finish = Some("error");
                record.status = e.status.as_u16();
                return logged(e.into_response());
            }
            Some(_) => {}
            None => {
                let e = ApiError::unavailable("the engine stopped");
                record.finish = Some("error");
                record.status = e.status.as_u16();
                return logged(e.into_response());
            }
        }
    }
}

/// What the SSE stream has left to do.
struct Streaming {
    a: Answer,
    ticket: Ticket,
    record: Record,
    stop: StopText,
    include_usage: bool,
    first: bool,
    /// Events ready to go out.
    out: VecDeque<SseEvent>,
    ended: bool,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

impl Streaming {
    /// Take updates until there is something to send; false at the end.
    async fn fill(&mut self) -> bool {
        while self.out.is_empty() {
            if self.ended {
                return false;
            }
            let update = self.ticket.rx.recv().await;
            self.take(update);
        }
        true
    }

    /// A chunk for one token's text (empty while a character or a
    /// possible stop string is incomplete).
    fn text(&mut self, t: &str) {
        let c = self.a.chunk(Some(t), None, self.first, self.include_usage);
        self.first = false;
        self.out.push_back(data(&c));
    }

    fn error(&mut self, e: ApiError) {
        self.record.finish = Some("error");
        self.out
            .push_back(SseEvent::default().event("error").data(e.body()));
        self.ended = true;
    }

    fn take(&mut self, update: Option<Update>) {
        match update {
            Some(Update::Text(t)) => {
                let t = self.stop.push(&t);
                self.text(&t);
            }
            Some(Update::Done(report)) => {
                let rest = self.stop.finish();
                if !rest.is_empty() {
                    self.text(&rest);
                }
                self.record.completion_tokens = report.tokens.len();
                self.record.decode_tok_s = report.metrics.decode_tok_s;
                match finish_reason(&report, &self.stop) {
                    Ok(finish) => {
                        self.record.finish = Some(finish);
                        let c = self
                            .a
                            .chunk(None, Some(finish), self.first, self.include_usage);
                        self.out.push_back(data(&c));
                        if self.include_usage {
                            let u = self.a.usage_chunk(
                                self.record.prompt_tokens,
                                self.record.completion_tokens,
                            );
                            self.out.push_back(data(&u));
                        }
                        self.out.push_back(SseEvent::default().data("[DONE]"));
                        self.ended = true;
                    }
                    Err(e) => self.error(e),
                }
            }
            Some(Update::Failed(m)) => {
                self.error(ApiError::unavailable(format!("the engine stopped: {m}")))
            }
            Some(_) => {}
            None => self.error(ApiError::unavailable("the engine stopped")),
        }
    }
}

pub(super) fn sse(
    a: Answer,
    ticket: Ticket,
    record: Record,
    stop: StopText,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let mut st = Streaming {
        a,
        ticket,
        record,
        stop,
        include_usage,
        first: true,
        out: Default::default(),
        ended: false,
    };
    // The role comes first, before any text (as OpenAI sends it).
    if st.a.kind == Kind::Chat {
        st.text("");
    }
    futures_util::stream::unfold(st, |mut st| async move {
        if st.fill().await {
            st.out.pop_front().map(|e| (Ok(e), st))
        } else {
            None
        }
    })
}
