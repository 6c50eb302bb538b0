//! `imgfs`: mounts an image channel from one or more imaged servers through FUSE. Parses
//! arguments, calls the `fs` library (`startup` mounts, `control` talks to a mount), prints a
//! summary for people or JSON, and exits with the codes of `fs::exit_codes`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use api::control::{Prefetched, ProgressLine, Request, ResetDone, Startup, Status, Switch, Unpinned};
use cache::quota::{Quota, Size};
use clap::{CommandFactory, Parser, Subcommand};
use format::ChannelName;
use fs::exit_codes::ExitCode;

/// imgfs: run an OS or application image from the network, verified and cached.
#[derive(Parser, Debug)]
#[command(name = "imgfs", version, about, after_help = fs::exit_codes::HELP)]
struct Cli {
    /// Print the mount's answer as JSON (status, update, rollback, pin, unpin, prefetch).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// How to mount: everything `imgfs mount` and the `mount -t fuse.imgfs` helper share.
#[derive(clap::Args, Debug, Clone)]
struct MountArgs {
    /// Servers, comma-separated, tried in order: http://a:4640,http://b:4640.
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// Channel to follow, e.g. os/stable.
    #[arg(long, required_unless_present = "at", conflicts_with = "at")]
    channel: Option<ChannelName>,
    /// Stay on one generation, IMAGE@N, verified through the signed targets (follows no
    /// channel; `imgfs update` only checks it is still signed).
    #[arg(long, value_name = "IMAGE@N", value_parser = parse_at)]
    at: Option<(format::ImageName, u64)>,
    /// Cache directory (objects and the endpoint's state).
    #[arg(long)]
    cache: PathBuf,
    /// Most the cache may hold: bytes (K, M, G, T suffixes) or a share of its partition (25%).
    #[arg(long, default_value = "25%")]
    cache_size: Size,
    /// Free space the cache's partition must keep; the cache shrinks to keep it.
    #[arg(long, default_value = "5%")]
    min_free: Size,
    /// Memory for decompressed file data (bytes, K/M/G suffixes); a read beyond it decodes
    /// again from the cache on disk.
    #[arg(long, default_value = "16M", value_parser = parse_bytes)]
    memory_cache: u64,
    /// Worker threads serving the kernel's requests.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Open files through imgfs and hand fully cached files of 32 KiB or more to the kernel
    /// (FUSE passthrough to plain copies kept in CACHE/files). Faster reads of big files whose
    /// pages the kernel has dropped; slower opens (a round trip each). Default: the kernel
    /// opens files without asking imgfs.
    #[arg(long)]
    passthrough: bool,
    /// Seconds between channel checks (default: what the server says, else 300).
    #[arg(long)]
    poll_seconds: Option<u64>,
    /// Detach once mounted; logs go to --log.
    #[arg(long)]
    daemon: bool,
    /// Log file of a daemon (default: CACHE/imgfs.log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The repository's root.json to start trusting from (`imgctl trust init --out`); needed
    /// the first time only: the cache keeps the trusted metadata after that.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The image family this endpoint runs (default: the channel's first generation's,
    /// then kept); a channel moved to another family is refused.
    #[arg(long)]
    image: Option<String>,
    /// The architecture this endpoint runs (default: this machine's).
    #[arg(long)]
    arch: Option<String>,
    /// Start on IMAGE@N (verified by its family's signature) and stay there until `imgfs
    /// update` or `imgfs rollback` (the fleet agent's staged reboot generation).
    #[arg(long, value_name = "IMAGE@N", value_parser = parse_at)]
    hold: Option<(format::ImageName, u64)>,
    /// Keep local changes in DIR (a writable layer over the image, overlayfs's upper form:
    /// DIR/upper, events in DIR/events.jsonl); without it the mount is read-only.
    #[arg(long, value_name = "DIR")]
    writable: Option<PathBuf>,
    /// A protected path of the writable layer, a glob from the mount's root (etc/ssh/**):
    /// a local change of it is undone (restored to the image's version) and recorded.
    #[arg(long, value_name = "GLOB", requires = "writable")]
    protect: Vec<String>,
    /// A file of protected paths, one glob per line (# comments).
    #[arg(long, value_name = "FILE", requires = "writable")]
    protect_file: Option<PathBuf>,
    /// How often the whole writable layer is checked against the protected paths; changes
    /// made through the mount are undone at once.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_seconds)]
    drift_interval: u64,
    /// Fill the rest of each generation into the cache in the background, at most RATE bytes
    /// a second (K, M, G suffixes), after the data of its read trace and yielding to reads
    /// that wait for the network: a laptop that must work offline soon after a switch.
    #[arg(long, value_name = "RATE", value_parser = parse_bytes)]
    fill: Option<u64>,
    /// How long a switch waits for the data of the next generation's signed read trace, so
    /// that what it recorded starts from the cache once the mount moves; past it the mount
    /// switches and the fetch goes on behind (0: switch at once).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_wait)]
    warm_timeout: u64,
    /// Where to mount.
    mountpoint: PathBuf,
}

#[derive(Subcommand, Debug)]
enum TraceAction {
    /// Start recording the current generation's reads (record on a cold mount: what the
    /// kernel serves from its page cache is not seen).
    Start {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Stop recording and print the trace (JSON, docs/format.md "Read trace").
    Stop {
        /// The mount point.
        mountpoint: PathBuf,
        /// Write the trace to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetch what the cache lacks of the data a trace reads in the current generation, in the
    /// trace's order and in few requests (before the boot or application it recorded).
    Prefetch {
        /// The mount point.
        mountpoint: PathBuf,
        /// The trace (`imgfs trace stop --out`).
        trace: PathBuf,
        /// Most bytes per second to fetch at (K, M, G suffixes).
        #[arg(long)]
        max_rate: Option<Size>,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enroll this endpoint with the fleet: make its key (STATE/endpoint.key, never sent),
    /// register it with an enrollment token, write STATE/endpoint.json; prints its id.
    Enroll {
        /// Servers, comma-separated, tried in order.
        #[arg(long, value_delimiter = ',', required = true)]
        server: Vec<String>,
        /// The enrollment token (`imgctl fleet enroll-token`).
        #[arg(long, env = "IMGFS_ENROLL_TOKEN")]
        enroll_token: String,
        /// The endpoint's state directory.
        #[arg(long, default_value = "/var/lib/imgfs")]
        state: PathBuf,
        /// The cache directory whose partition the facts describe.
        #[arg(long, default_value = "/var/cache/imgfs")]
        cache: PathBuf,
        /// A label of this endpoint, k=v (repeatable).
        #[arg(long, value_parser = parse_label)]
        label: Vec<(String, String)>,
    },
    /// Run the endpoint's namespace as the fleet's server says (docs/fleet.md): check in,
    /// mount, switch, unmount, report. Runs until the server refuses the endpoint.
    Agent {
        /// The agent's configuration (docs/agent.toml.example).
        #[arg(long, default_value = "/etc/imgfs/agent.toml")]
        config: PathBuf,
    },
    /// Mount CHANNEL at MOUNTPOINT (in the foreground until unmounted, unless --daemon).
    Mount(MountArgs),
    /// Run COMMAND (an `imgfs mount`) and start it again whenever it dies, handing the new
    /// process the mount's live FUSE connection: restarts, crashes and upgrades (replace the
    /// binary, then kill the process) do not unmount, and programs using the mount see no
    /// error. Ends when COMMAND ends cleanly (unmounted). systemd's file descriptor store does
    /// the same for a unit (docs/restart.md).
    Supervise {
        /// The command and its arguments, e.g. `imgfs mount --server ... MOUNTPOINT`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Record which files and ranges a mount serves, in order (a boot, an application's
    /// start), for trace-driven prefetch: `trace start MOUNTPOINT`, run it, `trace stop`.
    Trace {
        #[command(subcommand)]
        action: TraceAction,
    },
    /// Unmount MOUNTPOINT.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Drop the writable layer's local changes at and below PATH (all of them without one):
    /// the image's version shows again.
    Reset {
        /// The mount point.
        mountpoint: PathBuf,
        /// A path in the mount (absolute, or relative to the mount's root).
        path: Option<PathBuf>,
    },
    /// Show the mount's generations, channel version, cache use, pins, servers and whether it
    /// is offline.
    Status {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Check the channel now and switch if it moved.
    Update {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Switch back to the previous generation at once (works offline).
    Rollback {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Switch to GEN, verified by its family's signature, and hold the mount there: its
    /// channel poller leaves it until `imgfs update` or `imgfs rollback`.
    Switch {
        /// The mount point.
        mountpoint: PathBuf,
        /// IMAGE@N.
        generation: String,
    },
    /// Keep GEN whole in the cache (fetching what it lacks) until unpinned.
    Pin {
        /// The mount point.
        mountpoint: PathBuf,
        /// IMAGE@N, a manifest digest, current or previous.
        generation: String,
        /// Most bytes per second to fetch at (K, M, G suffixes).
        #[arg(long)]
        max_rate: Option<Size>,
    },
    /// Let eviction take GEN's objects again.
    Unpin {
        /// The mount point.
        mountpoint: PathBuf,
        /// As given to pin: IMAGE@N or a manifest digest.
        generation: String,
    },
    /// Defer the fleet agent's switches of MOUNTPOINT for a while (up to what its group's
    /// maintenance window allows), or clear a deferral; prints until when.
    Defer {
        /// The mount point (or the namespace path of the mount).
        mountpoint: PathBuf,
        /// How long: 90s, 30m, 4h, 1d or seconds.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_seconds, required_unless_present = "clear", conflicts_with = "clear")]
        duration: Option<u64>,
        /// Remove the mount's deferral: it switches as its window allows.
        #[arg(long)]
        clear: bool,
        /// The agent's configuration, for its state directory.
        #[arg(long, default_value = "/etc/imgfs/agent.toml")]
        config: PathBuf,
    },
    /// Fetch everything of GEN the cache lacks, for offline use. Resumes where an interrupted
    /// prefetch stopped; the mount finishes it even if this command is interrupted.
    Prefetch {
        /// The mount point.
        mountpoint: PathBuf,
        /// IMAGE@N, a manifest digest, current or previous.
        generation: String,
        /// Most bytes per second to fetch at (K, M, G suffixes).
        #[arg(long)]
        max_rate: Option<Size>,
    },
    #[command(flatten)]
    Docs(cache::cli_docs::DocsCommand),
}

impl MountArgs {
    /// What the library needs to mount.
    fn options(&self) -> fs::startup::MountOptions {
        fs::startup::MountOptions {
            servers: self.server.clone(),
            follow: match (&self.channel, &self.at) {
                (Some(c), _) => fs::state::Follow::Channel(c.clone()),
                (None, Some((image, n))) => fs::state::Follow::At { image: image.clone(), n: *n },
                (None, None) => unreachable!("clap requires --channel or --at"),
            },
            cache: self.cache.clone(),
            quota: Quota { limit: self.cache_size, min_free: self.min_free },
            threads: self.threads,
            memory_cache: self.memory_cache,
            passthrough: self.passthrough,
            poll: self.poll_seconds.map(std::time::Duration::from_secs),
            root: self.root.clone(),
            image: self.image.clone(),
            arch: self.arch.clone(),
            hold: self.hold.as_ref().map(|(image, n)| format!("{image}@{n}")),
            mountpoint: self.mountpoint.clone(),
            fill: self.fill.filter(|r| *r > 0),
            warm_timeout: std::time::Duration::from_secs(self.warm_timeout),
            writable: self.writable.as_ref().map(|dir| fs::startup::WritableOptions {
                dir: dir.clone(),
                protect: self.protect.clone(),
                protect_file: self.protect_file.clone(),
                interval: std::time::Duration::from_secs(self.drift_interval.max(1)),
            }),
        }
    }
}

pub(crate) fn main() {
    cache::seams::warn_if_set("imgfs");
    // `mount -t fuse.imgfs CHANNEL MOUNTPOINT -o ...` runs `imgfs CHANNEL MOUNTPOINT -o ...`.
    let argv: Vec<String> = std::env::args().collect();
    let cli = <Cli as clap::CommandFactory>::command();
    let subcommands: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).chain(["help"]).collect();
    let (command, json) = match fs::mount_helper::parse(&argv[1..], &subcommands) {
        Some(parsed) => match parsed.map_err(anyhow::Error::from).and_then(helper_args) {
            Ok(args) => (Command::Mount(args), false),
            Err(e) => {
                eprintln!("imgfs: error: {e:#}");
                std::process::exit(ExitCode::Usage.code())
            }
        },
        None => {
            let cli = Cli::parse();
            (cli.command, cli.json)
        }
    };
    let code = match command {
        Command::Mount(args) => mount(&args),
        other => {
            init_tracing(false);
            run(other, json)
        }
    };
    std::process::exit(code.code())
}

fn init_tracing(daemon: bool) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "fs=info,imgfs=info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(!daemon)
        .init();
}

/// Mounts in the foreground, or as a daemon whose parent exits with its word.
fn mount(args: &MountArgs) -> ExitCode {
    // A daemon forks before any thread starts; the parent waits for the child's word.
    let mut ready = match args.daemon.then(|| daemonize(args)).transpose() {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("imgfs: error: {e:#}");
            return ExitCode::Failure;
        }
    };
    init_tracing(args.daemon);
    let result = fs::startup::mount(&args.options(), |mounted| {
        // Scripts and tests wait for this line.
        eprintln!("{mounted}");
        if let Some(mut w) = ready.take() {
            let _ = writeln!(w, "{}", serde_json::to_string(&Startup::Mounted(mounted.clone())).expect("serialises"));
        }
    });
    match result {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            let error = format!("{:#}", anyhow::Error::from(e));
            if let Some(mut w) = ready {
                let _ = writeln!(w, "{}", serde_json::to_string(&Startup::Failed { error: error.clone() }).expect("serialises"));
            }
            eprintln!("imgfs: error: {error}");
            ExitCode::Failure
        }
    }
}

/// The commands that talk to a running mount, and `umount`.
fn run(command: Command, json: bool) -> ExitCode {
    let fetch = |mountpoint: &Path, pin: bool, generation: String, max_rate| {
        let max_rate = match rate_arg(max_rate) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("imgfs: error: {e}");
                return ExitCode::Usage;
            }
        };
        let (what, request) = match pin {
            true => ("pin", Request::Pin { generation, max_rate }),
            false => ("prefetch", Request::Prefetch { generation, max_rate }),
        };
        control::<Prefetched>(mountpoint, what, &request, json, fs::report::prefetched, |_| None)
    };
    match command {
        Command::Enroll { server, enroll_token, state, cache, label } => enroll(&server, &enroll_token, &state, &cache, label, json),
        Command::Agent { config } => agent(&config),
        Command::Supervise { command } => match fs::supervise::run(&command[0], &command[1..]) {
            Ok(0) => ExitCode::Ok,
            Ok(_) => ExitCode::Failure,
            Err(e) => {
                eprintln!("imgfs: error: {:#}", anyhow::Error::from(e));
                ExitCode::Failure
            }
        },
        Command::Defer { mountpoint, duration, clear: _, config } => defer(&config, &mountpoint, duration, json),
        Command::Reset { mountpoint, path } => {
            let path = path.map(|p| {
                let p = p.strip_prefix(&mountpoint).map(PathBuf::from).unwrap_or(p);
                api::control::escape_path(p.as_os_str().as_encoded_bytes())
            });
            control::<ResetDone>(&mountpoint, "reset", &Request::Reset { path }, json, fs::report::reset, |_| None)
        }
        Command::Status { mountpoint } => control::<Status>(&mountpoint, "status", &Request::Status, json, fs::report::status, |_| None),
        Command::Update { mountpoint } => control(&mountpoint, "update", &Request::Update, json, fs::report::outcome, switch_error),
        Command::Rollback { mountpoint } => control(&mountpoint, "rollback", &Request::Rollback, json, fs::report::outcome, switch_error),
        Command::Switch { mountpoint, generation } => {
            control(&mountpoint, "switch", &Request::SwitchTo { generation }, json, fs::report::outcome, switch_error)
        }
        Command::Pin { mountpoint, generation, max_rate } => fetch(&mountpoint, true, generation, max_rate),
        Command::Prefetch { mountpoint, generation, max_rate } => fetch(&mountpoint, false, generation, max_rate),
        Command::Trace { action: TraceAction::Start { mountpoint } } => control::<api::control::TraceStarted>(
            &mountpoint,
            "trace start",
            &Request::TraceStart,
            json,
            |s| format!("tracing the reads of {}; `imgfs trace stop` ends it", s.generation),
            |_| None,
        ),
        Command::Trace { action: TraceAction::Stop { mountpoint, out } } => trace_stop(&mountpoint, out.as_deref(), json),
        Command::Trace { action: TraceAction::Prefetch { mountpoint, trace, max_rate } } => {
            let read = std::fs::read(&trace)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<api::control::Trace>(&b).map_err(anyhow::Error::from))
                .and_then(|t| match t.version {
                    api::control::TRACE_VERSION => Ok(t),
                    v => anyhow::bail!("trace format version {v}; this build reads {}", api::control::TRACE_VERSION),
                });
            match (read, rate_arg(max_rate)) {
                (Ok(t), Ok(max_rate)) => control::<Prefetched>(
                    &mountpoint,
                    "trace prefetch",
                    &Request::PrefetchTrace { trace: t, max_rate },
                    json,
                    fs::report::prefetched,
                    |_| None,
                ),
                (Err(e), _) => {
                    eprintln!("imgfs: error: reading the trace {}: {e:#}", trace.display());
                    ExitCode::Usage
                }
                (_, Err(e)) => {
                    eprintln!("imgfs: error: {e}");
                    ExitCode::Usage
                }
            }
        }
        Command::Unpin { mountpoint, generation } => {
            control::<Unpinned>(&mountpoint, "unpin", &Request::Unpin { generation }, json, fs::report::unpinned, |_| None)
        }
        Command::Umount { mountpoint } => match nix::mount::umount2(&mountpoint, nix::mount::MntFlags::empty()) {
            Ok(()) => ExitCode::Ok,
            Err(e) => {
                eprintln!("imgfs: error: unmounting {}: {e}", mountpoint.display());
                ExitCode::Failure
            }
        },
        Command::Docs(docs) => match docs.run(Cli::command()) {
            0 => ExitCode::Ok,
            _ => ExitCode::Failure,
        },
        Command::Mount(_) => unreachable!("mounts are run by mount()"),
    }
}

/// `imgfs enroll`: prints the endpoint's id.
fn enroll(servers: &[String], token: &str, state: &Path, cache: &Path, labels: Vec<(String, String)>, json: bool) -> ExitCode {
    let labels: api::fleet::Labels = labels.into_iter().collect();
    match fs::agent::identity::enroll(state, servers, token, labels, cache) {
        Ok(file) => {
            match json {
                true => println!("{}", pretty(&file)),
                false => println!("{}", file.endpoint),
            }
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("imgfs: error: {:#}", anyhow::Error::from(e));
            ExitCode::Failure
        }
    }
}

/// `imgfs agent`: runs until the server refuses the endpoint.
fn agent(config: &Path) -> ExitCode {
    let cfg = match fs::agent::config::AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imgfs: error: {:#}", anyhow::Error::from(e));
            return ExitCode::Usage;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("imgfs: error: finding this executable: {e}");
            return ExitCode::Failure;
        }
    };
    let e = match fs::agent::run(cfg, exe) {
        Ok(()) => return ExitCode::Ok,
        Err(e) => e,
    };
    let code = match &e {
        fs::agent::AgentError::LockedOut(_) => ExitCode::LockedOut,
        _ => ExitCode::Failure,
    };
    tracing::error!(error = %format!("{:#}", anyhow::Error::from(e)), "the agent stops");
    code
}

