//! The pipeline on a thread of its own, driven by commands and reporting
//! events: what a front end (the workbench) talks to. It knows nothing of
//! terminals.
//!
//! The thread loads shard B and starts the executive (so PR_SET_PDEATHSIG
//! is tied to a thread that lives as long as the engine), then loops:
//! commands are taken between pipeline rounds; with no stream active it
//! still polls, so heartbeats, crashes and restarts are noticed at once.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::config::Settings;
use crate::model::chat::Message;
use crate::pipeline::prompt::Prompter;
use crate::pipeline::{Event, GenRequest, Pipeline, PipelineError};
use crate::shard_b::sampling::{SamplingParams, StopCriteria};

pub enum Command {
    /// Start a stream; `tag` comes back in [`EngineEvent::Submitted`].
    Submit {
        tag: u64,
        req: Box<GenRequest>,
    },
    /// Answer a conversation or continue a text: the engine renders a
    /// conversation with the model's chat template, tokenizes the prompt and
    /// starts a stream that stops at the model's end tokens and the job's
    /// stop strings (`Submitted`, or `Rejected` with the reason).
    Start {
        tag: u64,
        job: Box<Job>,
    },
    /// Stop a stream (its report says "cancelled").
    Cancel {
        stream: u32,
    },
    Shutdown,
}

/// The prompt of a [`Job`].
#[derive(Debug, Clone)]
pub enum Input {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Plain text, tokenized as it is (with the tokenizer's special tokens).
    Text(String),
}

/// A generation in the front ends' terms: text in, not token ids.
#[derive(Debug, Clone)]
pub struct Job {
    pub input: Input,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_strings: Vec<String>,
    /// Go on past the model's end tokens (fixed-length runs, benchmarks).
    pub ignore_eos: bool,
}

/// Why a job was not started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// The prompt does not leave room for one new token in the KV cache.
    #[error(
        "the prompt is {tokens} tokens; the context holds {capacity} (shard_a.kv_capacity), and at least one must be left to generate"
    )]
    ContextLength { tokens: usize, capacity: usize },
    /// The prompt could not be built (template, tokenizer).
    #[error("cannot build the prompt: {0}")]
    Prompt(String),
    /// The pipeline refused the request.
    #[error("{0}")]
    Refused(String),
}

/// What the engine is running, for status lines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineInfo {
    pub model_dir: PathBuf,
    pub layers: usize,
    pub split: usize,
    pub hidden: usize,
    pub shard_a_device: String,
    pub shard_b_backend: String,
    pub compile_ms: f64,
    pub eos: Vec<u32>,
    /// Tokens a stream may hold, prompt and answer (`shard_a.kv_capacity`).
    pub capacity: usize,
}

#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// Shard B loaded and the executive ready.
    Ready(Box<EngineInfo>),
    Submitted {
        tag: u64,
        stream: u32,
        /// Tokens of the prompt as the model sees it.
        prompt_tokens: usize,
    },
    Rejected {
        tag: u64,
        reason: Rejection,
    },
    Pipeline(Event),
    /// The engine cannot go on (start-up failed, or the executive gave up).
    Failed(String),
    Stopped,
}

