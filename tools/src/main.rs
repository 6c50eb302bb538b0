//! `imgctl`: the image engineer's command line. Parses arguments, calls the `tools` library,
//! prints text or JSON, and maps expected failures to documented exit codes.

mod cli;
mod exit_codes;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use format::{ChunkParams, EntryKind, GenSpec, ImageName};
use serde_json::json;
use tools::browse::{self, display_bytes, mode_string, utc_string, Located, ReadError};
use tools::import::{ImportOptions, Progress};
use tools::{diff, export, verify, ImportError, Repo, RepoError};

use cli::{ChannelOp, Cli, Command, KeyOp, TrustOp};
use tools::remote::{Remote, RemoteError};
use tools::signing;

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imgctl: error: {e:#}");
            classify(&e)
        }
    };
    std::process::exit(code);
}

/// Maps an error to its exit code by looking for the library's typed errors in the chain.
fn classify(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(RepoError::NotFound(_)) = cause.downcast_ref() {
            return exit_codes::NOT_FOUND;
        }
        if let Some(ReadError::NotFound(_) | ReadError::NotADirectory(_) | ReadError::NotAFile(_)) = cause.downcast_ref() {
            return exit_codes::NOT_FOUND;
        }
        if let Some(
            ImportError::UnsafePath { .. } | ImportError::Archive { .. } | ImportError::Unsupported { .. } | ImportError::Tree { .. },
        ) = cause.downcast_ref()
        {
            return exit_codes::BAD_INPUT;
        }
        if cause.downcast_ref::<format::NameError>().is_some() {
            return exit_codes::BAD_INPUT;
        }
        match cause.downcast_ref::<signing::SignError>() {
            Some(signing::SignError::Remote(RemoteError::Http { status: 404, .. })) => return exit_codes::NOT_FOUND,
            Some(signing::SignError::Remote(RemoteError::Http { .. }) | signing::SignError::Refused(_)) => return exit_codes::REFUSED,
            Some(signing::SignError::Remote(RemoteError::Transport { .. })) => return exit_codes::UNREACHABLE,
            Some(signing::SignError::Key { .. }) => return exit_codes::BAD_INPUT,
            None => {}
        }
        match cause.downcast_ref::<RemoteError>() {
            Some(RemoteError::Http { status: 404, .. }) => return exit_codes::NOT_FOUND,
            Some(RemoteError::Http { .. }) => return exit_codes::REFUSED,
            Some(RemoteError::Transport { .. }) => return exit_codes::UNREACHABLE,
            None => {}
        }
    }
    exit_codes::FAILURE
}

fn default_store() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("imaged/store"));
    }
    let home = std::env::var_os("HOME").context("neither --store, IMGCTL_STORE, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/imaged/store"))
}

fn remote(server: &cli::Server) -> Result<Remote> {
    let url = server.server.as_deref().context("no server: pass --server URL or set IMAGED_SERVER")?;
    Ok(Remote::new(url, server.token.clone())?)
}

/// Splits `GEN[:PATH]`.
fn split_target(target: &str) -> Result<(GenSpec, &str)> {
    let (gen, path) = target.split_once(':').unwrap_or((target, ""));
    Ok((gen.parse()?, path))
}

