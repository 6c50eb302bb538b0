//! Command-line arguments of `imgctl`, parsed by clap into typed structs.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// imgctl: build, inspect and verify image generations.
#[derive(Parser, Debug)]
#[command(name = "imgctl", version, about)]
pub struct Cli {
    /// The local store (default: $XDG_DATA_HOME/imaged/store or ~/.local/share/imaged/store).
    #[arg(long, global = true, env = "IMGCTL_STORE")]
    pub store: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import a directory or tar archive (plain, gzip, zstd) as the image's next generation.
    Import {
        /// Directory or archive.
        src: PathBuf,
        /// Image name.
        #[arg(long)]
        image: String,
        /// Message recorded with the generation.
        #[arg(long, short, default_value = "")]
        message: String,
        /// Average chunk size in bytes for large files (min = avg/4, max = avg*4). Defaults to
        /// the previous generation's, else 65536.
        #[arg(long)]
        chunk_avg: Option<u32>,
        /// zstd compression level for new objects (1-22; 0 stores uncompressed). Default: 3 for
        /// an image's first generation (bulk), 9 for later ones (a patch's few new objects,
        /// which every endpoint downloads).
        #[arg(long)]
        level: Option<i32>,
        /// The change record.
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Make the image's next generation from BASE: run commands in a sandbox over a read-only
    /// mount of BASE and commit only what they changed.
    Patch {
        /// The generation to patch (NAME@N, NAME@latest, a digest).
        base: String,
        /// A shell command to run inside the image (`sh -c`), as root in a chroot with its own
        /// namespaces; repeatable, run in order.
        #[arg(long = "run", value_name = "CMD")]
        run: Vec<String>,
        /// A tar archive (plain, gzip, zstd) to unpack over the root; repeatable.
        #[arg(long = "apply-tar", value_name = "FILE")]
        apply_tar: Vec<PathBuf>,
        /// A directory whose contents are copied over the root; repeatable.
        #[arg(long = "apply-dir", value_name = "DIR")]
        apply_dir: Vec<PathBuf>,
        /// `host`: commands use the host's network and resolv.conf; `none`: no network.
        #[arg(long, default_value = "host", value_parser = ["host", "none"])]
        network: String,
        /// Leave paths matching GLOB (relative to the root, `**` allowed) out of the generation.
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Commit the volatile paths too (apt lists and downloaded packages, /tmp, /run).
        #[arg(long)]
        keep_volatile: bool,
        /// Kill a step running longer than this (e.g. 30m, 90s).
        #[arg(long, value_name = "DURATION")]
        step_timeout: Option<String>,
        /// Message recorded with the generation.
        #[arg(long, short, default_value = "")]
        message: String,
        /// Don't echo the steps' output (it is in the log either way).
        #[arg(long, short)]
        quiet: bool,
        /// The change record.
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// List an image's generations.
    Log {
        /// Image name.
        image: String,
    },
    /// List a directory of a generation: GEN[:PATH].
    Ls {
        /// NAME@NUMBER, NAME@latest or a manifest digest, optionally followed by :PATH.
        target: String,
    },
    /// Mount a generation of the local store read-only at DIR (FUSE; every object verified
    /// when read) and serve it until `imgctl umount DIR`.
    Mount {
        /// Generation.
        generation: String,
        /// An empty directory.
        dir: PathBuf,
    },
    /// Unmount what `imgctl mount` mounted at DIR.
    Umount {
        /// The mount point.
        dir: PathBuf,
    },
    /// List the generations that carry a Debian package (optionally below a version) or a
    /// path (optionally with given content): of the local store, or of the server given with
    /// --server (or IMAGED_SERVER), with the channels that name them.
    Affected {
        /// An installed Debian binary package (`libssl3`).
        #[arg(long, required_unless_present_any = ["source", "path"], conflicts_with_all = ["source", "path"])]
        package: Option<String>,
        /// Every binary package built from this Debian source package (`openssl`).
        #[arg(long, conflicts_with = "path")]
        source: Option<String>,
        /// With --package or --source: only versions lower than this (Debian ordering).
        #[arg(long, conflicts_with = "path")]
        below: Option<String>,
        /// A path inside the generations.
        #[arg(long)]
        path: Option<String>,
        /// With --path: only files whose content has this BLAKE3 digest.
        #[arg(long, requires = "path")]
        digest: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Print a file of a generation: GEN:PATH.
    Cat {
        /// GEN:PATH.
        target: String,
    },
    /// List every object a generation reaches (manifest, dictionary, patch log, package list,
    /// trees, chunks) with its stored size: what a server or a cache must hold for it.
    Objects {
        /// Generation.
        generation: String,
    },
    /// Write a full checkout of a generation to DEST (absent or empty).
    Export {
        /// Generation.
        generation: String,
        /// Destination directory.
        dest: PathBuf,
    },
    /// Show what changed between two generations.
    Diff {
        /// Older generation.
        from: String,
        /// Newer generation.
        to: String,
    },
    /// Upload a generation to a server (only the objects it lacks), publish it, and sign it
    /// with the image family's offline key (endpoints run only signed generations).
    Push {
        /// Generation.
        generation: String,
        /// The family's key file (repeat for a threshold above 1). Without one the generation
        /// is published unsigned: channels cannot name it until a push with a key signs it.
        #[arg(long = "key", env = "IMGCTL_KEY", value_delimiter = ',')]
        keys: Vec<PathBuf>,
        /// An external signer instead of a key file: COMMAND prints the public key when
        /// IMGCTL_SIGNER=public and signs standard input when IMGCTL_SIGNER=sign (repeat;
        /// docs/security.md).
        #[arg(long = "signer", value_name = "COMMAND")]
        signers: Vec<String>,
        /// Architecture it runs on (default: this machine's).
        #[arg(long)]
        arch: Option<String>,
        /// Security epoch (default: the family's min_epoch).
        #[arg(long)]
        epoch: Option<u64>,
        /// Days until the family's signed metadata expires.
        #[arg(long, default_value_t = tools::signing::DEFAULT_EXPIRES_DAYS)]
        expires_days: i64,
        #[command(flatten)]
        server: Server,
    },
    /// Offline keys: generate, list, rotate.
    Key {
        #[command(subcommand)]
        op: KeyOp,
        #[command(flatten)]
        server: Server,
    },
    /// The server's signed repository: create it, withdraw old generations.
    Trust {
        #[command(subcommand)]
        op: TrustOp,
        #[command(flatten)]
        server: Server,
    },
    /// Read traces (`imgfs trace stop`) attached to generations: endpoints fetch the data a
    /// trace reads first, in its order, when they mount or switch to the generation.
    Trace {
        #[command(subcommand)]
        op: TraceOp,
        #[command(flatten)]
        server: Server,
    },
    /// Mark a generation on a server as kept by its garbage collection (or, with --off, unmark).
    Keep {
        /// Generation, IMAGE@N.
        generation: String,
        /// Remove the mark instead.
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        server: Server,
    },
    /// People on a server: add a user with a role (its token is printed once), list, revoke.
    User {
        #[command(subcommand)]
        op: UserOp,
        #[command(flatten)]
        server: Server,
    },
    /// The server's audit log: every change, with its actor, time, before and after, and
    /// reason. The whole hash chain is verified here first (exit 4, naming the first bad
    /// entry, when it does not hold).
    Audit {
        /// Only entries from this time on: seconds since the epoch, YYYY-MM-DD or
        /// YYYY-MM-DDTHH:MM:SSZ (UTC).
        #[arg(long)]
        since: Option<String>,
        /// Only entries by this user (`admin` for the bootstrap token).
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// The fleet on a server: enrollment tokens, endpoints, their labels, compliance with a
    /// channel or generation.
    Fleet {
        #[command(subcommand)]
        op: FleetOp,
        #[command(flatten)]
        server: Server,
    },
    /// Groups of endpoints on a server: who is in them (a label selector, named members) and
    /// the namespace (mounts) they run.
    Group {
        #[command(subcommand)]
        op: GroupOp,
        #[command(flatten)]
        server: Server,
    },
    /// Rollouts on a server: a channel moves to a generation stage by stage (a group, then
    /// growing shares of the endpoints), each stage passing when its endpoints report healthy
    /// after a soak, halting by itself when failures exceed its budget (docs/rollouts.md).
    Rollout {
        #[command(subcommand)]
        op: RolloutOp,
        #[command(flatten)]
        server: Server,
    },
    /// Withdraw a bad generation fleet-wide: channels naming it move back, rollouts to it
    /// abort, endpoints running it roll back, and it is never offered again.
    Withdraw {
        /// The generation, IMAGE@N.
        generation: String,
        /// Why (required; recorded in the audit log and the rollouts' decisions).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: Server,
    },
    /// Move and inspect channels on a server.
    Channel {
        #[command(subcommand)]
        op: ChannelOp,
        #[command(flatten)]
        server: Server,
    },
    /// Run a command inside a generation and record the signed outcome on the server as test
    /// evidence (a failure or a timeout is evidence too; exit 8 when the test did not pass).
    Test {
        /// Generation (in the local store, published on the server).
        generation: String,
        /// The test's name, as channel policies require it (`boot`).
        #[arg(long)]
        name: String,
        /// The command line.
        #[arg(long)]
        run: String,
        /// Kill the command after this long and record it as timed out (`90s`, `10m`, `1h`,
        /// or seconds).
        #[arg(long, default_value = "10m")]
        timeout: String,
        /// `none`: the test runs without a network (the default, so results do not depend on
        /// the outside); `host`: with the host's network and resolv.conf.
        #[arg(long, default_value = "none", value_parser = ["host", "none"])]
        network: String,
        /// The tester's key file.
        #[arg(long, env = "IMGCTL_TESTER_KEY", required_unless_present = "signer")]
        key: Option<PathBuf>,
        /// The tester's key behind an external signer instead (docs/security.md).
        #[arg(long, value_name = "COMMAND", conflicts_with = "key")]
        signer: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Approve a generation for the channels whose policy lists your key as an approver.
    Approve {
        /// Generation, IMAGE@N.
        generation: String,
        /// The approver's key file.
        #[arg(long, env = "IMGCTL_APPROVER_KEY", required_unless_present = "signer")]
        key: Option<PathBuf>,
        /// The approver's key behind an external signer instead (docs/security.md).
        #[arg(long, value_name = "COMMAND", conflicts_with = "key")]
        signer: Option<String>,
        /// Recorded with the approval.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        server: Server,
    },
    /// A generation's manifest, change record and patch record; with a server (--server or
    /// IMAGED_SERVER), also its test evidence, approvals and, per channel policy, whether the
    /// promotion gate is met.
    Show {
        /// Generation.
        generation: String,
        /// Print the full log of the generation's patch steps instead.
        #[arg(long)]
        log: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Check every object and generation; move corrupt objects aside and clear leftovers.
    Verify {
        /// Report only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    #[command(flatten)]
    Docs(cache::cli_docs::DocsCommand),
}

/// Which server, and the token for changes.
#[derive(clap::Args, Debug)]
pub struct Server {
    /// Server URL, e.g. http://127.0.0.1:4640.
    #[arg(long, env = "IMAGED_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token for publishing (the server's admin.token).
    #[arg(long, env = "IMAGED_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// User operations (admin token).
#[derive(Subcommand, Debug)]
pub enum UserOp {
    /// Add a user; prints its bearer token, which is not shown again.
    Add {
        /// 1-64 of [a-z0-9._-].
        name: String,
        /// `admin`, `publisher` (push, channels, test evidence), `approver` (approvals, test
        /// evidence) or `viewer` (reads).
        #[arg(long, value_parser = ["admin", "publisher", "approver", "viewer"])]
        role: String,
    },
    /// List users (revoked ones too).
    #[command(alias = "ls")]
    List,
    /// Revoke a user's token at once.
    Revoke {
        /// The user.
        name: String,
    },
}

/// Fleet operations.
#[derive(Subcommand, Debug)]
pub enum FleetOp {
    /// Enrollment tokens: what an endpoint presents once to enroll (`imgfs enroll`).
    Token {
        #[command(subcommand)]
        op: TokenOp,
    },
    /// List endpoints: id, host name, groups, what each mount runs, last seen, flags.
    #[command(alias = "list")]
    Ls {
        /// Only members of this group.
        #[arg(long)]
        group: Option<String>,
        /// Only endpoints with this label, KEY=VALUE (repeat: all must match).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Only endpoints none of whose mounts runs this generation, IMAGE@N.
        #[arg(long, value_name = "IMAGE@N")]
        not_on: Option<String>,
    },
    /// Everything about one endpoint: facts, labels, groups, desired vs actual mounts,
    /// conflicts, cache, recent events.
    Show {
        /// Endpoint id (ep-...) or host name.
        endpoint: String,
    },
    /// Set operators' labels of an endpoint (KEY=VALUE...) and remove some (--remove KEY).
    Label {
        /// Endpoint id (ep-...) or host name.
        endpoint: String,
        /// Labels to set, KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A label key to remove (repeat).
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
    },
    /// Revoke an endpoint: it can no longer check in or report (admin).
    Revoke {
        /// Endpoint id (ep-...) or host name.
        endpoint: String,
    },
    /// How many endpoints run TARGET (a channel's current generation, or IMAGE@N) and why
    /// each other one does not.
    Compliance {
        /// A channel (os/stable) or a generation (os@5).
        target: String,
    },
    /// Pin the mounts of an image to one generation, whatever channels and rollouts say: of
    /// one endpoint, or of every endpoint of a group (an endpoint's own pin comes first).
    Pin {
        /// Endpoint id (ep-...), host name, or group name (a name that is both is refused
        /// unless --group says which).
        target: String,
        /// The generation, IMAGE@N.
        generation: String,
        /// TARGET is a group.
        #[arg(long)]
        group: bool,
    },
    /// Remove a pin: the mounts follow their channels and rollouts again.
    Unpin {
        /// Endpoint id (ep-...), host name, or group name.
        target: String,
        /// TARGET is a group.
        #[arg(long)]
        group: bool,
    },
    /// Hold an endpoint where it is: no channel move or rollout switches it until released.
    Hold {
        /// Endpoint id (ep-...) or host name.
        endpoint: String,
        /// Why (required; compliance shows it).
        #[arg(long)]
        reason: String,
    },
    /// Release an endpoint's hold.
    Release {
        /// Endpoint id (ep-...) or host name.
        endpoint: String,
    },
}

/// Rollout operations.
#[derive(Subcommand, Debug)]
pub enum RolloutOp {
    /// Start a rollout of CHANNEL to GENERATION (it waits for approval when the channel's
    /// policy is not met yet).
    Start {
        /// The channel it moves, e.g. os/stable.
        channel: String,
        /// Where to, IMAGE@N.
        generation: String,
        /// `normal` (pilot group, 1%, 10%, 50%, 100%), `emergency` (10%, 100%, windows
        /// ignored) or a plan file: TOML with [[stage]] tables, JSON if it ends in .json
        /// (docs/plan.toml.example).
        #[arg(long, value_name = "normal|emergency|FILE")]
        plan: Option<String>,
        /// Why: recorded with the rollout and in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List rollouts, newest first.
    #[command(alias = "list")]
    Ls,
    /// A rollout: its state (the brake's rule and who failed), the plan with the current
    /// stage marked, the stage's counts, every decision.
    Status {
        /// Rollout id, r1.
        id: String,
    },
    /// Pause a running rollout: endpoints stay where they are.
    Pause {
        /// Rollout id.
        id: String,
    },
    /// Resume a paused rollout, or one the brake halted (acknowledging the failures it saw).
    Resume {
        /// Rollout id.
        id: String,
    },
    /// Start a rollout that waits for approval, once the channel's policy is met.
    Approve {
        /// Rollout id.
        id: String,
    },
    /// Abort a rollout: endpoints stay where they are, or go back with --revert.
    Abort {
        /// Rollout id.
        id: String,
        /// Send the endpoints it reached back to what the channel named before.
        #[arg(long)]
        revert: bool,
    },
}

/// Enrollment token operations (admin).
#[derive(Subcommand, Debug)]
pub enum TokenOp {
    /// Make an enrollment token; prints it once.
    Create {
        /// How many endpoints may enroll with it (default: unlimited).
        #[arg(long)]
        uses: Option<u32>,
        /// How long it stays valid: 30m, 1h, 7d or seconds (default: forever).
        #[arg(long)]
        lifetime: Option<String>,
        /// A label every endpoint enrolled with it gets, KEY=VALUE (repeat).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List enrollment tokens (never their secrets).
    #[command(alias = "list")]
    Ls,
}

/// Group operations.
#[derive(Subcommand, Debug)]
pub enum GroupOp {
    /// Create a group (or with --replace, create or replace it).
    Create {
        /// 1-64 of [a-z0-9._-].
        name: String,
        /// Endpoints whose labels match are members: 'site=paris,role=kiosk', 'tier!=test',
        /// 'gpu', '!legacy' (every term must hold).
        #[arg(long)]
        selector: Option<String>,
        /// An endpoint id that is a member whatever its labels (repeat).
        #[arg(long = "member", value_name = "ENDPOINT")]
        members: Vec<String>,
        /// On a mount path two groups of an endpoint both name, the higher priority wins.
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        priority: i32,
        /// The mounts its endpoints run: a TOML file of [[mount]] tables (JSON if it ends in
        /// .json; docs/namespace.toml.example).
        #[arg(long, value_name = "FILE")]
        namespace: Option<PathBuf>,
        /// Replace the group of that name if there is one.
        #[arg(long)]
        replace: bool,
    },
    /// List groups with their selector, size and mounts.
    #[command(alias = "list")]
    Ls,
    /// A group: selector, members, priority, namespace, current endpoints.
    Show {
        /// The group.
        name: String,
    },
    /// Remove a group.
    #[command(alias = "delete")]
    Rm {
        /// The group.
        name: String,
    },
}

/// Channel operations.
#[derive(Subcommand, Debug)]
pub enum ChannelOp {
    /// Point CHANNEL at GENERATION (IMAGE@N, IMAGE@latest or a manifest digest).
    Set {
        /// Channel, e.g. os/stable.
        channel: String,
        /// Generation.
        generation: String,
        /// Why: recorded with the move in the server's audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Point TO at FROM's generation.
    Promote {
        /// Source channel.
        from: String,
        /// Target channel.
        to: String,
        /// Why: recorded with the move in the server's audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// A new version of CHANNEL naming an older generation (the previous one by default).
    Rollback {
        /// Channel.
        channel: String,
        /// Generation to go back to.
        #[arg(long)]
        to: Option<String>,
        /// Why: recorded with the move in the server's audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Every version of CHANNEL.
    History {
        /// Channel.
        channel: String,
    },
    /// CHANNEL's current version.
    Get {
        /// Channel.
        channel: String,
    },
    /// Set CHANNEL's promotion gate: what a generation needs before `channel set` or
    /// `promote` may point CHANNEL at it. Without options, print the current policy.
    Policy {
        /// Channel.
        channel: String,
        /// A test whose newest run by a listed tester must have passed (repeat).
        #[arg(long = "require-test")]
        require_test: Vec<String>,
        /// Distinct listed approvers needed.
        #[arg(long)]
        require_approvals: Option<u32>,
        /// For emergency generations: required tests (default: the normal ones; repeat).
        #[arg(long = "emergency-require-test")]
        emergency_require_test: Vec<String>,
        /// For emergency generations: approvals (default: 1, or 0 if normal needs none).
        #[arg(long)]
        emergency_require_approvals: Option<u32>,
        /// A public key file whose approvals count (repeat).
        #[arg(long = "approver")]
        approvers: Vec<PathBuf>,
        /// A public key file whose test evidence counts (repeat).
        #[arg(long = "tester")]
        testers: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyOp {
    /// Write a new key to FILE (mode 0600) and its public half to FILE.pub.
    Generate {
        /// The secret key file to create (never overwritten).
        file: PathBuf,
        /// ed25519 (default); ecdsa (P-256, ecdsa-sha2-nistp256: python-tuf's default, what
        /// hardware tokens and KMSs hold); rsa (3072 bits, rsassa-pss-sha256).
        #[arg(long = "type", default_value = "ed25519", value_parser = ["ed25519", "ecdsa", "rsa"])]
        keytype: String,
    },
    /// Show the key ids of key files, or (with none) the keys and thresholds of every role
    /// of the server's repository.
    List {
        /// Key files (secret or public).
        files: Vec<PathBuf>,
    },
    /// Change the keys of a role: a new root (root, targets, timestamp, snapshot) or a new
    /// targets (channels, images/FAMILY; a new family is delegated this way).
    Rotate {
        /// The role.
        role: String,
        /// A key to add (public or secret key file; repeat).
        #[arg(long)]
        add: Vec<PathBuf>,
        /// A key to remove: a key id or a key file (repeat).
        #[arg(long)]
        remove: Vec<String>,
        /// Remove every current key of the role first.
        #[arg(long)]
        replace: bool,
        /// Have the server make a new key for this online role (timestamp, snapshot,
        /// channels) and add it.
        #[arg(long)]
        online: bool,
        /// A new threshold.
        #[arg(long)]
        threshold: Option<usize>,
        /// The keys that sign the new file: old and new root keys for a new root, targets
        /// keys for a new targets (repeat).
        #[arg(long = "sign-with", required_unless_present = "signers")]
        sign_with: Vec<PathBuf>,
        /// An external signer instead of a key file: COMMAND prints the public key when
        /// IMGCTL_SIGNER=public and signs standard input when IMGCTL_SIGNER=sign (repeat;
        /// docs/security.md).
        #[arg(long = "signer", value_name = "COMMAND")]
        signers: Vec<String>,
        /// Days until the new file expires.
        #[arg(long, default_value_t = tools::signing::DEFAULT_EXPIRES_DAYS)]
        expires_days: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrustOp {
    /// Create the server's repository: root (your root and targets keys, the server's online
    /// keys) and targets (delegating each image family to its engineers' keys). Writes the
    /// root endpoints start from to --out.
    Init {
        /// A root key file (repeat).
        #[arg(long = "root-key", required_unless_present = "root_signers")]
        root_keys: Vec<PathBuf>,
        /// A root key behind an external signer (repeat; see --signer of `key rotate`).
        #[arg(long = "root-signer", value_name = "COMMAND")]
        root_signers: Vec<String>,
        /// Root signatures required for the next root.
        #[arg(long, default_value_t = 1)]
        root_threshold: usize,
        /// A targets key file (repeat).
        #[arg(long = "targets-key", required_unless_present = "targets_signers")]
        targets_keys: Vec<PathBuf>,
        /// A targets key behind an external signer (repeat).
        #[arg(long = "targets-signer", value_name = "COMMAND")]
        targets_signers: Vec<String>,
        /// FAMILY=KEYFILE: delegate an image family to a key (repeat).
        #[arg(long = "image")]
        images: Vec<String>,
        /// Where to write root.json for endpoints (imgfs --root).
        #[arg(long)]
        out: PathBuf,
        /// Days until root and targets expire.
        #[arg(long, default_value_t = tools::signing::DEFAULT_EXPIRES_DAYS)]
        expires_days: i64,
    },
    /// Withdraw every generation of IMAGE below security epoch EPOCH, on every endpoint.
    MinEpoch {
        /// Image family.
        image: String,
        /// The new minimum epoch.
        epoch: u64,
        #[command(flatten)]
        family: FamilyKeys,
    },
    /// Sign the family's metadata again without GENERATION (IMAGE@N): endpoints can no longer
    /// be sent to it, and garbage collection may then remove it (it keeps every generation a
    /// family role lists).
    Forget {
        /// The generation, IMAGE@N.
        generation: String,
        #[command(flatten)]
        family: FamilyKeys,
    },
}

/// What `imgctl trace` does.
#[derive(Subcommand, Debug)]
pub enum TraceOp {
    /// Upload read trace FILE and sign GENERATION's record again with it attached (the
    /// family's key, as at push).
    Add {
        /// The generation, IMAGE@N.
        generation: String,
        /// The trace, as `imgfs trace stop --out` wrote it.
        file: PathBuf,
        #[command(flatten)]
        family: FamilyKeys,
    },
}

/// The keys that sign an image family's role, on `trust min-epoch` and `trust forget`.
#[derive(clap::Args, Debug, Clone)]
pub struct FamilyKeys {
    /// The family's key file (repeat for a threshold above 1).
    #[arg(long = "key", env = "IMGCTL_KEY", value_delimiter = ',', required_unless_present = "signers")]
    pub keys: Vec<PathBuf>,
    /// An external signer instead of a key file: COMMAND prints the public key when
    /// IMGCTL_SIGNER=public and signs standard input when IMGCTL_SIGNER=sign (repeat;
    /// docs/security.md).
    #[arg(long = "signer", value_name = "COMMAND")]
    pub signers: Vec<String>,
    /// Days until the family's signed metadata expires.
    #[arg(long, default_value_t = tools::signing::DEFAULT_EXPIRES_DAYS)]
    pub expires_days: i64,
}

/// The change record's flags, on `import` and `patch`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ChangeArgs {
    /// Why the change is made.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// `normal` or `emergency` (the channel's emergency policy applies).
    #[arg(long, default_value = "normal", value_parser = ["normal", "emergency"])]
    pub classification: String,
    /// An advisory the generation addresses (CVE-2024-…, DSA-…); repeatable.
    #[arg(long = "advisory", value_name = "ID")]
    pub advisories: Vec<String>,
    /// Who asked for the change.
    #[arg(long, default_value = "")]
    pub requested_by: String,
    /// What endpoints do to activate it: live, restart:UNIT[,UNIT...] or reboot (default:
    /// derived from the diff against the parent).
    #[arg(long)]
    pub activation: Option<String>,
}
