//! The endpoints: what each answers, in OpenAI's shapes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde_json::{Value, json};

use super::api::{self, ChatRequest, Checked, Common, CompletionRequest, Limits};
use super::bridge::{Bridge, Health, Ticket, Update};
use super::error::ApiError;
use super::stop::StopText;
use super::{Notice, NoticeSink, RequestLine, ServeOptions};
use crate::engine::Rejection;
use crate::pipeline::{Finish, StreamReport};

#[derive(Clone)]
pub struct Server {
    pub bridge: Arc<Bridge>,
    pub opts: ServeOptions,
    pub notice: NoticeSink,
}

type Shared = Arc<Server>;

pub fn router(server: Server) -> Router {
    let limit = server.opts.max_body_kib * 1024;
    let shared = Arc::new(server);
    let keyed = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(generation::<ChatRequest>))
        .route("/v1/completions", post(generation::<CompletionRequest>))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(keyed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(shared.clone(), log))
        .with_state(shared)
}

/// Marks a response whose request the handler logs itself (when its
/// stream ends).
#[derive(Clone, Copy)]
struct Logged;

/// One log line per request; generation requests log when their stream
/// ends. Probes (`/health`, `/metrics`) are neither logged nor counted.
async fn log(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let peer = peer_of(&req);
    let r = next.run(req).await;
    let status = r.status().as_u16();
    if path == "/health" || path == "/metrics" {
        tracing::debug!(target: "serve", "{peer} {method} {path} {status}");
        return r;
    }
    if r.extensions().get::<Logged>().is_none() {
        s.bridge.metrics.request_done(status);
        (s.notice)(Notice::Request(RequestLine {
            peer,
            method,
            path,
            status,
            ms: t0.elapsed().as_secs_f64() * 1e3,
            prompt_tokens: 0,
            completion_tokens: 0,
            finish: String::new(),
            decode_tok_s: 0.0,
            user: None,
        }));
    }
    r
}

fn peer_of(req: &Request) -> SocketAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// `Authorization: Bearer KEY` when the server has a key.
async fn auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let Some(key) = &s.opts.api_key else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
    match given {
        None => {
            ApiError::unauthorized("no API key: send it as the header 'Authorization: Bearer KEY'")
                .into_response()
        }
        Some(g) if same(g.as_bytes(), key.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::unauthorized("the API key is not this server's").into_response(),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(
        None,
        "unknown_url",
        format!(
            "no endpoint {} {}: this server has GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health and GET /metrics",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

async fn health(State(s): State<Shared>) -> Response {
    let h = s.bridge.health();
    let (running, queued) = s.bridge.load();
    let status = if h == Health::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "status": h.label(),
            "model": s.opts.model_id,
            "requests_running": running,
            "requests_queued": queued,
            "streams_cancelling": s.bridge.cancelling(),
            "parallel": s.bridge.parallel(),
        })),
    )
        .into_response()
}

async fn models(State(s): State<Shared>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": s.opts.model_id,
            "object": "model",
            "created": s.opts.created,
            "owned_by": "hybrid-tui",
        }],
    }))
    .into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.bridge.metrics.render(),
    )
        .into_response()
}

/// Which endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

/// The two generation endpoints' requests.
trait Generation: serde::de::DeserializeOwned {
    const KIND: Kind;
    fn check(self, common: Common, limits: &Limits) -> Result<Checked, ApiError>;
}

impl Generation for ChatRequest {
    const KIND: Kind = Kind::Chat;
    fn check(self, common: Common, limits: &Limits) -> Result<Checked, ApiError> {
        ChatRequest::check(self, common, limits)
    }
}

impl Generation for CompletionRequest {
    const KIND: Kind = Kind::Completion;
    fn check(self, common: Common, limits: &Limits) -> Result<Checked, ApiError> {
        CompletionRequest::check(self, common, limits)
    }
}

/// `POST /v1/chat/completions` and `POST /v1/completions`.
async fn generation<R: Generation>(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let checked = read(&s, body).and_then(|v| {
        let common: Common = api::fields(&v)?;
        let req: R = api::fields(&v)?;
        req.check(common, &limits(&s))
    });
    answer(s, peer, R::KIND, checked).await
}

