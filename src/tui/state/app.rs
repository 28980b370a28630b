//! The workbench's state and how events change it. Drawing reads it
//! (`tui::view`), never writes it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};

use crate::engine::{Command, EngineEvent, EngineInfo, Input, Job};
use crate::hw::checks::Report;
use crate::hw::sampler::{Pids, Snapshot};
use crate::model::chat::Message;
use crate::pipeline::{Event, Finish, StageSample, StreamReport};
use crate::ring::{RingStats, Segment};
use crate::shard_b::sampling::SamplingParams;
use crate::supervisor::{ExecState, SupervisorEvent};
use crate::tui::keymap::{Action, Context, Keymap};

mod chat;

/// Everything that reaches the app loop.
#[derive(Debug)]
pub enum AppEvent {
    Term(TermEvent),
    Engine(EngineEvent),
    Telemetry(Box<Snapshot>),
    /// A finished hardware check.
    Check(Box<Report>),
    /// Download progress of the model (one file).
    Download(crate::hub::FileProgress),
    /// The model is resolved (the engine starts next), or cannot be.
    Model(ModelOutcome),
    /// The benchmark's progress (`hybrid-tui bench` on a terminal).
    Bench(Box<crate::bench::BenchEvent>),
    /// The benchmark ended: its record (saved by the front end), or why not.
    BenchDone(Result<Box<(crate::bench::record::BenchRecord, String)>, String>),
    /// The API server running beside the chat (`--serve`).
    Server(super::server::ServerEvent),
    /// An indexing pass started from the workbench (`/index add`).
    Indexing {
        name: String,
        progress: crate::embed::worker::IndexProgress,
    },
    /// Chunks retrieved from the attached index for answer `tag`, or why not.
    Retrieved {
        tag: u64,
        result: Result<Vec<crate::embed::index::Hit>, String>,
    },
    Log(String),
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// Messages from the app itself (errors, restarts); never sent to the model.
    Info,
}

/// Starts a retrieval: (answer tag, index name, question).
pub type Retriever = Box<dyn FnMut(u64, String, String) + Send>;

/// Starts an indexing pass: (index name, folder or file); its progress
/// comes back as `AppEvent::Indexing`.
pub type Indexer = Box<dyn FnMut(String, PathBuf) + Send>;

/// The index pane: a pass started with `/index add`.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexingView {
    pub name: String,
    pub done: usize,
    pub total: usize,
    pub chunks: usize,
    pub device: String,
    pub started: Instant,
    /// Seconds the pass took, once it is over.
    pub finished_s: Option<f64>,
}

impl IndexingView {
    /// Chunks and files a second so far.
    pub fn rates(&self) -> (f64, f64) {
        let secs = self
            .finished_s
            .unwrap_or_else(|| self.started.elapsed().as_secs_f64())
            .max(1e-3);
        (self.chunks as f64 / secs, self.done as f64 / secs)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub text: String,
    /// A line under the message (speed, "stopped").
    pub note: Option<String>,
    /// The chunks retrieved for this answer, as `path:start-end`.
    pub sources: Vec<String>,
}

/// What is being generated now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Active {
    pub tag: u64,
    pub stream: Option<u32>,
    /// Index of the answer being written in `messages`.
    pub msg: usize,
    /// Waiting for the attached index's chunks before it starts.
    pub retrieving: bool,
}

/// Rolling speed figures for the speed pane.
#[derive(Debug, Clone, Default)]
pub struct Speed {
    /// Decode tok/s of finished answers (last 60).
    pub decode: VecDeque<f64>,
    pub last: Option<StreamReport>,
    /// Exponential means of the per-token stages (decode steps only).
    pub stages: Option<StageSample>,
    /// Live decode rate of the answer in progress.
    pub live_tok_s: f64,
    live_tokens: usize,
    live_since: Option<Instant>,
}

impl Speed {
    fn stage(&mut self, s: &StageSample) {
        if s.prefill {
            return;
        }
        let a = 0.2;
        self.stages = Some(match self.stages {
            None => *s,
            Some(m) => StageSample {
                b_to_a_wait_ms: m.b_to_a_wait_ms * (1.0 - a) + s.b_to_a_wait_ms * a,
                a_ms: m.a_ms * (1.0 - a) + s.a_ms * a,
                a_to_b_wait_ms: m.a_to_b_wait_ms * (1.0 - a) + s.a_to_b_wait_ms * a,
                b_ms: m.b_ms * (1.0 - a) + s.b_ms * a,
                ..*s
            },
        });
    }
}

