//! A run's schedule drawn as SVG: the timeline filled from the journal, and the drawing.

use super::*;

impl World {
    /// Fills the report's timeline from the journal.
    pub(super) fn draw(&mut self, rows: &[outpost_replicator::journal::JournalRow]) {
        let end = START_MS + u64::from(self.cfg.days) * DAY;
        let mut t = Timeline {
            span_ms: (START_MS, end),
            ..Timeline::default()
        };
        t.lanes.push(("ASOC".into(), "Europe/Paris".into()));
        let mut lane_of = HashMap::new();
        for (i, r) in self.remotes.iter().enumerate() {
            lane_of.insert(r.store.site().id, i + 1);
            t.lanes.push((r.code.clone(), r.zone.to_string()));
        }
        if let Ok(paris) = "Europe/Paris".parse::<Zone>() {
            let mut day = paris.date_at(START_MS);
            loop {
                let at = paris.instant(day, hhmm(23, 0));
                if at >= end {
                    break;
                }
                t.common_returns_ms.push(at);
                match day.succ_opt() {
                    Some(d) => day = d,
                    None => break,
                }
            }
        }
        for r in rows {
            let Some(&lane) = lane_of.get(&r.site) else {
                continue;
            };
            let in_run = |ms: Option<u64>| ms.filter(|m| *m < end);
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
        self.report.timeline = t;
    }
}

/// Draws a run's sync schedule as SVG: one lane per site (central first, each remote with its
/// time zone), emissions, returns made at central, returns applied at each remote, and the
/// common return time.
pub fn svg(report: &Report) -> String {
    let t = &report.timeline;
    let (start, end) = t.span_ms;
    let width = 1200.0_f64;
    let left = 190.0_f64;
    let lane_h = 22.0_f64;
    let height = 40.0 + lane_h * t.lanes.len() as f64 + 30.0;
    let span = (end.saturating_sub(start)).max(1) as f64;
    let x = |ms: u64| left + (width - left - 20.0) * (ms.saturating_sub(start) as f64 / span);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"13\">outpost sim — seed {} — {} remotes, {} days (UTC axis)</text>\n",
        report.seed, report.sites, report.days
    );
    let mut day = start;
    while day <= end {
        out += &format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"30\" y2=\"{1:.1}\" stroke=\"#ddd\"/>\n",
            x(day),
            height - 20.0
        );
        day += DAY;
    }
    for at in &t.common_returns_ms {
        out += &format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"30\" y2=\"{1:.1}\" stroke=\"#c33\" stroke-dasharray=\"3,3\"/>\n",
            x(*at),
            height - 20.0
        );
    }
    for (i, (code, zone)) in t.lanes.iter().enumerate() {
        let y = 40.0 + lane_h * i as f64;
        out += &format!(
            "<text x=\"10\" y=\"{:.1}\">{code} {zone}</text>\n<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\n",
            y + 4.0,
            width - 20.0,
            y,
            y
        );
    }
    for (lane, kind, at) in &t.marks {
        let y = 40.0 + lane_h * *lane as f64;
        let (color, dy) = match *kind {
            "emission" => ("#2a6", -5.0),
            "return" => ("#c33", 0.0),
            _ => ("#36c", 5.0),
        };
        out += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{kind}</title></circle>\n",
            x(*at),
            y + dy
        );
    }
    out += &format!(
        "<text x=\"10\" y=\"{:.1}\"><tspan fill=\"#2a6\">● emission</tspan>  <tspan fill=\"#c33\">● return made at central, - - common return time</tspan>  <tspan fill=\"#36c\">● return applied</tspan></text>\n</svg>\n",
        height - 6.0
    );
    out
}