/// `imgfs defer`: records or clears a deferral; prints until when.
fn defer(config: &Path, mountpoint: &Path, seconds: Option<u64>, json: bool) -> ExitCode {
    use fs::agent::deferral::DeferError;
    let cfg = match fs::agent::config::AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imgfs: error: {:#}", anyhow::Error::from(e));
            return ExitCode::Usage;
        }
    };
    match fs::agent::deferral::defer(&cfg, mountpoint, seconds, fs::trusted::unix_now()) {
        Ok(done) => {
            match (json, done.deferral) {
                (true, _) => println!("{}", pretty(&done)),
                (false, Some(d)) => println!("{}: switches deferred until {}", done.path, fs::report::time(d.until)),
                (false, None) => println!("{}: deferral cleared; it switches as its window allows", done.path),
            }
            ExitCode::Ok
        }
        Err(e) => {
            let code = match &e {
                DeferError::NoDesiredState { .. }
                | DeferError::NoPolicy { .. }
                | DeferError::Forbidden { .. }
                | DeferError::TooLong { .. } => ExitCode::Policy,
                DeferError::NotAMount { .. } => ExitCode::NotFound,
                DeferError::Io { .. } | DeferError::Write(_) | DeferError::Corrupt { .. } => ExitCode::Failure,
            };
            eprintln!("imgfs: defer refused: {:#}", anyhow::Error::from(e));
            code
        }
    }
}

