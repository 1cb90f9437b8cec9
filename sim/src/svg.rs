//! A run's pictures as SVG: the day's schedule of every site across time zones (emissions,
//! returns made at central, the common return time, returns applied) and, under it, each
//! remote's staleness over the run — the timeline filled from central's journal, and the
//! drawing. The random runs and the scripted scenarios draw the same way.

use std::fmt::Write as _;

use outpost_replicator::journal::JournalRow;
use outpost_replicator::monitor::staleness_series;

use super::*;

impl World {
    /// Fills the report's timeline from the journal.
    pub(super) fn draw(&mut self, rows: &[JournalRow]) {
        let end = START_MS + u64::from(self.cfg.days) * DAY;
        let remotes: Vec<_> = self
            .remotes
            .iter()
            .map(|r| (r.store.site().id, r.code.clone(), r.zone))
            .collect();
        let Ok(paris) = "Europe/Paris".parse::<Zone>() else {
            return;
        };
        self.report.timeline = Timeline::from_journal(
            format!(
                "outpost sim — seed {} — {} remotes, {} days",
                self.cfg.seed, self.cfg.sites, self.cfg.days
            ),
            (START_MS, end),
            ("ASOC", paris, hhmm(23, 0)),
            &remotes,
            rows,
        );
    }
}

impl Timeline {
    /// The timeline of a run over `span_ms`, from central's journal `rows`: central
    /// (`code`, `zone`, common return time `return_at`) first, then the `remotes` (site id,
    /// code, zone) in order.
    pub(crate) fn from_journal(
        title: String,
        span_ms: (u64, u64),
        central: (&str, Zone, HhMm),
        remotes: &[(SiteId, String, Zone)],
        rows: &[JournalRow],
    ) -> Timeline {
        let (start, end) = span_ms;
        let (central_code, central_zone, return_at) = central;
        let mut t = Timeline {
            title,
            span_ms,
            ..Timeline::default()
        };
        t.lanes
            .push((central_code.to_owned(), central_zone.to_string()));
        let mut lane_of = HashMap::new();
        for (i, (site, code, zone)) in remotes.iter().enumerate() {
            lane_of.insert(*site, i + 1);
            t.lanes.push((code.clone(), zone.to_string()));
        }
        let mut day = central_zone.date_at(start);
        loop {
            let at = central_zone.instant(day, return_at);
            if at >= end {
                break;
            }
            if at >= start {
                t.common_returns_ms.push(at);
            }
            match day.succ_opt() {
                Some(d) => day = d,
                None => break,
            }
        }
        for r in rows {
            let Some(&lane) = lane_of.get(&r.site) else {
                continue;
            };
            let in_run = |ms: Option<u64>| ms.filter(|m| (start..end).contains(m));
            match r.kind {
                FlowKind::Emission => {
                    if let Some(at) = in_run(r.file_ready_ms) {
                        t.marks.push((lane, "emission", at));
                    }
                }
                FlowKind::Return => {
                    if let Some(at) = in_run(r.file_ready_ms) {
                        t.marks.push((0, "return", at));
                    }
                    if let Some(at) = in_run(r.exec_start_ms) {
                        t.marks.push((lane, "applied", at));
                    }
                }
                FlowKind::Bootstrap => {}
            }
        }
        // The same staleness as the monitor's (monitor::staleness_series), up to the last
        // instant of the run.
        let mut series = staleness_series(rows, start, end.saturating_sub(1).max(start));
        t.staleness_ms = vec![Vec::new(); t.lanes.len()];
        for (site, lane) in lane_of {
            if let (Some(points), Some(slot)) = (series.remove(&site), t.staleness_ms.get_mut(lane))
            {
                *slot = points;
            }
        }
        t
    }
}

/// Text for an SVG document: `&`, `<`, `>` and `"` escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The top of the staleness scale, in hours: a round number at least `max_h`.
fn scale_hours(max_h: f64) -> f64 {
    const STEPS: [f64; 11] = [
        1.0, 2.0, 3.0, 6.0, 12.0, 24.0, 48.0, 72.0, 96.0, 120.0, 168.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| *s >= max_h)
        .unwrap_or_else(|| (max_h / 168.0).ceil() * 168.0)
}

/// Draws a run's sync schedule and each remote's staleness as SVG (see [`timeline_svg`]).
pub fn svg(report: &Report) -> String {
    timeline_svg(&report.timeline)
}

