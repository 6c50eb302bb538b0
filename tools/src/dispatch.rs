//! From parsed arguments to a library call: checks names and generations at the command-line
//! boundary (a bad name fails before any request), opens the store and the server, calls the
//! `tools::commands` function of the subcommand and prints its output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use api::gate::{Rule, SetPolicy};
use format::{ChannelName, ChunkParams, GenSpec, ImageName};
use serde::Serialize;
use tools::commands::fleet::{self, GroupArgs};
use tools::commands::gate::{self, TestPlan};
use tools::commands::keys::{self, InitPlan};
use tools::commands::local;
use tools::commands::rollouts;
use tools::commands::server::{self, ChannelPlan, PushPlan};
use tools::import::{ImportOptions, Progress};
use tools::remote::Remote;
use tools::{signing, Repo};

use crate::cli::{self, ChannelOp, Cli, Command, FleetOp, GroupOp, KeyOp, RolloutOp, TokenOp, TrustOp, UserOp};
use crate::{exit_codes, print};

fn default_store() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("imaged/store"));
    }
    let home = std::env::var_os("HOME").context("neither --store, IMGCTL_STORE, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/imaged/store"))
}

/// Where imgctl keeps the root it trusts for each server: `STORE/trusted-roots/`, set once
/// the store is known.
static ROOT_PINS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn remote(server: &cli::Server) -> Result<Remote> {
    let url = server.server.as_deref().context("no server: pass --server URL or set IMAGED_SERVER")?;
    let r = Remote::new(url, server.token.clone())?;
    Ok(match ROOT_PINS.get() {
        Some(dir) => r.with_root_pins(dir.clone()),
        None => r,
    })
}

/// Splits `GEN[:PATH]`.
fn split_target(target: &str) -> Result<(GenSpec, &str)> {
    let (gen, path) = target.split_once(':').unwrap_or((target, ""));
    Ok((gen.parse()?, path))
}

fn secrets(files: &[PathBuf], signers: &[String]) -> Result<Vec<tools::signer::Holder>> {
    tools::signer::holders(files, signers)
}

/// The one key of `--key FILE` or `--signer COMMAND` (clap makes sure exactly one is given).
fn one_holder(key: Option<PathBuf>, signer: Option<String>) -> Result<tools::signer::Holder> {
    let files: Vec<PathBuf> = key.into_iter().collect();
    let signers: Vec<String> = signer.into_iter().collect();
    secrets(&files, &signers)?.pop().context("give --key FILE or --signer COMMAND")
}

/// Prints `value` as one line of JSON, or as `text` prints it.
fn show<T: Serialize>(
    out: &mut dyn Write,
    json: bool,
    value: &T,
    text: impl FnOnce(&mut dyn Write, &T) -> std::io::Result<()>,
) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(value)?)?;
    } else {
        text(out, value)?;
    }
    Ok(())
}

/// The change record of `--reason`, `--classification`, `--advisory`, `--requested-by`,
/// `--activation` (a derived activation is filled in by import or patch).
fn change_record(a: &cli::ChangeArgs) -> Result<format::ChangeRecord> {
    let mut c = format::ChangeRecord {
        reason: a.reason.clone(),
        classification: format::Classification::parse(&a.classification).context("--classification: normal or emergency")?,
        advisories: a.advisories.clone(),
        requested_by: a.requested_by.clone(),
        ..Default::default()
    };
    if let Some(act) = &a.activation {
        c.activation = format::Activation::parse(act).map_err(|e| anyhow::anyhow!("--activation {e}"))?;
        c.activation_source = format::ActivationSource::Override;
    }
    Ok(c)
}

