//! The HTML page of `cairn backups report --html`: one self-contained file made from a
//! [`History`] — a table of the runs and four plots per deployment (artifact size per
//! artifact, duration, lock window per job, throughput), failed runs marked as red triangles
//! on the time axis of every plot.
//!
//! Self-contained means it opens from a mail attachment or an air-gapped jumpbox the same
//! way: the style is inline, there is no script at all, and the plots are inline SVG drawn
//! with `plotters`' SVG backend (built without its font and bitmap features, so the text is
//! left to the browser's own sans-serif font). Each plot's legend is HTML below it, in the
//! series' colours; in the SVG every series is one `<polyline>` of `stroke-width="2"` (the axes
//! and ticks are 1 wide) with a `<circle>` per point, and every failed run one `<polygon>`,
//! which is what the tests count.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use plotters::prelude::*;

use super::history::{DeploymentHistory, History, Outcome, Run, SignatureState, VerificationState};
use super::size_text;

/// Size of one plot, in CSS pixels.
const PLOT_SIZE: (u32, u32) = (560, 260);
/// Series colours, in order (failed runs are [`FAILURE_COLOUR`]).
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];
/// The colour of failed runs.
const FAILURE_COLOUR: RGBColor = RGBColor(214, 39, 40);

/// The style of the page (inline: nothing is fetched).
const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}\
th{background:#eee}tr.failure td{background:#fde2e2}\
.charts{display:flex;flex-wrap:wrap;gap:1em}\
figure{margin:0;border:1px solid #ddd;padding:.5em}\
figcaption{font-weight:bold;margin-bottom:.3em}\
ul.legend{list-style:none;padding:0;margin:.3em 0 0;font-size:.85em}\
ul.legend li{display:inline-block;margin-right:1em}\
ul.legend span{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}\
.note{color:#555;font-size:.9em}";

/// One line of a plot: a name and its points (seconds since the epoch, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// What it is (an artifact, a job, or the plot's one quantity).
    pub name: String,
    /// Its points, oldest first.
    pub points: Vec<(f64, f64)>,
}

/// One plot of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// `id` of its `<figure>` (`<deployment>-<kind>`).
    pub id: String,
    /// Its title.
    pub title: &'static str,
    /// The unit of its values.
    pub unit: String,
    /// Its lines.
    pub series: Vec<Series>,
    /// When the failed runs started (seconds since the epoch), marked on the time axis.
    pub failures: Vec<f64>,
}

/// Renders the whole page.
#[must_use]
pub fn render(history: &History) -> String {
    let mut page = String::new();
    let title = format!("Cairn backup report: {}", history.store);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"note\">Generated {} for {}. Failed runs are marked with red triangles on each plot's time axis.</p>\n",
        escape(&title),
        escape(&title),
        time_text(history.generated_at),
        escape(&history.store)
    );
    for deployment in &history.deployments {
        render_deployment(&mut page, deployment, history.generated_at);
    }
    page.push_str("</body>\n</html>\n");
    page
}

/// A deployment's section: its table, then its plots.
fn render_deployment(page: &mut String, deployment: &DeploymentHistory, now: DateTime<Utc>) {
    let name = escape(&deployment.name);
    let _ = write!(
        page,
        "<section class=\"deployment\" data-deployment=\"{name}\">\n<h2>{name}</h2>\n"
    );
    render_table(page, deployment, now);
    page.push_str("<div class=\"charts\">\n");
    for plot in plots(deployment) {
        render_plot(page, &plot);
    }
    page.push_str("</div>\n</section>\n");
}

