//! Change records and patch records: why a generation exists and how it was made.
//!
//! Both travel inside the manifest as extensions (`change`, `patch`), so the image family's
//! offline key, which signs the manifest's digest, signs them too: the server cannot alter a
//! generation's reason, classification, advisories or activation policy. Layouts are in
//! `docs/format.md`.

use crate::codec::{DecodeError, Reader, Writer};
use crate::Digest;

/// Manifest extension key of the change record.
pub const CHANGE_EXTENSION: &str = "change";
/// Manifest extension key of the patch record.
pub const PATCH_EXTENSION: &str = "patch";

const CHANGE_MAGIC: &str = "IMGC";
const PATCH_MAGIC: &str = "IMGP";
const VERSION: u8 = 1;
const MAX_TEXT: usize = 64 * 1024;
const MAX_ITEMS: u16 = 4096;

/// Whether a change is routine or must move faster than the usual gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// Follows the channel's normal policy.
    #[default]
    Normal,
    /// Follows the channel's emergency policy.
    Emergency,
}

impl Classification {
    /// The name used on command lines and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Normal => "normal",
            Classification::Emergency => "emergency",
        }
    }

    /// Parses `normal` or `emergency`.
    pub fn parse(s: &str) -> Option<Classification> {
        match s {
            "normal" => Some(Classification::Normal),
            "emergency" => Some(Classification::Emergency),
            _ => None,
        }
    }
}

/// What an endpoint must do for a generation to take effect once it is switched to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "units")]
pub enum Activation {
    /// Nothing: programs see the new files on their next open.
    #[default]
    Live,
    /// Restart these systemd units (names such as `cron.service`, sorted, unique).
    Restart(Vec<String>),
    /// Reboot: the kernel, its modules, the initramfs or the boot loader changed.
    Reboot,
}

impl Activation {
    /// `live`, `restart:a.service,b.service` or `reboot`: the command-line form.
    pub fn to_arg(&self) -> String {
        match self {
            Activation::Live => "live".into(),
            Activation::Reboot => "reboot".into(),
            Activation::Restart(units) => format!("restart:{}", units.join(",")),
        }
    }

    /// Parses the command-line form. A unit without a type suffix gets `.service`.
    pub fn parse(s: &str) -> Result<Activation, String> {
        match s {
            "live" => Ok(Activation::Live),
            "reboot" => Ok(Activation::Reboot),
            _ => {
                let Some(list) = s.strip_prefix("restart:") else {
                    return Err(format!("{s:?}: expected live, reboot or restart:UNIT[,UNIT...]"));
                };
                let mut units = Vec::new();
                for u in list.split(',') {
                    if u.is_empty() || u.contains(['/', ' ', '\0']) {
                        return Err(format!("{u:?} is not a systemd unit name"));
                    }
                    units.push(if u.contains('.') { u.to_string() } else { format!("{u}.service") });
                }
                Ok(Activation::restart(units))
            }
        }
    }

    /// A restart of `units`, sorted and without repeats; no units at all is `Live`.
    pub fn restart(mut units: Vec<String>) -> Activation {
        units.sort();
        units.dedup();
        if units.is_empty() {
            Activation::Live
        } else {
            Activation::Restart(units)
        }
    }
}

/// Where the activation policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationSource {
    /// Derived from the diff against the parent by imgctl.
    #[default]
    Derived,
    /// Set by the engineer (`--activation`).
    Override,
}

/// The change record every generation carries.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ChangeRecord {
    /// Why the change is made (free text).
    pub reason: String,
    /// Normal or emergency.
    pub classification: Classification,
    /// Advisory identifiers this generation addresses (`CVE-2024-…`, `DSA-…`), sorted, unique.
    pub advisories: Vec<String>,
    /// Who asked for the change.
    pub requested_by: String,
    /// What endpoints must do to activate the generation.
    pub activation: Activation,
    /// Whether `activation` was derived or set by hand.
    pub activation_source: ActivationSource,
    /// Why the derived policy is what it is: one line per changed path that decided it.
    pub activation_why: Vec<String>,
}

/// One step of a patch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// What the step did.
    pub kind: StepKind,
    /// The command line, or the applied file or directory as given.
    pub text: String,
    /// Digest of the applied input (a tar file's bytes, a directory's listing and contents).
    pub input: Option<Digest>,
    /// Exit status of the command (0 for applied inputs); -N when killed by signal N.
    pub exit: i32,
    /// How long the step took, milliseconds.
    pub duration_ms: u64,
}