/// Ring figures for the ring pane, with rates.
#[derive(Debug, Clone, Default)]
pub struct RingView {
    pub segment: String,
    pub stats: [RingStats; 2],
    pub bytes_per_s: [f64; 2],
    at: Option<Instant>,
}

pub use super::telemetry::HISTORY;

/// How resolving the model ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutcome {
    /// The model's label, or why there is none.
    pub result: Result<String, String>,
    /// Why the configured model could not be had, if so.
    pub notes: Vec<String>,
    /// It is the random-weight demo model.
    pub demo: bool,
}

/// Which screen is showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Chat,
    /// The hardware check with live device use.
    Check,
    /// `hybrid-tui bench`: progress, results and charts, live.
    Bench,
}

pub struct App {
    pub profile: String,
    pub model_label: String,
    pub state: ExecState,
    pub info: Option<EngineInfo>,
    pub failure: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub system_prompt: String,
    pub input: String,
    pub editing_system: bool,
    pub history: Vec<String>,
    history_pos: Option<usize>,
    /// Lines scrolled up from the bottom of the conversation.
    pub scroll: usize,
    pub active: Option<Active>,
    next_tag: u64,
    pub speed: Speed,
    pub ring: Option<RingView>,
    segment: Option<Arc<Segment>>,
    /// The telemetry thread's last snapshot and history.
    pub telemetry: super::telemetry::Telemetry,
    /// Files of the model being downloaded, in the order they started.
    pub downloads: Vec<crate::hub::FileProgress>,
    /// Our processes, for the GPU readers (the executive is added when it starts).
    pub pids: Pids,
    pub screen: Screen,
    /// The check screen's report and selection.
    pub check: super::check::CheckState,
    /// The benchmark's state (Screen::Bench).
    pub bench: super::bench::BenchState,
    /// The API server's pane, when `--serve` runs one.
    pub server: Option<super::server::ServerState>,
    pub log: VecDeque<String>,
    pub show_help: bool,
    pub show_log: bool,
    pub notice: Option<String>,
    pub quit: bool,
    pub keymap: Keymap,

    commands: Box<dyn FnMut(Command) + Send>,
    /// How a retrieval starts (answer tag, index, question); its result
    /// comes back as `AppEvent::Retrieved`. Set by the terminal front end.
    retriever: Option<Retriever>,
    indexer: Option<Indexer>,
    /// The last indexing pass started here (the index pane).
    pub indexing: Option<IndexingView>,
    /// The index each message retrieves from (`/index NAME`).
    pub index: Option<String>,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub answers_dir: PathBuf,
}

impl App {
    pub fn new(
        profile: &str,
        model_label: &str,
        keymap: Keymap,
        commands: Box<dyn FnMut(Command) + Send>,
    ) -> App {
        App {
            profile: profile.into(),
            model_label: model_label.into(),
            state: ExecState::Starting,
            info: None,
            failure: None,
            messages: Vec::new(),
            system_prompt: "You are a helpful assistant.".into(),
            input: String::new(),
            editing_system: false,
            history: Vec::new(),
            history_pos: None,
            scroll: 0,
            active: None,
            next_tag: 1,
            speed: Speed::default(),
            ring: None,
            segment: None,
            telemetry: Default::default(),
            downloads: Vec::new(),
            pids: Pids::new(),
            screen: Screen::Chat,
            check: Default::default(),
            bench: super::bench::BenchState::default(),
            server: None,
            log: VecDeque::new(),
            show_help: false,
            show_log: false,
            notice: None,
            quit: false,
            keymap,
            commands,
            retriever: None,
            indexer: None,
            indexing: None,
            index: None,
            sampling: SamplingParams {
                temperature: 0.7,
                top_p: 0.9,
                ..SamplingParams::default()
            },
            max_new_tokens: 512,
            answers_dir: crate::paths::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("answers"),
        }
    }