/// Steps in command-line order: clap keeps each flag's values in order, and their positions
/// among all arguments say how they interleave.
fn step_order(run: &[String], tars: &[PathBuf], dirs: &[PathBuf]) -> Vec<tools::patch::StepSpec> {
    use tools::patch::StepSpec;
    let args: Vec<String> = std::env::args().collect();
    let (mut r, mut t, mut d) = (run.iter(), tars.iter(), dirs.iter());
    let mut steps = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let flag = a.split('=').next().unwrap_or("");
        // A value equal to a flag's name is taken as a value, not a flag.
        if i > 0 && ["--run", "--apply-tar", "--apply-dir"].contains(&args[i - 1].as_str()) && !args[i - 1].contains('=') {
            continue;
        }
        match flag {
            "--run" => steps.extend(r.next().cloned().map(StepSpec::Run)),
            "--apply-tar" => steps.extend(t.next().cloned().map(StepSpec::ApplyTar)),
            "--apply-dir" => steps.extend(d.next().cloned().map(StepSpec::ApplyDir)),
            _ => {}
        }
    }
    steps.extend(r.cloned().map(StepSpec::Run));
    steps.extend(t.cloned().map(StepSpec::ApplyTar));
    steps.extend(d.cloned().map(StepSpec::ApplyDir));
    steps
}

fn created_now() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or_else(cache::clock::now)
}

