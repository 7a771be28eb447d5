//! Line charts drawn as SVG on the server: one polyline per series over a minute axis, scaled to the largest
//! value. Colours come from the stylesheet (each series has a class), so the markup carries no style attribute and
//! passes the console's Content-Security-Policy.

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    /// Shown in the legend and the accessible title.
    pub label: &'a str,
    /// The stylesheet class that colours it (`s-accepted`, ...).
    pub class: &'a str,
    pub values: &'a [u64],
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG of `lines` (of equal length), `width` by `height` user units, with a y-axis maximum label; `title`
/// names it for screen readers, followed by each line's total.
pub fn lines(title: &str, lines: &[Line<'_>], width: u32, height: u32) -> String {
    let n = lines.iter().map(|l| l.values.len()).max().unwrap_or(0);
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let (left, right, top, bottom) = (28.0, 4.0, 6.0, 14.0);
    let plot_w = f64::from(width) - left - right;
    let plot_h = f64::from(height) - top - bottom;
    let x = |i: usize| left + plot_w * i as f64 / (n.max(2) - 1) as f64;
    let y = |v: u64| top + plot_h - plot_h * v as f64 / max as f64;
    let totals: Vec<String> = lines
        .iter()
        .map(|l| format!("{} {}", l.label, l.values.iter().sum::<u64>()))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{label}" preserveAspectRatio="none"><title>{label}</title>"#,
        label = escape(&format!("{title}: {}", totals.join(", "))),
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{left}" y1="{base:.1}" x2="{end:.1}" y2="{base:.1}"/><line class="grid" x1="{left}" y1="{top}" x2="{end:.1}" y2="{top}"/><text class="tick" x="{tx}" y="{ty:.1}">{max}</text><text class="tick" x="{tx}" y="{base:.1}">0</text>"#,
        base = top + plot_h,
        end = left + plot_w,
        tx = left - 4.0,
        ty = top + 8.0,
    );
    if n > 0 {
        let _ = write!(
            svg,
            r#"<text class="tick start" x="{left}" y="{h}">-{n}m</text><text class="tick end" x="{end:.1}" y="{h}">now</text>"#,
            end = left + plot_w,
            h = height - 2,
        );
    }
    for line in lines {
        let points: Vec<String> = line
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="line {}" points="{}"/>"#,
            escape(line.class),
            points.join(" ")
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_scaled_to_its_largest_value_and_says_its_totals() {
        let svg = lines(
            "Last hour <all>",
            &[
                Line {
                    label: "accepted",
                    class: "s-accepted",
                    values: &[0, 2, 4],
                },
                Line {
                    label: "failed",
                    class: "s-failed",
                    values: &[1, 0, 0],
                },
            ],
            200,
            100,
        );
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(
            svg.contains("aria-label=\"Last hour &lt;all&gt;: accepted 6, failed 1\""),
            "{svg}"
        );
        // The largest value touches the top of the plot (y = 6), zero its bottom (y = 86).
        assert!(svg.contains("28.0,86.0 112.0,46.0 196.0,6.0"), "{svg}");
        assert!(!svg.contains("style="), "no inline style: {svg}");
    }
}