/// The table of runs, oldest first.
fn render_table(page: &mut String, deployment: &DeploymentHistory, now: DateTime<Utc>) {
    page.push_str("<table class=\"backups\">\n<thead><tr><th>backup</th><th>outcome</th><th>started</th><th>age</th><th>size</th><th>duration</th><th>verified</th><th>encrypted</th><th>signed</th></tr></thead>\n<tbody>\n");
    for run in &deployment.runs {
        let class = if run.outcome.is_failure() {
            " class=\"failure\""
        } else {
            ""
        };
        let outcome = outcome_text(run.outcome);
        let errors = if run.errors.is_empty() {
            String::new()
        } else {
            format!(": {}", escape(&run.errors.join("; ")))
        };
        let _ = writeln!(
            page,
            "<tr{class} data-id=\"{id}\"><td>{id}</td><td>{outcome}{errors}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time_text(run.started_at),
            age_text(now.signed_duration_since(run.started_at).num_seconds()),
            size_text(run.stored_bytes),
            run.duration_seconds.map_or_else(|| "-".into(), duration_text),
            escape(&verification_text(&run.verification)),
            if run.encrypted { "yes" } else { "no" },
            escape(&signature_text(&run.signature)),
            id = escape(&run.id),
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

/// `complete`, `failed`, ...
#[must_use]
pub fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Complete => "complete",
        Outcome::Failed => "failed",
        Outcome::Incomplete => "incomplete",
        Outcome::Unreadable => "unreadable",
    }
}

/// `signed`, `unsigned`, `signed, verified`, `signed, REJECTED: why`.
#[must_use]
pub fn signature_text(signature: &SignatureState) -> String {
    match signature {
        SignatureState::Unsigned => "unsigned".into(),
        SignatureState::Signed => "signed".into(),
        SignatureState::Verified => "signed, verified".into(),
        SignatureState::Rejected(why) => format!("signed, REJECTED: {why}"),
    }
}

/// `yes`, `FAILED: why`, `not checked`.
fn verification_text(verification: &VerificationState) -> String {
    match verification {
        VerificationState::NotChecked => "not checked".into(),
        VerificationState::Passed => "yes".into(),
        VerificationState::Failed(why) => format!("FAILED: {why}"),
    }
}

/// The four plots of a deployment, from its runs: complete backups make the lines, failed
/// ones the marks.
#[must_use]
pub fn plots(deployment: &DeploymentHistory) -> Vec<Plot> {
    let complete: Vec<&Run> = deployment
        .runs
        .iter()
        .filter(|r| r.outcome == Outcome::Complete)
        .collect();
    let failures: Vec<f64> = deployment
        .runs
        .iter()
        .filter(|r| r.outcome.is_failure())
        .map(|r| epoch_seconds(r.started_at))
        .collect();
    let keyed = |values: &dyn Fn(&Run) -> Vec<(String, f64)>| {
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for run in &complete {
            for (name, value) in values(run) {
                series
                    .entry(name)
                    .or_default()
                    .push((epoch_seconds(run.started_at), value));
            }
        }
        series
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect::<Vec<_>>()
    };
    #[allow(clippy::cast_precision_loss)]
    let sizes = keyed(&|run| {
        run.artifacts
            .iter()
            .map(|(name, bytes)| (name.clone(), *bytes as f64))
            .collect()
    });
    let durations = keyed(&|run| {
        run.duration_seconds
            .map(|seconds| ("duration".to_string(), seconds))
            .into_iter()
            .collect()
    });
    let locks = keyed(&|run| {
        run.lock_windows
            .iter()
            .map(|(job, seconds)| (job.clone(), *seconds))
            .collect()
    });
    let throughput = keyed(&|run| {
        run.throughput_bytes_per_second
            .map(|bytes| ("throughput".to_string(), bytes / f64::from(1 << 20)))
            .into_iter()
            .collect()
    });
    let (size_unit, size_scale) = size_unit(&sizes);
    let plot = |kind: &str, title, unit: String, series: Vec<Series>| Plot {
        id: format!("{}-{kind}", deployment.name),
        title,
        unit,
        series,
        failures: failures.clone(),
    };
    vec![
        plot(
            "size",
            "Artifact size per artifact",
            size_unit.to_string(),
            scaled(sizes, size_scale),
        ),
        plot("duration", "Backup duration", "s".into(), durations),
        plot("lock", "Lock window per job", "s".into(), locks),
        plot(
            "throughput",
            "Throughput (before compression)",
            "MiB/s".into(),
            throughput,
        ),
    ]
}

/// The unit the largest size reads best in, and its bytes.
fn size_unit(series: &[Series]) -> (&'static str, f64) {
    let largest = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    [("GiB", 30), ("MiB", 20), ("KiB", 10)]
        .into_iter()
        .map(|(unit, shift)| (unit, f64::from(1_u32 << shift)))
        .find(|(_, bytes)| largest >= *bytes)
        .unwrap_or(("B", 1.0))
}

/// `series` with every value divided by `scale`.
fn scaled(series: Vec<Series>, scale: f64) -> Vec<Series> {
    series
        .into_iter()
        .map(|s| Series {
            name: s.name,
            points: s.points.into_iter().map(|(x, y)| (x, y / scale)).collect(),
        })
        .collect()
}

/// One plot: its figure, the SVG and the HTML legend.
fn render_plot(page: &mut String, plot: &Plot) {
    let _ = write!(
        page,
        "<figure class=\"chart\" id=\"{}\">\n<figcaption>{} ({})</figcaption>\n",
        escape(&plot.id),
        escape(plot.title),
        escape(&plot.unit)
    );
    match draw_svg(plot) {
        Ok(svg) => page.push_str(&svg),
        Err(error) => {
            let _ = write!(
                page,
                "<p class=\"note\">This plot could not be drawn: {}</p>",
                escape(&error)
            );
        }
    }
    page.push_str("\n<ul class=\"legend\">");
    for (index, series) in plot.series.iter().enumerate() {
        let RGBColor(r, g, b) = colour(index);
        let _ = write!(
            page,
            "<li><span style=\"background:rgb({r},{g},{b})\"></span>{}</li>",
            escape(&series.name)
        );
    }
    if !plot.failures.is_empty() {
        let RGBColor(r, g, b) = FAILURE_COLOUR;
        let _ = write!(
            page,
            "<li class=\"failed\"><span style=\"background:rgb({r},{g},{b})\"></span>failed run</li>"
        );
    }
    if plot.series.is_empty() {
        page.push_str("<li>no data: no complete backup recorded this figure</li>");
    }
    page.push_str("</ul>\n</figure>\n");
}

/// The colour of the `index`th series.
fn colour(index: usize) -> RGBColor {
    COLOURS[index % COLOURS.len()]
}

/// The SVG of a plot (plotters' SVG backend, into a string).
fn draw_svg(plot: &Plot) -> Result<String, String> {
    let xs = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(plot.failures.iter().copied());
    let (x_min, x_max) =
        padded(xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x))));
    let y_max = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(52)
            .build_cartesian_2d(x_min..x_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        let span = x_max - x_min;
        let x_label = move |x: &f64| axis_time(*x, span);
        chart
            .configure_mesh()
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&x_label)
            .y_label_formatter(&|y: &f64| value_label(*y, y_max))
            .y_desc(plot.unit.as_str())
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (index, series) in plot.series.iter().enumerate() {
            let style = colour(index);
            chart
                .draw_series(LineSeries::new(
                    series.points.iter().copied(),
                    style.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(
                    series
                        .points
                        .iter()
                        .map(|&point| Circle::new(point, 3, style.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(
                plot.failures
                    .iter()
                    .map(|&x| TriangleMarker::new((x, 0.0), 7, FAILURE_COLOUR.filled())),
            )
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A range around the values, never empty (one run still gets an axis).
fn padded((low, high): (f64, f64)) -> (f64, f64) {
    if low > high {
        return (0.0, 1.0);
    }
    let pad = ((high - low) * 0.08).max(1.0);
    (low - pad, high + pad)
}

/// An axis label for `seconds` since the epoch: the time of day (with seconds on an axis of
/// minutes), or the date on an axis of days.
fn axis_time(seconds: f64, span: f64) -> String {
    #[allow(clippy::cast_possible_truncation)]
    let Some(time) = DateTime::from_timestamp(seconds.round() as i64, 0) else {
        return String::new();
    };
    let format = if span < 600.0 {
        "%H:%M:%S"
    } else if span < 2.0 * 86_400.0 {
        "%H:%M"
    } else {
        "%Y-%m-%d"
    };
    time.format(format).to_string()
}

/// A value axis label with as many decimals as the axis' scale needs.
fn value_label(value: f64, axis_max: f64) -> String {
    if axis_max >= 20.0 {
        format!("{value:.0}")
    } else if axis_max >= 2.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// Seconds since the epoch.
#[allow(clippy::cast_precision_loss)]
fn epoch_seconds(time: DateTime<Utc>) -> f64 {
    time.timestamp_millis() as f64 / 1000.0
}

/// `2026-12-06 21:11:11 UTC`.
fn time_text(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `42 s`, `7 min`, `5 h`, `3 d`: how long ago.
#[must_use]
pub fn age_text(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "in the future".into(),
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// `3.2 s`, `4 min 5 s`.
fn duration_text(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        #[allow(clippy::cast_possible_truncation)]
        let whole = seconds.round() as i64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// Text made safe inside HTML elements and quoted attributes.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::tests::{at, failed, manifest};

    fn history() -> History {
        let runs = vec![
            Run::complete(&manifest(0, 10, false), SignatureState::Unsigned),
            Run::failed(&failed(3600)),
            Run::complete(&manifest(7200, 20, true), SignatureState::Signed),
        ];
        History {
            store: "file:///tmp/<store>".into(),
            generated_at: at(7200 + 90),
            deployments: vec![DeploymentHistory {
                name: "cf".into(),
                runs,
            }],
        }
    }

    fn count(text: &str, needle: &str) -> usize {
        text.matches(needle).count()
    }

    /// The series lines of an SVG: polylines 2 wide.
    fn lines(svg: &str) -> usize {
        svg.split("<polyline")
            .skip(1)
            .filter(|tag| tag[..tag.find('>').unwrap()].contains("stroke-width=\"2\""))
            .count()
    }

    /// The text of the element `<tag ...id="id"...>` ... `</tag>`.
    fn element<'a>(page: &'a str, tag: &str, id: &str) -> &'a str {
        let start = page.find(&format!("id=\"{id}\"")).expect(id);
        let end = start + page[start..].find(&format!("</{tag}>")).expect("closed");
        &page[start..end]
    }

    #[test]
    fn the_plots_hold_the_complete_runs_and_mark_the_failed_one() {
        let plots = plots(&history().deployments[0]);
        let kinds: Vec<&str> = plots.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            kinds,
            ["cf-size", "cf-duration", "cf-lock", "cf-throughput"]
        );
        let names =
            |plot: &Plot| -> Vec<String> { plot.series.iter().map(|s| s.name.clone()).collect() };
        assert_eq!(names(&plots[0]), ["db-0-pg", "db-0-redis"]);
        assert_eq!(plots[0].unit, "B");
        assert_eq!(
            plots[1].series[0].points,
            [(1.7e9, 10.0), (1.7e9 + 7200.0, 20.0)]
        );
        assert_eq!(names(&plots[2]), ["db/0 pg"]);
        // 4096 plain bytes in 10 s, in MiB/s.
        let mib = f64::from(1 << 20);
        assert_eq!(plots[3].series[0].points[0].1, 409.6 / mib);
        for plot in &plots {
            assert_eq!(plot.failures, [1.7e9 + 3600.0]);
            assert!(plot.series.iter().all(|s| s.points.len() == 2));
        }
    }

    #[test]
    fn the_page_has_a_row_per_run_and_an_svg_per_plot_with_its_series_and_marks() {
        let page = render(&history());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(
            count(&page, "<tr data-id=") + count(&page, "<tr class=\"failure\""),
            3
        );
        assert_eq!(count(&page, "<tr class=\"failure\""), 1);
        assert!(page.contains("pre-backup-lock of db/0 pg exited 1"));
        assert!(page.contains("<td>signed</td>") && page.contains("<td>unsigned</td>"));
        assert_eq!(count(&page, "<svg"), 4);
        let size = element(&page, "figure", "cf-size");
        assert_eq!(lines(size), 2, "{size}");
        assert_eq!(count(size, "<circle"), 4);
        assert_eq!(count(size, "<polygon"), 1);
        let duration = element(&page, "figure", "cf-duration");
        assert_eq!(lines(duration), 1);
        assert_eq!(count(duration, "<circle"), 2);
        // The store's name is text, never markup.
        assert!(page.contains("file:///tmp/&lt;store&gt;"));
        // Nothing is fetched: no script, no external reference.
        for fetching in ["<script", "<link", "src=", "href=", "@import", "url("] {
            assert!(!page.contains(fetching), "{fetching} in the page");
        }
    }

    #[test]
    fn a_deployment_with_only_failures_still_gets_its_plots() {
        let mut history = history();
        history.deployments[0]
            .runs
            .retain(|r| r.outcome == Outcome::Failed);
        let page = render(&history);
        assert_eq!(count(&page, "<svg"), 4);
        assert_eq!(lines(&page), 0);
        assert_eq!(count(&page, "<polygon"), 4);
        assert!(page.contains("no data"));
    }

    #[test]
    fn ages_and_escapes_read_plainly() {
        assert_eq!(age_text(42), "42 s");
        assert_eq!(age_text(600), "10 min");
        assert_eq!(age_text(5 * 3600), "5 h");
        assert_eq!(age_text(3 * 86_400), "3 d");
        assert_eq!(age_text(-5), "in the future");
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(duration_text(3.25), "3.2 s");
        assert_eq!(duration_text(245.0), "4 min 5 s");
        assert_eq!(value_label(40.0, 66.0), "40");
        assert_eq!(value_label(0.25, 1.1), "0.250");
        let noon = 1.7e9;
        assert_eq!(axis_time(noon, 60.0), "22:13:20");
        assert_eq!(axis_time(noon, 3600.0), "22:13");
        assert_eq!(axis_time(noon, 7.0 * 86_400.0), "2023-11-14");
    }
}