/// `--for 4h`: `90s`, `30m`, `4h`, `1d` or a number of seconds (not zero).
fn parse_seconds(text: &str) -> Result<u64, String> {
    api::fleet::parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration: give 90s, 30m, 4h, 1d or seconds"))
}

/// A duration that may be zero ("0", "0s": not at all).
fn parse_wait(text: &str) -> Result<u64, String> {
    if text.trim_end_matches('s').chars().all(|c| c == '0') && !text.trim_end_matches('s').is_empty() {
        return Ok(0);
    }
    parse_seconds(text)
}

/// `--label k=v`.
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not k=v"))?;
    if !api::fleet::label_key_ok(k) || !api::fleet::label_value_ok(v) {
        return Err(format!("{s:?}: keys 1-63 and values 0-63 of [a-zA-Z0-9._/-]"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// A switch that did not happen: its exit code and what to tell people.
fn switch_error(s: &Switch) -> Option<(ExitCode, String)> {
    match s {
        Switch::Switched { .. } | Switch::AlreadyCurrent { .. } => None,
        Switch::Refused { error, .. } => Some((ExitCode::of_switch(s), error.clone())),
        Switch::NothingToRollBackTo => Some((ExitCode::of_switch(s), api::control::NOTHING_TO_ROLL_BACK_TO.into())),
    }
}

/// Sends `request` to the mount, following progress on a terminal, and prints the answer: JSON
/// with `--json`, else `human`'s summary. A failed command, or an answer `failure` calls one,
/// goes to stderr as `imgfs: WHAT on MOUNTPOINT: ERROR` and sets the exit code.
fn control<T: serde::de::DeserializeOwned + serde::Serialize>(
    mountpoint: &Path,
    what: &str,
    request: &Request,
    json: bool,
    human: fn(&T) -> String,
    failure: fn(&T) -> Option<(ExitCode, String)>,
) -> ExitCode {
    let bar = indicatif::ProgressBar::hidden();
    let mut progress = |p: &ProgressLine| {
        if bar.is_hidden() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .expect("a valid template"),
            );
        }
        bar.set_message(format!("{} objects", p.progress.objects_done));
        bar.set_length(p.progress.bytes_total);
        bar.set_position(p.progress.bytes_done);
    };
    let answer = fs::control::request::<T>(mountpoint, request, &mut progress);
    bar.finish_and_clear();
    let (code, error) = match answer {
        Err(e) => {
            let code = match e {
                fs::control::RequestError::NoMount { .. } => ExitCode::NoMount,
                _ => ExitCode::Failure,
            };
            eprintln!("imgfs: error: {e}");
            return code;
        }
        Ok(Err(f)) => {
            if json {
                println!("{}", pretty(&f));
            }
            (ExitCode::of_failure(f.kind), f.error)
        }
        Ok(Ok(answer)) => {
            let failed = failure(&answer);
            match (json, &failed) {
                (true, _) => println!("{}", pretty(&answer)),
                (false, None) => print!("{}", with_newline(human(&answer))),
                (false, Some(_)) => {}
            }
            match failed {
                None => return ExitCode::Ok,
                Some(f) => f,
            }
        }
    };
    eprintln!("imgfs: {what} on {}: {error}", mountpoint.display());
    code
}

/// `imgfs trace stop`: the trace to standard output or to `out` (written whole, then renamed).
fn trace_stop(mountpoint: &Path, out: Option<&Path>, json: bool) -> ExitCode {
    let trace = match fs::control::request::<api::control::Trace>(mountpoint, &Request::TraceStop, &mut |_| {}) {
        Err(e) => {
            eprintln!("imgfs: error: {e}");
            return match e {
                fs::control::RequestError::NoMount { .. } => ExitCode::NoMount,
                _ => ExitCode::Failure,
            };
        }
        Ok(Err(f)) => {
            if json {
                println!("{}", pretty(&f));
            }
            eprintln!("imgfs: trace stop on {}: {}", mountpoint.display(), f.error);
            return ExitCode::of_failure(f.kind);
        }
        Ok(Ok(trace)) => trace,
    };
    let text = pretty(&trace);
    let Some(out) = out else {
        println!("{text}");
        return ExitCode::Ok;
    };
    let tmp = out.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, format!("{text}\n")).and_then(|()| std::fs::rename(&tmp, out)) {
        eprintln!("imgfs: writing {}: {e}", out.display());
        let _ = std::fs::remove_file(&tmp);
        return ExitCode::Failure;
    }
    if json {
        println!("{text}");
    } else {
        let files = trace.reads.iter().map(|r| &r.path).collect::<std::collections::HashSet<_>>().len();
        let bytes: u64 = trace.reads.iter().map(|r| r.len).sum();
        println!("{} ranges of {files} files ({bytes} bytes) of {} written to {}", trace.reads.len(), trace.generation, out.display());
    }
    ExitCode::Ok
}