/// Runs the command; its exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let store = match cli.store {
        Some(s) => s,
        None => default_store()?,
    };
    let repo = Repo::open(&store).with_context(|| format!("opening store {}", store.display()))?;
    let _ = ROOT_PINS.set(repo.root().join("trusted-roots"));
    let json = cli.json;
    let mut stdout = std::io::stdout().lock();
    let out: &mut dyn Write = &mut stdout;
    match cli.command {
        Command::Import { src, image, message, chunk_avg, level, change } => {
            let change = change_record(&change)?;
            let image = ImageName::new(&image)?;
            let created = std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(cache::clock::now);
            let bar = (!json && std::io::stderr().is_terminal()).then(|| {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} importing {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").unwrap(),
                );
                bar
            });
            let progress_bar = bar.clone();
            let opts = ImportOptions {
                image,
                message,
                chunking: chunk_avg.map(ChunkParams::with_average),
                level,
                created,
                change: Some(change),
                progress: progress_bar.map(|b| {
                    Box::new(move |p: Progress| match p {
                        Progress::Total(n) => b.set_length(n),
                        Progress::Advance(n) => b.inc(n),
                    }) as Box<dyn Fn(Progress) + Sync>
                }),
            };
            let report = local::import(&repo, &src, &opts)?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            show(out, json, &report, print::import)?;
        }
        Command::Patch { base, run, apply_tar, apply_dir, network, exclude, keep_volatile, step_timeout, message, quiet, change } => {
            let base: GenSpec = base.parse()?;
            let steps = step_order(&run, &apply_tar, &apply_dir);
            anyhow::ensure!(!steps.is_empty(), "patch needs at least one --run, --apply-tar or --apply-dir");
            // First, while imgctl is still one thread: every mount of the patch lives and dies
            // with this process.
            tools::sandbox::private_mounts()?;
            let opts = tools::patch::PatchOptions {
                steps,
                network: network == "host",
                exclude,
                keep_volatile,
                message,
                change: change_record(&change)?,
                created: created_now(),
                echo: !quiet && !json,
                step_timeout: step_timeout.as_deref().map(parse_duration).transpose()?,
            };
            let report = tools::patch::patch(&repo, &base, &opts)?;
            show(out, json, &report, print::patch)?;
        }
        Command::Log { image } => show(out, json, &local::log(&repo, &ImageName::new(&image)?)?, print::log)?,
        Command::Ls { target } => {
            let (spec, path) = split_target(&target)?;
            let entries = local::list(&repo, &spec, path)?;
            if json {
                let listed: Vec<local::ListedEntry> = entries.iter().map(local::ListedEntry::from).collect();
                show(out, json, &listed, |_, _| Ok(()))?;
            } else {
                print::ls(out, &entries)?;
            }
        }
        Command::Mount { generation, dir } => {
            let found = repo.resolve(&generation.parse()?)?;
            let store = std::sync::Arc::new(cache::Store::open(repo.root())?);
            let label = found.label();
            // Scripts and tests wait for this line on standard error.
            fs::startup::mount_local(store, found.digest, &label, &dir, || eprintln!("imgctl: mounted {label} at {}", dir.display()))
                .with_context(|| format!("mounting {label} at {}", dir.display()))?;
        }
        Command::Umount { dir } => {
            nix::mount::umount(&dir).with_context(|| format!("unmounting {}", dir.display()))?;
        }
        Command::Affected { package, source, below, path, digest, server } => {
            let below = below.map(|b| b.parse::<debversion::Version>().map_err(|e| anyhow::anyhow!("--below {b:?}: {e}"))).transpose()?;
            let digest = digest.map(|d| d.parse()).transpose()?;
            let wanted = local::Wanted { query: api::affected::AffectedQuery { package, source, path, digest }, below };
            let remote = if server.server.is_some() { Some(remote(&server)?) } else { None };
            show(out, json, &local::affected(&repo, remote.as_ref(), &wanted)?, print::affected)?;
        }
        Command::Cat { target } => {
            let (spec, path) = split_target(&target)?;
            local::cat(&repo, &spec, path, out)?;
        }
        Command::Objects { generation } => show(out, json, &local::objects(&repo, &generation.parse()?)?, print::objects)?,
        Command::Export { generation, dest } => show(out, json, &local::export(&repo, &generation.parse()?, &dest)?, print::export)?,
        Command::Diff { from, to } => show(out, json, &local::diff(&repo, &from.parse()?, &to.parse()?)?, print::diff)?,
        Command::Push { generation, keys, signers, arch, epoch, expires_days, server } => {
            let plan = PushPlan { generation: generation.parse()?, keys: secrets(&keys, &signers)?, arch, epoch, expires_days };
            show(out, json, &server::push(&repo, &remote(&server)?, plan)?, print::push)?;
        }
        Command::Keep { generation, off, server } => {
            let (image, number) = match generation.parse()? {
                GenSpec::Number(image, n) => (image, n),
                _ => anyhow::bail!("keep takes IMAGE@N, not {generation:?}"),
            };
            show(out, json, &server::keep(&remote(&server)?, &image, number, !off)?, print::keep)?;
        }
        Command::Key { op, server } => key_command(op, server, json, out)?,
        Command::Trust { op, server } => trust_command(op, server, json, out)?,
        Command::Trace { op: cli::TraceOp::Add { generation, file, family }, server } => {
            let (image, n) = match generation.parse()? {
                GenSpec::Number(image, n) => (image, n),
                _ => anyhow::bail!("trace add takes IMAGE@N, not {generation:?}"),
            };
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let secrets = secrets(&family.keys, &family.signers)?;
            show(out, json, &keys::add_trace(&remote(&server)?, &secrets, &image, n, &bytes, family.expires_days)?, print::trace_added)?;
        }
        Command::Channel { op: ChannelOp::Policy { channel, require_test, require_approvals, emergency_require_test, emergency_require_approvals, approvers, testers }, server } => {
            let channel: ChannelName = channel.parse()?;
            let nothing = require_test.is_empty()
                && require_approvals.is_none()
                && emergency_require_test.is_empty()
                && emergency_require_approvals.is_none()
                && approvers.is_empty()
                && testers.is_empty();
            let set = if nothing {
                None
            } else {
                let normal = Rule { tests: test_names(&require_test)?, approvals: require_approvals.unwrap_or(0) };
                let emergency = (!emergency_require_test.is_empty() || emergency_require_approvals.is_some()).then(|| {
                    let default = api::gate::default_emergency(&normal);
                    Ok::<_, anyhow::Error>(Rule {
                        tests: if emergency_require_test.is_empty() { default.tests } else { test_names(&emergency_require_test)? },
                        approvals: emergency_require_approvals.unwrap_or(default.approvals),
                    })
                });
                let keys = |files: &[PathBuf]| -> Result<Vec<api::tuf::TufKey>> {
                    files.iter().map(|f| Ok(serde_json::from_value(signing::read_public(f)?.to_value())?)).collect()
                };
                Some(SetPolicy { normal, emergency: emergency.transpose()?, approvers: keys(&approvers)?, testers: keys(&testers)? })
            };
            show(out, json, &gate::policy(&remote(&server)?, &channel, set.as_ref())?, print::policy)?;
        }
        Command::Test { generation, name, run, timeout, network, key, signer, server } => {
            let plan = TestPlan {
                generation: generation.parse()?,
                name: name.parse().map_err(|e: api::gate::BadTestName| anyhow::anyhow!("--name: {e}"))?,
                command: run,
                timeout: parse_duration(&timeout)?,
                key: one_holder(key, signer)?,
            };
            tools::sandbox::private_mounts()?;
            tools::patch::clean_stale(&repo.root().join("work"));
            let runner = tools::gate::InSandbox { repo: &repo, network: network == "host" };
            let r = gate::test(&repo, &remote(&server)?, &runner, plan)?;
            show(out, json, &r, print::tested)?;
            if r.outcome != api::gate::Outcome::Passed {
                return Ok(exit_codes::TEST_FAILED);
            }
        }
        Command::Approve { generation, key, signer, comment, server } => {
            let (image, number) = match generation.parse()? {
                GenSpec::Number(image, n) => (image, n),
                _ => anyhow::bail!("approve takes IMAGE@N, not {generation:?}"),
            };
            let key = one_holder(key, signer)?;
            show(out, json, &gate::approve(&remote(&server)?, &key, &image, number, &comment)?, print::approved)?;
        }
        Command::Show { generation, log: true, .. } => {
            let g = repo.resolve(&generation.parse()?)?;
            let record = g.manifest.patch().transpose()?.with_context(|| format!("{} was not made by imgctl patch", g.label()))?;
            out.write_all(&repo.store.get(&record.log)?)?;
        }
        Command::Show { generation, server, .. } => {
            let remote = if server.server.is_some() { Some(remote(&server)?) } else { None };
            show(out, json, &gate::show(&repo, remote.as_ref(), &generation.parse()?)?, print::show_generation)?;
        }
        Command::User { op, server } => {
            let remote = remote(&server)?;
            match op {
                UserOp::Add { name, role } => {
                    let role = api::users::Role::parse(&role).context("--role")?;
                    let user = api::users::AddUser { name: name.parse()?, role };
                    show(out, json, &remote.add_user(&user)?, print::new_user)?;
                }
                UserOp::List => show(out, json, &remote.users()?, print::users)?,
                UserOp::Revoke { name } => show(out, json, &remote.revoke_user(&name.parse()?)?, print::revoked_user)?,
            }
        }
        Command::Audit { since, actor, server } => {
            let since = since.as_deref().map(tools::commands::audit::parse_since).transpose()?;
            let plan = tools::commands::audit::AuditPlan { since, actor };
            show(out, json, &tools::commands::audit::audit(&remote(&server)?, &plan)?, print::audit)?;
        }
        Command::Fleet { op, server } => fleet_command(op, &server, json, out)?,
        Command::Group { op, server } => group_command(op, &server, json, out)?,
        Command::Rollout { op, server } => rollout_command(op, &server, json, out)?,
        Command::Withdraw { generation, reason, server } => {
            let withdraw = rollouts::withdraw(&generation, &reason)?;
            show(out, json, &remote(&server)?.withdraw(&withdraw)?, print::withdrawn)?;
        }
        Command::Channel { op, server } => {
            let plan = match op {
                ChannelOp::Set { channel, generation, reason } => ChannelPlan::Set { channel: channel.parse()?, generation, reason },
                ChannelOp::Promote { from, to, reason } => ChannelPlan::Promote { from: from.parse()?, to: to.parse()?, reason },
                ChannelOp::Rollback { channel, to, reason } => ChannelPlan::Rollback { channel: channel.parse()?, to, reason },
                ChannelOp::History { channel } => ChannelPlan::History(channel.parse::<ChannelName>()?),
                ChannelOp::Get { channel } => ChannelPlan::Get(channel.parse()?),
                ChannelOp::Policy { .. } => unreachable!("handled above"),
            };
            show(out, json, &server::channel(&remote(&server)?, &plan)?, print::channel)?;
        }
        Command::Verify { dry_run } => {
            let r = local::verify(&repo, dry_run)?;
            show(out, json, &r, |out, r| print::verify(out, r, &repo.root().join("quarantine")))?;
            return Ok(if r.healthy(!dry_run) { exit_codes::OK } else { exit_codes::VERIFY_FAILED });
        }
        Command::Docs(_) => unreachable!("main answers completions and man before opening the store"),
    }
    Ok(exit_codes::OK)
}