fn run(cli: Cli) -> Result<i32> {
    let store = match cli.store {
        Some(s) => s,
        None => default_store()?,
    };
    let repo = Repo::open(&store).with_context(|| format!("opening store {}", store.display()))?;
    let json = cli.json;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Import { src, image, message, chunk_avg, level } => {
            let image = ImageName::new(&image)?;
            let created = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or_else(cache::clock::now);
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
                progress: progress_bar.map(|b| {
                    Box::new(move |p: Progress| match p {
                        Progress::Total(n) => b.set_length(n),
                        Progress::Advance(n) => b.inc(n),
                    }) as Box<dyn Fn(Progress) + Sync>
                }),
            };
            let start = Instant::now();
            let report = tools::import::import(&repo, &src, &opts).with_context(|| format!("importing {}", src.display()))?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let secs = start.elapsed().as_secs_f64();
            let g = &report.generation;
            if json {
                let v = json!({
                    "generation": g.label(),
                    "manifest": g.digest,
                    "root": g.manifest.root,
                    "parent": g.manifest.parent,
                    "stats": g.manifest.stats,
                    "dictionary": tools::dictionary::digest_of(&g.manifest),
                    "files_read": report.files_read,
                    "files_reused": report.files_reused,
                    "read_bytes": report.read_bytes,
                    "stored_bytes": report.stored_bytes,
                    "seconds": secs,
                });
                writeln!(out, "{v}")?;
            } else {
                let s = &g.manifest.stats;
                writeln!(out, "{}", g.label())?;
                eprintln!(
                    "manifest {} root {}\n{} files, {} dirs, {} symlinks, {} bytes; {} new objects ({} bytes, {} stored); {} files read, {} unchanged; {:.2} s",
                    g.digest, g.manifest.root, s.files, s.directories, s.symlinks, s.bytes, s.new_objects, s.new_bytes, report.stored_bytes, report.files_read, report.files_reused, secs
                );
            }
        }
        Command::Log { image } => {
            let image = ImageName::new(&image)?;
            let numbers = repo.numbers(&image)?;
            if numbers.is_empty() {
                return Err(RepoError::NotFound(image.to_string()).into());
            }
            let mut rows = Vec::new();
            for n in numbers.iter().rev() {
                let g = repo.resolve(&GenSpec::Number(image.clone(), *n))?;
                rows.push(g);
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|g| json!({"generation": g.label(), "manifest": g.digest, "root": g.manifest.root, "parent": g.manifest.parent, "created": g.manifest.created, "message": g.manifest.message, "stats": g.manifest.stats}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                for g in rows {
                    let s = &g.manifest.stats;
                    writeln!(
                        out,
                        "{:<16} {}  {}  {} files {} bytes (+{} new)  {}",
                        g.label(),
                        &g.digest.to_hex()[..12],
                        utc_string(g.manifest.created),
                        s.files,
                        s.bytes,
                        s.new_bytes,
                        g.manifest.message
                    )?;
                }
            }
        }
        Command::Ls { target } => {
            let (spec, path) = split_target(&target)?;
            let g = repo.resolve(&spec)?;
            let entries = match browse::locate(&repo.store, &g.manifest, path.as_bytes())? {
                Located::Root(_, digest) => browse::load_tree(&repo.store, &digest)?.entries,
                Located::Entry(e) => match &e.kind {
                    EntryKind::Directory { tree } => browse::load_tree(&repo.store, tree)?.entries,
                    _ => vec![e],
                },
            };
            if json {
                let v: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        let mut o = json!({"name": display_bytes(&e.name), "type": e.kind.letter().to_string(), "mode": format!("{:04o}", e.mode), "uid": e.uid, "gid": e.gid, "size": e.size(), "mtime": e.mtime_sec, "mtime_nsec": e.mtime_nsec});
                        if let EntryKind::Symlink { target } = &e.kind {
                            o["target"] = json!(display_bytes(target));
                        }
                        o
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                for e in entries {
                    let tail = match &e.kind {
                        EntryKind::Symlink { target } => format!(" -> {}", display_bytes(target)),
                        _ => String::new(),
                    };
                    let size = match &e.kind {
                        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => format!("{major}, {minor}"),
                        _ => e.size().to_string(),
                    };
                    writeln!(
                        out,
                        "{} {:>5} {:>5} {:>12} {} {}{}",
                        mode_string(e.kind.letter(), e.mode),
                        e.uid,
                        e.gid,
                        size,
                        utc_string(e.mtime_sec),
                        display_bytes(&e.name),
                        tail
                    )?;
                }
            }
        }
        Command::Cat { target } => {
            let (spec, path) = split_target(&target)?;
            let g = repo.resolve(&spec)?;
            match browse::locate(&repo.store, &g.manifest, path.as_bytes())? {
                Located::Entry(e) => browse::write_content(&repo.store, &e, &mut out)?,
                Located::Root(..) => return Err(ReadError::NotAFile("/".into()).into()),
            }
        }
        Command::Objects { generation } => {
            let g = repo.resolve(&generation.parse()?)?;
            let mut all = vec![g.digest];
            all.extend(tools::push::reachable(&repo.store, &g)?);
            let rows: Vec<(String, u64)> = all.iter().map(|d| (d.to_hex(), repo.store.stored_len(d).unwrap_or(0))).collect();
            if json {
                let v: Vec<_> = rows.iter().map(|(d, n)| json!({"digest": d, "stored_bytes": n})).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                for (d, n) in rows {
                    writeln!(out, "{d} {n}")?;
                }
            }
        }
        Command::Export { generation, dest } => {
            let g = repo.resolve(&generation.parse()?)?;
            let start = Instant::now();
            let r = export::export(&repo.store, &g, &dest).with_context(|| format!("exporting {} to {}", g.label(), dest.display()))?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"generation": g.label(), "entries": r.entries, "bytes": r.bytes, "seconds": start.elapsed().as_secs_f64()})
                )?;
            } else {
                writeln!(out, "exported {} to {}: {} entries, {} bytes", g.label(), dest.display(), r.entries, r.bytes)?;
            }
        }
        Command::Diff { from, to } => {
            let a = repo.resolve(&from.parse()?)?;
            let b = repo.resolve(&to.parse()?)?;
            let changes = diff::diff(&repo.store, &a.manifest, &b.manifest)?;
            let packages = match (diff::installed_packages(&repo.store, &a.manifest)?, diff::installed_packages(&repo.store, &b.manifest)?)
            {
                (Some(pa), Some(pb)) => Some(diff::package_changes(&pa, &pb)),
                _ => None,
            };
            if json {
                writeln!(out, "{}", json!({"from": a.label(), "to": b.label(), "changes": changes, "packages": packages}))?;
            } else {
                for c in &changes {
                    match c {
                        diff::Change::Added { path, size } => writeln!(out, "A {path} ({size} bytes)")?,
                        diff::Change::Removed { path, size } => writeln!(out, "D {path} ({size} bytes)")?,
                        diff::Change::Modified { path, old_size, new_size, what } => {
                            writeln!(out, "M {path} ({old_size} -> {new_size} bytes; {})", what.join(", "))?
                        }
                    }
                }
                if let Some(pk) = packages {
                    writeln!(out, "packages:")?;
                    for p in pk {
                        match (&p.old, &p.new) {
                            (None, Some(v)) => writeln!(out, "  + {} {v}", p.package)?,
                            (Some(v), None) => writeln!(out, "  - {} {v}", p.package)?,
                            (Some(o), Some(n)) => writeln!(out, "  ~ {} {o} -> {n}", p.package)?,
                            (None, None) => {}
                        }
                    }
                }
            }
        }
        Command::Push { generation, keys, arch, epoch, expires_days, server } => {
            let g = repo.resolve(&generation.parse()?)?;
            let remote = remote(&server)?;
            let secrets = keys.iter().map(|k| signing::read_secret(k)).collect::<Result<Vec<_>, _>>()?;
            let start = Instant::now();
            let r = tools::push::push(&repo.store, &g, &remote).with_context(|| format!("pushing {}", g.label()))?;
            let signed = if secrets.is_empty() {
                None
            } else {
                let manifest = repo.store.get(&g.digest)?;
                let arch = arch.unwrap_or_else(|| trust::policy::host_arch().to_string());
                let to_sign = signing::GenerationToSign {
                    image: g.manifest.image.as_str(),
                    generation: g.manifest.generation,
                    manifest: &manifest,
                    arch: &arch,
                    epoch,
                };
                Some(
                    signing::sign_generation(&remote, &secrets, &to_sign, expires_days)
                        .with_context(|| format!("signing {}", g.label()))?,
                )
            };
            if json {
                let mut v = serde_json::to_value(&r)?;
                v["signed"] = serde_json::to_value(&signed)?;
                writeln!(out, "{v}")?;
            } else {
                match &signed {
                    Some(s) => writeln!(out, "signed {} (arch {}, epoch {})", g.label(), s.arch, s.epoch)?,
                    None => writeln!(out, "{} is not signed (no --key): endpoints refuse it and channels cannot name it", g.label())?,
                }
                writeln!(
                    out,
                    "pushed {}: {} objects, {} uploaded ({} bytes), {:.2} s",
                    g.label(),
                    r.objects,
                    r.uploaded,
                    r.uploaded_bytes,
                    start.elapsed().as_secs_f64()
                )?;
            }
        }
        Command::Keep { generation, off, server } => {
            let (image, number) = match generation.parse()? {
                format::GenSpec::Number(image, n) => (image, n),
                _ => anyhow::bail!("keep takes IMAGE@N, not {generation:?}"),
            };
            let v = remote(&server)?.keep(image.as_str(), number, !off)?;
            if json {
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "{image}@{number}: keep {}", if off { "off" } else { "on" })?;
            }
        }
        Command::Key { op, server } => key_command(op, server, json, &mut out)?,
        Command::Trust { op, server } => trust_command(op, server, json, &mut out)?,
        Command::Channel { op, server } => {
            let remote = remote(&server)?;
            let v = match &op {
                ChannelOp::Set { channel, generation } => remote.channel_set(channel, generation)?,
                ChannelOp::Promote { from, to } => remote.promote(from, to)?,
                ChannelOp::Rollback { channel, to } => remote.rollback(channel, to.as_deref())?,
                ChannelOp::History { channel } => remote.history(channel)?,
                ChannelOp::Get { channel } => remote.channel_get(channel)?,
            };
            if json {
                writeln!(out, "{v}")?;
            } else if let Some(versions) = v["versions"].as_array() {
                for cv in versions {
                    writeln!(
                        out,
                        "v{:<5} {:<24} {:<9} {}",
                        cv["version"],
                        cv["generation"].as_str().unwrap_or(""),
                        cv["action"].as_str().unwrap_or(""),
                        utc_string(cv["created"].as_i64().unwrap_or(0))
                    )?;
                }
            } else {
                writeln!(
                    out,
                    "{} v{} -> {} ({})",
                    v["channel"].as_str().unwrap_or(""),
                    v["version"],
                    v["generation"].as_str().unwrap_or(""),
                    v["action"].as_str().unwrap_or("")
                )?;
            }
        }
        Command::Verify { dry_run } => {
            let r = verify::verify(&repo, !dry_run)?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
            } else {
                writeln!(out, "checked {} objects and {} generations", r.objects_checked, r.generations_checked)?;
                for (d, why) in &r.corrupt {
                    writeln!(out, "corrupt object {d}: {why}")?;
                }
                if r.quarantined > 0 {
                    writeln!(out, "moved {} corrupt objects to {}", r.quarantined, repo.root().join("quarantine").display())?;
                }
                if r.tmp_removed > 0 {
                    writeln!(out, "removed {} temporary files left by interrupted writers", r.tmp_removed)?;
                }
                for (label, missing) in &r.incomplete {
                    writeln!(
                        out,
                        "generation {label} is missing {} objects (first: {}); re-import its source or fetch it from a server",
                        missing.len(),
                        missing[0]
                    )?;
                }
                if r.corrupt.is_empty() && r.incomplete.is_empty() {
                    writeln!(out, "all good")?;
                }
            }
            return Ok(if r.healthy(!dry_run) { exit_codes::OK } else { exit_codes::VERIFY_FAILED });
        }
    }
    Ok(exit_codes::OK)
}

