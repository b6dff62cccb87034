//! The order groups are placed in: after the groups carrying the tags their biases name.

use std::collections::{BTreeSet, HashMap};

use lathe::topology::GroupSpec;

/// `groups` (sorted by name) reordered so that a group comes after every other group carrying a
/// tag its biases name, by name otherwise; when only groups waiting on a cycle are left, the
/// first of them by name goes next.
pub(super) fn placement_order<'g>(groups: &[&'g GroupSpec]) -> Vec<&'g GroupSpec> {
    let mut carriers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, group) in groups.iter().enumerate() {
        for tag in &group.tags {
            carriers.entry(tag.as_str()).or_default().push(i);
        }
    }
    // dependents[j]: the groups waiting for group j; waiting[i]: how many groups i waits for.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    let mut waiting = vec![0usize; groups.len()];
    for (i, group) in groups.iter().enumerate() {
        let needs: BTreeSet<usize> = group
            .biases
            .iter()
            .filter_map(|(tag, _)| carriers.get(tag.as_str()))
            .flatten()
            .copied()
            .filter(|&j| j != i)
            .collect();
        waiting[i] = needs.len();
        for j in needs {
            dependents[j].push(i);
        }
    }

    let mut ready: BTreeSet<usize> = (0..groups.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = vec![false; groups.len()];
    let mut order = Vec::with_capacity(groups.len());
    while order.len() < groups.len() {
        let next = match ready.pop_first() {
            Some(next) => next,
            // Only groups in a cycle are left: take the first by name.
            None => (0..groups.len())
                .find(|&i| !done[i])
                .expect("some group is left"),
        };
        done[next] = true;
        order.push(groups[next]);
        for &dependent in &dependents[next] {
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 && !done[dependent] {
                ready.insert(dependent);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use lathe::topology::parse;

    use super::*;

    fn names(order: &[&GroupSpec]) -> Vec<String> {
        order.iter().map(|g| g.name.clone()).collect()
    }

    #[test]
    fn the_seed_places_load_balancers_after_frontpages() {
        let seed = parse(
            "s.toml",
            include_str!("../../../../config/my_topology.toml"),
        )
        .unwrap();
        let groups: Vec<&GroupSpec> = seed.groups.iter().collect();
        assert_eq!(
            names(&placement_order(&groups)),
            [
                "task.http.frontpage.v4-2-1",
                "task.http.frontpage.v4-2-2",
                "task.http.lb"
            ]
        );
    }

    #[test]
    fn dependencies_come_first_and_cycles_go_by_name() {
        let text = r#"
            [a]
            crate = "c"
            version = "1.0.0"
            task = "t"
            tasks = 1
            tags = ["a"]
            biases = [["z"], [1]]
            [b]
            crate = "c"
            version = "1.0.0"
            task = "t"
            tasks = 1
            tags = ["b"]
            biases = [["a"], [1]]
            [y]
            crate = "c"
            version = "1.0.0"
            task = "t"
            tasks = 1
            tags = ["y"]
            biases = [["z"], [1]]
            [z]
            crate = "c"
            version = "1.0.0"
            task = "t"
            tasks = 1
            tags = ["z"]
            biases = [["y"], [1]]
        "#;
        let topology = parse("t.toml", text).unwrap();
        let groups: Vec<&GroupSpec> = topology.groups.iter().collect();
        // a waits for z, b for a, y and z for each other: nothing is ready, so the first remaining
        // group by name goes (a), which frees b; then the cycle y, z by name.
        assert_eq!(names(&placement_order(&groups)), ["a", "b", "y", "z"]);
    }
}