fn with_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Pretty JSON of an answer.
fn pretty(answer: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(answer).expect("answers serialise")
}

fn rate_arg(max_rate: Option<Size>) -> Result<Option<u64>> {
    match max_rate {
        None => Ok(None),
        Some(Size::Bytes(b)) if b > 0 => Ok(Some(b)),
        Some(other) => anyhow::bail!("--max-rate {other}: give bytes per second, like 10M"),
    }
}

/// A size in bytes (`--memory-cache`): K, M, G, T suffixes, no share of a partition.
fn parse_bytes(s: &str) -> Result<u64, String> {
    match s.parse::<Size>().map_err(|e| e.to_string())? {
        Size::Bytes(b) => Ok(b),
        Size::Percent(_) => Err(format!("{s:?}: give a size in bytes (K, M, G suffixes), not a share")),
    }
}

/// `--at IMAGE@N`.
fn parse_at(s: &str) -> Result<(format::ImageName, u64), String> {
    api::fleet::parse_generation(s).ok_or_else(|| format!("{s:?} is not IMAGE@N"))
}

/// Mount arguments from the `mount -t fuse.imgfs` helper form.
fn helper_args(h: fs::mount_helper::Helper) -> Result<MountArgs> {
    let mut argv = vec!["imgfs".to_string(), "mount".to_string(), "--channel".into(), h.channel];
    for (k, v) in h.options {
        argv.push(format!("--{}", k.replace('_', "-")));
        if let Some(v) = v {
            argv.push(v);
        }
    }
    if !h.foreground {
        argv.push("--daemon".into());
    }
    argv.push(h.mountpoint);
    match Cli::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("mount options: {e}"))?.command {
        Command::Mount(a) => Ok(a),
        _ => unreachable!("built as a mount command"),
    }
}

