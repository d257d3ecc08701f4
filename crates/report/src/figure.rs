//! PNG figures with plotters, using an embedded DejaVu font (no system fonts needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::{Error, Result};

fn ensure_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("embedded DejaVu font is valid"));
    });
}

/// One curve or point set.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw markers only (a scatter plot).
    pub scatter: bool,
    /// Dashed-looking thin line for references (closed forms, bounds).
    pub reference: bool,
}

impl Series {
    pub fn line(name: &str, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, scatter: false, reference: false }
    }
    pub fn scatter(name: &str, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, scatter: true, reference: false }
    }
    pub fn reference(name: &str, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, scatter: false, reference: true }
    }
}

/// A chart of several series on shared axes.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            series: Vec::new(),
        }
    }
    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }
    pub fn log_x(mut self) -> Self {
        self.log_x = true;
        self
    }
    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn fig_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Figure { path: path.to_path_buf(), reason: e.to_string() }
}

/// A short tick label: plain decimals without float noise in [1e-3, 1e5), else scientific.
pub fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if (1e-3..1e5).contains(&v.abs()) {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{v:.1e}")
    }
}

impl Chart {
    /// Whether a point can be drawn: finite, and positive on a log axis.
    fn drawable(&self, &(x, y): &(f64, f64)) -> bool {
        x.is_finite() && y.is_finite() && (!self.log_x || x > 0.0) && (!self.log_y || y > 0.0)
    }

    /// Whether any series has a point [`line_chart`] can draw.
    pub fn has_drawable_points(&self) -> bool {
        self.series.iter().any(|s| s.points.iter().any(|p| self.drawable(p)))
    }
}

/// Draws `chart` as an 800x560 PNG. Non-finite points (and non-positive ones on a log axis) are skipped.
pub fn line_chart(path: &Path, chart: &Chart) -> Result<()> {
    ensure_font();
    let keep = |p: &(f64, f64)| chart.drawable(p);
    let pts: Vec<(f64, f64)> = chart.series.iter().flat_map(|s| s.points.iter().copied().filter(keep)).collect();
    if pts.is_empty() {
        return Err(fig_err(path, "no finite points to plot"));
    }
    let range = |vals: Vec<f64>, log: bool| {
        let (lo, hi) = vals.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        if log {
            let (lo, hi) = (lo.max(1e-300), hi.max(1e-300));
            if hi / lo < 1.0001 { (lo / 2.0, hi * 2.0) } else { (lo / 1.2, hi * 1.2) }
        } else {
            let pad = ((hi - lo) * 0.05).max(1e-9 * hi.abs().max(1.0));
            (lo - pad, hi + pad)
        }
    };
    let (x0, x1) = range(pts.iter().map(|p| p.0).collect(), chart.log_x);
    let (y0, y1) = range(pts.iter().map(|p| p.1).collect(), chart.log_y);
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fig_err(path, e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(&chart.title, ("sans-serif", 22)).margin(12).x_label_area_size(44).y_label_area_size(70);
    macro_rules! draw {
        ($ctx:expr) => {{
            let mut ctx = $ctx.map_err(|e| fig_err(path, e))?;
            ctx.configure_mesh()
                .x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| fig_err(path, e))?;
            for (i, s) in chart.series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let points: Vec<(f64, f64)> = s.points.iter().copied().filter(keep).collect();
                let style = if s.reference { color.stroke_width(1) } else { color.stroke_width(2) };
                let anno = if s.scatter {
                    ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                        .map_err(|e| fig_err(path, e))?
                } else {
                    ctx.draw_series(LineSeries::new(points.clone(), style)).map_err(|e| fig_err(path, e))?;
                    ctx.draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled())))
                        .map_err(|e| fig_err(path, e))?
                };
                anno.label(s.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            ctx.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| fig_err(path, e))?;
        }};
    }
    match (chart.log_x, chart.log_y) {
        (false, false) => draw!(builder.build_cartesian_2d(x0..x1, y0..y1)),
        (true, false) => draw!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)),
        (false, true) => draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())),
        (true, true) => draw!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())),
    }
    root.present().map_err(|e| fig_err(path, e))?;
    Ok(())
}

/// A grid of grayscale or heat-map images (`rows x cols` panels, each `h x w` values), with row and column
/// titles: e.g. example saliency maps per method.
pub struct ImageGrid<'a> {
    pub title: &'a str,
    pub row_titles: Vec<String>,
    pub col_titles: Vec<String>,
    /// `panels[r][c]` is `(h, w, values)`, values scaled to [0, 1] per panel.
    pub panels: Vec<Vec<(usize, usize, Vec<f64>)>>,
    /// Draw values with a blue-white-red map (signed) instead of grayscale.
    pub heat: bool,
}

/// Draws an [`ImageGrid`] as a PNG.
pub fn image_grid(path: &Path, grid: &ImageGrid<'_>) -> Result<()> {
    ensure_font();
    let cell = 96u32;
    let (rows, cols) = (grid.panels.len() as u32, grid.panels.first().map_or(0, |r| r.len()) as u32);
    let (left, top) = (120u32, 60u32);
    let root =
        BitMapBackend::new(path, (left + cols * (cell + 8) + 8, top + rows * (cell + 8) + 8)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fig_err(path, e))?;
    root.draw_text(grid.title, &("sans-serif", 20).into_text_style(&root), (8, 6)).map_err(|e| fig_err(path, e))?;
    for (c, t) in grid.col_titles.iter().enumerate() {
        root.draw_text(t, &("sans-serif", 13).into_text_style(&root), ((left + c as u32 * (cell + 8)) as i32, 36))
            .map_err(|e| fig_err(path, e))?;
    }
    for (r, row) in grid.panels.iter().enumerate() {
        let y0 = top + r as u32 * (cell + 8);
        if let Some(t) = grid.row_titles.get(r) {
            root.draw_text(t, &("sans-serif", 13).into_text_style(&root), (8, (y0 + cell / 2) as i32))
                .map_err(|e| fig_err(path, e))?;
        }
        for (c, (h, w, vals)) in row.iter().enumerate() {
            let x0 = left + c as u32 * (cell + 8);
            let (lo, hi) = vals
                .iter()
                .filter(|v| v.is_finite())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let span = if hi > lo { hi - lo } else { 1.0 };
            for py in 0..cell {
                for px in 0..cell {
                    let (iy, ix) = ((py as usize * h) / cell as usize, (px as usize * w) / cell as usize);
                    let v = ((vals[iy * w + ix] - lo) / span).clamp(0.0, 1.0);
                    let color = if grid.heat {
                        let (r, g, b) = if v < 0.5 {
                            let t = v * 2.0;
                            (t, t, 1.0)
                        } else {
                            let t = (1.0 - v) * 2.0;
                            (1.0, t, t)
                        };
                        RGBColor((r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8)
                    } else {
                        let g = (v * 255.0) as u8;
                        RGBColor(g, g, g)
                    };
                    root.draw_pixel(((x0 + px) as i32, (y0 + py) as i32), &color).map_err(|e| fig_err(path, e))?;
                }
            }
        }
    }
    root.present().map_err(|e| fig_err(path, e))?;
    Ok(())
}
