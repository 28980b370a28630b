//! The workbench's server pane: where the API listens, what runs and waits
//! (read live from the bridge), each client's speed, and the request log.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::serve::bridge::Bridge;
use crate::serve::{Notice, RequestLine};

/// Request lines kept for the pane.
const LOG_LINES: usize = 200;

/// What the server thread tells the app.
#[derive(Debug)]
pub enum ServerEvent {
    /// The server shares the engine through this bridge.
    Attached(Arc<Bridge>),
    Notice(Notice),
    /// It could not start (address in use, unreadable key file).
    Failed(String),
}

/// One client's latest figures (by `user` when it sends one, else by address).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Client {
    pub requests: u64,
    pub tokens: u64,
    /// Decode speed of its last answer.
    pub tok_s: f64,
}

#[derive(Debug, Default)]
pub struct ServerState {
    pub addr: Option<SocketAddr>,
    pub bridge: Option<Arc<Bridge>>,
    pub done: u64,
    pub clients: BTreeMap<String, Client>,
    pub log: VecDeque<RequestLine>,
    pub error: Option<String>,
}

impl ServerState {
    pub fn on_event(&mut self, e: ServerEvent) {
        match e {
            ServerEvent::Attached(b) => self.bridge = Some(b),
            ServerEvent::Failed(m) => self.error = Some(m),
            ServerEvent::Notice(n) => match n {
                Notice::Listening(a) => self.addr = Some(a),
                Notice::Request(line) => self.request(line),
                Notice::Ready(_)
                | Notice::Draining(_)
                | Notice::Lost(_)
                | Notice::Restarting(_) => {}
            },
        }
    }

    fn request(&mut self, line: RequestLine) {
        if !line.finish.is_empty() {
            self.done += 1;
            let who = line
                .user
                .clone()
                .unwrap_or_else(|| line.peer.ip().to_string());
            let c = self.clients.entry(who).or_default();
            c.requests += 1;
            c.tokens += line.completion_tokens as u64;
            if line.decode_tok_s > 0.0 {
                c.tok_s = line.decode_tok_s;
            }
        }
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// Requests running and waiting now.
    pub fn load(&self) -> (usize, usize) {
        self.bridge.as_ref().map(|b| b.load()).unwrap_or((0, 0))
    }
}
