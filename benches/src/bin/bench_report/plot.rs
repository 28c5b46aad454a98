//! The SVG plot of `bench_report --svg`: latency against group size, log-log, one panel per
//! operation, one line per backend, filled-tree points as open circles, targets dashed.

use std::fmt::Write as _;

use super::{MlsRow, MlsTable, OPS, PEER};

impl MlsTable {
    /// Log-log plot of latency against sparse group size, one panel per operation.
    pub(super) fn svg(&self) -> String {
        const PANEL_W: f64 = 300.0;
        const PANEL_H: f64 = 220.0;
        const COLS: usize = 3;
        const PALETTE: [&str; 6] = [
            "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
        ];
        let mut series: Vec<String> = self.backends.clone();
        series.push(PEER.to_owned());
        let ops: Vec<(&str, Option<f64>)> = OPS
            .iter()
            .copied()
            .filter(|(f, _)| {
                self.rows
                    .iter()
                    .any(|r| r.function == *f && r.size.is_sparse() && r.size.members > 1)
            })
            .collect();
        let rows_n = ops.len().div_ceil(COLS).max(1);
        let (width, height) = (PANEL_W * COLS as f64, PANEL_H * rows_n as f64 + 40.0);
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"10\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        for (i, name) in series.iter().enumerate() {
            let color = PALETTE.get(i % PALETTE.len()).copied().unwrap_or("black");
            let x = 10.0 + 90.0 * i as f64;
            let _ = writeln!(
                out,
                "<line x1=\"{x}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"{color}\" \
                 stroke-width=\"2\"/><text x=\"{tx}\" y=\"{ty}\">{name}</text>",
                y = height - 15.0,
                x2 = x + 20.0,
                tx = x + 24.0,
                ty = height - 11.0
            );
        }
        let _ = writeln!(
            out,
            "<circle cx=\"{x}\" cy=\"{y}\" r=\"4\" fill=\"white\" stroke=\"black\"/>\
             <text x=\"{tx}\" y=\"{ty}\">filled tree (1000-full)</text>\
             <text x=\"{lx}\" y=\"{ty}\">dashed: seed target; x: members (log); y: median (log)</text>",
            x = 10.0 + 90.0 * series.len() as f64 + 5.0,
            y = height - 15.0,
            tx = 10.0 + 90.0 * series.len() as f64 + 14.0,
            ty = height - 11.0,
            lx = 10.0 + 90.0 * series.len() as f64 + 150.0,
        );
        for (index, (function, target)) in ops.iter().enumerate() {
            let (ox, oy) = (
                (index % COLS) as f64 * PANEL_W,
                (index / COLS) as f64 * PANEL_H,
            );
            let points: Vec<&MlsRow> = self
                .rows
                .iter()
                .filter(|r| r.function == *function && r.size.is_sparse() && r.size.members > 1)
                .collect();
            let xs: Vec<f64> = points
                .iter()
                .map(|r| (r.size.members as f64).log10())
                .collect();
            let mut ys: Vec<f64> = points
                .iter()
                .flat_map(|r| r.medians.values().map(|v| v.log10()))
                .collect();
            // Filled-tree rows (`1000-full`) are drawn as open circles at their size.
            let filled: Vec<&MlsRow> = self
                .rows
                .iter()
                .filter(|r| r.function == *function && !r.size.is_sparse())
                .collect();
            ys.extend(
                filled
                    .iter()
                    .flat_map(|r| r.medians.values().map(|v| v.log10())),
            );
            if let Some(t) = target {
                ys.push(t.log10());
            }
            let (x0, x1) = bounds(&xs);
            let (y0, y1) = bounds(&ys);
            let (y0, y1) = (y0.floor(), y1.ceil().max(y0.floor() + 1.0));
            let (left, right, top, bottom) = (
                ox + 50.0,
                ox + PANEL_W - 15.0,
                oy + 25.0,
                oy + PANEL_H - 30.0,
            );
            let px = |x: f64| left + (x - x0) / (x1 - x0).max(1e-9) * (right - left);
            let py = |y: f64| bottom - (y - y0) / (y1 - y0).max(1e-9) * (bottom - top);
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{function}</text>\n\
                 <rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
                left,
                oy + 15.0,
                right - left,
                bottom - top
            );
            let mut decade = y0;
            while decade <= y1 {
                let y = py(decade);
                let _ = writeln!(
                    out,
                    "<line x1=\"{left}\" y1=\"{y}\" x2=\"{right}\" y2=\"{y}\" stroke=\"#eee\"/>\
                     <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                    left - 3.0,
                    y + 3.0,
                    decade_label(decade)
                );
                decade += 1.0;
            }
            for (row, x) in points.iter().zip(&xs) {
                let _ = writeln!(
                    out,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                    px(*x),
                    bottom + 12.0,
                    row.size.members
                );
            }
            if let Some(t) = target {
                let y = py(t.log10());
                let _ = writeln!(
                    out,
                    "<line x1=\"{left}\" y1=\"{y}\" x2=\"{right}\" y2=\"{y}\" stroke=\"black\" \
                     stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">target</text>",
                    right - 2.0,
                    y - 3.0
                );
            }
            for (i, name) in series.iter().enumerate() {
                let color = PALETTE.get(i % PALETTE.len()).copied().unwrap_or("black");
                let coords: Vec<String> = points
                    .iter()
                    .zip(&xs)
                    .filter_map(|(r, x)| {
                        r.medians
                            .get(name.as_str())
                            .map(|v| format!("{:.1},{:.1}", px(*x), py(v.log10())))
                    })
                    .collect();
                if coords.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
                    coords.join(" ")
                );
                for c in &coords {
                    let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"2.5\" fill=\"{color}\"/>"
                    );
                }
                for row in &filled {
                    if let Some(v) = row.medians.get(name.as_str()) {
                        let _ = writeln!(
                            out,
                            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"white\" \
                             stroke=\"{color}\" stroke-width=\"1.5\"/>",
                            px((row.size.members as f64).log10()),
                            py(v.log10())
                        );
                    }
                }
            }
        }
        out.push_str("</svg>\n");
        out
    }
}

fn bounds(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Axis label of the power of ten `decade` (in nanoseconds): `100 µs`, `10 ms`, `1 s`.
fn decade_label(decade: f64) -> String {
    let nanos = 10f64.powf(decade.round());
    if nanos >= 1e9 {
        format!("{:.0} s", nanos / 1e9)
    } else if nanos >= 1e6 {
        format!("{:.0} ms", nanos / 1e6)
    } else if nanos >= 1e3 {
        format!("{:.0} µs", nanos / 1e3)
    } else {
        format!("{nanos:.0} ns")
    }
}
