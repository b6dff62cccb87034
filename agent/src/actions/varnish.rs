//! `type = "varnish"`: render VCL (backends and a director from groups' endpoints) → unchanged?
//! done → backends of the VCL in use that are gone: `backend.set_health NAME sick` (directors
//! skip them at once, before the slower compile) → write `<vcl_dir>/<name>.vcl` → `varnishd -C -f`
//! → `varnishadm vcl.load NAME FILE` → `vcl.use NAME` → `vcl.discard` every older `lathe_*` VCL.
//! Varnish keeps serving the old VCL until the new one is in use, so nothing is dropped.
//!
//! Template data on top of the common one: `backends`, a list of `{name, group, index, host,
//! port}` (names are VCL identifiers), limited to `groups` when the action lists them.

use crate::actions::ActionError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use minijinja::Environment;

use super::render::{ident, EndpointView};
use super::{command, files, render, Outcome};
use crate::config::ActionConfig;
use crate::status::{now_ms, Metrics};
use crate::watch::View;

/// Names of the VCLs this action loads start with this (VCL names must start with a letter).
const VCL_PREFIX: &str = "lathe_";

pub struct VarnishAction {
    env: Environment<'static>,
    template: String,
    vcl_dir: PathBuf,
    varnishadm: String,
    admin: String,
    secret: String,
    check: Option<String>,
    timeout: Duration,
    vars: serde_json::Map<String, serde_json::Value>,
    groups: Option<Vec<String>>,
    /// The VCL text in use (as far as this agent knows).
    active: Option<String>,
    /// The name of that VCL and its backends (name → `HOST:PORT`).
    active_name: Option<String>,
    active_backends: BTreeMap<String, String>,
    sequence: u64,
    watch: String,
    name: String,
    metrics: Metrics,
}

impl VarnishAction {
    pub fn new(config: &ActionConfig, watch: &str, metrics: Metrics) -> Result<Self, ActionError> {
        let template = config.template.display().to_string();
        Ok(VarnishAction {
            env: render::compile(&template, &config.template_source)?,
            template,
            vcl_dir: config.vcl_dir.clone().ok_or("varnish needs vcl_dir")?,
            varnishadm: config.varnishadm.clone(),
            admin: config
                .admin
                .as_ref()
                .ok_or("varnish needs admin")?
                .0
                .clone(),
            secret: config
                .secret
                .as_ref()
                .ok_or("varnish needs secret")?
                .display()
                .to_string(),
            check: config.check.clone(),
            timeout: config.timeout,
            vars: config.vars.clone(),
            groups: config.groups.clone(),
            active: None,
            active_name: None,
            active_backends: BTreeMap::new(),
            sequence: 0,
            watch: watch.to_string(),
            name: config.name.clone(),
            metrics,
        })
    }

    fn backends(&self, view: &View) -> Vec<serde_json::Value> {
        let wanted = |e: &EndpointView| self.groups.as_ref().is_none_or(|g| g.contains(&e.group));
        view.endpoints()
            .into_iter()
            .filter(wanted)
            .filter_map(|e| {
                Some(serde_json::json!({
                    "name": ident(format!("{}_{}", e.group, e.index)),
                    "group": e.group,
                    "index": e.index,
                    "host": e.host?,
                    "port": e.port?,
                }))
            })
            .collect()
    }

    async fn adm(&self, args: &[&str]) -> Result<String, ActionError> {
        let mut all = vec!["-T", self.admin.as_str(), "-S", self.secret.as_str()];
        all.extend_from_slice(args);
        let shown = format!("varnishadm {}", args.join(" "));
        command::run_program(&self.varnishadm, &all, &shown, self.timeout).await
    }

    /// Marks the backends of the VCL in use that are gone `sick` at once (no compile: a few
    /// milliseconds), so directors skip them while the new VCL compiles.
    async fn drain_removed(&self, backends: &BTreeMap<String, String>) -> usize {
        let Some(active) = &self.active_name else {
            return 0;
        };
        let mut drained = 0;
        for (name, addr) in &self.active_backends {
            if backends.get(name) == Some(addr) {
                continue;
            }
            let backend = format!("{active}.{name}");
            match self.adm(&["backend.set_health", &backend, "sick"]).await {
                Ok(_) => drained += 1,
                Err(e) => {
                    tracing::warn!(%backend, error = %e, "cannot mark a removed backend sick")
                }
            }
        }
        drained
    }

    pub async fn run(&mut self, view: &View) -> Outcome {
        let backends = self.backends(view);
        let count = backends.len();
        let by_name: BTreeMap<String, String> = backends
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap_or_default().to_string(),
                    format!("{}:{}", b["host"], b["port"]),
                )
            })
            .collect();
        let drained = self.drain_removed(&by_name).await;
        let context = view.context(
            &self.vars,
            &[("backends", serde_json::Value::Array(backends))],
        );
        let vcl = match render::render(&self.env, &self.template, &context) {
            Ok(vcl) => vcl,
            Err(e) => return Outcome::Rejected(format!("render failed: {e}")),
        };
        if self.active.as_deref() == Some(vcl.as_str()) {
            return Outcome::Unchanged(format!("the VCL in use is up to date ({count} backends)"));
        }
        self.sequence += 1;
        let name = format!(
            "{VCL_PREFIX}{}_{}_{}",
            view.index,
            now_ms() % 1_000_000_000,
            self.sequence
        );
        let file = self.vcl_dir.join(format!("{name}.vcl"));
        if let Err(e) = files::write_atomic(&file, vcl.as_bytes()) {
            return Outcome::Failed(e.to_string());
        }
        if let Some(check) = &self.check {
            if let Err(e) = command::run(&command::expand(check, Some(&file)), self.timeout).await {
                files::discard(&file);
                return Outcome::Rejected(format!("check failed, the VCL in use stays: {e}"));
            }
        }
        let path = file.display().to_string();
        if let Err(e) = self.adm(&["vcl.load", &name, &path]).await {
            files::discard(&file);
            return if e.to_string().contains("VCC-compiler") {
                Outcome::Rejected(format!(
                    "varnish refused the VCL, the one in use stays: {e}"
                ))
            } else {
                Outcome::Failed(e.to_string())
            };
        }
        if let Err(e) = self.adm(&["vcl.use", &name]).await {
            return Outcome::Failed(e.to_string());
        }
        self.active = Some(vcl);
        self.active_name = Some(name.clone());
        self.active_backends = by_name;
        self.metrics.reload(&self.watch, &self.name);
        let discarded = self.discard_old(&name).await;
        Outcome::Applied(format!(
            "vcl {name} in use with {count} backends ({drained} gone ones marked sick first); \
             {discarded} old VCLs discarded"
        ))
    }

    /// Discards every other `lathe_*` VCL that is not in use, and its file.
    async fn discard_old(&self, current: &str) -> usize {
        let list = match self.adm(&["vcl.list", "-j"]).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list VCLs");
                return 0;
            }
        };
        let parsed: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        let mut discarded = 0;
        for vcl in parsed.as_array().into_iter().flatten().skip(3) {
            let (Some(name), Some(status)) = (vcl["name"].as_str(), vcl["status"].as_str()) else {
                continue;
            };
            if name == current || !name.starts_with(VCL_PREFIX) || status != "available" {
                continue;
            }
            if self.adm(&["vcl.discard", name]).await.is_ok() {
                discarded += 1;
                files::discard(&self.vcl_dir.join(format!("{name}.vcl")));
            }
        }
        discarded
    }
}