pub struct Engine {
    tx: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Start the engine thread for a baked model; events go to `sink`.
    pub fn start(
        settings: Settings,
        model_dir: PathBuf,
        sink: impl Fn(EngineEvent) + Send + 'static,
    ) -> Engine {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || run(settings, model_dir, rx, sink))
            .ok();
        Engine { tx, thread }
    }

    /// A sender for commands (for a front end that keeps its own handle).
    pub fn sender(&self) -> Sender<Command> {
        self.tx.clone()
    }

    pub fn send(&self, c: Command) {
        let _ = self.tx.send(c);
    }

    /// Stop the executive cleanly and wait for the thread.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(settings: Settings, model_dir: PathBuf, rx: Receiver<Command>, sink: impl Fn(EngineEvent)) {
    let mut p = match Pipeline::new(&settings, &model_dir, &mut |e| {
        sink(EngineEvent::Pipeline(e))
    }) {
        Ok(p) => p,
        Err(e) => {
            sink(EngineEvent::Failed(e.to_string()));
            return;
        }
    };
    // Requests come with prompts and streams of any size: every step
    // size's kernels now, not in the middle of an answer.
    if let Err(e) = p.warm_up() {
        sink(EngineEvent::Failed(e.to_string()));
        p.shutdown();
        sink(EngineEvent::Stopped);
        return;
    }
    let prompter = match Prompter::new(&model_dir, &p.model, p.tokenizer.clone()) {
        Ok(x) => x,
        Err(e) => {
            sink(EngineEvent::Failed(format!("the chat template: {e}")));
            p.shutdown();
            sink(EngineEvent::Stopped);
            return;
        }
    };
    let spec = p.shard_b.spec.clone();
    sink(EngineEvent::Ready(Box::new(EngineInfo {
        model_dir: model_dir.clone(),
        layers: spec.num_layers,
        split: p.split,
        hidden: spec.hidden_size,
        shard_a_device: settings.shard_a.device.clone(),
        shard_b_backend: if p.shard_b.info.backend == "cpu" {
            p.shard_b.info.name.clone()
        } else {
            format!("{} {}", p.shard_b.info.backend, p.shard_b.info.name)
        },
        compile_ms: p.executive().map(|x| x.compile_ms).unwrap_or(0.0),
        eos: p.model.manifest.tokens.eos_token_ids.clone(),
        capacity: settings.shard_a.kv_capacity,
    })));
    'run: loop {
        // Commands first; with nothing running, wait for one a little. Every
        // command already queued is taken before the next round, so a burst
        // of requests starts together.
        let first = if p.active() == 0 {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Command::Shutdown),
            }
        } else {
            rx.try_recv().ok()
        };
        let mut next = first;
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Shutdown => break 'run,
                Command::Submit { tag, req } => {
                    let prompt_tokens = req.prompt.len();
                    sink(submitted(tag, prompt_tokens, p.submit(*req)));
                }
                Command::Start { tag, job } => sink(start(&mut p, &prompter, tag, *job)),
                Command::Cancel { stream } => {
                    p.cancel(stream, &mut |e| sink(EngineEvent::Pipeline(e)))
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = p.poll(&mut |e| sink(EngineEvent::Pipeline(e))) {
            sink(EngineEvent::Failed(e.to_string()));
            break;
        }
        p.take_finished();
    }
    p.shutdown();
    sink(EngineEvent::Stopped);
}

/// Build a job's prompt and start its stream.
fn start(p: &mut Pipeline, prompter: &Prompter, tag: u64, job: Job) -> EngineEvent {
    let ids = match &job.input {
        Input::Chat(messages) => prompter.chat_ids(messages),
        Input::Text(text) => prompter.text_ids(text),
    };
    let prompt = match ids {
        Ok(ids) => ids,
        Err(e) => {
            return EngineEvent::Rejected {
                tag,
                reason: Rejection::Prompt(e.to_string()),
            };
        }
    };
    let prompt_tokens = prompt.len();
    let req = GenRequest {
        prompt,
        max_new_tokens: job.max_new_tokens,
        sampling: job.sampling,
        stop: StopCriteria {
            eos: prompter.eos_ids.clone(),
            stop_strings: job.stop_strings,
            ignore_eos: job.ignore_eos,
        },
        record_logits: false,
    };
    submitted(tag, prompt_tokens, p.submit(req))
}

fn submitted(tag: u64, prompt_tokens: usize, r: Result<u32, PipelineError>) -> EngineEvent {
    match r {
        Ok(stream) => EngineEvent::Submitted {
            tag,
            stream,
            prompt_tokens,
        },
        Err(PipelineError::PromptTooLong { tokens, capacity }) => EngineEvent::Rejected {
            tag,
            reason: Rejection::ContextLength { tokens, capacity },
        },
        Err(e) => EngineEvent::Rejected {
            tag,
            reason: Rejection::Refused(e.to_string()),
        },
    }
}