fn test_names(names: &[String]) -> Result<Vec<api::gate::TestName>> {
    names.iter().map(|n| n.parse().map_err(|e: api::gate::BadTestName| anyhow::anyhow!("{e}"))).collect()
}

/// `90s`, `10m`, `1h`, `2d` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().with_context(|| format!("{text:?} is not a duration (90s, 10m, 1h)"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => anyhow::bail!("{text:?} is not a duration (90s, 10m, 1h)"),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

fn key_command(op: KeyOp, server: cli::Server, json: bool, out: &mut dyn Write) -> Result<()> {
    match op {
        KeyOp::Generate { file, keytype } => {
            let t = keytype.parse().map_err(|e| signing::key_err(&file, e))?;
            show(out, json, &keys::generate(&file, t)?, print::generated_key)
        }
        KeyOp::List { files } if !files.is_empty() => show(out, json, &keys::list_files(&files)?, print::key_files),
        KeyOp::List { .. } => show(out, json, &keys::list(&remote(&server)?)?, print::listing),
        KeyOp::Rotate { role, add, remove, replace, online, threshold, sign_with, signers, expires_days } => {
            let add = add.iter().map(|f| signing::read_public(f)).collect::<Result<Vec<_>, _>>()?;
            let remove = remove.iter().map(|r| keys::key_id_of(r)).collect::<Result<Vec<_>, _>>()?;
            let signers = secrets(&sign_with, &signers)?;
            let r = signing::Rotation { role, add, remove, replace, online, threshold, expires_days };
            show(out, json, &keys::rotate(&remote(&server)?, &signers, &r)?, print::rotated)
        }
    }
}

