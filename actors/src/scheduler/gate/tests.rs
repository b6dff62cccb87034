//! The metric gate's pure parts: parsing a node's `/metrics`, windows, p99, judgements.

use std::collections::BTreeSet;

use lathe::layout::Traffic;
use lathe::topology::{Ratio, RolloutPolicy};
use proptest::prelude::*;

use super::*;

/// What a node's `/metrics` looks like (the encoder's own output, other families around).
const NODE_METRICS: &str = r#"# HELP lathe_http_requests_total Requests answered by HTTP task instances on this node
# TYPE lathe_http_requests_total counter
lathe_http_requests_total{code="200",group="task.web"} 80
lathe_http_requests_total{code="500",group="task.web"} 15
lathe_http_requests_total{code="503",group="task.web"} 5
lathe_http_requests_total{code="400",group="task.web"} 3
lathe_http_requests_total{code="500",group="task.other"} 99
# TYPE lathe_http_request_duration_seconds histogram
lathe_http_request_duration_seconds_bucket{group="task.web",le="0.001"} 50
lathe_http_request_duration_seconds_bucket{group="task.web",le="0.01"} 90
lathe_http_request_duration_seconds_bucket{group="task.web",le="0.1"} 102
lathe_http_request_duration_seconds_bucket{group="task.web",le="+Inf"} 103
lathe_http_request_duration_seconds_sum{group="task.web"} 0.5
lathe_http_request_duration_seconds_count{group="task.web"} 103
lathe_actor_restarts_total{kind="task",node="n"} 2
"#;

fn web() -> BTreeSet<String> {
    BTreeSet::from(["task.web".to_string()])
}

fn gated(max_error_ratio: Option<f64>, max_p99_ms: Option<u32>) -> RolloutPolicy {
    RolloutPolicy {
        max_error_ratio: max_error_ratio.map(Ratio::new),
        max_p99_ms,
        min_requests: 20,
        ..RolloutPolicy::default()
    }
}

#[test]
fn a_groups_counters_are_read_from_a_nodes_metrics() {
    let traffic = parse_metrics(NODE_METRICS, &web());
    assert_eq!(traffic.keys().collect::<Vec<_>>(), ["task.web"]);
    let web = &traffic["task.web"];
    assert_eq!(
        (web.requests, web.errors),
        (103, 20),
        "5xx are errors, 4xx are not"
    );
    assert_eq!(
        web.buckets,
        vec![(1_000, 50), (10_000, 90), (100_000, 102), (u64::MAX, 103)]
    );
    assert!(parse_metrics(NODE_METRICS, &BTreeSet::new()).is_empty());
}

#[test]
fn nodes_add_up_and_windows_subtract() {
    let one = parse_metrics(NODE_METRICS, &web())["task.web"].clone();
    let mut both = one.clone();
    add(&mut both, &one);
    assert_eq!((both.requests, both.errors), (206, 40));
    assert_eq!(both.buckets[3], (u64::MAX, 206));
    assert_eq!(since(&both, &one), Some(one.clone()));
    // A node restarted (its counters start over): no window.
    assert_eq!(since(&one, &both), None);
    assert_eq!(since(&Traffic::default(), &one), None);
    assert_eq!(since(&one, &Traffic::default()), Some(one));
}

#[test]
fn p99_interpolates_within_its_bucket_and_stops_below_inf() {
    let window = Traffic {
        requests: 100,
        errors: 0,
        buckets: vec![(1_000, 50), (10_000, 100), (u64::MAX, 100)],
    };
    // Rank 99 of 100 is 49/50 of the way through the (1 ms, 10 ms] bucket.
    let p99 = quantile_ms(0.99, &window).unwrap();
    assert!((p99 - (1.0 + 9.0 * 49.0 / 50.0)).abs() < 1e-9, "{p99}");
    assert_eq!(quantile_ms(0.5, &window), Some(1.0));
    let slow = Traffic {
        requests: 10,
        errors: 0,
        buckets: vec![(1_000, 0), (10_000, 0), (u64::MAX, 10)],
    };
    assert_eq!(quantile_ms(0.99, &slow), Some(10.0));
    assert_eq!(quantile_ms(0.99, &Traffic::default()), None);
}

