//! `--plot FILE.svg`: median µs per run against n, one polyline per
//! contender, drawn by hand (no plotting crate).

use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The SVG document for `series`: (contender, points of (n, median µs)),
/// over the x range of `fds`.
pub(crate) fn plot(series: &[(String, Vec<(f64, f64)>)], fds: &[usize]) -> String {
    let xmin = fds.iter().copied().min().unwrap_or(1).max(1) as f64;
    let xmax = fds.iter().copied().max().unwrap_or(1).max(1) as f64;
    let log = xmax / xmin >= 10.0;
    let fx = |x: f64| -> f64 {
        let t = if xmax == xmin {
            0.5
        } else if log {
            (x.ln() - xmin.ln()) / (xmax.ln() - xmin.ln())
        } else {
            (x - xmin) / (xmax - xmin)
        };
        LEFT + t * (W - LEFT - RIGHT)
    };
    // The y axis ends on a round tick: 1, 2 or 5 times a power of ten per step.
    let top = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(0.0f64, f64::max).max(1.0) * 1.05;
    let raw = top / 5.0;
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * pow).find(|s| *s >= raw).unwrap_or(10.0 * pow);
    let ticks = (top / step).ceil().max(1.0) as usize;
    let ymax = step * ticks as f64;
    let fy = |y: f64| -> f64 { H - BOTTOM - y / ymax * (H - TOP - BOTTOM) };

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">anypoll bench poller: median µs per run</text>",
        (LEFT + W - RIGHT) / 2.0
    );
    // Axes.
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let _ = writeln!(s, "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/>");
    let _ = writeln!(s, "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>");
    for &n in fds {
        let x = fx(n as f64);
        let _ = writeln!(s, "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"black\"/>", y0 + 5.0);
        let _ = writeln!(s, "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{n}</text>", y0 + 18.0);
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">fds (n){}</text>",
        (x0 + x1) / 2.0,
        H - 10.0,
        if log { ", log scale" } else { "" }
    );
    for i in 0..=ticks {
        let v = step * i as f64;
        let y = fy(v);
        let _ = writeln!(s, "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{x0}\" y2=\"{y:.1}\" stroke=\"black\"/>", x0 - 5.0);
        let _ = writeln!(s, "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>");
        let _ = writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>", x0 - 8.0, y + 4.0);
    }
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">µs per run (median)</text>",
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    // Lines and legend.
    for (k, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let dash = if name.starts_with("anypoll") { "" } else { " stroke-dasharray=\"6 3\"" };
        let points: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", fx(x), fy(y))).collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            points.join(" ")
        );
        for &(x, y) in pts {
            let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>", fx(x), fy(y));
        }
        let ly = TOP + 10.0 + 18.0 * k as f64;
        let lx = W - RIGHT + 15.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2\"{dash}/>",
            lx + 24.0
        );
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\">{}</text>", lx + 30.0, ly + 4.0, esc(name));
    }
    s.push_str("</svg>\n");
    s
}
