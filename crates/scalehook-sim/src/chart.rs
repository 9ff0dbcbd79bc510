//! The chart: one panel per policy (rows) and pool (columns), time of day across, runner
//! slots up; demand (jobs queued + running) as a filled area, runners ready (slots of booted
//! instances) as a solid line, slots paid for (booting included) as a thin grey line, and,
//! where a pool has a warm pool, its warm instances' slots as a green line. Where the area
//! rises above the solid line, jobs are waiting; where the line stands above the area,
//! runners are idle.

use crate::report::{PolicyFigures, SimReport};
use crate::world::Sample;
use crate::SimError;
use plotters::prelude::*;

const PANEL_WIDTH: u32 = 760;
const PANEL_HEIGHT: u32 = 250;
const TITLE_HEIGHT: u32 = 80;
const DEMAND: RGBColor = RGBColor(230, 85, 13);
const CAPACITY: RGBColor = RGBColor(31, 119, 180);
const PAID: RGBColor = RGBColor(90, 90, 90);
const WARM: RGBColor = RGBColor(44, 160, 44);

fn chart_error(e: impl std::fmt::Display) -> SimError {
    SimError::Internal(format!("drawing the chart: {e}"))
}

/// The chart as an SVG document.
pub fn svg(report: &SimReport) -> Result<String, SimError> {
    if report.pools.is_empty() {
        return Err(SimError::Internal(
            "no chart: no job of the trace routes to a configured pool".into(),
        ));
    }
    let cols = report.pools.len();
    let rows = report
        .pools
        .iter()
        .map(|p| p.policies.len())
        .max()
        .unwrap_or(1);
    let size = (
        PANEL_WIDTH * cols as u32,
        PANEL_HEIGHT * rows as u32 + TITLE_HEIGHT,
    );
    // Hours since midnight UTC of the window's first day.
    let midnight = report.window.start - report.window.start % 86_400;
    let hours = |t: u64| (t.saturating_sub(midnight)) as f64 / 3600.0;
    let x_range = hours(report.window.start)
        ..hours(report.window.end).max(hours(report.window.start) + 1.0 / 60.0);

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let (title, body) = root.split_vertically(TITLE_HEIGHT);
        title
            .draw(&Text::new(
                format!(
                    "Runner demand and capacity over time, per policy (instances boot in {} s)",
                    report.boot_seconds
                ),
                (16, 12),
                ("sans-serif", 22).into_font().color(&BLACK),
            ))
            .map_err(chart_error)?;
        for (n, line) in [
            "orange area: jobs queued + running; blue line: runners ready; grey line: runner slots paid for (booting included); green line: warm pool (not capacity).",
            "Orange above blue = jobs waiting for a runner; blue above orange = idle runners.",
        ]
        .into_iter()
        .enumerate()
        {
            title
                .draw(&Text::new(
                    line,
                    (16, 38 + 18 * n as i32),
                    ("sans-serif", 14).into_font().color(&RGBColor(80, 80, 80)),
                ))
                .map_err(chart_error)?;
        }
        let panels = body.split_evenly((rows, cols));
        for (col, pool) in report.pools.iter().enumerate() {
            let y_max = pool
                .policies
                .iter()
                .flat_map(|f| f.series.iter())
                .map(|s| s.demand_slots.max(s.capacity_slots).max(s.warm_slots))
                .max()
                .unwrap_or(1)
                .max(1);
            // Headroom above the highest point, so the legend never covers the data.
            let y_range = 0f64..(f64::from(y_max) * 1.5).ceil();
            for (row, figures) in pool.policies.iter().enumerate() {
                let area = &panels[row * cols + col];
                draw_panel(
                    area,
                    &pool.pool,
                    pool.runners_per_instance,
                    figures,
                    x_range.clone(),
                    y_range.clone(),
                    &hours,
                )?;
            }
        }
        root.present().map_err(chart_error)?;
    }
    Ok(out)
}

/// `HH:MM` of a time in hours since midnight (past 24 h, the next day's clock).
fn clock(hours: f64) -> String {
    let minutes = (hours * 60.0).round() as i64;
    format!(
        "{:02}:{:02}",
        minutes.div_euclid(60).rem_euclid(24),
        minutes.rem_euclid(60)
    )
}

