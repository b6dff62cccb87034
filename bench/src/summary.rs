//! The goal rows drawn from the fan-out runs: PUT → last subscriber at the largest subscriber
//! count, and ZooKeeper's requests and watches per change as the number of subscribers grows; plus
//! notes on where Lathe's fan-out time goes.

use crate::fanout::FanoutRow;
use crate::report::{Report, Verdict};
use crate::stats::thousands;
use crate::Plan;

const LATENCY_GOAL: &str = "p99 ≤ 20 ms";
const LATENCY_GOAL_MS: f64 = 20.0;
const REFERENCE: &str = "— (reference)";
/// "Flat": at the largest subscriber count, at most this factor (plus one request) of the smallest.
const FLAT_FACTOR: f64 = 1.5;
/// "Grows": at the largest subscriber count, at least this factor of the smallest.
const GROWTH_FACTOR: f64 = 5.0;

/// A row before it goes into the report: measurement, setup, result, goal, met (None: unknown).
type Line = (String, String, String, &'static str, Option<bool>);

pub(crate) fn fan_out_rows(report: &mut Report, plan: &Plan) {
    let Some(&largest) = plan.subscribers.iter().max() else {
        return;
    };
    let lathe = rows(report, "lathe");
    let naive = rows(report, "naive");
    let n = thousands(largest as u64);
    let mut lines = vec![
        latency_line(
            &lathe,
            largest,
            format!("3. PUT → last of {n} subscribers, Lathe"),
            format!(
                "{n} SSE watchers of one key spread over the 3 nodes; {} PUTs to node 0, each \
                    after \
                 every subscriber had the previous one; subscribers read by one 2-thread tokio \
                 client on the same CPUs",
                plan.lathe_changes
            ),
            LATENCY_GOAL,
        ),
        latency_line(
            &naive,
            largest,
            format!("4. write → last of {n} subscribers, naive"),
            format!(
                "{n} ZooKeeper sessions, one per subscriber, each re-reading with \
                 get_and_watch_data after every notification; {} set_data from a writer session",
                plan.naive_changes
            ),
            REFERENCE,
        ),
    ];
    lines.extend(trend_lines(&lathe, &naive));
    let notes = diagnosis_notes(&lathe);
    for (measurement, setup, result, goal, met) in lines {
        let verdict = match met {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::Missed,
            None if goal.starts_with('—') => Verdict::NoGoal,
            None => Verdict::Unknown,
        };
        report.row(&measurement, &setup, result, goal, verdict);
    }
    notes.into_iter().for_each(|note| report.note(note));
}

fn rows<'a>(report: &'a Report, way: &str) -> Vec<&'a FanoutRow> {
    report.fanout.iter().filter(|row| row.way == way).collect()
}

fn latency_line(
    rows: &[&FanoutRow],
    size: usize,
    measurement: String,
    setup: String,
    goal: &'static str,
) -> Line {
    let Some(row) = rows.iter().find(|row| row.subscribers == size) else {
        let result = "not measured (see the notes)".to_string();
        return (measurement, setup, result, goal, None);
    };
    let Some(latency) = row.latency else {
        let result = format!(
            "not measured: none of {} changes reached everyone",
            row.changes
        );
        return (measurement, setup, result, goal, None);
    };
    let mut result = latency.describe();
    if row.incomplete > 0 {
        let missed = format!("; {} changes missed a subscriber for 5 s", row.incomplete);
        result.push_str(&missed);
    }
    let met = latency.p99_ms <= LATENCY_GOAL_MS && row.incomplete == 0;
    (
        measurement,
        setup,
        result,
        goal,
        (goal == LATENCY_GOAL).then_some(met),
    )
}

/// ZooKeeper's requests per change and watch count at each subscriber count, both ways.
fn trend_lines(lathe: &[&FanoutRow], naive: &[&FanoutRow]) -> Vec<Line> {
    let packets = |row: &&FanoutRow| Some(row.zk_packets_per_change);
    let watches = |row: &&FanoutRow| row.zk_watches.map(|count| count as f64);
    let requests = "zk_packets_received (mntr) over the timed changes ÷ changes, at";
    let watching = "ZooKeeper's total watches while subscribed, at";
    vec![
        trend_line(
            "4. ZooKeeper requests per change, Lathe",
            requests,
            lathe,
            packets,
            "flat in N",
            flat,
        ),
        trend_line(
            "4. ZooKeeper requests per change, naive",
            requests,
            naive,
            packets,
            "grows with N (expected)",
            grows,
        ),
        trend_line(
            "4. ZooKeeper watches (wchs), Lathe",
            watching,
            lathe,
            watches,
            "does not grow with N",
            |v| v.last() <= v.first(),
        ),
        trend_line(
            "4. ZooKeeper watches (wchs), naive",
            watching,
            naive,
            watches,
            "grows with N (expected)",
            grows,
        ),
    ]
}

fn trend_line(
    measurement: &str,
    setup: &str,
    rows: &[&FanoutRow],
    value: impl Fn(&&FanoutRow) -> Option<f64>,
    goal: &'static str,
    holds: fn(&[f64]) -> bool,
) -> Line {
    let sizes: Vec<String> = rows
        .iter()
        .map(|row| thousands(row.subscribers as u64))
        .collect();
    let sizes = if sizes.is_empty() {
        "each count of".into()
    } else {
        sizes.join(" / ")
    };
    let setup = format!("{setup} {sizes} subscribers");
    let values: Option<Vec<f64>> = rows.iter().map(value).collect();
    let Some(values) = values.filter(|values| !values.is_empty()) else {
        return (
            measurement.into(),
            setup,
            "not measured (see the notes)".into(),
            goal,
            None,
        );
    };
    let shown: Vec<String> = values
        .iter()
        .map(|&v| {
            if v.fract() == 0.0 || v >= 100.0 {
                thousands(v as u64)
            } else {
                format!("{v:.1}")
            }
        })
        .collect();
    let met = (values.len() >= 2).then(|| holds(&values));
    (measurement.into(), setup, shown.join(" / "), goal, met)
}

fn flat(values: &[f64]) -> bool {
    values.last()
        <= values
            .first()
            .map(|first| first * FLAT_FACTOR + 1.0)
            .as_ref()
}

fn grows(values: &[f64]) -> bool {
    values.last() >= values.first().map(|first| first * GROWTH_FACTOR).as_ref()
}

/// Where Lathe's fan-out time goes: which node's subscriber came last, the time inside the nodes'
/// registry, and CPU per change.
fn diagnosis_notes(lathe: &[&FanoutRow]) -> Vec<String> {
    let mut notes = Vec::new();
    for row in lathe {
        let (Some(last), Some(inside)) = (&row.last_on_node, &row.node_fanout_mean_ms) else {
            continue;
        };
        let inside: Vec<String> = inside.iter().map(|mean| format!("{mean:.2}")).collect();
        let last: Vec<String> = last.iter().map(usize::to_string).collect();
        notes.push(format!(
            "Lathe, {} subscribers: the last subscriber was on node 0 / 1 / 2 in {} of the \
             changes; the nodes' own lathe_registry_fanout_seconds averaged {} ms",
            thousands(row.subscribers as u64),
            last.join(" / "),
            inside.join(" / ")
        ));
    }
    notes
}