fn trust_command(op: TrustOp, server: cli::Server, json: bool, out: &mut dyn Write) -> Result<()> {
    match op {
        TrustOp::Init { root_keys, root_signers, root_threshold, targets_keys, targets_signers, images, out: root_out, expires_days } => {
            let mut families = Vec::new();
            for spec in &images {
                let (name, file) = spec.split_once('=').with_context(|| format!("--image takes FAMILY=KEYFILE, not {spec:?}"))?;
                families.push((ImageName::new(name)?, signing::read_public(Path::new(file))?));
            }
            let plan = InitPlan {
                root_keys: secrets(&root_keys, &root_signers)?,
                root_threshold,
                targets_keys: secrets(&targets_keys, &targets_signers)?,
                families,
                out: root_out,
                expires_days,
            };
            show(out, json, &keys::init(&remote(&server)?, plan)?, print::initialised)
        }
        TrustOp::Forget { generation, family } => {
            let (image, n) = match generation.parse()? {
                GenSpec::Number(image, n) => (image, n),
                _ => anyhow::bail!("trust forget takes IMAGE@N, not {generation:?}"),
            };
            let secrets = secrets(&family.keys, &family.signers)?;
            show(out, json, &keys::forget(&remote(&server)?, &secrets, &image, n, family.expires_days)?, print::forgotten)
        }
        TrustOp::MinEpoch { image, epoch, family } => {
            let image = ImageName::new(&image)?;
            let secrets = secrets(&family.keys, &family.signers)?;
            let expires_days = family.expires_days;
            show(out, json, &keys::min_epoch(&remote(&server)?, &secrets, &image, epoch, expires_days)?, print::min_epoch)
        }
    }
}

