//! The bench's output: a markdown table of measurements with their goals, a table of the fan-out
//! runs (Lathe and the naive way at each subscriber count), the LB and HAProxy side by side,
//! notes, and the same as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::fanout::FanoutRow;
use crate::lb::{Comparison, ProxyRow};
use crate::stats::{ms, thousands, Summary};

const FANOUT_TITLE: &str = "\nFan-out: write → subscribers (times from just before the write), \
                            and ZooKeeper's work per change\n\n";

/// Whether a measurement meets its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    /// There is no goal for this number.
    NoGoal,
    Met,
    Missed,
    /// There is a goal, but the measurement could not be made.
    Unknown,
}

/// One measurement.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) measurement: String,
    pub(crate) setup: String,
    pub(crate) result: String,
    pub(crate) goal: String,
    pub(crate) verdict: Verdict,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) fanout: Vec<FanoutRow>,
    /// The LB phase's side-by-side table.
    pub(crate) lb: Option<Comparison>,
    pub(crate) notes: Vec<String>,
}

impl Report {
    /// A measurement without a goal.
    pub(crate) fn info(&mut self, measurement: &str, setup: &str, result: String) {
        self.row(measurement, setup, result, "—", Verdict::NoGoal);
    }

    /// A measurement with a goal: `met` says whether it holds.
    pub(crate) fn goal(
        &mut self,
        measurement: &str,
        setup: &str,
        result: String,
        goal: &str,
        met: bool,
    ) {
        let verdict = if met { Verdict::Met } else { Verdict::Missed };
        self.row(measurement, setup, result, goal, verdict);
    }

    /// A measurement that could not be made, and why (goal `—` if it has none).
    pub(crate) fn failed(&mut self, measurement: &str, setup: &str, why: &str, goal: &str) {
        let verdict = if goal == "—" {
            Verdict::NoGoal
        } else {
            Verdict::Unknown
        };
        let result = format!("not measured: {}", one_line(why));
        self.row(measurement, setup, result, goal, verdict);
    }

    pub(crate) fn row(
        &mut self,
        measurement: &str,
        setup: &str,
        result: String,
        goal: &str,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            measurement: measurement.to_string(),
            setup: setup.to_string(),
            result,
            goal: goal.to_string(),
            verdict,
        });
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The whole report as markdown.
    pub(crate) fn markdown(&self) -> String {
        let mut out =
            String::from("| measurement | setup | result | goal | ok? |\n|---|---|---|---|---|\n");
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|row| section(&row.measurement)); // stable: in the order measured
        for row in rows {
            let ok = row.verdict.cell();
            let cells = [&row.measurement, &row.setup, &row.result, &row.goal];
            let cells: Vec<String> = cells.iter().map(|cell| cell.replace('|', "/")).collect();
            writeln!(out, "| {} | {ok} |", cells.join(" | ")).ok();
        }
        if !self.fanout.is_empty() {
            out.push_str(FANOUT_TITLE);
            out.push_str(
                "| way | subscribers | changes | write ack p50 | first p50 | last p50 | last p99 \
                 | last max | incomplete | ZK packets/change (mntr) \
                 | Lathe-counted ZK requests/change | ZK watches (wchs) \
                 | CPU ms/change: nodes · ZK · bench client |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for row in &self.fanout {
                writeln!(out, "{}", fanout_line(row)).ok();
            }
        }
        if let Some(lb) = &self.lb {
            out.push_str(&lb_table(lb));
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for note in &self.notes {
                writeln!(out, "- {note}").ok();
            }
        }
        out
    }

    pub(crate) fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Verdict {
    fn cell(self) -> &'static str {
        match self {
            Verdict::NoGoal => "—",
            Verdict::Met => "yes",
            Verdict::Missed => "**NO**",
            Verdict::Unknown => "n/a",
        }
    }
}

fn lb_table(lb: &Comparison) -> String {
    let mut out = format!(
        "\nLB vs HAProxy: `{}` (GET, same front pages, same concurrency); the better of {} runs \
         (higher req/s) with that run's latencies\n\n\
         | proxy | address | req/s | each run, req/s | p50 | p99 | max | errors \
         | CPU µs/request: wrk · proxy · 3 nodes | CPUs busy | goal | ok? |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
        lb.command, lb.runs_each
    );
    for row in &lb.rows {
        writeln!(out, "{}", proxy_line(row)).ok();
    }
    out
}

fn proxy_line(row: &ProxyRow) -> String {
    let each: Vec<String> = row
        .runs
        .iter()
        .map(|run| thousands(run.wrk.requests_per_second as u64))
        .collect();
    let ok = row.verdict.cell();
    let Some(best) = row.best() else {
        return format!(
            "| {} | {} | not measured | — | — | — | — | — | — | — | {} | {ok} |",
            row.proxy, row.target, row.goal
        );
    };
    let cpu = best
        .cpu_us
        .map(|us| us.map_or("?".to_string(), |us| format!("{us:.0}")));
    let cpu = if row.proxy.starts_with("Lathe") {
        format!("{} · (in nodes) · {}", cpu[0], cpu[2])
    } else {
        cpu.join(" · ")
    };
    let busy = best
        .machine_busy_percent
        .map_or("?".to_string(), |busy| format!("{busy:.0} %"));
    let wrk = best.wrk;
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {cpu} | {busy} | {} | {ok} |",
        row.proxy,
        row.target,
        thousands(wrk.requests_per_second as u64),
        each.join(" / "),
        ms(wrk.p50_ms),
        ms(wrk.p99_ms),
        ms(wrk.max_ms),
        thousands(wrk.errors()),
        row.goal
    )
}

fn fanout_line(row: &FanoutRow) -> String {
    let p50 = |summary: &Option<Summary>| summary.map_or("—".into(), |s| ms(s.p50_ms));
    let (p99, max) = match &row.latency {
        Some(summary) => (ms(summary.p99_ms), ms(summary.max_ms)),
        None => ("—".into(), "—".into()),
    };
    let counted = row
        .lathe_zk_requests_per_change
        .map_or("—".to_string(), |count| format!("{count:.1}"));
    let watches = row
        .zk_watches
        .map_or("?".to_string(), |count| thousands(count as u64));
    let cpu = |ms: Option<f64>| ms.map_or("?".to_string(), |ms| format!("{ms:.1}"));
    let cpu = [row.cpu.nodes, row.cpu.zookeeper, row.cpu.bench_client].map(cpu);
    format!(
        "| {} | {} | {} | {} | {} | {} | {p99} | {max} | {} | {:.1} | {counted} | {watches} | {} |",
        row.way,
        thousands(row.subscribers as u64),
        row.changes,
        p50(&row.write_ack),
        p50(&row.first),
        p50(&row.latency),
        row.incomplete,
        row.zk_packets_per_change,
        cpu.join(" · ")
    )
}

/// The number a measurement's name starts with (`"3. fan-out"` → 3), for ordering rows.
fn section(measurement: &str) -> u32 {
    let digits: String = measurement
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(u32::MAX)
}

/// The first line of an error, at most 300 characters, for a table cell.
pub(crate) fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}
