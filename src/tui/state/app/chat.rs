//! The conversation: sending a message (the engine renders and tokenizes
//! it), answers streaming in from the engine, the executive's state and
//! restarts as the chat shows them, saving an answer.

use super::*;

impl App {
    pub(super) fn send(&mut self) {
        let text = self.input.trim().to_string();
        if text.is_empty() || self.active.is_some() {
            return;
        }
        if let Some(arg) = text.strip_prefix("/index") {
            self.input.clear();
            self.index_command(arg.trim());
            return;
        }
        if self.info.is_none() {
            self.notice = Some("the model is not ready yet".into());
            return;
        }
        self.history.push(text.clone());
        self.history_pos = None;
        self.input.clear();
        self.messages.push(ChatMessage {
            role: Role::User,
            text,
            note: None,
            sources: Vec::new(),
        });
        self.start_answer();
    }

    /// `/index NAME` attaches an index, `/index off` detaches it, `/index`
    /// alone lists the indexes, `/index add PATH [NAME]` indexes a folder
    /// here (the index pane shows it) and attaches it when done.
    fn index_command(&mut self, arg: &str) {
        use crate::embed::index::{Index, default_name, list};
        if let Some(rest) = arg.strip_prefix("add") {
            let mut words = rest.split_whitespace();
            let Some(path) = words.next().map(std::path::PathBuf::from) else {
                self.info("/index add PATH [NAME]: give a folder or file to index".into());
                return;
            };
            if !path.exists() {
                self.info(format!(
                    "{}: no such file or directory to index",
                    path.display()
                ));
                return;
            }
            let name = words
                .next()
                .map(str::to_string)
                .unwrap_or_else(|| default_name(&path));
            if self
                .indexing
                .as_ref()
                .is_some_and(|v| v.finished_s.is_none())
            {
                self.info("an indexing pass is running; wait for it to end".into());
                return;
            }
            let Some(start) = self.indexer.as_mut() else {
                self.info("indexing is not available here".into());
                return;
            };
            start(name.clone(), path.clone());
            self.indexing = Some(IndexingView {
                name: name.clone(),
                done: 0,
                total: 0,
                chunks: 0,
                device: String::new(),
                started: Instant::now(),
                finished_s: None,
            });
            self.info(format!(
                "indexing {} into {name} on the embedding device; the chat goes on meanwhile",
                path.display()
            ));
            return;
        }
        match arg {
            "" => {
                let names = list().unwrap_or_default();
                let attached = self.index.clone().unwrap_or_else(|| "none".into());
                self.info(if names.is_empty() {
                    "no index yet: make one with `hybrid-tui index PATH --name NAME`, then /index NAME".into()
                } else {
                    format!("indexes: {} · attached: {attached} · /index NAME attaches one, /index off detaches", names.join(", "))
                });
            }
            "off" => {
                self.index = None;
                self.info("index detached: messages go to the model as they are".into());
            }
            name => match Index::open(name, false).and_then(|i| i.counts()) {
                Ok((files, chunks)) => {
                    self.index = Some(name.to_string());
                    self.info(format!(
                        "attached index {name} ({files} files, {chunks} chunks): each message takes its top chunks as sources; /index off detaches"
                    ));
                }
                Err(e) => self.info(e.to_string()),
            },
        }
    }

    /// Answer the conversation: with an index attached, its chunks for the
    /// last message are fetched first (`AppEvent::Retrieved`).
    pub(super) fn start_answer(&mut self) {
        if self.info.is_none() {
            return;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let retrieving = self.index.is_some() && self.retriever.is_some();
        self.messages.push(ChatMessage {
            role: Role::Assistant,
            text: String::new(),
            note: Some(match &self.index {
                Some(i) if retrieving => format!("retrieving from {i}…"),
                _ => "…".into(),
            }),
            sources: Vec::new(),
        });
        self.scroll = 0;
        self.active = Some(Active {
            tag,
            stream: None,
            msg: self.messages.len() - 1,
            retrieving,
        });
        self.speed.live_tokens = 0;
        self.speed.live_since = None;
        self.speed.live_tok_s = 0.0;
        let question = self
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.text.clone());
        match (&self.index, &mut self.retriever, question) {
            (Some(index), Some(retrieve), Some(q)) if retrieving => retrieve(tag, index.clone(), q),
            _ => self.launch(tag, None),
        }
    }

