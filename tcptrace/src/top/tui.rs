//! The interactive `top`: rates over time for the whole host and the
//! selected row, then two tables (processes, peers) redrawn every
//! interval. Up/Down select, Tab switches tables, Enter shows the row's
//! detail and Esc goes back, `s` cycles the sort key, `q`/Ctrl-C quits.
//! The terminal is put back by `TerminalGuard`'s `Drop`, so an error or
//! a panic restores it too.

use std::{
    collections::{HashMap, VecDeque},
    io::{self, Stdout},
    time::Duration,
};

use ratatui::{
    Frame, Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Constraint, Direction, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{
        Bar, BarChart, BarGroup, Block, Borders, HighlightSpacing, Paragraph, Row as TableRow,
        Sparkline, Table, TableState, Wrap,
    },
};
use tokio::sync::mpsc;

use super::detail::detail;
use crate::{
    aggregate::Aggregate,
    cli::TopArgs,
    counts::Counts,
    event::TcpEvent,
    host::cgroups::Cgroups,
    kernel::clock::WallClock,
    ranking::{
        Row, Snapshot, SortKey,
        plain::{HEADER, cells, widths},
    },
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
    Up,
    Down,
    Switch,
    Open,
    Back,
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
                KeyCode::Char('q') => Key::Quit,
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                KeyCode::Char('s') => Key::Sort,
                KeyCode::Up | KeyCode::Char('k') => Key::Up,
                KeyCode::Down | KeyCode::Char('j') => Key::Down,
                KeyCode::Tab | KeyCode::BackTab => Key::Switch,
                KeyCode::Enter => Key::Open,
                KeyCode::Esc | KeyCode::Backspace => Key::Back,
                _ => continue,
            };
            if tx.send(key).is_err() {
                break;
            }
        }
    });
    rx
}

/// Rate points kept per row and for the host (3 minutes at 1 s).
const HISTORY: usize = 180;

/// Resets, retransmits and failures per second, oldest first.
type Rates = VecDeque<[f64; 3]>;

fn rates_of(row: &Row) -> [f64; 3] {
    [row.resets_per_s, row.retransmits_per_s, row.failures_per_s]
}

/// Rates over time of every row on screen and of the host.
#[derive(Default)]
struct History {
    host: Rates,
    rows: HashMap<String, Rates>,
}

impl History {
    fn record(&mut self, snap: &Snapshot) {
        fn push(rates: &mut Rates, point: [f64; 3]) {
            if rates.len() >= HISTORY {
                rates.pop_front();
            }
            rates.push_back(point);
        }
        push(&mut self.host, rates_of(&snap.host));
        let rows: Vec<&Row> = snap.processes.iter().chain(&snap.peers).collect();
        // Rows gone from the tables take their history with them.
        self.rows
            .retain(|label, _| rows.iter().any(|r| r.label == *label));
        for row in rows {
            push(
                self.rows.entry(row.label.clone()).or_default(),
                rates_of(row),
            );
        }
    }
}

/// Which table the selection is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pane {
    Processes,
    Peers,
}

/// What the screen shows.
struct Ui {
    sort: SortKey,
    rows: usize,
    pane: Pane,
    /// The selected row of each table, by label: the selection follows
    /// its row when the ranking changes.
    selected: [Option<String>; 2],
    detail: bool,
    history: History,
    clock: WallClock,
}

impl Ui {
    /// Both tables as shown: sorted and cut to `--rows`.
    fn tables(&self, snap: &Snapshot) -> [Vec<Row>; 2] {
        [&snap.processes, &snap.peers].map(|rows| {
            let mut rows = rows.clone();
            self.sort.sort(&mut rows);
            rows.truncate(self.rows);
            rows
        })
    }

    /// Index of the selected row in `rows` of `pane` (the first if the
    /// selection is gone).
    fn index(&self, pane: Pane, rows: &[Row]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        let label = self.selected[pane as usize].as_deref();
        Some(
            rows.iter()
                .position(|r| Some(r.label.as_str()) == label)
                .unwrap_or(0),
        )
    }

