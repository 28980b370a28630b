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
use crate::pipeline::{Event, GenRequest, Pipeline};
use crate::shard_b::sampling::{SamplingParams, StopCriteria};

pub enum Command {
    /// Start a stream; `tag` comes back in [`EngineEvent::Submitted`].
    Submit {
        tag: u64,
        req: Box<GenRequest>,
    },
    /// Answer a conversation: the engine renders it with the model's chat
    /// template, tokenizes it and starts a stream that stops at the model's
    /// end tokens (`Submitted`, or `Rejected` with the reason).
    Chat {
        tag: u64,
        messages: Vec<Message>,
        max_new_tokens: usize,
        sampling: SamplingParams,
    },
    /// Stop a stream (its report says "cancelled").
    Cancel {
        stream: u32,
    },
    Shutdown,
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
}

#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// Shard B loaded and the executive ready.
    Ready(Box<EngineInfo>),
    Submitted {
        tag: u64,
        stream: u32,
    },
    Rejected {
        tag: u64,
        message: String,
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
    })));
    loop {
        // Commands first; with nothing running, wait for one a little.
        let cmd = if p.active() == 0 {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Command::Shutdown),
            }
        } else {
            rx.try_recv().ok()
        };
        match cmd {
            Some(Command::Shutdown) => break,
            Some(Command::Submit { tag, req }) => match p.submit(*req) {
                Ok(stream) => sink(EngineEvent::Submitted { tag, stream }),
                Err(e) => sink(EngineEvent::Rejected {
                    tag,
                    message: e.to_string(),
                }),
            },
            Some(Command::Chat {
                tag,
                messages,
                max_new_tokens,
                sampling,
            }) => {
                let req = prompter.chat_ids(&messages).map(|prompt| GenRequest {
                    prompt,
                    max_new_tokens,
                    sampling,
                    stop: StopCriteria {
                        eos: prompter.eos_ids.clone(),
                        ..Default::default()
                    },
                    record_logits: false,
                });
                let submitted = req
                    .map_err(|e| format!("cannot build the prompt: {e}"))
                    .and_then(|r| p.submit(r).map_err(|e| e.to_string()));
                sink(match submitted {
                    Ok(stream) => EngineEvent::Submitted { tag, stream },
                    Err(message) => EngineEvent::Rejected { tag, message },
                });
            }
            Some(Command::Cancel { stream }) => {
                p.cancel(stream, &mut |e| sink(EngineEvent::Pipeline(e)))
            }
            None => {}
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
