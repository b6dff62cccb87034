//! `lathe_cluster_members{status}`: how many members this node sees in each status;
//! `lathe_node_fenced`: 1 while this node is fenced;
//! `lathe_cluster_handshake_timeouts_total`: cluster connections closed for not authenticating in
//! time.

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use super::types::MemberStatus;

#[derive(Clone)]
pub(crate) struct MembershipMetrics {
    members: IntGaugeVec,
    fenced: IntGauge,
    pub(crate) handshake_timeouts: IntCounter,
}

impl MembershipMetrics {
    pub(crate) fn register(registry: &Registry) -> anyhow::Result<Self> {
        let members = IntGaugeVec::new(
            Opts::new(
                "lathe_cluster_members",
                "Cluster members as seen by this node, by status",
            ),
            &["status"],
        )?;
        registry
            .register(Box::new(members.clone()))
            .map_err(|err| anyhow::anyhow!("failed to register lathe_cluster_members: {err}"))?;
        let fenced = IntGauge::new(
            "lathe_node_fenced",
            "1 while this node is fenced (cut off from ZooKeeper: its task instances are stopped)",
        )?;
        registry
            .register(Box::new(fenced.clone()))
            .map_err(|err| anyhow::anyhow!("failed to register lathe_node_fenced: {err}"))?;
        let handshake_timeouts = IntCounter::new(
            "lathe_cluster_handshake_timeouts_total",
            "Cluster connections closed because they did not authenticate within \
             --cluster-handshake-timeout",
        )?;
        registry
            .register(Box::new(handshake_timeouts.clone()))
            .map_err(|err| {
                anyhow::anyhow!("failed to register lathe_cluster_handshake_timeouts_total: {err}")
            })?;
        Ok(MembershipMetrics {
            members,
            fenced,
            handshake_timeouts,
        })
    }

    pub(crate) fn set_fenced(&self, fenced: bool) {
        self.fenced.set(i64::from(fenced));
    }

    pub(crate) fn set(&self, counts: &[(MemberStatus, usize)]) {
        for (status, count) in counts {
            self.members
                .with_label_values(&[status.as_str()])
                .set(*count as i64);
        }
    }
}
