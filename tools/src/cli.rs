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
    /// Print a file of a generation: GEN:PATH.
    Cat {
        /// GEN:PATH.
        target: String,
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
    /// Check every object and generation; move corrupt objects aside and clear leftovers.
    Verify {
        /// Report only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}