/// Kinds of patch steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// `--run CMD` in the sandbox.
    Run,
    /// `--apply-tar FILE` unpacked over the root.
    ApplyTar,
    /// `--apply-dir DIR` copied over the root.
    ApplyDir,
}

impl StepKind {
    fn code(self) -> u8 {
        match self {
            StepKind::Run => 0,
            StepKind::ApplyTar => 1,
            StepKind::ApplyDir => 2,
        }
    }

    /// The flag that makes such a step, without dashes.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Run => "run",
            StepKind::ApplyTar => "apply-tar",
            StepKind::ApplyDir => "apply-dir",
        }
    }
}

/// How a generation was made from another by `imgctl patch`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatchRecord {
    /// Manifest digest of the base generation.
    pub base: Digest,
    /// The base's generation number.
    pub base_generation: u64,
    /// Whether commands had the network (`host`) or not (`none`).
    pub network: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Paths changed by the steps but left out of the generation (volatile paths, exclusions).
    pub excluded: Vec<String>,
    /// The object holding the full log of every step (stdout and stderr, interleaved).
    pub log: Digest,
    /// The log's length in bytes.
    pub log_len: u64,
}

fn text(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(r.bytes32(what, MAX_TEXT)?.to_vec()).map_err(|_| DecodeError::Invalid { what, why: "not UTF-8".into() })
}

fn write_list(w: &mut Writer, items: &[String]) {
    w.u16(items.len().min(MAX_ITEMS as usize) as u16);
    for s in items.iter().take(MAX_ITEMS as usize) {
        w.bytes32(s.as_bytes());
    }
}

fn read_list(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<String>, DecodeError> {
    let n = r.u16(what)?;
    if n > MAX_ITEMS {
        return Err(DecodeError::Invalid { what, why: format!("{n} items") });
    }
    (0..n).map(|_| text(r, what)).collect()
}

fn version(r: &mut Reader<'_>, what: &'static str) -> Result<(), DecodeError> {
    match r.u8(what)? {
        VERSION => Ok(()),
        version => Err(DecodeError::UnsupportedVersion { what, version }),
    }
}

impl ChangeRecord {
    /// The canonical bytes (lists are written as given; [`ChangeRecord::normalize`] sorts them).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(CHANGE_MAGIC.as_bytes());
        w.u8(VERSION);
        w.bytes32(self.reason.as_bytes());
        w.u8(match self.classification {
            Classification::Normal => 0,
            Classification::Emergency => 1,
        });
        write_list(&mut w, &self.advisories);
        w.bytes32(self.requested_by.as_bytes());
        match &self.activation {
            Activation::Live => w.u8(0),
            Activation::Restart(units) => {
                w.u8(1);
                write_list(&mut w, units);
            }
            Activation::Reboot => w.u8(2),
        }
        w.u8(match self.activation_source {
            ActivationSource::Derived => 0,
            ActivationSource::Override => 1,
        });
        write_list(&mut w, &self.activation_why);
        w.buf
    }

    /// Parses a change record.
    pub fn decode(bytes: &[u8]) -> Result<ChangeRecord, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(CHANGE_MAGIC)?;
        version(&mut r, "change record version")?;
        let reason = text(&mut r, "reason")?;
        let classification = match r.u8("classification")? {
            0 => Classification::Normal,
            1 => Classification::Emergency,
            c => return Err(DecodeError::Invalid { what: "classification", why: c.to_string() }),
        };
        let advisories = read_list(&mut r, "advisories")?;
        let requested_by = text(&mut r, "requested by")?;
        let activation = match r.u8("activation")? {
            0 => Activation::Live,
            1 => Activation::Restart(read_list(&mut r, "restart units")?),
            2 => Activation::Reboot,
            a => return Err(DecodeError::Invalid { what: "activation", why: a.to_string() }),
        };
        let activation_source = match r.u8("activation source")? {
            0 => ActivationSource::Derived,
            1 => ActivationSource::Override,
            s => return Err(DecodeError::Invalid { what: "activation source", why: s.to_string() }),
        };
        let activation_why = read_list(&mut r, "activation reasons")?;
        r.finish()?;
        Ok(ChangeRecord { reason, classification, advisories, requested_by, activation, activation_source, activation_why })
    }

    /// Sorts and dedups advisories (so the same change always encodes alike).
    pub fn normalize(&mut self) {
        self.advisories.sort();
        self.advisories.dedup();
    }
}