    fn key(&mut self, key: Key, snap: &Snapshot) {
        let tables = self.tables(snap);
        let rows = &tables[self.pane as usize];
        let at = self.index(self.pane, rows);
        match key {
            Key::Sort => self.sort = self.sort.next(),
            Key::Switch if !self.detail => {
                self.pane = match self.pane {
                    Pane::Processes => Pane::Peers,
                    Pane::Peers => Pane::Processes,
                };
            }
            Key::Up | Key::Down if !self.detail => {
                if let Some(at) = at {
                    let to = if key == Key::Up {
                        at.saturating_sub(1)
                    } else {
                        (at + 1).min(rows.len() - 1)
                    };
                    self.selected[self.pane as usize] = Some(rows[to].label.clone());
                }
            }
            Key::Open => {
                if let Some(at) = at {
                    self.selected[self.pane as usize] = Some(rows[at].label.clone());
                    self.detail = true;
                }
            }
            Key::Back => self.detail = false,
            _ => {}
        }
    }
}

/// Shows the view until `q`, Ctrl-C or the stop signal; puts the
/// terminal back, then ends the session and returns its exact counts.
pub async fn run(
    mut session: Session,
    mut agg: Aggregate,
    args: &TopArgs,
    cgroups: &mut Cgroups,
) -> anyhow::Result<Counts> {
    agg.keep_recent();
    let mut guard = TerminalGuard::enter()?;
    let mut keys = keys();
    let mut ui = Ui {
        sort: SortKey::default(),
        rows: args.rows.into(),
        pane: Pane::Processes,
        selected: [None, None],
        detail: false,
        history: History::default(),
        clock: WallClock::now(),
    };
    let mut snap = Snapshot::default();
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            key = keys.recv() => match key {
                Some(Key::Quit) | None => break,
                Some(key) => {
                    ui.key(key, &snap);
                    guard.terminal.draw(|frame| draw(frame, &snap, &agg, &ui))?;
                }
            },
            _ = tick.tick() => {
                agg.add_opens(&session.take_opens()?);
                snap = Snapshot::take(&agg, &snap, session.elapsed(), session.counts()?);
                snap.name_pods(cgroups);
                ui.history.record(&snap);
                guard.terminal.draw(|frame| draw(frame, &snap, &agg, &ui))?;
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

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn draw(frame: &mut Frame, snap: &Snapshot, agg: &Aggregate, ui: &Ui) {
    let tables = ui.tables(snap);
    let active = &tables[ui.pane as usize];
    let selected = ui.index(ui.pane, active).map(|i| &active[i]);
    let [head, strips, body, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            "tcptrace top  {:.0} s  {}  sort: {}",
            snap.elapsed_s,
            snap.counts.human(),
            ui.sort.name()
        ))),
        head,
    );
    let [host, row] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(strips);
    frame.render_widget(strip("host, per second", &ui.history.host), host);
    let none = Rates::new();
    match selected {
        Some(r) => frame.render_widget(
            strip(
                &format!("{}, per second", r.name()),
                ui.history.rows.get(&r.label).unwrap_or(&none),
            ),
            row,
        ),
        None => frame.render_widget(strip("no row selected", &none), row),
    }
    let keys = if ui.detail {
        "Esc: back  s: sort  q: quit"
    } else {
        "Up/Down: select  Tab: processes/peers  Enter: detail  s: sort  q: quit"
    };
    frame.render_widget(
        Paragraph::new(Line::from(keys)).style(Style::default().add_modifier(Modifier::DIM)),
        help,
    );
    match selected.filter(|_| ui.detail) {
        Some(r) => draw_detail(frame, body, agg, r, ui),
        None => {
            let [top, bottom] =
                Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(body);
            for (pane, title, area) in [
                (Pane::Processes, "processes", top),
                (Pane::Peers, "peers", bottom),
            ] {
                let rows = &tables[pane as usize];
                let mut state = TableState::default();
                if pane == ui.pane {
                    state.select(ui.index(pane, rows));
                }
                frame.render_stateful_widget(table(title, rows), area, &mut state);
            }
        }
    }
}