fn fleet_command(op: FleetOp, server: &cli::Server, json: bool, out: &mut dyn Write) -> Result<()> {
    // Arguments are checked before the first request.
    match op {
        FleetOp::Token { op: TokenOp::Create { uses, lifetime, labels } } => {
            let token = api::fleet::NewEnrollToken {
                uses,
                lifetime_seconds: lifetime.as_deref().map(fleet::parse_lifetime).transpose()?,
                labels: fleet::parse_labels(&labels)?,
            };
            show(out, json, &remote(server)?.create_enroll_token(&token)?, print::created_enroll_token)
        }
        FleetOp::Token { op: TokenOp::Ls } => show(out, json, &remote(server)?.enroll_tokens()?, print::enroll_tokens),
        FleetOp::Ls { group, labels, not_on } => {
            let query = tools::remote::fleet::EndpointQuery {
                group: group.as_deref().map(api::fleet::GroupName::new).transpose()?,
                labels: labels.iter().map(|l| fleet::parse_label(l)).collect::<Result<_, _>>()?,
                not_on: not_on.as_deref().map(fleet::parse_generation).transpose()?,
            };
            show(out, json, &remote(server)?.endpoints(&query)?, print::endpoints)
        }
        FleetOp::Show { endpoint } => {
            let remote = remote(server)?;
            let id = fleet::resolve_endpoint(&remote, &endpoint)?;
            show(out, json, &remote.endpoint(&id)?, print::endpoint)
        }
        FleetOp::Label { endpoint, labels, remove } => {
            let set = fleet::parse_labels(&labels)?;
            if let Some(bad) = remove.iter().find(|k| !api::fleet::label_key_ok(k)) {
                return Err(fleet::InputError::LabelKey(bad.clone()).into());
            }
            if set.is_empty() && remove.is_empty() {
                return Err(fleet::InputError::NoLabelChange.into());
            }
            let remote = remote(server)?;
            let id = fleet::resolve_endpoint(&remote, &endpoint)?;
            let change = api::fleet::LabelChange { set, remove };
            show(out, json, &remote.change_labels(&id, &change)?, |o, e| print::endpoint_changed(o, "labelled", e))
        }
        FleetOp::Revoke { endpoint } => {
            let remote = remote(server)?;
            let id = fleet::resolve_endpoint(&remote, &endpoint)?;
            show(out, json, &remote.revoke_endpoint(&id)?, |o, e| print::endpoint_changed(o, "revoked", e))
        }
        FleetOp::Compliance { target } => {
            let target = fleet::parse_target(&target)?;
            show(out, json, &remote(server)?.compliance(&target)?, print::compliance)
        }
        FleetOp::Pin { target, generation, group } => {
            let pin = api::rollouts::Pin { generation: fleet::parse_generation(&generation)? };
            let remote = remote(server)?;
            match fleet::resolve_pin_target(&remote, &target, group)? {
                fleet::PinTarget::Endpoint(id) => {
                    show(out, json, &remote.pin_endpoint(&id, Some(&pin))?, |o, e| print::pinned(o, e, Some(&pin.generation)))
                }
                fleet::PinTarget::Group(name) => {
                    show(out, json, &remote.pin_group(&name, Some(&pin))?, |o, g| print::group(o, Some("pinned"), g))
                }
            }
        }
        FleetOp::Unpin { target, group } => {
            let remote = remote(server)?;
            match fleet::resolve_pin_target(&remote, &target, group)? {
                fleet::PinTarget::Endpoint(id) => show(out, json, &remote.pin_endpoint(&id, None)?, |o, e| print::pinned(o, e, None)),
                fleet::PinTarget::Group(name) => show(out, json, &remote.pin_group(&name, None)?, |o, g| print::group(o, Some("unpinned"), g)),
            }
        }
        FleetOp::Hold { endpoint, reason } => {
            if reason.trim().is_empty() {
                return Err(fleet::InputError::NoReason.into());
            }
            let hold = api::rollouts::Hold { reason };
            let remote = remote(server)?;
            let id = fleet::resolve_endpoint(&remote, &endpoint)?;
            show(out, json, &remote.hold_endpoint(&id, Some(&hold))?, |o, e| print::held(o, e, Some(&hold.reason)))
        }
        FleetOp::Release { endpoint } => {
            let remote = remote(server)?;
            let id = fleet::resolve_endpoint(&remote, &endpoint)?;
            show(out, json, &remote.hold_endpoint(&id, None)?, |o, e| print::held(o, e, None))
        }
    }
}