fn read(s: &Server, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(s.opts.max_body_kib)
        } else {
            ApiError::invalid("", format!("cannot read the body: {}", r.body_text()))
        }
    })?;
    api::body(&bytes)
}

fn limits(s: &Server) -> Limits<'_> {
    Limits {
        model: &s.opts.model_id,
        capacity: s.bridge.info().map(|i| i.capacity).unwrap_or(usize::MAX),
    }
}

/// What a generation request has so far; logged once, when it ends.
struct Record {
    server: Shared,
    peer: SocketAddr,
    kind: Kind,
    t0: Instant,
    user: Option<String>,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish: Option<&'static str>,
    status: u16,
    decode_tok_s: f64,
}

impl Drop for Record {
    fn drop(&mut self) {
        let s = &self.server;
        s.bridge.metrics.request_done(self.status);
        (s.notice)(Notice::Request(RequestLine {
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

fn logged(mut r: Response) -> Response {
    r.extensions_mut().insert(Logged);
    r
}

async fn answer(
    s: Shared,
    peer: SocketAddr,
    kind: Kind,
    checked: Result<Checked, ApiError>,
) -> Response {
    let c = match checked {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut record = Record {
        server: s.clone(),
        peer,
        kind,
        t0: Instant::now(),
        user: c.user.clone(),
        prompt_tokens: 0,
        completion_tokens: 0,
        finish: None,
        status: 200,
        decode_tok_s: 0.0,
    };
    let fail = |mut record: Record, e: ApiError| {
        record.status = e.status.as_u16();
        record.finish = Some("error");
        logged(e.into_response())
    };
    let stops = c.job.stop_strings.clone();
    let mut ticket = match s.bridge.start(c.job).await {
        Ok(t) => t,
        Err(e) => return fail(record, e),
    };
    let prompt_param = match kind {
        Kind::Chat => "messages",
        Kind::Completion => "prompt",
    };
    match ticket.rx.recv().await {
        Some(Update::Started { prompt_tokens }) => record.prompt_tokens = prompt_tokens,
        Some(Update::Rejected(Rejection::ContextLength { tokens, capacity })) => {
            let e = ApiError::context_length(
                prompt_param,
                format!(
                    "the prompt is {tokens} tokens and this model's context holds {capacity} (shard_a.kv_capacity), one of them for the answer: shorten the {prompt_param}"
                ),
            );
            return fail(record, e);
        }
        Some(Update::Rejected(r @ Rejection::Prompt(_))) => {
            return fail(record, ApiError::invalid(prompt_param, r.to_string()));
        }
        Some(Update::Rejected(r)) => return fail(record, ApiError::internal(r.to_string())),
        Some(Update::Failed(m)) => {
            return fail(
                record,
                ApiError::unavailable(format!("the engine stopped: {m}")),
            );
        }
        Some(other) => {
            return fail(
                record,
                ApiError::internal(format!("unexpected first event {other:?}")),
            );
        }
        None => return fail(record, ApiError::unavailable("the engine stopped")),
    }
    let answer = Answer {
        id: format!(
            "{}-{:016x}",
            match kind {
                Kind::Chat => "chatcmpl",
                Kind::Completion => "cmpl",
            },
            fastrand::u64(..)
        ),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model: s.opts.model_id.clone(),
        kind,
    };
    if c.stream {
        logged(
            Sse::new(sse(
                answer,
                ticket,
                record,
                StopText::new(stops),
                c.include_usage,
            ))
            .keep_alive(KeepAlive::default())
            .into_response(),
        )
    } else {
        whole(answer, ticket, record, StopText::new(stops)).await
    }
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
struct Answer {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
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
async fn whole(a: Answer, mut ticket: Ticket, mut record: Record, mut stop: StopText) -> Response {
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
    out: std::collections::VecDeque<SseEvent>,
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

    fn text(&mut self, t: &str) {
        if t.is_empty() && !self.first {
            return;
        }
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

fn sse(
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