    /// An indexing pass's progress; at its end the index is attached.
    pub(super) fn on_indexing(&mut self, name: String, p: crate::embed::worker::IndexProgress) {
        use crate::embed::worker::IndexProgress;
        let Some(v) = self.indexing.as_mut().filter(|v| v.name == name) else {
            return;
        };
        match p {
            IndexProgress::Files {
                done,
                total,
                chunks,
                device,
            } => {
                v.done = done;
                v.total = total;
                v.chunks = chunks;
                v.device = device;
            }
            IndexProgress::Done(r) => {
                v.finished_s = Some(v.started.elapsed().as_secs_f64());
                match r {
                    Ok(r) => {
                        self.index = Some(name.clone());
                        self.info(format!(
                            "index {name}: {} files ({} indexed, {} unchanged), {} chunks; attached",
                            r.files, r.indexed, r.unchanged, r.chunks_total
                        ));
                    }
                    Err(e) => self.info(format!("indexing {name} failed: {e}")),
                }
            }
        }
    }

    /// The retrieved chunks: the answer starts with them as sources.
    pub(super) fn on_retrieved(
        &mut self,
        tag: u64,
        result: Result<Vec<crate::embed::index::Hit>, String>,
    ) {
        let Some(a) = self.active.filter(|a| a.tag == tag && a.retrieving) else {
            return;
        };
        self.active = Some(Active {
            retrieving: false,
            ..a
        });
        let hits = match result {
            Ok(h) => h,
            Err(e) => {
                self.info(format!("retrieval failed, answering without sources: {e}"));
                Vec::new()
            }
        };
        let msg = self.active.map(|a| a.msg).unwrap_or(a.msg);
        if let Some(m) = self.messages.get_mut(msg) {
            m.sources = hits
                .iter()
                .map(crate::embed::retrieve::source_label)
                .collect();
            m.note = Some("…".into());
        }
        let question = self.messages[..msg]
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| crate::embed::retrieve::augment(&m.text, &hits));
        self.launch(tag, question);
    }

    /// Send the conversation to the engine (the model's template renders
    /// it), the last user message replaced by `last_user` when given.
    fn launch(&mut self, tag: u64, last_user: Option<String>) {
        let mut messages = Vec::new();
        if !self.system_prompt.trim().is_empty() {
            messages.push(Message::new("system", &self.system_prompt));
        }
        let last = self.messages.iter().rposition(|m| m.role == Role::User);
        for (i, m) in self.messages.iter().enumerate() {
            match m.role {
                Role::User if Some(i) == last && last_user.is_some() => messages.push(
                    Message::new("user", last_user.as_deref().unwrap_or_default()),
                ),
                Role::User => messages.push(Message::new("user", &m.text)),
                Role::Assistant if !m.text.is_empty() => {
                    messages.push(Message::new("assistant", &m.text))
                }
                _ => {}
            }
        }
        (self.commands)(Command::Start {
            tag,
            job: Box::new(Job {
                input: Input::Chat(messages),
                max_new_tokens: self.max_new_tokens,
                sampling: SamplingParams {
                    seed: tag,
                    ..self.sampling.clone()
                },
                stop_strings: Vec::new(),
                ignore_eos: false,
            }),
        });
    }

    pub(super) fn copy_answer(&mut self) {
        let Some(last) = self
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant && !m.text.is_empty())
        else {
            self.notice = Some("no answer to save yet".into());
            return;
        };
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = self.answers_dir.join(format!("answer-{secs}.txt"));
        let r = std::fs::create_dir_all(&self.answers_dir)
            .and_then(|_| std::fs::write(&path, &last.text));
        self.notice = Some(match r {
            Ok(()) => format!("saved the last answer to {}", path.display()),
            Err(e) => format!("cannot save to {}: {e}", path.display()),
        });
    }

    /// A message from the app; during an answer it goes above the answer,
    /// which keeps streaming at the bottom.
    pub fn info(&mut self, text: String) {
        let m = ChatMessage {
            role: Role::Info,
            text,
            note: None,
            sources: Vec::new(),
        };
        match &mut self.active {
            Some(a) if a.msg < self.messages.len() => {
                self.messages.insert(a.msg, m);
                a.msg += 1;
            }
            _ => self.messages.push(m),
        }
    }

    pub(super) fn on_engine(&mut self, e: EngineEvent) {
        match e {
            EngineEvent::Ready(info) => {
                self.info = Some(*info);
                self.state = ExecState::Ready;
            }
            EngineEvent::Submitted { tag, stream, .. } => {
                if let Some(a) = &mut self.active
                    && a.tag == tag
                {
                    a.stream = Some(stream);
                }
            }
            EngineEvent::Rejected { tag, reason } => {
                if let Some(a) = self.active.filter(|a| a.tag == tag) {
                    self.active = None;
                    if a.msg < self.messages.len() {
                        self.messages.remove(a.msg);
                    }
                    self.info(format!("not sent: {reason}"));
                }
            }
            EngineEvent::Pipeline(ev) => self.on_pipeline(ev),
            EngineEvent::Failed(msg) => {
                self.state = ExecState::Failed;
                self.failure = Some(msg.clone());
                self.active = None;
                self.info(format!("the engine stopped: {msg}"));
            }
            EngineEvent::Stopped => self.state = ExecState::Stopped,
        }
    }

    pub(super) fn is_active(&self, stream: u32) -> bool {
        self.active.is_some_and(|a| a.stream == Some(stream))
    }

    pub(super) fn on_pipeline(&mut self, ev: Event) {
        match ev {
            Event::Token { stream, text, .. } if self.is_active(stream) => {
                self.speed.live_tokens += 1;
                if self.speed.live_since.is_none() {
                    self.speed.live_since = Some(Instant::now());
                }
                if let Some(m) = self.active.and_then(|a| self.messages.get_mut(a.msg)) {
                    m.text.push_str(&text);
                }
            }
            Event::Stage(s) => self.speed.stage(&s),
            Event::Finished(r) if self.is_active(r.stream) => {
                let m = &r.metrics;
                let stats = || {
                    format!(
                        "{} tokens · {:.1} tok/s · ttft {:.0} ms · prompt {} at {:.0} tok/s",
                        m.generated, m.decode_tok_s, m.ttft_ms, m.prompt_tokens, m.prefill_tok_s
                    )
                };
                let note = match r.finish {
                    Finish::Cancelled => format!("stopped · {} tokens", m.generated),
                    Finish::Error => format!("error: {}", r.error.clone().unwrap_or_default()),
                    Finish::Context => format!(
                        "context full: stopped at {} tokens (raise shard_a.kv_capacity) · {}",
                        m.prompt_tokens + m.generated,
                        stats()
                    ),
                    _ => stats(),
                };
                if let Some(m) = self.active.and_then(|a| self.messages.get_mut(a.msg)) {
                    m.note = Some(note);
                }
                if m.decode_tok_s > 0.0 {
                    push_bounded_f(&mut self.speed.decode, m.decode_tok_s);
                }
                self.speed.last = Some(*r);
                self.active = None;
            }
            Event::Supervisor(s) => self.on_supervisor(s),
            _ => {}
        }
    }

    pub(super) fn on_supervisor(&mut self, s: SupervisorEvent) {
        match s {
            SupervisorEvent::State { state } => {
                self.state = state;
                if state == ExecState::Ready {
                    self.notice = None;
                }
            }
            SupervisorEvent::Started { segment, pid } => {
                self.pids.set_executive(Some(pid));
                match Segment::open(&segment) {
                    Ok(seg) => {
                        self.segment = Some(seg);
                        self.ring = None;
                    }
                    Err(e) => self.notice = Some(format!("cannot read the ring stats: {e}")),
                }
            }
            SupervisorEvent::Lost { reason, .. } => {
                self.pids.set_executive(None);
                self.segment = None;
                let then = if self.active.is_some() {
                    " (the answer continues)"
                } else {
                    ""
                };
                self.info(format!("{reason}; restarting it{then}"));
            }
            SupervisorEvent::Restarting {
                attempt,
                backoff_ms,
            } => {
                self.notice = Some(format!(
                    "restarting the executive (attempt {attempt}, in {backoff_ms} ms)"
                ));
            }
            SupervisorEvent::Failed { message } => {
                self.failure = Some(message.clone());
                self.info(format!("the executive failed: {message}"));
            }
            SupervisorEvent::Ready { .. }
            | SupervisorEvent::Stats { .. }
            | SupervisorEvent::StaleSegmentsRemoved { .. } => {}
        }
    }
}
