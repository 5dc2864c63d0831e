//! The plots of docs/benchmarks.md, drawn by the benchmark itself (plotters, SVG).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use serde_json::Value;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// Write every plot the results allow; returns (plot name, file name).
pub fn all(r: &Value, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(classes) = r["cost"]["classes"].as_array() {
        let labels: Vec<String> = classes
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_string())
            .collect();
        let mut series = vec![(
            "fw".to_string(),
            classes
                .iter()
                .map(|c| c["fw_above_floor_ns"].as_f64().unwrap_or(0.0))
                .collect::<Vec<_>>(),
        )];
        if classes
            .iter()
            .any(|c| c.get("xdp_filter_above_floor_ns").is_some())
        {
            series.push((
                "xdp-filter".to_string(),
                classes
                    .iter()
                    .map(|c| c["xdp_filter_above_floor_ns"].as_f64().unwrap_or(0.0))
                    .collect(),
            ));
        }
        let f = "cost.svg";
        hbars(
            &dir.join(f),
            "Per-packet cost above the XDP_DROP floor (ns, BPF_PROG_TEST_RUN)",
            &labels,
            &series,
            Some(30.0),
            SeriesLabelPosition::LowerRight,
        )?;
        out.push(("cost".to_string(), f.to_string()));
    }
    if let Some(floods) = r["e2e"]["floods"].as_array() {
        // One group per filter, one bar per flood.
        let setups: Vec<String> = floods[0]["rows"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let series: Vec<(String, Vec<f64>)> = floods
            .iter()
            .map(|fl| {
                (
                    fl["name"].as_str().unwrap_or("").to_string(),
                    fl["rows"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|x| 1e3 / x["ns_per_packet"].as_f64().unwrap_or(f64::INFINITY))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            })
            .collect();
        let f = "drop_rate.svg";
        hbars(
            &dir.join(f),
            "Drop rate, 60-byte floods over veth (million packets/s per CPU, CPU-timed)",
            &setups,
            &series,
            None,
            SeriesLabelPosition::UpperRight,
        )?;
        out.push(("e2e".to_string(), f.to_string()));
    }
    for part in ["cost", "e2e"] {
        for t in r["scale"][part].as_array().into_iter().flatten() {
            let Some(name) = t["plot"].as_str() else {
                continue;
            };
            let cols: Vec<String> = t["columns"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str())
                        .filter(|c| !c.ends_with("_ms"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let rows = t["rows"].as_array().cloned().unwrap_or_default();
            let series: Vec<(String, Vec<(f64, f64)>)> = cols
                .iter()
                .map(|c| {
                    (
                        c.replace('_', " "),
                        rows.iter()
                            .filter_map(|r| {
                                let x = r["x"].as_f64()?;
                                let ns = r[format!("{c}_ns_per_packet")].as_f64();
                                match ns {
                                    Some(ns) if ns > 0.0 => Some((x, 1e9 / ns)),
                                    _ => Some((x, r[c.as_str()].as_f64()?)),
                                }
                            })
                            .collect(),
                    )
                })
                .filter(|(_, v): &(String, Vec<(f64, f64)>)| !v.is_empty())
                .collect();
            let f = format!("{name}.svg");
            let pps = t["unit"] == "pps";
            lines(
                &dir.join(&f),
                t["title"].as_str().unwrap_or(""),
                t["x_label"].as_str().unwrap_or(""),
                if pps {
                    "packets/s"
                } else {
                    "ns above the floor"
                },
                &series,
                pps,
            )?;
            out.push((name.to_string(), f));
        }
    }
    Ok(out)
}

/// Horizontal grouped bars: one group per label, one bar per series.
fn hbars(
    path: &Path,
    title: &str,
    labels: &[String],
    series: &[(String, Vec<f64>)],
    target: Option<f64>,
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    let n = labels.len().max(1);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .chain(target)
        .fold(1.0f64, f64::max)
        * 1.15;
    let height = 80 + n as u32 * (14 * series.len() as u32 + 12);
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(210)
        .build_cartesian_2d(0f64..max, 0f64..n as f64)
        .map_err(err)?;
    let labels_c = labels.to_vec();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12))
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (n as f64 - y - 0.5).round();
            if (n as f64 - y - 0.5 - i).abs() < 0.01 && i >= 0.0 && (i as usize) < n {
                labels_c[i as usize].clone()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;
    let k = series.len().max(1) as f64;
    let bar = 0.8 / k;
    for (si, (name, vals)) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        chart
            .draw_series(vals.iter().enumerate().map(|(i, v)| {
                let top = n as f64 - i as f64 - 0.1 - si as f64 * bar;
                Rectangle::new([(0.0, top - bar), (v.max(0.0), top)], color.filled())
            }))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    if let Some(t) = target {
        chart
            .draw_series(LineSeries::new(
                [(t, 0.0), (t, n as f64)],
                RED.stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("target {t} ns"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], RED));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// 1500 → "1.5k", 2000000 → "2M".
fn si(v: f64) -> String {
    let (d, u) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let t = format!("{d:.1}");
    format!("{}{u}", t.trim_end_matches(".0"))
}

/// Lines over a log-scale x axis (and a log y axis for rates).
fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_y: bool,
) -> anyhow::Result<()> {
    let xs = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0));
    let (xmin, xmax) = xs.fold((f64::MAX, 1.0f64), |(a, b), x| (a.min(x), b.max(x)));
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .collect();
    let ymax = ys.iter().copied().fold(1.0f64, f64::max) * 1.3;
    let ymin = ys.iter().copied().fold(f64::MAX, f64::min).max(1.0) / 2.0;
    let root = SVGBackend::new(path, (860, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let xr = (xmin.max(1.0) * 0.8..xmax * 1.25).log_scale();
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .bold_line_style(BLACK.mix(0.12))
                .x_desc(x_label)
                .y_desc(y_label)
                .x_label_formatter(&|x| si(*x))
                .y_label_formatter(&|y| si(*y))
                .draw()
                .map_err(err)?;
            for (si, (name, pts)) in series.iter().enumerate() {
                let color = COLORS[si % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(err)?;
        }};
    }
    if log_y {
        draw!(
            b.build_cartesian_2d(xr, (ymin..ymax).log_scale())
                .map_err(err)?
        );
    } else {
        draw!(b.build_cartesian_2d(xr, 0f64..ymax).map_err(err)?);
    }
    root.present().map_err(err)?;
    Ok(())
}
