//! The `completions SHELL` and hidden `man DIR` commands of every binary (imgfs, imgctl,
//! imaged), generated from the binary's clap definition with clap_complete and clap_mangen:
//! the Debian packages ship their output (docs/packages.md), so the pages and completions
//! never drift from the arguments the binary really takes.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The commands a binary flattens into its own subcommands (`#[command(flatten)]`).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DocsCommand {
    /// Print the completion script for SHELL to standard output, e.g.
    /// `imgfs completions bash > /etc/bash_completion.d/imgfs`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages of the command and of every subcommand into DIR (NAME.1,
    /// NAME-SUBCOMMAND.1, ...); the packages are built with them.
    #[command(hide = true)]
    Man {
        /// The directory (made if missing).
        dir: PathBuf,
    },
}

/// Why the man pages or the completions could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// A man page or the directory could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Standard output could not be written.
    #[error("writing the completions to standard output")]
    Stdout(#[source] std::io::Error),
}

impl DocsCommand {
    /// Runs the command for the binary `cmd` describes (`Cli::command()`); the exit code (0, or
    /// 1 with the error on standard error).
    pub fn run(&self, cmd: clap::Command) -> i32 {
        let name = cmd.get_name().to_string();
        let result = match self {
            DocsCommand::Completions { shell } => completions(*shell, cmd),
            DocsCommand::Man { dir } => man_pages(cmd, dir).map(|_| ()),
        };
        match result {
            Ok(()) => 0,
            Err(e) => {
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                eprintln!("{name}: error: {text}");
                1
            }
        }
    }
}

/// Writes the completion script of `cmd` for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) -> Result<(), DocsError> {
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    std::io::stdout().lock().write_all(&buf).map_err(DocsError::Stdout)
}

/// Writes a man page (section 1) for `cmd` and each of its visible subcommands, at any
/// depth, into `dir`; the files written, the command's own first.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    std::fs::create_dir_all(dir).map_err(|source| DocsError::Write { path: dir.to_path_buf(), source })?;
    // `help` is a subcommand clap adds; it gets no page of its own.
    let mut cmd = cmd.disable_help_subcommand(true);
    // Building gives subcommands their display names (`imgctl-channel-set`), the pages' names.
    cmd.build();
    let manual = cmd.get_name().to_string();
    let source = format!("{manual} {}", cmd.get_version().unwrap_or_default());
    let mut written = Vec::new();
    write_pages(&cmd, &manual, &source, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &clap::Command, manual: &str, source: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), DocsError> {
    let page = clap_mangen::Man::new(cmd.clone()).manual(manual.to_string()).source(source.to_string());
    let path = dir.join(page.get_filename());
    let mut bytes = Vec::new();
    page.render(&mut bytes).map_err(|source| DocsError::Write { path: path.clone(), source })?;
    std::fs::write(&path, bytes).map_err(|source| DocsError::Write { path: path.clone(), source })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, manual, source, dir, written)?;
    }
    Ok(())
}
