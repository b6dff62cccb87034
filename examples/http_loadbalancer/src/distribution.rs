//! `backend_distribution`: `[[group names], [weights]]`, validated, and a weighted choice over it.
//!
//! The choice draws `x` uniformly in `[0, total)` and takes the first group whose cumulative weight
//! exceeds `x`, so each group is chosen with probability `weight / total` (a zero weight is never
//! chosen).

use serde_json::Value;

/// Why a `backend_distribution` value cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistributionError {
    #[error("backend_distribution is not set")]
    Missing,
    #[error("backend_distribution must be [[group names], [weights]]: {0}")]
    Shape(String),
    #[error("backend_distribution has {groups} groups but {weights} weights")]
    LengthMismatch { groups: usize, weights: usize },
    #[error("backend_distribution weight {weight} of group {group} is not a non-negative number")]
    BadWeight { group: String, weight: String },
    #[error("backend_distribution weights add up to 0: no group can be chosen")]
    ZeroTotal,
}

/// A validated distribution: groups with their cumulative weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    groups: Vec<String>,
    cumulative: Vec<f64>,
}

impl Distribution {
    /// Parses and validates `[[group names], [weights]]`.
    pub fn from_value(value: &Value) -> Result<Self, DistributionError> {
        let shape = |reason: &str| DistributionError::Shape(reason.to_string());
        let parts = value.as_array().ok_or_else(|| shape("not an array"))?;
        let [groups, weights] = parts.as_slice() else {
            return Err(shape("expected exactly two arrays"));
        };
        let groups = groups
            .as_array()
            .ok_or_else(|| shape("the groups are not an array"))?;
        let weights = weights
            .as_array()
            .ok_or_else(|| shape("the weights are not an array"))?;
        if groups.len() != weights.len() {
            return Err(DistributionError::LengthMismatch {
                groups: groups.len(),
                weights: weights.len(),
            });
        }
        let mut names = Vec::with_capacity(groups.len());
        let mut cumulative = Vec::with_capacity(groups.len());
        let mut total = 0.0;
        for (group, weight) in groups.iter().zip(weights) {
            let name = group
                .as_str()
                .filter(|name| !name.is_empty())
                .ok_or_else(|| shape(&format!("group {group} is not a non-empty string")))?;
            let bad_weight = || DistributionError::BadWeight {
                group: name.to_string(),
                weight: weight.to_string(),
            };
            let weight = weight.as_f64().ok_or_else(bad_weight)?;
            if !weight.is_finite() || weight < 0.0 {
                return Err(bad_weight());
            }
            total += weight;
            names.push(name.to_string());
            cumulative.push(total);
        }
        if !(total > 0.0 && total.is_finite()) {
            return Err(DistributionError::ZeroTotal);
        }
        Ok(Distribution {
            groups: names,
            cumulative,
        })
    }

    /// The sum of the weights.
    pub fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// The group for a uniform draw `unit` in `[0, 1)`.
    pub fn pick(&self, unit: f64) -> &str {
        let x = unit.clamp(0.0, 1.0) * self.total();
        let chosen = self.cumulative.partition_point(|&c| c <= x);
        // `unit * total` can round up to `total`: fall back on the last group with a weight.
        let chosen = chosen.min(self.last_weighted());
        &self.groups[chosen]
    }

    /// The groups, in the order given.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    fn last_weighted(&self) -> usize {
        let total = self.total();
        self.cumulative.partition_point(|&c| c < total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed() -> Distribution {
        Distribution::from_value(&json!([
            ["task.http.frontpage.v4-2-1", "task.http.frontpage.v4-2-2"],
            [90, 10]
        ]))
        .unwrap()
    }

    #[test]
    fn the_seed_split_holds_over_ten_thousand_draws() {
        let distribution = seed();
        let mut rng = fastrand::Rng::with_seed(42);
        let draws = 10_000;
        let v422 = (0..draws)
            .filter(|_| distribution.pick(rng.f64()) == "task.http.frontpage.v4-2-2")
            .count();
        let share = v422 as f64 / draws as f64;
        assert!((share - 0.10).abs() < 0.02, "v4.2.2 share {share}");
    }

    #[test]
    fn three_way_split_and_zero_weights() {
        let distribution =
            Distribution::from_value(&json!([["a", "b", "z", "c"], [1, 2, 0, 1.0]])).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            *counts.entry(distribution.pick(rng.f64())).or_insert(0) += 1;
        }
        let share = |g: &str| counts.get(g).copied().unwrap_or(0) as f64 / 10_000.0;
        assert!((share("a") - 0.25).abs() < 0.02, "{counts:?}");
        assert!((share("b") - 0.50).abs() < 0.02, "{counts:?}");
        assert!((share("c") - 0.25).abs() < 0.02, "{counts:?}");
        assert_eq!(share("z"), 0.0);
    }

    #[test]
    fn the_edges_of_the_unit_interval() {
        let distribution = Distribution::from_value(&json!([["a", "b", "z"], [1, 1, 0]])).unwrap();
        assert_eq!(distribution.pick(0.0), "a");
        assert_eq!(distribution.pick(0.5), "b");
        assert_eq!(distribution.pick(1.0 - f64::EPSILON), "b");
        assert_eq!(distribution.pick(1.0), "b", "never the zero-weight tail");
    }

    #[test]
    fn invalid_distributions_are_rejected() {
        let bad = |value: Value| Distribution::from_value(&value).unwrap_err();
        assert!(matches!(bad(json!({"a": 1})), DistributionError::Shape(_)));
        assert!(matches!(bad(json!([["a"]])), DistributionError::Shape(_)));
        assert!(matches!(
            bad(json!([["a"], 1])),
            DistributionError::Shape(_)
        ));
        assert!(matches!(
            bad(json!([[1], [1]])),
            DistributionError::Shape(_)
        ));
        assert!(matches!(
            bad(json!([[""], [1]])),
            DistributionError::Shape(_)
        ));
        assert_eq!(
            bad(json!([["a", "b"], [1]])),
            DistributionError::LengthMismatch {
                groups: 2,
                weights: 1
            }
        );
        assert!(matches!(
            bad(json!([["a"], [-1]])),
            DistributionError::BadWeight { .. }
        ));
        assert!(matches!(
            bad(json!([["a"], ["9"]])),
            DistributionError::BadWeight { .. }
        ));
        assert_eq!(
            bad(json!([["a", "b"], [0, 0]])),
            DistributionError::ZeroTotal
        );
        assert_eq!(bad(json!([[], []])), DistributionError::ZeroTotal);
    }
}
