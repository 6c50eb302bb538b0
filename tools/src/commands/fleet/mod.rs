//! `imgctl fleet` and `imgctl group`: the operator's side of the fleet (docs/fleet.md). The
//! arguments are checked here before any request (labels, selectors, lifetimes, namespace
//! files, endpoint names), the requests are `Remote`'s fleet methods, and `text` renders the
//! answers for people.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use api::fleet::{BadId, BadSelector, EndpointId, Group, GroupName, Labels, Namespace, NamespaceMount, Selector};

use super::CommandError;
use crate::remote::fleet::EndpointQuery;
use crate::remote::{Remote, RemoteError};

#[cfg(test)]
mod tests;
pub mod text;

/// An argument of a fleet command that is refused before any request is made.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// `k=v` expected.
    #[error("label {text:?}: {why}")]
    Label {
        /// The argument.
        text: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A label key to remove that is not one.
    #[error("label key {0:?}: a key is 1-63 of [a-zA-Z0-9._/-]")]
    LabelKey(String),
    /// A lifetime that does not parse.
    #[error("{0:?} is not a lifetime (30m, 1h, 7d or seconds)")]
    Lifetime(String),
    /// Neither a channel nor `IMAGE@N`.
    #[error("{0:?} is neither a channel (os/stable) nor a generation IMAGE@N")]
    Target(String),
    /// A generation that is not `IMAGE@N`.
    #[error("{0:?} is not a generation IMAGE@N")]
    Generation(String),
    /// A label selector that does not parse.
    #[error(transparent)]
    Selector(#[from] BadSelector),
    /// An endpoint id or group name that breaks its rule.
    #[error(transparent)]
    Id(#[from] BadId),
    /// A namespace file that does not parse, or has fields no mount has.
    #[error("namespace file {path}: {why}")]
    NamespaceSyntax {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A namespace that parses but is not valid (`Namespace::problem`).
    #[error("namespace file {path}: {problem}")]
    Namespace {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// `fleet label` with nothing to set or remove.
    #[error("nothing to change: give k=v labels to set or --remove KEY")]
    NoLabelChange,
    /// `withdraw` or `fleet hold` with an empty reason.
    #[error("a reason is required: --reason TEXT")]
    NoReason,
}

/// An endpoint named by a host name that no endpoint, or several, have.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No endpoint has that id or host name.
    #[error("no endpoint has the id or host name {0:?}")]
    NoSuchEndpoint(String),
    /// A name that is both a group's and an endpoint's host name.
    #[error("{0:?} is both a group and an endpoint's host name: say --group, or name the endpoint by its id")]
    GroupOrEndpoint(String),
    /// Several endpoints have that host name.
    #[error("{name:?} is the host name of {} endpoints: {}; name one by its id", ids.len(), ids.join(" "))]
    Ambiguous {
        /// The host name.
        name: String,
        /// Their ids.
        ids: Vec<String>,
    },
}

/// A namespace file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading namespace file {path}")]
pub struct ReadNamespaceError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// `k=v` as a label; the value may be empty.
pub fn parse_label(text: &str) -> Result<(String, String), InputError> {
    let bad = |why| InputError::Label { text: text.chars().take(200).collect(), why };
    let (k, v) = text.split_once('=').ok_or_else(|| bad("labels are KEY=VALUE"))?;
    if !api::fleet::label_key_ok(k) {
        return Err(bad("a key is 1-63 of [a-zA-Z0-9._/-]"));
    }
    if !api::fleet::label_value_ok(v) {
        return Err(bad("a value is at most 63 of [a-zA-Z0-9._/-]"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Labels from `k=v` arguments (a key given twice: the last wins).
pub fn parse_labels(texts: &[String]) -> Result<Labels, InputError> {
    texts.iter().map(|t| parse_label(t)).collect()
}

/// `30m`, `1h`, `7d`, `90s` or a number of seconds, in seconds (not zero).
pub fn parse_lifetime(text: &str) -> Result<u64, InputError> {
    api::fleet::parse_duration(text).ok_or_else(|| InputError::Lifetime(text.chars().take(64).collect()))
}

/// A compliance target: a channel name, or `IMAGE@N`; checked, returned as given.
pub fn parse_target(text: &str) -> Result<String, InputError> {
    if api::fleet::parse_generation(text).is_some() || text.parse::<format::ChannelName>().is_ok() {
        Ok(text.to_string())
    } else {
        Err(InputError::Target(text.chars().take(200).collect()))
    }
}

/// A generation `IMAGE@N`, checked.
pub fn parse_generation(text: &str) -> Result<String, InputError> {
    match api::fleet::parse_generation(text) {
        Some(_) => Ok(text.to_string()),
        None => Err(InputError::Generation(text.chars().take(200).collect())),
    }
}

/// The keys a `[[mount]]` table may have.
const MOUNT_KEYS: [&str; 6] = ["path", "channel", "pinned", "cache_share", "passthrough", "writable"];

/// A namespace file as written: `[[mount]]` tables (`mounts` is taken too, the API's name).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceFile {
    #[serde(default, alias = "mounts")]
    mount: Vec<NamespaceMount>,
}

/// Parses a namespace file's text: TOML, or JSON when `path` ends in `.json`. Each mount has a
/// `path`, exactly one of `channel` and `pinned`, and optionally `cache_share` and
/// `passthrough`; the namespace must pass `Namespace::problem`.
pub fn parse_namespace(path: &Path, text: &str) -> Result<Namespace, InputError> {
    let syntax = |why: String| InputError::NamespaceSyntax { path: path.to_path_buf(), why };
    let json = path.extension().is_some_and(|e| e == "json");
    // Unknown keys inside a mount are checked on the generic form: serde cannot refuse them
    // next to the flattened source.
    let generic: serde_json::Value = if json {
        serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?
    } else {
        let value: toml::Value = toml::from_str(text).map_err(|e| syntax(e.to_string().trim_end().to_string()))?;
        serde_json::to_value(value).map_err(|e| syntax(e.to_string()))?
    };
    let Some(top) = generic.as_object() else {
        return Err(syntax("the file is not a table of [[mount]] tables".into()));
    };
    if let Some(k) = top.keys().find(|k| *k != "mount" && *k != "mounts") {
        return Err(syntax(format!("unknown key {k:?} (the file holds [[mount]] tables)")));
    }
    let mounts = generic.get("mount").or_else(|| generic.get("mounts")).and_then(|m| m.as_array()).cloned().unwrap_or_default();
    for (i, m) in mounts.iter().enumerate() {
        let Some(table) = m.as_object() else {
            return Err(syntax(format!("mount {} is not a table", i + 1)));
        };
        let name = table.get("path").and_then(|p| p.as_str()).map(|p| p.to_string()).unwrap_or_else(|| format!("mount {}", i + 1));
        if let Some(k) = table.keys().find(|k| !MOUNT_KEYS.contains(&k.as_str())) {
            return Err(syntax(format!("{name}: unknown key {k:?} (a mount has {})", MOUNT_KEYS.join(", "))));
        }
        if table.contains_key("channel") == table.contains_key("pinned") {
            return Err(syntax(format!("{name}: give exactly one of channel = \"IMAGE/NAME\" and pinned = \"IMAGE@N\"")));
        }
    }
    let file: NamespaceFile = serde_json::from_value(generic).map_err(|e| syntax(e.to_string()))?;
    let namespace = Namespace { mounts: file.mount };
    match namespace.problem() {
        Some(problem) => Err(InputError::Namespace { path: path.to_path_buf(), problem }),
        None => Ok(namespace),
    }
}

/// Reads and parses a namespace file (`parse_namespace`).
pub fn read_namespace(path: &Path) -> Result<Namespace, anyhow::Error> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadNamespaceError { path: path.to_path_buf(), source })?;
    Ok(parse_namespace(path, &text)?)
}

/// What `imgctl group create` asks for, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct GroupArgs {
    /// Name.
    pub name: String,
    /// Label selector.
    pub selector: Option<String>,
    /// Static members, endpoint ids.
    pub members: Vec<String>,
    /// Priority.
    pub priority: i32,
    /// The namespace, already read.
    pub namespace: Namespace,
}

/// The group `args` describe, every part checked (the selector parses, the ids are ids, the
/// namespace is valid). Members are sorted and given once.
pub fn group(args: GroupArgs) -> Result<Group, InputError> {
    let name = GroupName::new(&args.name)?;
    if let Some(s) = &args.selector {
        Selector::parse(s)?;
    }
    let members: BTreeSet<EndpointId> = args.members.iter().map(|m| EndpointId::new(m)).collect::<Result<_, _>>()?;
    if let Some(problem) = args.namespace.problem() {
        return Err(InputError::Namespace { path: PathBuf::from("(namespace)"), problem });
    }
    Ok(Group { name, members: members.into_iter().collect(), selector: args.selector, priority: args.priority, window: None, namespace: args.namespace, pin: None })
}

/// What `fleet pin` and `fleet unpin` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinTarget {
    /// One endpoint.
    Endpoint(EndpointId),
    /// Every endpoint of a group.
    Group(GroupName),
}

/// The endpoint or group `name` names: a group with `--group`; else an endpoint id, or a
/// host name, or a group's name (refused if it is both a host name and a group's).
pub fn resolve_pin_target(remote: &Remote, name: &str, group: bool) -> Result<PinTarget, anyhow::Error> {
    if group {
        return Ok(PinTarget::Group(GroupName::new(name).map_err(InputError::from)?));
    }
    if let Ok(id) = EndpointId::new(name) {
        return Ok(PinTarget::Endpoint(id));
    }
    let a_group = match GroupName::new(name) {
        Ok(g) => match remote.group(&g) {
            Ok(_) => Some(g),
            Err(RemoteError::Http { code: api::ErrorCode::NotFound, .. }) => None,
            Err(e) => return Err(CommandError::from(e).into()),
        },
        Err(_) => None,
    };
    match (resolve_endpoint(remote, name), a_group) {
        (Ok(_), Some(_)) => Err(LookupError::GroupOrEndpoint(name.to_string()).into()),
        (Ok(id), None) => Ok(PinTarget::Endpoint(id)),
        (Err(_), Some(g)) => Ok(PinTarget::Group(g)),
        (Err(e), None) => Err(e),
    }
}

/// The endpoint `name` names: itself if it is an id (`ep-` and 16 hex digits), else the one
/// endpoint with that host name.
pub fn resolve_endpoint(remote: &Remote, name: &str) -> Result<EndpointId, anyhow::Error> {
    if let Ok(id) = EndpointId::new(name) {
        return Ok(id);
    }
    let all = remote.endpoints(&EndpointQuery::default()).map_err(CommandError::from)?;
    let ids: Vec<EndpointId> = all.endpoints.into_iter().filter(|e| e.hostname == name).map(|e| e.id).collect();
    match ids.as_slice() {
        [] => Err(LookupError::NoSuchEndpoint(name.chars().take(200).collect()).into()),
        [one] => Ok(one.clone()),
        _ => Err(LookupError::Ambiguous { name: name.to_string(), ids: ids.iter().map(|i| i.to_string()).collect() }.into()),
    }
}
