//! Checks the HTTP services' tests share: the routes an OpenAPI document lists, and Prometheus's text format.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (method, path) an OpenAPI document lists. Fails when an operation has no response or no tag.
pub fn openapi_routes(document: &Value) -> Result<BTreeSet<(String, String)>, String> {
    let version = document["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.1") {
        return Err(format!(
            "not an OpenAPI 3.1 document: openapi = {version:?}"
        ));
    }
    let mut listed = BTreeSet::new();
    let paths = document["paths"]
        .as_object()
        .ok_or("the document has no paths")?;
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                if operation["responses"]
                    .as_object()
                    .is_none_or(|r| r.is_empty())
                {
                    return Err(format!("{method} {path} has no responses"));
                }
                if !operation["tags"].is_array() {
                    return Err(format!("{method} {path} has no tag"));
                }
                listed.insert((method.to_owned(), path.clone()));
            }
        }
    }
    Ok(listed)
}

/// One sample of a Prometheus text exposition: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus's text format (version 0.0.4), strictly: every line is a comment (`# HELP`, `# TYPE`), blank,
/// or `name{label="value",...} value [timestamp]` with a valid metric name and a float value.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.first() == Some(&"TYPE")
                && !matches!(
                    words.get(2),
                    Some(&("counter" | "gauge" | "histogram" | "summary" | "untyped"))
                )
            {
                return Err(format!("line {}: bad TYPE: {line}", n + 1));
            }
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line}", n + 1);
        let (series, rest) = match line.find('{') {
            Some(_) => {
                let close = line.rfind('}').ok_or_else(|| bad("unclosed labels"))?;
                (&line[..close + 1], &line[close + 1..])
            }
            None => line.split_once(' ').ok_or_else(|| bad("no value"))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                parse_labels(&labels[..labels.len() - 1]).map_err(|e| bad(&e))?,
            ),
            None => (series, BTreeMap::new()),
        };
        let valid_name = !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            });
        if !valid_name {
            return Err(bad("bad metric name"));
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().map_err(|_| bad("bad value"))?,
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

fn parse_labels(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = raw.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(match escaped {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or("an unterminated label value")?;
        labels.insert(name.trim().to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Ok(labels)
}

/// The sum of the samples named `name` whose labels include all of `labels`.
pub fn sum_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|actual| actual == v))
        })
        .map(|s| s.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_parsed_strictly() {
        let text = "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"uote\"} 3\nup 1\n\
                    h_bucket{le=\"+Inf\"} 2 1700000000\n";
        let samples = parse_prometheus(text).expect("valid");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["b"], "q\"uote");
        assert_eq!(sum_of(&samples, "x_total", &[("a", "1")]), 3.0);
        assert_eq!(sum_of(&samples, "x_total", &[("a", "2")]), 0.0);
        assert!(parse_prometheus("1bad 3\n").is_err());
        assert!(parse_prometheus("ok{a=\"1\" 3\n").is_err());
        assert!(parse_prometheus("ok three\n").is_err());
        assert!(parse_prometheus("# TYPE x wrong\n").is_err());
    }
}
