//! # lastmile-plot — PNG charts for reports
//!
//! Line charts (training curves, with reference lines), grouped bar charts (memory) and
//! heat maps with paths (loss landscapes with training trajectories),
//! drawn with `plotters`' bitmap backend. Text uses a TrueType font found on the system
//! (DejaVu Sans or Liberation Sans; `apt-get install fonts-dejavu-core`, which
//! `cargo xtask ci` does); without one, charts are still drawn, without text, and
//! [`fonts_available`] says so.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// Font files tried, in order.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Why a chart could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing or encoding failed.
    #[error("cannot draw '{path}': {message}")]
    Draw {
        /// Output file.
        path: String,
        /// What failed.
        message: String,
    },
    /// Nothing to draw.
    #[error("cannot draw '{path}': no data")]
    Empty {
        /// Output file.
        path: String,
    },
}

/// Registers a system font once; returns whether one was found.
pub fn fonts_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(x, y)` points in order.
    pub points: Vec<(f64, f64)>,
    /// Colour index into a fixed palette.
    pub color: usize,
}

/// A horizontal reference line (e.g. zero-shot accuracy).
#[derive(Debug, Clone)]
pub struct HLine {
    /// Legend label.
    pub name: String,
    /// Height.
    pub y: f64,
    /// Colour index.
    pub color: usize,
}

/// A line chart panel.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// Title above the panel.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
    /// Reference lines.
    pub hlines: Vec<HLine>,
    /// Fixed y range, or `None` to fit the data.
    pub y_range: Option<(f64, f64)>,
}

fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(127, 127, 127),
    ];
    P[i % P.len()]
}

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Draws `panels` side by side into one PNG of `width × height` pixels.
pub fn line_charts(
    path: &Path,
    panels: &[LineChart],
    width: u32,
    height: u32,
) -> Result<(), PlotError> {
    if panels
        .iter()
        .all(|p| p.series.iter().all(|s| s.points.is_empty()))
    {
        return Err(PlotError::Empty {
            path: path.display().to_string(),
        });
    }
    let text = fonts_available();
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err(path))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        let xs = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        let (y0, y1) = panel.y_range.unwrap_or_else(|| {
            let ys = panel
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .chain(panel.hlines.iter().map(|h| h.y));
            let (a, b) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
                (a.min(y), b.max(y))
            });
            let pad = ((b - a) * 0.05).max(1e-6);
            (a - pad, b + pad)
        });
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(12)
            .x_label_area_size(if text { 36 } else { 8 })
            .y_label_area_size(if text { 56 } else { 8 });
        if text {
            builder.caption(&panel.title, ("sans-serif", 18));
        }
        let mut chart = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err(path))?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc(&panel.x_label)
                .y_desc(&panel.y_label)
                .label_style(("sans-serif", 13));
            if x1 - x0 >= 10.0 {
                mesh.x_label_formatter(&|x| format!("{x:.0}"));
            }
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(draw_err(path))?;
        for s in &panel.series {
            let c = color(s.color);
            let line = chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(draw_err(path))?;
            if text {
                line.label(&s.name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            }
        }
        for h in &panel.hlines {
            let c = color(h.color);
            let style = ShapeStyle {
                color: c.to_rgba(),
                filled: false,
                stroke_width: 1,
            };
            let line = chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, h.y), (x1, h.y)],
                    6,
                    4,
                    style,
                ))
                .map_err(draw_err(path))?;
            if text {
                line.label(&h.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 13))
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(draw_err(path))?;
        }
    }
    root.present().map_err(draw_err(path))?;
    Ok(())
}

/// A grouped bar chart: one group per category, one bar per series in each group.
#[derive(Debug, Clone, Default)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Category names (x axis groups).
    pub categories: Vec<String>,
    /// `(series name, one value per category)`.
    pub series: Vec<(String, Vec<f64>)>,
    /// Fixed y range, or `None` for 0 to 1.1 × the largest value. Bars rise from the
    /// bottom of the range; a range that does not start at 0 (say from [`y_range_near`],
    /// so that differences of a few points show) is stated on the y axis:
    /// `"{y_label} — axis from {start}, not 0"`.
    pub y_range: Option<(f64, f64)>,
}

/// A y range close to `values`, for bars whose differences matter more than their
/// height: from `floor(min − margin)` (not below 0 when no value is negative) to
/// `ceil(max + margin)`, raised (to a whole number) until the top `headroom` fraction of
/// the axis (clamped to `0..=0.9`) is clear of every bar, to leave room for the legend.
/// `None` if no value is finite.
pub fn y_range_near(
    values: impl IntoIterator<Item = f64>,
    margin: f64,
    headroom: f64,
) -> Option<(f64, f64)> {
    let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    let min = finite.iter().copied().reduce(f64::min)?;
    let max = finite.iter().copied().reduce(f64::max)?;
    let mut lo = (min - margin).floor();
    if min >= 0.0 {
        lo = lo.max(0.0);
    }
    let clear = (lo + (max - lo) / (1.0 - headroom.clamp(0.0, 0.9))).ceil();
    let hi = (max + margin).ceil().max(clear).max(lo + 1.0);
    Some((lo, hi))
}

/// Draws a grouped bar chart into a PNG.
pub fn bar_chart(path: &Path, chart: &BarChart, width: u32, height: u32) -> Result<(), PlotError> {
    if chart.categories.is_empty() || chart.series.is_empty() {
        return Err(PlotError::Empty {
            path: path.display().to_string(),
        });
    }
    let text = fonts_available();
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err(path))?;
    let (y0, y1) = chart.y_range.unwrap_or_else(|| {
        let ymax = chart
            .series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(0f64, f64::max)
            .max(1e-9)
            * 1.1;
        (0.0, ymax)
    });
    let y_label = if y0 == 0.0 {
        chart.y_label.clone()
    } else {
        format!("{} — axis from {y0}, not 0", chart.y_label)
    };
    let groups = chart.categories.len();
    let per = chart.series.len();
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(14)
        .x_label_area_size(if text { 40 } else { 8 })
        .y_label_area_size(if text { 64 } else { 8 });
    if text {
        builder.caption(&chart.title, ("sans-serif", 18));
    }
    let mut c = builder
        .build_cartesian_2d(0f64..groups as f64, y0..y1)
        .map_err(draw_err(path))?;
    let cats = chart.categories.clone();
    // Ticks every half group (2·groups + 1 requested, so plotters picks step 0.5); only the
    // group centres get a label, so every category is named, centred under its bars.
    let fmt = move |x: &f64| {
        if (x.fract() - 0.5).abs() < 1e-6 {
            cats.get(x.floor() as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut mesh = c.configure_mesh();
    mesh.disable_x_mesh()
        .light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.y_desc(&y_label)
            .x_labels(2 * groups + 1)
            .x_label_formatter(&fmt)
            .label_style(("sans-serif", 13));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(draw_err(path))?;
    let bar_w = 0.8 / per as f64;
    for (si, (name, values)) in chart.series.iter().enumerate() {
        let col = color(si);
        let bars = c
            .draw_series(values.iter().enumerate().map(|(g, &v)| {
                let x = g as f64 + 0.1 + si as f64 * bar_w;
                let top = if chart.y_range.is_some() {
                    v.clamp(y0, y1)
                } else {
                    v
                };
                Rectangle::new([(x, y0), (x + bar_w * 0.92, top)], col.filled())
            }))
            .map_err(draw_err(path))?;
        if text {
            bars.label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        }
    }
    if text {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(draw_err(path))?;
    }
    root.present().map_err(draw_err(path))?;
    Ok(())
}

/// A 2-D scalar field (e.g. a loss surface) drawn as a colour map, with paths on top.
#[derive(Debug, Clone, Default)]
pub struct Heatmap {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Grid coordinates along x (ascending, evenly spaced).
    pub xs: Vec<f64>,
    /// Grid coordinates along y (ascending, evenly spaced).
    pub ys: Vec<f64>,
    /// Values, row-major: `z[j * xs.len() + i]` at `(xs[i], ys[j])`.
    pub z: Vec<f64>,
    /// Paths drawn over the map (start marked with a circle, end with a square).
    pub paths: Vec<Series>,
}

/// Colour of `t ∈ [0, 1]` on a dark-blue → teal → yellow ramp (viridis-like).
fn ramp(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Draws `panels` side by side: each a colour map of `z` (low = dark) with iso-lines at
/// ten evenly spaced levels marked by cell edges, and the paths on top.
pub fn heatmaps(path: &Path, panels: &[Heatmap], width: u32, height: u32) -> Result<(), PlotError> {
    if panels
        .iter()
        .any(|p| p.xs.len() < 2 || p.ys.len() < 2 || p.z.len() != p.xs.len() * p.ys.len())
        || panels.is_empty()
    {
        return Err(PlotError::Empty {
            path: path.display().to_string(),
        });
    }
    let text = fonts_available();
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err(path))?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, p) in areas.iter().zip(panels) {
        let (nx, ny) = (p.xs.len(), p.ys.len());
        let dx = (p.xs[nx - 1] - p.xs[0]) / (nx - 1) as f64;
        let dy = (p.ys[ny - 1] - p.ys[0]) / (ny - 1) as f64;
        let (x0, x1) = (p.xs[0] - dx / 2.0, p.xs[nx - 1] + dx / 2.0);
        let (y0, y1) = (p.ys[0] - dy / 2.0, p.ys[ny - 1] + dy / 2.0);
        let finite = p.z.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(12)
            .x_label_area_size(if text { 36 } else { 8 })
            .y_label_area_size(if text { 56 } else { 8 });
        if text {
            builder.caption(&p.title, ("sans-serif", 16));
        }
        let mut chart = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err(path))?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_mesh();
        if text {
            mesh.x_desc(&p.x_label)
                .y_desc(&p.y_label)
                .label_style(("sans-serif", 12));
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(draw_err(path))?;
        let level = |v: f64| (((v - lo) / span) * 10.0).floor() as i64;
        chart
            .draw_series((0..ny).flat_map(|j| {
                (0..nx).map(move |i| {
                    let v = p.z[j * nx + i];
                    let c = if v.is_finite() {
                        ramp((v - lo) / span)
                    } else {
                        RGBColor(255, 255, 255)
                    };
                    let (cx, cy) = (p.xs[i], p.ys[j]);
                    Rectangle::new(
                        [
                            (cx - dx / 2.0, cy - dy / 2.0),
                            (cx + dx / 2.0, cy + dy / 2.0),
                        ],
                        c.filled(),
                    )
                })
            }))
            .map_err(draw_err(path))?;
        // Iso-lines: cell edges where the level changes.
        let mut edges = Vec::new();
        for j in 0..ny {
            for i in 0..nx {
                let l = level(p.z[j * nx + i]);
                if i + 1 < nx && level(p.z[j * nx + i + 1]) != l {
                    let x = p.xs[i] + dx / 2.0;
                    edges.push(vec![(x, p.ys[j] - dy / 2.0), (x, p.ys[j] + dy / 2.0)]);
                }
                if j + 1 < ny && level(p.z[(j + 1) * nx + i]) != l {
                    let y = p.ys[j] + dy / 2.0;
                    edges.push(vec![(p.xs[i] - dx / 2.0, y), (p.xs[i] + dx / 2.0, y)]);
                }
            }
        }
        chart
            .draw_series(
                edges
                    .into_iter()
                    .map(|e| PathElement::new(e, WHITE.mix(0.5).stroke_width(1))),
            )
            .map_err(draw_err(path))?;
        for s in &p.paths {
            let c = match s.color % 3 {
                0 => RGBColor(255, 255, 255),
                1 => RGBColor(230, 30, 30),
                _ => RGBColor(255, 140, 0),
            };
            let line = chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(draw_err(path))?;
            if text {
                line.label(&s.name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            }
            if let (Some(&a), Some(&b)) = (s.points.first(), s.points.last()) {
                chart
                    .draw_series([Circle::new(a, 5, c.filled())])
                    .map_err(draw_err(path))?;
                chart
                    .draw_series([Rectangle::new(
                        [
                            (b.0 - dx * 0.3, b.1 - dy * 0.3),
                            (b.0 + dx * 0.3, b.1 + dy * 0.3),
                        ],
                        c.filled(),
                    )])
                    .map_err(draw_err(path))?;
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 12))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(draw_err(path))?;
        }
    }
    root.present().map_err(draw_err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pngs() {
        let dir = std::env::temp_dir().join(format!("lastmile-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lines.png");
        let panel = LineChart {
            title: "t".into(),
            x_label: "step".into(),
            y_label: "acc".into(),
            series: vec![Series {
                name: "a".into(),
                points: vec![(0.0, 0.1), (10.0, 0.8)],
                color: 0,
            }],
            hlines: vec![HLine {
                name: "zero-shot".into(),
                y: 0.3,
                color: 5,
            }],
            y_range: Some((0.0, 1.0)),
        };
        line_charts(&p, &[panel.clone(), panel], 800, 300).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let b = dir.join("bars.png");
        bar_chart(
            &b,
            &BarChart {
                title: "m".into(),
                y_label: "kB".into(),
                categories: vec!["x".into(), "y".into()],
                series: vec![("BP".into(), vec![3.0, 4.0]), ("FF".into(), vec![1.0, 2.0])],
                y_range: None,
            },
            600,
            300,
        )
        .unwrap();
        assert_eq!(&std::fs::read(&b).unwrap()[1..4], b"PNG");
        let h = dir.join("heat.png");
        heatmaps(
            &h,
            &[Heatmap {
                title: "loss".into(),
                x_label: "a".into(),
                y_label: "b".into(),
                xs: vec![-1.0, 0.0, 1.0],
                ys: vec![-1.0, 0.0, 1.0],
                z: vec![2.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 2.0],
                paths: vec![Series {
                    name: "p".into(),
                    points: vec![(0.0, 0.0), (0.5, 0.2)],
                    color: 1,
                }],
            }],
            400,
            300,
        )
        .unwrap();
        assert_eq!(&std::fs::read(&h).unwrap()[1..4], b"PNG");
        assert!(matches!(
            line_charts(&dir.join("e.png"), &[LineChart::default()], 10, 10),
            Err(PlotError::Empty { .. })
        ));
    }

    #[test]
    fn y_range_near_starts_near_the_data_and_leaves_room_for_the_legend() {
        // KWS-like accuracies (%): 4 points apart, all near 90.
        let v = [90.78, 92.45, 92.29, 91.72, 91.51, 90.52, 94.74, 94.84];
        // floor(90.52 − 1) = 89; the top 35 % clear: 89 + 5.84 / 0.65 = 97.98 ⇒ 98.
        assert_eq!(y_range_near(v, 1.0, 0.35), Some((89.0, 98.0)));
        // No headroom: ceil(94.84 + 1) = 96.
        assert_eq!(y_range_near(v, 1.0, 0.0), Some((89.0, 96.0)));
        // Never below 0 for non-negative data; negative data may go below.
        assert_eq!(y_range_near([0.5, 3.0], 1.0, 0.0), Some((0.0, 4.0)));
        assert_eq!(y_range_near([-2.5, 3.0], 1.0, 0.0), Some((-4.0, 4.0)));
        // One value, no margin: still a non-empty range.
        assert_eq!(y_range_near([5.0], 0.0, 0.0), Some((5.0, 6.0)));
        assert_eq!(y_range_near([f64::NAN], 1.0, 0.0), None);
        assert_eq!(y_range_near([], 1.0, 0.0), None);
    }
}