/// Draws a timeline as SVG, on one UTC time axis. At the top, the schedule: one lane per site
/// (central first, each remote with its time zone), emissions, returns made at central, returns
/// applied at each remote, and the common return time. Under it, the staleness panel: one row
/// per remote, a polyline of how old the newest information from central it had was (hours,
/// the same scale in every row), as the monitor page draws it.
pub fn timeline_svg(t: &Timeline) -> String {
    let (start, end) = t.span_ms;
    let width = 1200.0_f64;
    let left = 190.0_f64;
    let right = width - 20.0;
    let lane_h = 22.0_f64;
    let row_h = 34.0_f64;
    let span = end.saturating_sub(start).max(1);
    let x =
        |ms: u64| left + (right - left) * (ms.saturating_sub(start).min(span) as f64 / span as f64);
    let top = 30.0_f64;
    let lanes_bottom = top + 10.0 + lane_h * t.lanes.len() as f64;
    let panel_top = lanes_bottom + 60.0;
    let remote_rows = t.lanes.len().saturating_sub(1);
    let rows_bottom = panel_top + 14.0 + row_h * remote_rows as f64;
    let height = rows_bottom + 34.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"13\">{} (UTC axis)</text>\n",
        esc(&t.title)
    );
    // Days: grid lines through both panels, dated under each.
    let days = (end.saturating_sub(start) / DAY).max(1);
    let label_every = days.div_ceil(20);
    // UTC midnights, from the first at or after the start.
    let mut day = start.div_ceil(DAY) * DAY;
    let mut n = 0u64;
    while day <= end {
        let _ = writeln!(
            out,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{lanes_bottom:.1}\" stroke=\"#ddd\"/>\n<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{rows_bottom:.1}\" stroke=\"#ddd\"/>",
            x(day),
            panel_top + 14.0
        );
        if n.is_multiple_of(label_every) && day < end {
            let date = i64::try_from(day)
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|d| d.format("%m-%d").to_string())
                .unwrap_or_default();
            for y in [lanes_bottom + 12.0, rows_bottom + 12.0] {
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{y:.1}\" fill=\"#666\" font-size=\"9\">{date}</text>",
                    x(day) + 2.0
                );
            }
        }
        day += DAY;
        n += 1;
    }
    // The schedule.
    let _ = writeln!(
        out,
        "<g class=\"schedule\"><title>the day's schedule of every site</title>"
    );
    for at in &t.common_returns_ms {
        let _ = writeln!(
            out,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{lanes_bottom:.1}\" stroke=\"#c33\" stroke-dasharray=\"3,3\"/>",
            x(*at)
        );
    }
    for (i, (code, zone)) in t.lanes.iter().enumerate() {
        let y = top + 10.0 + lane_h * i as f64;
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.1}\">{} {}</text>\n<line x1=\"{left}\" x2=\"{right:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#999\"/>",
            y + 4.0,
            esc(code),
            esc(zone)
        );
    }
    for (lane, kind, at) in &t.marks {
        let y = top + 10.0 + lane_h * *lane as f64;
        let (color, dy) = match *kind {
            "emission" => ("#2a6", -5.0),
            "return" => ("#c33", 0.0),
            _ => ("#36c", 5.0),
        };
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{kind}</title></circle>",
            x(*at),
            y + dy
        );
    }
    let _ = writeln!(
        out,
        "</g>\n<text x=\"10\" y=\"{:.1}\"><tspan fill=\"#2a6\">● emission</tspan>  <tspan fill=\"#c33\">● return made at central, - - common return time</tspan>  <tspan fill=\"#36c\">● return applied</tspan></text>",
        lanes_bottom + 30.0
    );
    // The staleness panel.
    let max_ms = t
        .staleness_ms
        .iter()
        .flatten()
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(0);
    let scale_h = scale_hours(max_ms as f64 / HOUR as f64);
    let _ = writeln!(
        out,
        "<g class=\"staleness\"><text x=\"10\" y=\"{:.1}\" font-size=\"12\">Staleness: how old the newest information from central each remote had (since central made the return it last applied), in hours — each row from 0 to {scale_h} h</text>",
        panel_top
    );
    for (k, (code, _)) in t.lanes.iter().skip(1).enumerate() {
        let y_top = panel_top + 14.0 + row_h * k as f64 + 4.0;
        let base = y_top + row_h - 10.0;
        let y = |ms: u64| base - (base - y_top) * ((ms as f64 / HOUR as f64) / scale_h).min(1.0);
        let points = t
            .staleness_ms
            .get(k + 1)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let max_site = points.iter().map(|(_, s)| *s).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.1}\">{}</text><text x=\"70\" y=\"{:.1}\" fill=\"#666\" font-size=\"9\">{}</text>",
            base - 6.0,
            esc(code),
            base - 6.0,
            if points.is_empty() {
                "nothing from central".to_owned()
            } else {
                format!("max {:.1} h", max_site as f64 / HOUR as f64)
            }
        );
        let _ = writeln!(
            out,
            "<text x=\"{0:.1}\" y=\"{1:.1}\" fill=\"#666\" font-size=\"8\" text-anchor=\"end\">{scale_h}h</text><text x=\"{0:.1}\" y=\"{base:.1}\" fill=\"#666\" font-size=\"8\" text-anchor=\"end\">0</text>\n<line x1=\"{left}\" x2=\"{right:.1}\" y1=\"{base:.1}\" y2=\"{base:.1}\" stroke=\"#999\"/>",
            left - 4.0,
            y_top + 6.0
        );
        if !points.is_empty() {
            let mut line = String::new();
            for (at, s) in points {
                let _ = write!(line, "{:.1},{:.1} ", x(*at), y(*s));
            }
            let _ = writeln!(
                out,
                "<polyline class=\"site-staleness\" data-site=\"{}\" fill=\"none\" stroke=\"#b5651d\" stroke-width=\"1.2\" points=\"{}\"><title>{} staleness</title></polyline>",
                esc(code),
                line.trim_end(),
                esc(code)
            );
        }
    }
    let _ = writeln!(
        out,
        "</g>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\" font-size=\"9\" text-anchor=\"end\">time (UTC)</text>\n</svg>",
        right,
        rows_bottom + 26.0
    );
    out
}