/// (x, y) points drawing `value` as a step line: each sample holds until the next. Only the
/// changes get points, which keeps the SVG small.
fn steps(
    series: &[Sample],
    hours: &dyn Fn(u64) -> f64,
    value: fn(&Sample) -> u32,
) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    let mut held: Option<u32> = None;
    for s in series {
        let v = value(s);
        if held != Some(v) {
            if let Some(h) = held {
                points.push((hours(s.at), f64::from(h)));
            }
            points.push((hours(s.at), f64::from(v)));
            held = Some(v);
        }
    }
    if let (Some(last), Some(h)) = (series.last(), held) {
        points.push((hours(last.at), f64::from(h)));
    }
    points
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    pool: &str,
    runners_per_instance: u32,
    f: &PolicyFigures,
    x_range: std::ops::Range<f64>,
    y_range: std::ops::Range<f64>,
    hours: &dyn Fn(u64) -> f64,
) -> Result<(), SimError> {
    let caption = format!(
        "{} | pool {}: wait mean {:.0} s, p95 {} s | idle {:.1} instance-h | peak {} | cost {:.2}",
        f.policy.name(),
        pool,
        f.queue_wait_secs.mean,
        f.queue_wait_secs.p95,
        f.idle_instance_minutes / 60.0,
        f.peak_capacity,
        f.cost
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(48)
        .build_cartesian_2d(x_range, y_range)
        .map_err(chart_error)?;
    let slots = if runners_per_instance > 1 {
        format!("runner slots ({runners_per_instance} per instance)")
    } else {
        "runner slots = instances".to_string()
    };
    chart
        .configure_mesh()
        .light_line_style(RGBColor(246, 246, 246))
        .x_labels(13)
        .y_labels(6)
        .x_label_formatter(&|x| clock(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("time of day (UTC)")
        .y_desc(slots)
        .draw()
        .map_err(chart_error)?;
    chart
        .draw_series(
            AreaSeries::new(
                steps(&f.series, hours, |s| s.demand_slots),
                0.0,
                DEMAND.mix(0.35),
            )
            .border_style(DEMAND.stroke_width(1)),
        )
        .map_err(chart_error)?
        .label("demand: jobs queued + running")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], DEMAND.mix(0.35).filled()));
    chart
        .draw_series(LineSeries::new(
            steps(&f.series, hours, |s| s.capacity_slots),
            PAID.stroke_width(1),
        ))
        .map_err(chart_error)?
        .label("paid for: runner slots launched, booting included")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], PAID.stroke_width(1)));
    chart
        .draw_series(LineSeries::new(
            steps(&f.series, hours, |s| s.ready_slots),
            CAPACITY.stroke_width(2),
        ))
        .map_err(chart_error)?
        .label("capacity: runners ready (booted)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], CAPACITY.stroke_width(3)));
    if f.series.iter().any(|s| s.warm_slots > 0) {
        chart
            .draw_series(LineSeries::new(
                steps(&f.series, hours, |s| s.warm_slots),
                WARM.stroke_width(2),
            ))
            .map_err(chart_error)?
            .label("warm pool: stopped instances' slots (not capacity)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], WARM.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(chart_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_labels() {
        assert_eq!(clock(9.0), "09:00");
        assert_eq!(clock(9.25), "09:15");
        assert_eq!(clock(25.5), "01:30");
    }

    #[test]
    fn steps_hold_each_value_until_the_next_change() {
        let sample = |at, demand_slots| Sample {
            at,
            demand_slots,
            capacity_slots: 0,
            ready_slots: 0,
            warm_slots: 0,
        };
        let series = [sample(0, 1), sample(60, 1), sample(120, 3), sample(180, 3)];
        let points = steps(&series, &|t| t as f64, |s| s.demand_slots);
        assert_eq!(
            points,
            vec![(0.0, 1.0), (120.0, 1.0), (120.0, 3.0), (180.0, 3.0)]
        );
        assert!(steps(&[], &|t| t as f64, |s| s.demand_slots).is_empty());
    }
}
