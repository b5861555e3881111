//! The interactive `top`: two tables (processes, peers) redrawn every
//! interval; `s` cycles the sort key, `q`/Esc/Ctrl-C quits. The terminal
//! is put back by `TerminalGuard`'s `Drop`, so an error or a panic
//! restores it too.

use std::{
    io::{self, Stdout},
    time::Duration,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row as TableRow, Table},
};
use tokio::sync::mpsc;

use super::{
    plain::{HEADER, cells},
    view::{Row, Snapshot, SortKey},
};
use crate::{
    aggregate::Aggregate,
    cli::TopArgs,
    counts::Counts,
    event::TcpEvent,
    host::cgroups::Cgroups,
    session::{Next, Session},
};

/// Raw mode and the alternate screen for as long as it lives.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        // A panic message printed on the alternate screen in raw mode is
        // lost; put the terminal back first, then let the old hook print.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore(&mut io::stdout());
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        // From here on, Drop undoes whatever was done.
        let mut guard = TerminalGuard {
            terminal: Terminal::new(CrosstermBackend::new(io::stdout()))?,
        };
        execute!(
            guard.terminal.backend_mut(),
            EnterAlternateScreen,
            cursor::Hide
        )?;
        guard.terminal.clear()?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore(self.terminal.backend_mut());
    }
}

/// Leaves the alternate screen, shows the cursor, ends raw mode. Safe to
/// do twice.
fn restore(out: &mut impl io::Write) {
    let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Quit,
    Sort,
}

/// Keys from a thread of its own (crossterm's reads block); it ends when
/// the receiver is gone.
fn keys() -> mpsc::UnboundedReceiver<Key> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !tx.is_closed() {
            if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                continue;
            }
            let Ok(Event::Key(key)) = event::read() else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            let key = match key.code {
                KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                KeyCode::Char('s') => Key::Sort,
                _ => continue,
            };
            if tx.send(key).is_err() {
                break;
            }
        }
    });
    rx
}

/// Shows the view until `q`, Esc, Ctrl-C or the stop signal; puts the
/// terminal back, then ends the session and returns its exact counts.
pub async fn run(
    mut session: Session,
    mut agg: Aggregate,
    args: &TopArgs,
    cgroups: &mut Cgroups,
) -> anyhow::Result<Counts> {
    let mut guard = TerminalGuard::enter()?;
    let mut keys = keys();
    let mut sort = SortKey::default();
    let mut snap = Snapshot::default();
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            key = keys.recv() => match key {
                Some(Key::Sort) => {
                    sort = sort.next();
                    draw(&mut guard, &snap, sort)?;
                }
                Some(Key::Quit) | None => break,
            },
            _ = tick.tick() => {
                agg.add_opens(&session.take_opens()?);
                snap = Snapshot::take(&agg, &snap, session.elapsed(), session.counts()?);
                snap.name_pods(cgroups);
                draw(&mut guard, &snap, sort)?;
            }
            next = session.next(&mut batch) => match next? {
                Next::Stopped(_) => break,
                Next::Events => agg.add_batch(&mut batch),
            },
        }
    }
    drop(guard);
    let (counts, opens) = session
        .finish_counting(&mut batch, |batch| {
            agg.add_batch(batch);
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    agg.add_opens(&opens);
    Ok(counts)
}

fn draw(guard: &mut TerminalGuard, snap: &Snapshot, sort: SortKey) -> io::Result<()> {
    let mut processes = snap.processes.clone();
    let mut peers = snap.peers.clone();
    sort.sort(&mut processes);
    sort.sort(&mut peers);
    guard.terminal.draw(|frame| {
        let [head, top, bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Percentage(50),
            Constraint::Percentage(50),
        ])
        .areas(frame.area());
        frame.render_widget(
            Paragraph::new(Line::from(format!(
                "tcptrace top  {:.0} s  {}  sort: {}  (s: sort, q: quit)",
                snap.elapsed_s,
                snap.counts.human(),
                sort.name()
            ))),
            head,
        );
        frame.render_widget(table("processes", &processes), top);
        frame.render_widget(table("peers", &peers), bottom);
    })?;
    Ok(())
}

fn table<'a>(title: &'a str, rows: &[Row]) -> Table<'a> {
    let header = TableRow::new(
        std::iter::once("NAME".to_string()).chain(HEADER.iter().map(|h| h.to_string())),
    )
    .style(Style::default().add_modifier(Modifier::BOLD));
    let body = rows
        .iter()
        .map(|r| TableRow::new(std::iter::once(r.display_name()).chain(cells(r))));
    let mut widths = vec![Constraint::Min(24)];
    widths.extend(HEADER.iter().map(|_| Constraint::Length(8)));
    Table::new(body, widths)
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(title))
}
