//! `imgctl`: the image engineer's command line. Parses arguments (`cli.rs`), hands them to
//! `dispatch.rs`, which validates them and calls the `tools` library, prints the result
//! (`print.rs`), and maps expected failures to documented exit codes (`exit_codes.rs`).

mod cli;
mod dispatch;
mod exit_codes;
mod print;

use clap::Parser;
use tools::browse::ReadError;
use tools::commands::fleet::{InputError, LookupError};
use tools::commands::rollouts::PlanError;
use tools::commands::CommandError;
use tools::push::PushError;
use tools::remote::RemoteError;
use tools::signing::SignError;
use tools::{ImportError, RepoError};

fn main() {
    // The sandbox's init re-executes imgctl with a hidden first argument (tools::sandbox).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == tools::sandbox::INIT_ARG) {
        tools::sandbox::init_main(&args[2..]);
    }
    let cli = cli::Cli::parse();
    // Completions and man pages need no store.
    if let cli::Command::Docs(docs) = &cli.command {
        std::process::exit(docs.run(<cli::Cli as clap::CommandFactory>::command()));
    }
    cache::seams::warn_if_set("imgctl");
    let code = match dispatch::run(cli) {
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
    e.chain().find_map(code_of).unwrap_or(exit_codes::FAILURE)
}

/// The exit code of one error of the chain, if its type says which.
fn code_of(cause: &(dyn std::error::Error + 'static)) -> Option<i32> {
    if let Some(e) = cause.downcast_ref::<CommandError>() {
        // Transparent variants hide their inner error from the chain: look inside.
        return match e {
            CommandError::Repo(e) => code_of(e),
            CommandError::Read(e) | CommandError::Push { source: PushError::Read(e), .. } => code_of(e),
            CommandError::Import { source, .. } => code_of(source),
            CommandError::Verify(e) => code_of(e),
            CommandError::Remote(e) | CommandError::Push { source: PushError::Remote(e), .. } => code_of(e),
            CommandError::Sign { source, .. } | CommandError::Key(source) => code_of(source),
            CommandError::AuditBroken(_) => Some(exit_codes::VERIFY_FAILED),
            CommandError::Invalid { .. } => Some(exit_codes::BAD_INPUT),
            CommandError::Export { .. } | CommandError::Write { .. } | CommandError::Run { .. } => None,
        };
    }
    if let Some(RepoError::NotFound(_)) = cause.downcast_ref() {
        return Some(exit_codes::NOT_FOUND);
    }
    if let Some(ReadError::NotFound(_) | ReadError::NotADirectory(_) | ReadError::NotAFile(_)) = cause.downcast_ref() {
        return Some(exit_codes::NOT_FOUND);
    }
    if let Some(ImportError::UnsafePath { .. } | ImportError::Archive { .. } | ImportError::Unsupported { .. } | ImportError::Tree { .. }) =
        cause.downcast_ref()
    {
        return Some(exit_codes::BAD_INPUT);
    }
    if cause.downcast_ref::<tools::commands::audit::BadSince>().is_some() {
        return Some(exit_codes::BAD_INPUT);
    }
    if cause.downcast_ref::<format::NameError>().is_some() || cause.downcast_ref::<format::ChannelNameError>().is_some() {
        return Some(exit_codes::BAD_INPUT);
    }
    if cause.downcast_ref::<InputError>().is_some() || cause.downcast_ref::<api::fleet::BadId>().is_some() {
        return Some(exit_codes::BAD_INPUT);
    }
    match cause.downcast_ref::<PlanError>() {
        Some(PlanError::Unknown(_) | PlanError::Syntax { .. } | PlanError::Problem { .. }) => return Some(exit_codes::BAD_INPUT),
        Some(PlanError::Read { .. }) => return Some(exit_codes::FAILURE),
        None => {}
    }
    match cause.downcast_ref::<LookupError>() {
        Some(LookupError::NoSuchEndpoint(_)) => return Some(exit_codes::NOT_FOUND),
        Some(LookupError::Ambiguous { .. } | LookupError::GroupOrEndpoint(_)) => return Some(exit_codes::BAD_INPUT),
        None => {}
    }
    match cause.downcast_ref::<SignError>() {
        Some(SignError::Remote(e)) => return code_of(e),
        Some(SignError::Refused(_)) => return Some(exit_codes::REFUSED),
        Some(SignError::Key { .. }) => return Some(exit_codes::BAD_INPUT),
        None => {}
    }
    match cause.downcast_ref::<RemoteError>()? {
        RemoteError::Transport { .. } => Some(exit_codes::UNREACHABLE),
        e if e.status() == Some(404) => Some(exit_codes::NOT_FOUND),
        RemoteError::Http { .. } | RemoteError::TooLarge { .. } | RemoteError::NotServerJson { .. } => Some(exit_codes::REFUSED),
    }
}
