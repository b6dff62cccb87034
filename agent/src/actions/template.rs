//! `type = "template"`: render → (byte-identical to the live file? done) → temporary file → `check`
//! on it (`{file}`) → rename over the destination → `reload`. A rejected render leaves the live
//! file alone; a failed reload is retried even when the next render is unchanged.

use crate::actions::ActionError;
use std::path::PathBuf;
use std::time::Duration;

use minijinja::Environment;

use super::{command, files, render, Outcome};
use crate::config::ActionConfig;
use crate::status::Metrics;
use crate::watch::View;

pub struct TemplateAction {
    env: Environment<'static>,
    template: String,
    destination: PathBuf,
    check: Option<String>,
    reload: Option<String>,
    timeout: Duration,
    vars: serde_json::Map<String, serde_json::Value>,
    reload_pending: bool,
    watch: String,
    name: String,
    metrics: Metrics,
}

impl TemplateAction {
    pub fn new(config: &ActionConfig, watch: &str, metrics: Metrics) -> Result<Self, ActionError> {
        let template = config.template.display().to_string();
        Ok(TemplateAction {
            env: render::compile(&template, &config.template_source)?,
            template,
            destination: config
                .destination
                .clone()
                .ok_or("a template action needs a destination")?,
            check: config.check.clone(),
            reload: config.reload.clone(),
            timeout: config.timeout,
            vars: config.vars.clone(),
            reload_pending: false,
            watch: watch.to_string(),
            name: config.name.clone(),
            metrics,
        })
    }

    pub async fn run(&mut self, view: &View) -> Outcome {
        let context = view.context(&self.vars, &[]);
        let rendered = match render::render(&self.env, &self.template, &context) {
            Ok(rendered) => rendered,
            Err(e) => return Outcome::Rejected(format!("render failed: {e}")),
        };
        let destination = self.destination.display().to_string();
        if files::is_same(&self.destination, rendered.as_bytes()) {
            if self.reload_pending {
                return self.reload(format!("{destination} unchanged")).await;
            }
            return Outcome::Unchanged(format!("{destination} is up to date"));
        }
        let temp = match files::write_temp(&self.destination, rendered.as_bytes()) {
            Ok(temp) => temp,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if let Some(check) = &self.check {
            let check = command::expand(check, Some(&temp));
            if let Err(e) = command::run(&check, self.timeout).await {
                files::discard(&temp);
                return Outcome::Rejected(format!(
                    "check failed, {destination} left as it was: {e}"
                ));
            }
        }
        if let Err(e) = files::commit(&temp, &self.destination) {
            files::discard(&temp);
            return Outcome::Failed(e.to_string());
        }
        self.reload_pending = self.reload.is_some();
        self.reload(format!("wrote {destination} ({} bytes)", rendered.len()))
            .await
    }

    async fn reload(&mut self, done: String) -> Outcome {
        let Some(reload) = &self.reload else {
            return Outcome::Applied(done);
        };
        let reload = command::expand(reload, Some(&self.destination));
        match command::run(&reload, self.timeout).await {
            Ok(_) => {
                self.reload_pending = false;
                self.metrics.reload(&self.watch, &self.name);
                Outcome::Applied(format!("{done}; reloaded"))
            }
            Err(e) => Outcome::Failed(format!("{done}; reload failed: {e}")),
        }
    }
}