fn key_command(op: KeyOp, server: cli::Server, json: bool, out: &mut impl Write) -> Result<()> {
    match op {
        KeyOp::Generate { file } => {
            let k = signing::generate_key(&file)?;
            if json {
                writeln!(out, "{}", json!({"keyid": k.key_id().0, "file": file, "public": signing::public_path(&file)}))?;
            } else {
                writeln!(out, "{} {} (public half in {})", k.key_id(), file.display(), signing::public_path(&file).display())?;
            }
        }
        KeyOp::List { files } if !files.is_empty() => {
            let mut rows = Vec::new();
            for f in &files {
                let k = signing::read_public(f)?;
                let secret = signing::read_secret(f).is_ok();
                rows.push(json!({"file": f, "keyid": k.key_id().0, "secret": secret}));
                if !json {
                    writeln!(out, "{} {}{}", k.key_id(), f.display(), if secret { " (secret)" } else { "" })?;
                }
            }
            if json {
                writeln!(out, "{}", serde_json::Value::Array(rows))?;
            }
        }
        KeyOp::List { .. } => {
            let v = signing::list(&remote(&server)?)?;
            if json {
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "root v{} (expires {})", v["root"]["version"], v["root"]["expires"].as_str().unwrap_or(""))?;
                for (role, r) in v["root"]["roles"].as_object().into_iter().flatten() {
                    writeln!(out, "  {role}: threshold {} of {}", r["threshold"], r["keyids"])?;
                }
                if !v["targets"].is_null() {
                    writeln!(out, "targets v{} (expires {})", v["targets"]["version"], v["targets"]["expires"].as_str().unwrap_or(""))?;
                    for d in v["targets"]["delegations"].as_array().into_iter().flatten() {
                        writeln!(
                            out,
                            "  {} {}: threshold {} of {}",
                            d["name"].as_str().unwrap_or(""),
                            d["paths"],
                            d["threshold"],
                            d["keyids"]
                        )?;
                    }
                }
            }
        }
        KeyOp::Rotate { role, add, remove, replace, online, threshold, sign_with, expires_days } => {
            let add = add.iter().map(|f| signing::read_public(f)).collect::<Result<Vec<_>, _>>()?;
            let remove = remove
                .iter()
                .map(|r| {
                    if std::path::Path::new(r).exists() {
                        signing::read_public(std::path::Path::new(r)).map(|k| k.key_id())
                    } else {
                        Ok(trust::keys::KeyId(r.clone()))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let signers = sign_with.iter().map(|f| signing::read_secret(f)).collect::<Result<Vec<_>, _>>()?;
            let r = signing::Rotation { role: role.clone(), add, remove, replace, online, threshold, expires_days };
            let (file, version) =
                signing::rotate(&remote(&server)?, &signers, &r).with_context(|| format!("rotating the keys of {role}"))?;
            if json {
                writeln!(out, "{}", json!({"role": role, "uploaded": file, "version": version}))?;
            } else {
                writeln!(out, "{role}: new keys in {file} version {version}")?;
            }
        }
    }
    Ok(())
}

fn trust_command(op: TrustOp, server: cli::Server, json: bool, out: &mut impl Write) -> Result<()> {
    let remote = remote(&server)?;
    match op {
        TrustOp::Init { root_keys, root_threshold, targets_keys, images, out: root_out, expires_days } => {
            let root_keys = root_keys.iter().map(|f| signing::read_secret(f)).collect::<Result<Vec<_>, _>>()?;
            let targets_keys = targets_keys.iter().map(|f| signing::read_secret(f)).collect::<Result<Vec<_>, _>>()?;
            let mut families = Vec::new();
            for spec in &images {
                let (name, file) = spec.split_once('=').with_context(|| format!("--image takes FAMILY=KEYFILE, not {spec:?}"))?;
                ImageName::new(name)?;
                families.push((name.to_string(), vec![signing::read_public(std::path::Path::new(file))?]));
            }
            let o = signing::InitOptions {
                root_keys: &root_keys,
                root_threshold,
                targets_keys: &targets_keys,
                families: &families,
                expires_days,
            };
            let root = signing::init(&remote, &o).context("creating the signed repository")?;
            std::fs::write(&root_out, &root).with_context(|| format!("writing {}", root_out.display()))?;
            if json {
                writeln!(out, "{}", json!({"root": root_out, "families": families.iter().map(|f| &f.0).collect::<Vec<_>>()}))?;
            } else {
                writeln!(out, "repository created; endpoints start from {} (imgfs mount --root)", root_out.display())?;
            }
        }
        TrustOp::MinEpoch { image, epoch, keys, expires_days } => {
            let secrets = keys.iter().map(|k| signing::read_secret(k)).collect::<Result<Vec<_>, _>>()?;
            let version = signing::set_min_epoch(&remote, &secrets, &image, epoch, expires_days)?;
            if json {
                writeln!(out, "{}", json!({"image": image, "min_epoch": epoch, "version": version}))?;
            } else {
                writeln!(out, "{image}: min_epoch {epoch} (role version {version}); generations below it are withdrawn")?;
            }
        }
    }
    Ok(())
}
