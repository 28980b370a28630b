//! The endpoints: what each answers, in OpenAI's shapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::answer::{Answer, Kind, Logged, Record, logged, sse, whole};
use super::api::{self, ChatRequest, Checked, Common, CompletionRequest, Limits};
use super::bridge::{Bridge, Health, Update};
use super::embeddings::{self, EmbeddingRequest};
use super::error::ApiError;
use super::stop::StopText;
use super::{Notice, NoticeSink, RequestLine, ServeOptions};
use crate::embed::worker::EmbedWorker;
use crate::engine::Rejection;

#[derive(Clone)]
pub struct Server {
    pub bridge: Arc<Bridge>,
    /// The embedding model's thread (`/v1/embeddings`).
    pub embed: EmbedWorker,
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
        .route("/v1/embeddings", post(embeddings))
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
            "no endpoint {} {}: this server has GET /v1/models, POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, GET /health and GET /metrics",
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
        }, {
            "id": s.opts.embed_model_id,
            "object": "model",
            "created": s.opts.created,
            "owned_by": "hybrid-tui",
        }],
    }))
    .into_response()
}

/// `POST /v1/embeddings`.
async fn embeddings(State(s): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let got = async {
        let v = read(&s, body)?;
        let req: EmbeddingRequest = api::fields(&v)?;
        let (texts, base64) = embeddings::check(&req, &s.opts.embed_model_id, &s.opts.model_id)?;
        embeddings::answer(
            &s.embed,
            texts,
            req.dimensions,
            &s.opts.embed_model_id,
            base64,
        )
        .await
    }
    .await;
    match got {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.bridge.metrics.render(),
    )
        .into_response()
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
        embed_model: &s.opts.embed_model_id,
        capacity: s.bridge.capacity().unwrap_or(usize::MAX),
    }
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
        bridge: s.bridge.clone(),
        notice: s.notice.clone(),
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