fn rollout_command(op: RolloutOp, server: &cli::Server, json: bool, out: &mut dyn Write) -> Result<()> {
    use tools::remote::rollouts::RolloutAction;
    // Arguments (the plan file above all) are checked before the first request.
    let (id, action, verb) = match op {
        RolloutOp::Start { channel, generation, plan, reason } => {
            let start = rollouts::start(&channel, &generation, plan.as_deref(), reason)?;
            return show(out, json, &remote(server)?.start_rollout(&start)?, print::rollout_started);
        }
        RolloutOp::Ls => return show(out, json, &remote(server)?.rollouts()?, print::rollouts),
        RolloutOp::Status { id } => {
            let id: api::rollouts::RolloutId = id.parse()?;
            return show(out, json, &remote(server)?.rollout(id)?, print::rollout_status);
        }
        RolloutOp::Pause { id } => (id, RolloutAction::Pause, "paused"),
        RolloutOp::Resume { id } => (id, RolloutAction::Resume, "resumed"),
        RolloutOp::Approve { id } => (id, RolloutAction::Approve, "approved"),
        RolloutOp::Abort { id, revert } => (id, RolloutAction::Abort { revert }, "aborted"),
    };
    let id: api::rollouts::RolloutId = id.parse()?;
    show(out, json, &remote(server)?.rollout_action(id, action)?, |o, r| print::rollout_acted(o, verb, r))
}

fn group_command(op: GroupOp, server: &cli::Server, json: bool, out: &mut dyn Write) -> Result<()> {
    match op {
        GroupOp::Create { name, selector, members, priority, namespace, replace } => {
            let namespace = match &namespace {
                Some(file) => fleet::read_namespace(file)?,
                None => api::fleet::Namespace::default(),
            };
            let group = fleet::group(GroupArgs { name, selector, members, priority, namespace })?;
            let remote = remote(server)?;
            let (made, verb) = if replace { (remote.put_group(&group)?, "put") } else { (remote.create_group(&group)?, "created") };
            show(out, json, &made, |o, g| print::group(o, Some(verb), g))
        }
        GroupOp::Ls => show(out, json, &remote(server)?.groups()?, print::groups),
        GroupOp::Show { name } => {
            let name = api::fleet::GroupName::new(&name)?;
            show(out, json, &remote(server)?.group(&name)?, |o, g| print::group(o, None, g))
        }
        GroupOp::Rm { name } => {
            let name = api::fleet::GroupName::new(&name)?;
            show(out, json, &remote(server)?.delete_group(&name)?, |o, g| print::group(o, Some("removed"), g))
        }
    }
}