    pub fn on_event(&mut self, ev: AppEvent) {
        match ev {
            AppEvent::Term(t) => self.on_term(t),
            AppEvent::Engine(e) => self.on_engine(e),
            AppEvent::Telemetry(s) => self.telemetry.on_snapshot(*s),
            AppEvent::Download(p) => match self.downloads.iter_mut().find(|d| d.file == p.file) {
                Some(d) => *d = p,
                None => self.downloads.push(p),
            },
            AppEvent::Model(m) => self.on_model(m),
            AppEvent::Check(r) => self.check.done(*r),
            AppEvent::Bench(ev) => match *ev {
                crate::bench::BenchEvent::Pipeline(e) => self.on_pipeline(e),
                ev => self.bench.on_event(ev),
            },
            AppEvent::BenchDone(r) => self.bench.finish(r),
            AppEvent::Server(e) => self.server.get_or_insert_with(Default::default).on_event(e),
            AppEvent::Log(line) => {
                if self.log.len() == 500 {
                    self.log.pop_front();
                }
                self.log.push_back(line);
            }
            AppEvent::Retrieved { tag, result } => self.on_retrieved(tag, result),
            AppEvent::Indexing { name, progress } => self.on_indexing(name, progress),
            AppEvent::Tick => self.on_tick(),
        }
    }

    fn on_tick(&mut self) {
        if let Some(seg) = &self.segment {
            let stats = seg.stats();
            let now = Instant::now();
            let view = self.ring.get_or_insert_with(RingView::default);
            if let Some(at) = view.at {
                let dt = (now - at).as_secs_f64().max(1e-6);
                for (i, s) in stats.iter().enumerate() {
                    let moved = s.bytes.saturating_sub(view.stats[i].bytes) as f64;
                    view.bytes_per_s[i] = moved / dt;
                }
            }
            view.stats = stats;
            view.segment = seg.name().to_string();
            view.at = Some(now);
        }
        if let (Some(since), true) = (self.speed.live_since, self.active.is_some()) {
            let t = since.elapsed().as_secs_f64();
            if t > 0.0 && self.speed.live_tokens > 1 {
                self.speed.live_tok_s = (self.speed.live_tokens - 1) as f64 / t;
            }
        }
    }

    fn on_term(&mut self, ev: TermEvent) {
        match ev {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => self.on_key(k),
            TermEvent::Mouse(m) => match m.kind {
                MouseEventKind::ScrollUp => self.scroll += 3,
                MouseEventKind::ScrollDown => self.scroll = self.scroll.saturating_sub(3),
                _ => {}
            },
            TermEvent::Paste(s) => self.input.push_str(&s),
            _ => {}
        }
    }

    fn on_model(&mut self, m: ModelOutcome) {
        self.downloads.clear();
        for n in m.notes {
            self.info(n);
        }
        match m.result {
            Ok(label) => {
                self.model_label = label;
                if m.demo {
                    self.info(format!(
                        "This is the demo model: random weights, so its answers are noise. For real answers set model.source to a Hugging Face id (the default, {}, is fetched and baked on first run where the Hub is reachable) or to a model directory.",
                        crate::config::DEFAULT_MODEL
                    ));
                }
            }
            Err(why) => {
                self.model_label = "none".into();
                self.failure = Some(why);
                self.state = ExecState::Failed;
            }
        }
    }

    /// How a retrieval runs (a thread that sends `AppEvent::Retrieved`);
    /// set by the terminal front end.
    pub fn set_retriever(&mut self, f: Retriever) {
        self.retriever = Some(f);
    }

    /// How `/index add` indexes (on the embedding thread); set by the
    /// terminal front end.
    pub fn set_indexer(&mut self, f: Indexer) {
        self.indexer = Some(f);
    }

    /// How the check screen starts a check (a thread that sends
    /// `AppEvent::Check`); set by the terminal front end.
    pub fn set_check_runner(&mut self, f: Box<dyn FnMut() + Send>) {
        self.check.set_runner(f);
    }

    /// Show the check screen, running the check if none is there yet.
    pub fn open_check(&mut self) {
        self.screen = Screen::Check;
        self.check.ensure();
    }

