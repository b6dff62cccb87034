//! `type = "haproxy"`: each configured backend's servers follow a group's live endpoints.
//!
//! Per run: read the live slots (`show servers state`), plan (slots.rs), render the whole
//! configuration with the planned slots (so the file always matches what runs: a restart comes up
//! right), `check` it and write it atomically; then, in the common case, apply the plan through the
//! runtime API (`set server be/latheN addr A port P` + `state ready`, `state maint`) — no reload,
//! no connection dropped. Only when a backend runs out of slots (or HAProxy lacks it) does it
//! reload: `reload` on the master socket (master-worker, `expose-fd listeners`: hitless), or the
//! `reload` command. Every run ends by checking that HAProxy serves exactly the endpoints.

pub mod slots;
pub mod socket;

use crate::actions::ActionError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use minijinja::Environment;

use self::slots::{plan, Plan, Slot, SlotChange, Target, SLOT_PREFIX};
use self::socket::LiveServer;
use super::{address, command, files, render, Outcome};
use crate::config::ActionConfig;
use crate::status::Metrics;
use crate::watch::View;

pub struct HaproxyAction {
    env: Environment<'static>,
    template: String,
    destination: PathBuf,
    admin_socket: PathBuf,
    master_socket: Option<PathBuf>,
    reload: Option<String>,
    check: Option<String>,
    timeout: Duration,
    vars: serde_json::Map<String, serde_json::Value>,
    spare: usize,
    /// HAProxy backend → Lathe group.
    backends: BTreeMap<String, String>,
    /// The slots as last planned (used while HAProxy is down).
    known: BTreeMap<String, Vec<Slot>>,
    watch: String,
    name: String,
    metrics: Metrics,
}

impl HaproxyAction {
    pub fn new(config: &ActionConfig, watch: &str, metrics: Metrics) -> Result<Self, ActionError> {
        let template = config.template.display().to_string();
        Ok(HaproxyAction {
            env: render::compile(&template, &config.template_source)?,
            template,
            destination: config
                .destination
                .clone()
                .ok_or("haproxy needs destination")?,
            admin_socket: config
                .admin_socket
                .clone()
                .ok_or("haproxy needs admin_socket")?,
            master_socket: config.master_socket.clone(),
            reload: config.reload.clone(),
            check: config.check.clone(),
            timeout: config.timeout,
            vars: config.vars.clone(),
            spare: config.slots,
            backends: config.backends.clone(),
            known: BTreeMap::new(),
            watch: watch.to_string(),
            name: config.name.clone(),
            metrics,
        })
    }

