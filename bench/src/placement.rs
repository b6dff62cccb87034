//! The placement rate (issue 3): instances placed per second by the scheduler's pure placement
//! function, for 1,000 new instances on 50 simulated nodes
//! (`lathe_actors::scheduler::placement::bench_place`, in this release binary).

use std::time::Duration;

use lathe_actors::scheduler::placement::bench_place;

use crate::report::Report;
use crate::stats::{ms, thousands};
use crate::{attempt, progress, Plan};

const MEASUREMENT: &str = "7. placement rate";
const INSTANCES: usize = 1_000;
const NODES: usize = 50;

pub(crate) fn placement_rate(plan: &Plan, report: &mut Report) {
    progress(&format!(
        "placing {INSTANCES} instances on {NODES} simulated nodes, {} times",
        plan.placement_runs
    ));
    let setup = format!(
        "place() alone: {} new instances (groups of 20, 5 task types, tags, every third group \
         with biases) on {} simulated nodes; {} runs, median shown",
        thousands(INSTANCES as u64),
        NODES,
        plan.placement_runs
    );
    let runs = attempt(|| {
        Ok((0..plan.placement_runs.max(1))
            .map(|_| bench_place(INSTANCES, NODES))
            .collect::<Vec<Duration>>())
    });
    match runs {
        Ok(mut runs) => {
            runs.sort_unstable();
            let median = runs[runs.len() / 2];
            let rate = |time: Duration| INSTANCES as f64 / time.as_secs_f64().max(1e-9);
            let each: Vec<String> = runs
                .iter()
                .map(|time| ms(time.as_secs_f64() * 1000.0))
                .collect();
            let result = format!(
                "{} instances/s ({} per run; best {} instances/s; runs took {})",
                thousands(rate(median) as u64),
                ms(median.as_secs_f64() * 1000.0),
                thousands(rate(runs[0]) as u64),
                each.join(", ")
            );
            report.info(MEASUREMENT, &setup, result);
        }
        Err(why) => report.failed(MEASUREMENT, &setup, &why, "—"),
    }
}