    fn on_check_key(&mut self, k: KeyEvent) {
        match self.keymap.action(Context::Check, &k) {
            Some(Action::Quit) => self.quit = true,
            Some(Action::Hardware | Action::Back) => {
                if self.check.only {
                    self.quit = true;
                } else {
                    self.screen = Screen::Chat;
                }
            }
            Some(Action::Rerun) => self.check.rerun(),
            Some(Action::SelectUp | Action::ScrollUp) => self.check.select_up(),
            Some(Action::SelectDown | Action::ScrollDown) => self.check.select_down(),
            _ => {}
        }
    }

    fn on_key(&mut self, k: KeyEvent) {
        if self.screen == Screen::Bench {
            // The bench screen has no input: quit and back stop the bench.
            let quit = matches!(
                self.keymap.action(Context::Bench, &k),
                Some(Action::Quit | Action::Back)
            );
            if quit {
                self.quit = true;
            }
            return;
        }
        if self.screen == Screen::Check {
            self.on_check_key(k);
            return;
        }
        if self.show_help {
            // Any key closes the help.
            self.show_help = false;
            return;
        }
        if k.code == KeyCode::Char('?') && self.input.is_empty() && !self.editing_system {
            self.show_help = true;
            return;
        }
        match self.keymap.action(Context::Chat, &k) {
            Some(a) => self.act(a),
            None => match k.code {
                KeyCode::Char(c)
                    if !k
                        .modifiers
                        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
                {
                    self.input.push(c)
                }
                KeyCode::Backspace => {
                    self.input.pop();
                }
                KeyCode::Tab => self.input.push_str("    "),
                _ => {}
            },
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            // The check and bench screens' actions (other contexts).
            Action::Back | Action::Rerun | Action::SelectUp | Action::SelectDown => {}
            Action::Quit => self.quit = true,
            Action::Help => self.show_help = true,
            Action::ToggleLog => self.show_log = !self.show_log,
            Action::Hardware => self.open_check(),
            Action::Newline => self.input.push('\n'),
            Action::Send if self.editing_system => {
                self.system_prompt = std::mem::take(&mut self.input);
                self.editing_system = false;
                self.notice = Some("system prompt saved".into());
            }
            Action::Send => self.send(),
            Action::Stop => {
                if self.editing_system {
                    self.editing_system = false;
                    self.input.clear();
                } else if let Some(Active {
                    stream: Some(s), ..
                }) = self.active
                {
                    (self.commands)(Command::Cancel { stream: s });
                } else if let Some(a) = self.active.filter(|a| a.retrieving) {
                    // Not started yet: drop the answer; its retrieval is ignored.
                    if let Some(m) = self.messages.get_mut(a.msg) {
                        m.note = Some("stopped".into());
                    }
                    self.active = None;
                }
            }
            Action::Regenerate => {
                if self.active.is_none()
                    && self
                        .messages
                        .last()
                        .is_some_and(|m| m.role == Role::Assistant)
                {
                    self.messages.pop();
                    self.start_answer();
                }
            }
            Action::Clear => {
                if self.active.is_none() {
                    self.messages.clear();
                    self.scroll = 0;
                }
            }
            Action::CopyAnswer => self.copy_answer(),
            Action::ScrollUp => self.scroll += 5,
            Action::ScrollDown => self.scroll = self.scroll.saturating_sub(5),
            Action::HistoryPrev => {
                if !self.history.is_empty() && !self.input.contains('\n') {
                    let i = match self.history_pos {
                        Some(0) => 0,
                        Some(i) => i - 1,
                        None => self.history.len() - 1,
                    };
                    self.history_pos = Some(i);
                    self.input = self.history[i].clone();
                }
            }
            Action::HistoryNext => {
                if let Some(i) = self.history_pos {
                    if i + 1 < self.history.len() {
                        self.history_pos = Some(i + 1);
                        self.input = self.history[i + 1].clone();
                    } else {
                        self.history_pos = None;
                        self.input.clear();
                    }
                }
            }
            Action::EditSystem => {
                if !self.editing_system {
                    self.editing_system = true;
                    self.input = self.system_prompt.clone();
                }
            }
        }
    }
}

fn push_bounded_f(q: &mut VecDeque<f64>, v: f64) {
    super::telemetry::push_bounded(q, v);
}
