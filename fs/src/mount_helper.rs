//! The `mount -t fuse.imgfs` form: mount(8) runs `mount.fuse3`, which runs
//! `imgfs CHANNEL MOUNTPOINT -o OPTIONS`. This turns that into `imgfs mount` arguments, so an
//! fstab line works:
//!
//! ```text
//! os/stable  /srv/os  fuse.imgfs  server=http://a:4640,server=http://b:4640,cache=/var/cache/imgfs,_netdev  0 0
//! ```

/// Options imgfs takes as `key=value`.
const OURS: &[&str] =
    &["server", "cache", "cache_size", "min_free", "memory_cache", "threads", "poll_seconds", "log", "root", "image", "arch"];

/// Options imgfs takes alone (no value).
const FLAGS: &[&str] = &["passthrough"];

/// Generic mount options that mean nothing to imgfs (it is always read-only, with devices
/// and set-uid files as the image has them).
const IGNORED: &[&str] = &[
    "rw", "ro", "defaults", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "dev", "nodev", "suid", "nosuid", "exec",
    "noexec", "atime", "noatime", "relatime", "async", "sync",
];

/// A mount request in the helper form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// The channel (mount's "device").
    pub channel: String,
    /// Where to mount.
    pub mountpoint: String,
    /// imgfs options, in order: `server`, `cache`, ...
    pub options: Vec<(String, Option<String>)>,
    /// Stay in the foreground (option `foreground`); mount(8) needs the helper to detach.
    pub foreground: bool,
}

/// Why helper-form arguments were refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("imgfs CHANNEL MOUNTPOINT -o OPTIONS: {0}")]
pub struct HelperError(String);

/// `None` unless `args` (without the program name) are in the helper form.
/// `subcommands`: the names of `imgfs`'s subcommands (from its command-line definition); a
/// first argument that is one of them is not the helper form.
pub fn parse(args: &[String], subcommands: &[&str]) -> Option<Result<Helper, HelperError>> {
    let first = args.first()?;
    if first.starts_with('-') || subcommands.contains(&first.as_str()) || args.len() < 2 {
        return None;
    }
    Some(parse_helper(args))
}

fn parse_helper(args: &[String]) -> Result<Helper, HelperError> {
    let mut h = Helper { channel: args[0].clone(), mountpoint: args[1].clone(), options: Vec::new(), foreground: false };
    let mut rest = args[2..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-o" => {
                let opts = rest.next().ok_or_else(|| HelperError("-o needs options".into()))?;
                for opt in opts.split(',').filter(|o| !o.is_empty()) {
                    let (k, v) = match opt.split_once('=') {
                        Some((k, v)) => (k, Some(v.to_string())),
                        None => (opt, None),
                    };
                    if k == "foreground" && v.is_none() {
                        h.foreground = true;
                    } else if FLAGS.contains(&k) && v.is_none() {
                        h.options.push((k.to_string(), None));
                    } else if OURS.contains(&k) {
                        if v.is_none() {
                            return Err(HelperError(format!("option {k} needs a value ({k}=...)")));
                        }
                        h.options.push((k.to_string(), v));
                    } else if !(IGNORED.contains(&k) || k.starts_with("x-") || k == "comment") {
                        return Err(HelperError(format!("unknown option {opt:?}")));
                    }
                }
            }
            // mount(8) may pass these to helpers: no mtab, sloppy, verbose.
            "-n" | "-s" | "-v" => {}
            other => return Err(HelperError(format!("unexpected argument {other:?}"))),
        }
    }
    Ok(h)
}
