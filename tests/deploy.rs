//! The fleet recipe in `deploy/`: the PromQL the autoscaler rests on parses, names only metrics
//! the crate records, and serves the metric names the HorizontalPodAutoscaler asks for. (The
//! manifests themselves are validated against Kubernetes' schemas by `.ci/test`, with the
//! `kubernetes-validate` package.)

use std::path::Path;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of every `key: '...'` line of `text` (the adapter's rules quote their templates).
fn quoted(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_owned())
        .collect()
}

/// A prometheus-adapter query template as the adapter renders it for one pod.
fn render(template: &str, series: &str) -> String {
    template
        .replace("<<.Series>>", series)
        .replace(
            "<<.LabelMatchers>>",
            r#"namespace="default",pod=~"encoder-worker-.*""#,
        )
        .replace("<<.GroupBy>>", "pod")
}

#[test]
fn the_autoscalers_queries_parse_and_name_recorded_metrics() {
    let rules = deploy("prometheus-adapter.yaml");
    let series: Vec<String> = quoted(&rules, "- seriesQuery")
        .into_iter()
        .chain(quoted(&rules, "seriesQuery"))
        .collect();
    let queries = quoted(&rules, "metricsQuery");
    assert_eq!(queries.len(), 2, "{rules}");
    assert_eq!(series.len(), queries.len(), "{rules}");
    let recorded = [
        nvencode::metrics::names::QUEUE_DEPTH,
        nvencode::metrics::names::FPS,
    ];
    for (series_query, template) in series.iter().zip(&queries) {
        promql_parser::parser::parse(series_query)
            .unwrap_or_else(|e| panic!("seriesQuery {series_query}: {e}"));
        let name = series_query.split('{').next().unwrap_or_default();
        assert!(
            recorded.contains(&name),
            "{name} is not a metric the crate records"
        );
        let query = render(template, name);
        promql_parser::parser::parse(&query).unwrap_or_else(|e| panic!("{query}: {e}"));
    }
    // Every metric the HPA scales on is one the adapter serves.
    let served = quoted(&rules, "as");
    let hpa = deploy("hpa.yaml");
    let asked = quoted(&hpa, "name");
    let asked: Vec<&String> = asked.iter().filter(|n| n.starts_with("encoder_")).collect();
    assert_eq!(asked.len(), 2, "{hpa}");
    for name in asked {
        assert!(
            served.contains(name),
            "the HPA asks for {name}; the adapter serves {served:?}"
        );
    }
}