    /// Each backend's endpoints (`HOST:PORT` of its group's HTTP instances).
    fn desired(&self, view: &View) -> BTreeMap<String, BTreeSet<Target>> {
        let groups = view.groups();
        self.backends
            .iter()
            .map(|(backend, group)| {
                let targets = groups
                    .get(group)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some((e.host.clone()?, e.port?)))
                    .collect();
                (backend.clone(), targets)
            })
            .collect()
    }

    /// The live slots of every backend; `Ok(None)` for a backend HAProxy does not have.
    async fn live(&self) -> Result<BTreeMap<String, Option<Vec<Slot>>>, ActionError> {
        let mut live = BTreeMap::new();
        for backend in self.backends.keys() {
            let servers = socket::servers(&self.admin_socket, backend).await?;
            live.insert(backend.clone(), servers.map(|s| slots_of(&s)));
        }
        Ok(live)
    }

    pub async fn run(&mut self, view: &View) -> Outcome {
        let desired = self.desired(view);
        let live = self.live().await;
        let mut plans = BTreeMap::new();
        for (backend, targets) in &desired {
            let current = match &live {
                Ok(live) => live.get(backend).cloned().flatten(),
                Err(_) => None,
            };
            let current = current.or_else(|| self.known.get(backend).cloned());
            let missing = matches!(&live, Ok(l) if l.get(backend).is_some_and(Option::is_none));
            let mut backend_plan = plan(current.as_deref().unwrap_or(&[]), targets, self.spare);
            backend_plan.grew |= missing;
            plans.insert(backend.clone(), backend_plan);
        }
        let written = match self.write_config(view, &plans).await {
            Ok(written) => written,
            Err(outcome) => return outcome,
        };
        self.known = plans
            .iter()
            .map(|(b, p)| (b.clone(), p.slots.clone()))
            .collect();
        if let Err(e) = live {
            let file = if written { "written" } else { "unchanged" };
            return Outcome::Failed(format!(
                "{} {file}; haproxy unreachable: {e}",
                self.destination.display()
            ));
        }
        let summary = summarize(&plans);
        if plans.values().any(|p| p.grew) {
            if let Err(e) = self.reload().await {
                return Outcome::Failed(format!("slots ran out ({summary}); {e}"));
            }
            self.metrics.reload(&self.watch, &self.name);
            return match self.converge(&desired).await {
                Ok(_) => Outcome::Applied(format!("reloaded with more slots: {summary}")),
                Err(e) => Outcome::Failed(format!("reloaded, but {e}")),
            };
        }
        let changes: Vec<(String, SlotChange)> = plans
            .iter()
            .flat_map(|(b, p)| p.changes.iter().map(move |c| (b.clone(), c.clone())))
            .collect();
        if let Err(e) = self.apply(&changes).await {
            return Outcome::Failed(e.to_string());
        }
        match self.verify(&desired).await {
            Ok(()) if changes.is_empty() => {
                Outcome::Unchanged(format!("backends up to date: {summary}"))
            }
            Ok(()) => Outcome::Applied(format!(
                "runtime API, {} changes, no reload: {summary}",
                changes.len()
            )),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Renders and (when it changed) checks and writes the configuration. `Ok(written)`.
    async fn write_config(
        &self,
        view: &View,
        plans: &BTreeMap<String, Plan>,
    ) -> Result<bool, Outcome> {
        let backends: serde_json::Map<String, serde_json::Value> = plans
            .iter()
            .map(|(name, p)| {
                let group = self.backends.get(name).cloned().unwrap_or_default();
                let value = serde_json::json!({"name": name, "group": group, "servers": p.slots});
                (name.clone(), value)
            })
            .collect();
        let extra = [
            ("backends", serde_json::Value::Object(backends)),
            (
                "admin_socket",
                serde_json::json!(self.admin_socket.display().to_string()),
            ),
        ];
        let context = view.context(&self.vars, &extra);
        let rendered = render::render(&self.env, &self.template, &context)
            .map_err(|e| Outcome::Rejected(format!("render failed: {e}")))?;
        if files::is_same(&self.destination, rendered.as_bytes()) {
            return Ok(false);
        }
        let temp = files::write_temp(&self.destination, rendered.as_bytes())
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        if let Some(check) = &self.check {
            if let Err(e) = command::run(&command::expand(check, Some(&temp)), self.timeout).await {
                files::discard(&temp);
                return Err(Outcome::Rejected(format!(
                    "check failed, {} and haproxy left as they were: {e}",
                    self.destination.display()
                )));
            }
        }
        files::commit(&temp, &self.destination).map_err(|e| Outcome::Failed(e.to_string()))?;
        Ok(true)
    }

    async fn reload(&self) -> Result<(), ActionError> {
        match (&self.master_socket, &self.reload) {
            (Some(master), _) => socket::master_reload(master).await,
            (None, Some(reload)) => command::run(
                &command::expand(reload, Some(&self.destination)),
                self.timeout,
            )
            .await
            .map(|_| ()),
            (None, None) => Err(ActionError::Config(
                "neither master_socket nor reload is configured".to_string(),
            )),
        }
    }

    /// Runtime commands: fills first (capacity never drops), then frees.
    async fn apply(&self, changes: &[(String, SlotChange)]) -> Result<(), ActionError> {
        let mut ordered: Vec<&(String, SlotChange)> = changes.iter().collect();
        ordered.sort_by_key(|(_, c)| matches!(c, SlotChange::Free { .. }));
        for (backend, change) in ordered {
            if let SlotChange::Fill { target, .. } = change {
                // Endpoints are checked when read; a runtime line must never chain a command.
                if address::host_port(&format!("{}:{}", target.0, target.1)).is_none() {
                    return Err(ActionError::Haproxy(format!(
                        "refusing the malformed address {target:?}"
                    )));
                }
            }
            let line = match change {
                SlotChange::Fill { name, target } => format!(
                    "set server {backend}/{name} addr {} port {}; set server {backend}/{name} \
                        state ready",
                    target.0, target.1
                ),
                SlotChange::Free { name } => format!("set server {backend}/{name} state maint"),
            };
            socket::exchange(&self.admin_socket, &line).await?;
        }
        self.metrics
            .runtime_updates(&self.watch, &self.name, changes.len() as u64);
        Ok(())
    }

    /// Checks that every backend serves exactly its endpoints.
    async fn verify(
        &self,
        desired: &BTreeMap<String, BTreeSet<Target>>,
    ) -> Result<(), ActionError> {
        let live = self.live().await?;
        for (backend, targets) in desired {
            let serving: BTreeSet<Target> = live
                .get(backend)
                .cloned()
                .flatten()
                .unwrap_or_default()
                .iter()
                .filter_map(Slot::target)
                .collect();
            if &serving != targets {
                return Err(ActionError::Haproxy(format!(
                    "backend {backend} serves {serving:?}, expected {targets:?}"
                )));
            }
        }
        Ok(())
    }

    /// After a reload: the new worker should serve the file's slots; fix any difference at runtime.
    async fn converge(
        &self,
        desired: &BTreeMap<String, BTreeSet<Target>>,
    ) -> Result<(), ActionError> {
        let mut deadline = 100;
        loop {
            match self.live().await {
                Ok(live) if live.values().all(Option::is_some) => {
                    let mut changes = Vec::new();
                    for (backend, targets) in desired {
                        let current = live.get(backend).cloned().flatten().unwrap_or_default();
                        let p = plan(&current, targets, self.spare);
                        if p.grew {
                            return Err(ActionError::Haproxy(format!(
                                "backend {backend} still lacks slots"
                            )));
                        }
                        changes.extend(p.changes.into_iter().map(|c| (backend.clone(), c)));
                    }
                    self.apply(&changes).await?;
                    return self.verify(desired).await;
                }
                _ if deadline == 0 => {
                    return Err(ActionError::Haproxy(
                        "the new worker does not answer on the admin socket".to_string(),
                    ))
                }
                _ => {
                    deadline -= 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The slot servers among a backend's servers, in slot order.
fn slots_of(servers: &[LiveServer]) -> Vec<Slot> {
    let mut slots: Vec<(usize, Slot)> = servers
        .iter()
        .filter_map(|s| {
            let number: usize = s.name.strip_prefix(SLOT_PREFIX)?.parse().ok()?;
            let slot = Slot {
                name: s.name.clone(),
                addr: s.addr.clone(),
                port: s.port,
                enabled: s.enabled,
            };
            Some((number, slot))
        })
        .collect();
    slots.sort_by_key(|(n, _)| *n);
    slots.into_iter().map(|(_, s)| s).collect()
}

fn summarize(plans: &BTreeMap<String, Plan>) -> String {
    plans
        .iter()
        .map(|(backend, p)| {
            let live = p.slots.iter().filter(|s| s.enabled).count();
            format!("{backend} {live}/{} slots", p.slots.len())
        })
        .collect::<Vec<_>>()
        .join(", ")
}