/// Resets, retransmits and failures per second over time, one line each
/// with its latest and highest rate.
fn strip(title: &str, rates: &Rates) -> impl ratatui::widgets::Widget {
    StripWidget {
        title: title.to_string(),
        rates: rates.clone(),
    }
}

struct StripWidget {
    title: String,
    rates: Rates,
}

impl ratatui::widgets::Widget for StripWidget {
    fn render(self, area: Rect, buf: &mut ratatui::buffer::Buffer) {
        let block = Block::default().borders(Borders::TOP).title(self.title);
        let inner = block.inner(area);
        block.render(area, buf);
        let lines = Layout::vertical([Constraint::Length(1); 3]).split(inner);
        for (i, name) in ["RST/s", "retrans/s", "failed/s"].into_iter().enumerate() {
            let [label, spark] =
                Layout::horizontal([Constraint::Length(28), Constraint::Fill(1)]).areas(lines[i]);
            let now = self.rates.back().map_or(0.0, |r| r[i]);
            let max = self.rates.iter().map(|r| r[i]).fold(0.0, f64::max);
            Paragraph::new(format!("{name:<9} {now:>6.1} max {max:>6.1}")).render(label, buf);
            // The newest points that fit, scaled to tenths so low rates show.
            let width = usize::from(spark.width);
            let data: Vec<u64> = self
                .rates
                .iter()
                .skip(self.rates.len().saturating_sub(width))
                .map(|r| (r[i] * 10.0).ceil() as u64)
                .collect();
            Sparkline::default().data(&data).render(spark, buf);
        }
    }
}

fn table<'a>(title: &'a str, rows: &[Row]) -> Table<'a> {
    let (name, columns) = widths("NAME", rows);
    let header = TableRow::new(
        std::iter::once("NAME".to_string()).chain(HEADER.iter().map(|h| h.to_string())),
    )
    .style(bold());
    let body = rows.iter().map(|r| {
        let label: String = r.name().chars().take(name).collect();
        TableRow::new(
            std::iter::once(label).chain(
                cells(r)
                    .into_iter()
                    .zip(columns)
                    .map(|(c, w)| format!("{c:>w$}")),
            ),
        )
    });
    let mut widths = vec![Constraint::Length(name as u16)];
    widths.extend(columns.iter().map(|w| Constraint::Length(*w as u16)));
    Table::new(body, widths)
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always)
}

fn draw_detail(frame: &mut Frame, area: Rect, agg: &Aggregate, row: &Row, ui: &Ui) {
    let d = detail(agg, row, &ui.clock);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
    let mut lines = Vec::new();
    for (title, items) in &d.sections {
        lines.push(Line::from(Span::styled(format!("{title}:"), bold())));
        lines.extend(items.iter().map(|i| Line::from(format!("  {i}"))));
    }
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::TOP)
                .title(format!("detail: {}", row.name())),
        ),
        left,
    );
    let idle_height = (d.idle.len() as u16 + 1).clamp(2, 12);
    let [idle, last] =
        Layout::vertical([Constraint::Length(idle_height), Constraint::Fill(1)]).areas(right);
    let bars: Vec<Bar> = d
        .idle
        .iter()
        .map(|(label, n)| {
            Bar::default()
                .value(*n)
                .label(Line::from(format!("{label:>7}")))
                .text_value(n.to_string())
        })
        .collect();
    frame.render_widget(
        BarChart::default()
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title(d.idle_title.clone()),
            )
            .direction(Direction::Horizontal)
            .bar_width(1)
            .bar_gap(0)
            .data(BarGroup::default().bars(&bars)),
        idle,
    );
    let last_lines: Vec<Line> = if d.last.is_empty() {
        vec![Line::from("none kept for this row")]
    } else {
        d.last
            .iter()
            .rev()
            .map(|l| Line::from(l.as_str()))
            .collect()
    };
    frame.render_widget(
        Paragraph::new(last_lines).block(
            Block::default()
                .borders(Borders::TOP)
                .title("last incidents, newest first"),
        ),
        last,
    );
}
