//! The server pane (`--serve`): the API's address, requests running and
//! waiting, each client's speed, and the last requests.
//!
//! ```text
//! ┌ server ───────────────────────────┐
//! │ http://127.0.0.1:8080/v1          │
//! │ 2 running · 1 queued · 14 done    │
//! │ 127.0.0.1  61.3 tok/s · 12 req    │
//! │ 200 /v1/chat/completions 812ms 40t│
//! └───────────────────────────────────┘
//! ```

use super::*;

pub(super) fn server_pane(f: &mut Frame, app: &App, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(" server ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(s) = &app.server else {
        return;
    };
    let dim = Style::default().fg(Color::DarkGray);
    let mut lines = Vec::new();
    if let Some(e) = &s.error {
        lines.push(Line::styled(
            format!("not serving: {e}"),
            Style::default().fg(Color::Red),
        ));
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
        return;
    }
    lines.push(match s.addr {
        Some(a) => Line::raw(format!("http://{a}/v1")),
        None => Line::styled("starting…", dim),
    });
    let (running, queued) = s.load();
    lines.push(Line::raw(format!(
        "{running} running · {queued} queued · {} done",
        s.done
    )));
    let rows = inner.height.saturating_sub(2) as usize;
    let clients = s.clients.len().min(rows / 2);
    for (who, c) in s.clients.iter().take(clients) {
        lines.push(Line::raw(format!(
            "{who}  {:.1} tok/s · {} req",
            c.tok_s, c.requests
        )));
    }
    let left = rows.saturating_sub(clients);
    let start = s.log.len().saturating_sub(left);
    for l in s.log.iter().skip(start) {
        let tokens = if l.finish.is_empty() {
            String::new()
        } else {
            format!(" {}t {}", l.completion_tokens, l.finish)
        };
        lines.push(Line::styled(
            format!("{} {} {:.0}ms{tokens}", l.status, l.path, l.ms),
            dim,
        ));
    }
    f.render_widget(Paragraph::new(lines), inner);
}