#[test]
fn judgements_name_the_figure_over_its_threshold() {
    let window = parse_metrics(NODE_METRICS, &web())["task.web"].clone();
    let policy = gated(Some(0.05), None);
    match judge(&policy, &window) {
        Judgement::Over(why) => assert_eq!(
            why,
            "error ratio 0.194 over max_error_ratio 0.05 (20 of 103 answers 5xx)"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(judge(&gated(Some(0.25), None), &window), Judgement::Pass);
    match judge(&gated(None, Some(5)), &window) {
        Judgement::Over(why) => assert!(
            why.starts_with("p99 ") && why.contains("over max_p99_ms 5"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(judge(&gated(None, Some(100)), &window), Judgement::Pass);
    let few = Traffic {
        requests: 19,
        errors: 19,
        buckets: vec![(u64::MAX, 19)],
    };
    assert_eq!(judge(&policy, &few), Judgement::TooFew(19));
    // No gate, no judgement.
    assert_eq!(judge(&RolloutPolicy::default(), &few), Judgement::Pass);
}

#[test]
fn promql_answers_give_the_same_counters_as_the_nodes_text() {
    let vector = |result| {
        serde_json::json!({"status": "success",
                           "data": {"resultType": "vector", "result": result}})
    };
    let requests = vector(serde_json::json!([
        {"metric": {"group": "task.web", "code": "200"}, "value": [1.7e9, "80"]},
        {"metric": {"group": "task.web", "code": "500"}, "value": [1.7e9, "15"]},
        {"metric": {"group": "task.web", "code": "503"}, "value": [1.7e9, "5"]},
        {"metric": {"group": "task.web", "code": "400"}, "value": [1.7e9, "3"]},
        {"metric": {"group": "taskXweb", "code": "500"}, "value": [1.7e9, "99"]},
    ]));
    let buckets = vector(serde_json::json!([
        {"metric": {"group": "task.web", "le": "+Inf"}, "value": [1.7e9, "103"]},
        {"metric": {"group": "task.web", "le": "0.001"}, "value": [1.7e9, "50"]},
        {"metric": {"group": "task.web", "le": "0.1"}, "value": [1.7e9, "102"]},
        {"metric": {"group": "task.web", "le": "0.01"}, "value": [1.7e9, "90"]},
    ]));
    let from_prometheus = parse_prometheus(&requests, &buckets, &web()).unwrap();
    assert_eq!(from_prometheus, parse_metrics(NODE_METRICS, &web()));
    assert_eq!(promql_selector(&web()), "{group=~\"task.web\"}");
    let error = serde_json::json!({"status": "error", "error": "parse error"});
    assert!(parse_prometheus(&error, &buckets, &web()).is_err());
}

fn traffic() -> impl Strategy<Value = Traffic> {
    (
        0u64..1000,
        0u64..1000,
        proptest::collection::vec(0u64..500, 5),
    )
        .prop_map(|(ok, errors, increments)| {
            let mut count = 0;
            let mut buckets: Vec<(u64, u64)> = increments
                .iter()
                .enumerate()
                .map(|(i, inc)| {
                    count += inc;
                    (1_000 * 10u64.pow(i as u32), count)
                })
                .collect();
            buckets.push((u64::MAX, count));
            Traffic {
                requests: ok + errors,
                errors,
                buckets,
            }
        })
}

proptest! {
    #[test]
    fn a_window_of_a_sum_is_what_was_added(then in traffic(), more in traffic()) {
        let mut now = then.clone();
        add(&mut now, &more);
        prop_assert_eq!(since(&now, &then), Some(more));
    }

    #[test]
    fn p99_lies_within_the_histograms_finite_bounds(window in traffic()) {
        let finite = window.buckets.iter().map(|(b, _)| *b).filter(|b| *b != u64::MAX);
        let highest = finite.max().unwrap();
        if let Some(p99) = quantile_ms(0.99, &window) {
            prop_assert!(p99 >= 0.0 && p99 <= highest as f64 / 1000.0, "{p99}");
            let p50 = quantile_ms(0.5, &window).unwrap();
            prop_assert!(p50 <= p99);
        }
    }

    #[test]
    fn a_higher_error_ratio_never_passes_where_a_lower_one_fails(
        window in traffic(), max in 0.0f64..1.0, extra in 0u64..100,
    ) {
        let policy = gated(Some(max), None);
        let worse = Traffic {
            requests: window.requests + extra,
            errors: window.errors + extra,
            ..window.clone()
        };
        if matches!(judge(&policy, &window), Judgement::Over(_)) {
            prop_assert!(matches!(judge(&policy, &worse), Judgement::Over(_)));
        }
    }
}
