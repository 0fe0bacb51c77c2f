//! A [`Migration`] as the [`Config`] kubetrail builds its pipeline from: the same sections a
//! kubetrail YAML file gives, each key pointing at the Fluent Bit line it came from, so that
//! kubetrail's own configuration errors (a bad value, an unknown key) name the Fluent Bit file.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubetrail_core::config::{Config, ConfigError, Section, SectionKind};

use crate::diag::List;
use crate::translate::{Component, Migration};

impl Migration {
    /// The configuration to build (variables in `overrides` win over the file's).
    pub fn to_config(&self, overrides: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut env = self.env_map();
        env.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        let env = Arc::new(env);
        let service = section(&self.service, SectionKind::Service, 0, &env)?;
        let list = |cs: &[Component], kind| -> Result<Vec<Section>, ConfigError> {
            cs.iter()
                .enumerate()
                .map(|(i, c)| section(c, kind, i, &env))
                .collect()
        };
        Ok(Config {
            path: self.path.clone(),
            service,
            inputs: list(&self.inputs, SectionKind::Input)?,
            filters: list(&self.filters, SectionKind::Filter)?,
            outputs: list(&self.outputs, SectionKind::Output)?,
        })
    }
}

fn section(
    c: &Component,
    kind: SectionKind,
    index: usize,
    env: &Arc<BTreeMap<String, String>>,
) -> Result<Section, ConfigError> {
    let mut s = Section::new(kind, index, &c.name, c.file.clone(), c.line, env.clone());
    if c.list != List::Service && c.plugin != c.name {
        s.set_display_name(format!("{}, read as {}", c.plugin, c.name));
    }
    for setting in &c.settings {
        let file = (setting.file != c.file).then(|| setting.file.clone());
        s.insert(&setting.key, setting.value.clone(), file, setting.line)?;
    }
    Ok(s)
}
