//! `lathe_cluster_members{status}`: how many members this node sees in each status.

use prometheus::{IntGaugeVec, Opts, Registry};

use super::types::MemberStatus;

#[derive(Clone)]
pub(crate) struct MembershipMetrics {
    members: IntGaugeVec,
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
        Ok(MembershipMetrics { members })
    }

    pub(crate) fn set(&self, counts: &[(MemberStatus, usize)]) {
        for (status, count) in counts {
            self.members
                .with_label_values(&[status.as_str()])
                .set(*count as i64);
        }
    }
}