/// Forks: the parent waits until the child has mounted (or failed) and exits with its word;
/// the child starts a session, sends its output to the log and returns the pipe to report on.
fn daemonize(a: &MountArgs) -> Result<std::fs::File> {
    use nix::unistd::{fork, ForkResult};
    let log = a.log.clone().unwrap_or_else(|| a.cache.join("imgfs.log"));
    std::fs::create_dir_all(&a.cache).with_context(|| format!("creating {}", a.cache.display()))?;
    let log_file =
        std::fs::OpenOptions::new().create(true).append(true).open(&log).with_context(|| format!("opening {}", log.display()))?;
    let (r, w) = nix::unistd::pipe().context("making a pipe")?;
    // SAFETY: no other thread exists yet (nothing has been started before this point).
    match unsafe { fork() }.context("forking")? {
        ForkResult::Parent { child } => {
            drop(w);
            let mut word = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut word);
            match word.lines().next().map(serde_json::from_str::<Startup>) {
                Some(Ok(Startup::Mounted(mounted))) => {
                    eprintln!("{mounted} (daemon pid {child}, log {})", log.display());
                    std::process::exit(ExitCode::Ok.code())
                }
                Some(Ok(Startup::Failed { error })) => {
                    eprintln!("imgfs: {error}");
                    std::process::exit(ExitCode::Failure.code())
                }
                Some(Err(_)) | None => {
                    eprintln!("imgfs: the daemon ended before mounting; see {}", log.display());
                    std::process::exit(ExitCode::Failure.code())
                }
            }
        }
        ForkResult::Child => {
            drop(r);
            nix::unistd::setsid().context("starting a session")?;
            let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
            nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
            nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1)?;
            nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&log_file), 2)?;
            std::env::set_current_dir("/")?;
            Ok(std::fs::File::from(w))
        }
    }
}
