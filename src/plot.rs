//! loss.png: train and validation loss against step (tokens on the top axis), the learning
//! rate on its own right-hand axis, a legend, and a title naming the run. Drawn with plotters'
//! bitmap backend and PNG encoder; text in DejaVu Sans (an ASCII subset, assets/), registered
//! with ab_glyph so that no system font or fontconfig is needed.
//!
//! Layer: a leaf; it uses no other module. train draws with it.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

const W: u32 = 960;
const H: u32 = 560;
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");
const SANS: &str = "sans-serif";

/// What a loss plot shows.
pub struct Curves<'a> {
    /// The title: the run and its parameter count.
    pub title: &'a str,
    /// (step, loss) of each logged step.
    pub train: &'a [(u64, f32)],
    /// (step, val loss) of each evaluation.
    pub val: &'a [(u64, f32)],
    /// (step, lr) of each logged step.
    pub lr: &'a [(u64, f64)],
    /// Tokens per optimizer step, for the top axis.
    pub tokens_per_step: u64,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is fixed at build time and a test draws with it: it parses.
        let _ = plotters::style::register_font(SANS, FontStyle::Normal, FONT);
    });
}

/// Writes the plot to `path` (through a temporary file, then a rename).
pub fn loss_curve(path: &Path, c: &Curves) -> Result<(), String> {
    register_font();
    let tmp = path.with_extension("tmp.png");
    draw(&tmp, c).map_err(|e| format!("drawing the loss plot: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(path: &Path, c: &Curves) -> DrawResult {
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let last = c.train.iter().map(|p| p.0).chain(c.val.iter().map(|p| p.0)).max().unwrap_or(0) as f64 + 1.0;
    let (lo, hi) = loss_range(c);
    let lr_max = c.lr.iter().map(|p| p.1).filter(|x| x.is_finite()).fold(0.0, f64::max).max(1e-12) * 1.1;
    let tokens = c.tokens_per_step.max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, (SANS, 22))
        .margin(12)
        .x_label_area_size(44)
        .top_x_label_area_size(44)
        .y_label_area_size(64)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0f64..last, lo..hi)?
        .set_secondary_coord(0f64..last * tokens, 0f64..lr_max);
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style((SANS, 14))
        .axis_desc_style((SANS, 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .x_desc("tokens")
        .y_desc("learning rate")
        .label_style((SANS, 14))
        .axis_desc_style((SANS, 16))
        .x_label_formatter(&|v| human(*v))
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .draw()?;
    let finite = |pts: &[(u64, f32)]| -> Vec<(f64, f64)> {
        pts.iter().filter(|p| p.1.is_finite()).map(|&(s, l)| (s as f64, l as f64)).collect()
    };
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    let green = RGBColor(44, 160, 44);
    chart
        .draw_series(LineSeries::new(finite(c.train), blue.stroke_width(2)))?
        .label("train loss")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], blue.stroke_width(2)));
    if !c.val.is_empty() {
        chart
            .draw_series(LineSeries::new(finite(c.val), red.stroke_width(2)).point_size(3))?
            .label("val loss")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], red.stroke_width(2)));
    }
    let lr: Vec<(f64, f64)> = c.lr.iter().map(|&(s, l)| (s as f64 * tokens, l)).collect();
    chart
        .draw_secondary_series(LineSeries::new(lr, green.stroke_width(1)))?
        .label("learning rate (right axis)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], green.stroke_width(1)));
    chart
        .configure_series_labels()
        .label_font((SANS, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The losses' range with a margin; a unit range when there is none yet.
fn loss_range(c: &Curves) -> (f64, f64) {
    let all = c.train.iter().chain(c.val).map(|p| p.1 as f64).filter(|l| l.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l), b.max(l)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    ((lo - pad).max(0.0), hi + pad)
}

/// 1234567 → "1.2M"; also used for titles' parameter counts.
pub fn human(v: f64) -> String {
    match v.abs() {
        a if a >= 1e9 => format!("{:.1}G", v / 1e9),
        a if a >= 1e6 => format!("{:.1}M", v / 1e6),
        a if a >= 1e3 => format!("{:.0}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}