impl PatchRecord {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(PATCH_MAGIC.as_bytes());
        w.u8(VERSION);
        w.digest(&self.base);
        w.u64(self.base_generation);
        w.u8(u8::from(self.network));
        w.u16(self.steps.len().min(MAX_ITEMS as usize) as u16);
        for s in self.steps.iter().take(MAX_ITEMS as usize) {
            w.u8(s.kind.code());
            w.bytes32(s.text.as_bytes());
            match &s.input {
                Some(d) => {
                    w.u8(1);
                    w.digest(d);
                }
                None => w.u8(0),
            }
            w.u32(s.exit as u32);
            w.u64(s.duration_ms);
        }
        write_list(&mut w, &self.excluded);
        w.digest(&self.log);
        w.u64(self.log_len);
        w.buf
    }

    /// Parses a patch record.
    pub fn decode(bytes: &[u8]) -> Result<PatchRecord, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(PATCH_MAGIC)?;
        version(&mut r, "patch record version")?;
        let base = r.digest("base")?;
        let base_generation = r.u64("base generation")?;
        let network = match r.u8("network")? {
            0 => false,
            1 => true,
            n => return Err(DecodeError::Invalid { what: "network", why: n.to_string() }),
        };
        let n = r.u16("steps")?;
        if n > MAX_ITEMS {
            return Err(DecodeError::Invalid { what: "steps", why: format!("{n} steps") });
        }
        let mut steps = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let kind = match r.u8("step kind")? {
                0 => StepKind::Run,
                1 => StepKind::ApplyTar,
                2 => StepKind::ApplyDir,
                k => return Err(DecodeError::Invalid { what: "step kind", why: k.to_string() }),
            };
            let text = text(&mut r, "step")?;
            let input = match r.u8("input flag")? {
                0 => None,
                1 => Some(r.digest("input")?),
                f => return Err(DecodeError::Invalid { what: "input flag", why: f.to_string() }),
            };
            let exit = r.u32("exit")? as i32;
            let duration_ms = r.u64("duration")?;
            steps.push(Step { kind, text, input, exit, duration_ms });
        }
        let excluded = read_list(&mut r, "excluded")?;
        let log = r.digest("log")?;
        let log_len = r.u64("log length")?;
        r.finish()?;
        Ok(PatchRecord { base, base_generation, network, steps, excluded, log, log_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_record_round_trips_and_rejects_garbage() {
        let mut c = ChangeRecord {
            reason: "openssl fix".into(),
            classification: Classification::Emergency,
            advisories: vec!["CVE-2024-2".into(), "CVE-2024-1".into(), "CVE-2024-2".into()],
            requested_by: "sec-team".into(),
            activation: Activation::parse("restart:cron,ssh.socket").unwrap(),
            activation_source: ActivationSource::Override,
            activation_why: vec!["usr/sbin/cron changed".into()],
        };
        c.normalize();
        assert_eq!(c.advisories, ["CVE-2024-1", "CVE-2024-2"]);
        assert_eq!(c.activation, Activation::Restart(vec!["cron.service".into(), "ssh.socket".into()]));
        let bytes = c.encode();
        assert_eq!(ChangeRecord::decode(&bytes).unwrap(), c);
        assert!(ChangeRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert!(matches!(ChangeRecord::decode(&bad), Err(DecodeError::UnsupportedVersion { .. })));
        assert_eq!(Activation::parse("restart:").unwrap_err(), "\"\" is not a systemd unit name");
        assert!(Activation::parse("sometimes").is_err());
        assert_eq!(Activation::restart(vec![]), Activation::Live);
    }

    #[test]
    fn patch_record_round_trips() {
        let p = PatchRecord {
            base: Digest::of(b"base"),
            base_generation: 1,
            network: true,
            steps: vec![
                Step { kind: StepKind::Run, text: "apt-get install -y less".into(), input: None, exit: 0, duration_ms: 1234 },
                Step { kind: StepKind::ApplyTar, text: "x.tar".into(), input: Some(Digest::of(b"x")), exit: -9, duration_ms: 1 },
            ],
            excluded: vec!["var/lib/apt/lists".into()],
            log: Digest::of(b"log"),
            log_len: 3,
        };
        let bytes = p.encode();
        assert_eq!(PatchRecord::decode(&bytes).unwrap(), p);
        assert!(PatchRecord::decode(&bytes[1..]).is_err());
    }
}
