//! `imgctl rollout` and `imgctl withdraw` (docs/rollouts.md): the plan named on the command
//! line (a built-in one, or a TOML or JSON file checked with `Plan::problem` before any
//! request), the other arguments checked, and `text` renders the server's answers for people.

use std::path::{Path, PathBuf};

use api::rollouts::{Plan, PlanSpec, StartRollout, Withdraw};
use format::ChannelName;

use super::fleet::{parse_generation, InputError};

#[cfg(test)]
mod tests;
pub mod text;

/// The built-in plans, by the name `--plan` takes.
pub const BUILT_IN: [&str; 2] = ["normal", "emergency"];

/// A plan file refused before any request.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `--plan` is neither a built-in name nor a file that exists.
    #[error("--plan {0:?}: no built-in plan of that name (normal, emergency) and no such file")]
    Unknown(String),
    /// The file could not be read.
    #[error("reading plan file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse, or has keys a plan does not have.
    #[error("plan file {path}: {why}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The plan parses but cannot run (`Plan::problem`).
    #[error("plan file {path}: {problem}")]
    Problem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The keys of a plan file's top level (`stage` is the TOML form of `stages`).
const PLAN_KEYS: [&str; 5] = ["name", "stage", "stages", "ignore_windows", "lost_after_seconds"];

/// The keys a stage may have: exactly one of `group` and `percent`, then the gates.
const STAGE_KEYS: [&str; 6] = ["group", "percent", "min_sample", "soak_seconds", "success_percent", "failure_budget"];

/// Parses a plan file's text: TOML (`[[stage]]` tables), or JSON (`Plan` as the API has it,
/// `stages`) when `path` ends in `.json`. Without a `name` the plan takes the file's stem.
/// Unknown keys are refused (a misspelt gate must not silently become its default), and the
/// plan must pass `Plan::problem`.
pub fn parse_plan(path: &Path, text: &str) -> Result<Plan, PlanError> {
    let syntax = |why: String| PlanError::Syntax { path: path.to_path_buf(), why };
    let json = path.extension().is_some_and(|e| e == "json");
    // Unknown keys are checked on the generic form: serde cannot refuse them in a stage,
    // whose target is flattened.
    let mut generic: serde_json::Value = if json {
        serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?
    } else {
        let value: toml::Value = toml::from_str(text).map_err(|e| syntax(e.to_string().trim_end().to_string()))?;
        serde_json::to_value(value).map_err(|e| syntax(e.to_string()))?
    };
    let Some(top) = generic.as_object_mut() else {
        return Err(syntax("the file is not a table with [[stage]] tables".into()));
    };
    if let Some(k) = top.keys().find(|k| !PLAN_KEYS.contains(&k.as_str())) {
        return Err(syntax(format!("unknown key {k:?} (a plan has {})", PLAN_KEYS.join(", "))));
    }
    if top.contains_key("stage") && top.contains_key("stages") {
        return Err(syntax("give the stages once: [[stage]] tables or a stages list".into()));
    }
    if let Some(stages) = top.remove("stage") {
        top.insert("stages".into(), stages);
    }
    let stages = top.get("stages").and_then(|s| s.as_array()).cloned().unwrap_or_default();
    if stages.is_empty() {
        return Err(syntax("no stages: a plan has [[stage]] tables, each with a group or a percent".into()));
    }
    for (i, s) in stages.iter().enumerate() {
        let n = i + 1;
        let Some(table) = s.as_object() else {
            return Err(syntax(format!("stage {n} is not a table")));
        };
        if let Some(k) = table.keys().find(|k| !STAGE_KEYS.contains(&k.as_str())) {
            return Err(syntax(format!("stage {n}: unknown key {k:?} (a stage has {})", STAGE_KEYS.join(", "))));
        }
        if table.contains_key("group") == table.contains_key("percent") {
            return Err(syntax(format!("stage {n}: give exactly one of group = \"NAME\" and percent = 1-100")));
        }
    }
    if !top.contains_key("name") {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plan");
        let stem = stem.strip_suffix(".toml").or_else(|| stem.strip_suffix(".json")).unwrap_or(stem);
        top.insert("name".into(), serde_json::Value::String(stem.to_string()));
    }
    let plan: Plan = serde_json::from_value(generic).map_err(|e| syntax(e.to_string()))?;
    match plan.problem() {
        Some(problem) => Err(PlanError::Problem { path: path.to_path_buf(), problem }),
        None => Ok(plan),
    }
}

/// Reads and parses a plan file (`parse_plan`).
pub fn read_plan(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read { path: path.to_path_buf(), source })?;
    parse_plan(path, &text)
}

/// What `--plan` names: a built-in plan by name (the server has it), else a file, read and
/// checked here. Without `--plan`, `normal`.
pub fn plan_spec(arg: Option<&str>) -> Result<PlanSpec, PlanError> {
    let Some(arg) = arg else { return Ok(PlanSpec::Named("normal".into())) };
    if BUILT_IN.contains(&arg) {
        return Ok(PlanSpec::Named(arg.to_string()));
    }
    let path = Path::new(arg);
    if !path.exists() {
        return Err(PlanError::Unknown(arg.chars().take(200).collect()));
    }
    Ok(PlanSpec::Given(read_plan(path)?))
}

/// The start of a rollout, every argument checked: the channel's name, the generation
/// `IMAGE@N`, the plan.
pub fn start(channel: &str, generation: &str, plan: Option<&str>, reason: Option<String>) -> Result<StartRollout, anyhow::Error> {
    let channel: ChannelName = channel.parse()?;
    let generation = parse_generation(generation)?;
    let plan = plan_spec(plan)?;
    Ok(StartRollout { channel, generation, plan, reason })
}

/// A withdrawal, checked: `IMAGE@N` and a reason that says something.
pub fn withdraw(generation: &str, reason: &str) -> Result<Withdraw, InputError> {
    let generation = parse_generation(generation)?;
    if reason.trim().is_empty() {
        return Err(InputError::NoReason);
    }
    Ok(Withdraw { generation, reason: reason.to_string() })
}
