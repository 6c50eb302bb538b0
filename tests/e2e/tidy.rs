//! Tidy: checks on the workspace's source read as text, as rust-analyzer keeps its `tidy.rs`.
//!
//! Every Rust file opens with its `//!` line (each e2e module with one line saying what it
//! covers), `format` and `trust` stay pure (no IO or runtime dependency, no IO in their
//! sources), no code outside tests decides on an error's text, and every route of the server's
//! router is in docs/openapi.yaml (and only those). Each check names the file and line of every
//! offence.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Crates that would give `format` or `trust` IO or an async runtime.
const IO_CRATES: &[&str] = &[
    "tokio",
    "axum",
    "hyper",
    "reqwest",
    "ureq",
    "mio",
    "async-std",
    "smol",
    "rocksdb",
    "redb",
    "sled",
    "fuser",
    "nix",
    "libc",
    "rustix",
    "memmap2",
    "xattr",
    "tempfile",
    "walkdir",
];

/// What the sources of `format` and `trust` must not use: they take bytes and the time as
/// parameters. (`std::env::consts`, constants of the build, is fine.)
const IO_IN_SOURCE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::os::",
    "std::env::var",
    "std::env::args",
    "env::var(",
    "SystemTime",
    "Instant::now",
    "tokio::",
];

/// The workspace's root: the parent of this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// Every `.rs` file under `dir`, skipping build output, hidden folders and `vendor/`
/// (third-party crates patched in, kept as their authors wrote them), sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if name.starts_with('.') || name == "target" || name == "vendor" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `path` relative to the workspace's root, for messages.
fn rel(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_none(what: &str, offences: Vec<String>) {
    assert!(offences.is_empty(), "{what}:\n{}", offences.join("\n"));
}

#[test]
fn every_rust_file_opens_with_a_line_saying_what_it_is_for() {
    let files = rust_files(&root());
    assert!(files.len() > 50, "found only {} Rust files under {}", files.len(), root().display());
    let offences = files
        .iter()
        .filter(|f| !read(f).starts_with("//!"))
        .map(|f| format!("{}:1: does not open with a `//!` line saying what the file is for", rel(f)))
        .collect();
    assert_none("files without their opening `//!` line", offences);
}

#[test]
fn every_e2e_module_opens_with_one_line_saying_what_it_covers_and_main_lists_it() {
    let dir = root().join("tests/e2e");
    let main = read(&dir.join("main.rs"));
    let mut offences = Vec::new();
    for file in rust_files(&dir) {
        let text = read(&file);
        let mut lines = text.lines();
        let (first, second) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        if !(first.starts_with("//! ") && first.ends_with('.')) || (second.starts_with("//!") && second != "//!") {
            offences
                .push(format!("{}:1: must open with one `//!` line, a whole sentence (more may follow after a `//!` line)", rel(&file)));
        }
        let module = file.file_stem().unwrap().to_string_lossy();
        if module != "main" && !main.lines().any(|l| l == format!("mod {module};")) {
            offences.push(format!("{}: main.rs does not list `mod {module};`", rel(&file)));
        }
    }
    assert_none("e2e modules", offences);
}

#[test]
fn format_and_trust_have_no_io_or_runtime_dependency_and_do_no_io() {
    let mut offences = Vec::new();
    for krate in ["format", "trust"] {
        let manifest = root().join(krate).join("Cargo.toml");
        let mut in_dependencies = false;
        for (n, line) in read(&manifest).lines().enumerate() {
            let line = line.trim();
            if line.starts_with('[') {
                // [dependencies], [build-dependencies], [target.'cfg(..)'.dependencies]; not
                // [dev-dependencies], which only the crate's own tests use.
                in_dependencies = line.ends_with("dependencies]") && !line.contains("dev-dependencies");
                continue;
            }
            if !in_dependencies || line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name = line.split(|c: char| c == '=' || c == '.' || c.is_whitespace()).next().unwrap_or("");
            let renamed = IO_CRATES.iter().find(|c| line.contains(&format!("package = \"{c}\"")));
            if let Some(c) = IO_CRATES.iter().find(|c| **c == name).or(renamed) {
                offences.push(format!("{}:{}: {krate} must do no IO, and depends on {c}", rel(&manifest), n + 1));
            }
        }
        for file in rust_files(&root().join(krate)) {
            for (n, line) in read(&file).lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                let grouped = line.contains("use std::{") && ["fs", "net", "process", "thread", "env"].iter().any(|m| line.contains(m));
                if let Some(used) =
                    IO_IN_SOURCE.iter().find(|p| line.contains(**p)).map(|p| p.to_string()).or(grouped.then(|| line.trim().to_string()))
                {
                    offences.push(format!(
                        "{}:{}: {krate} must do no IO (its callers pass bytes and the time), and uses {used}",
                        rel(&file),
                        n + 1
                    ));
                }
            }
        }
    }
    assert_none("IO in the pure crates", offences);
}

/// Whether `file` holds only tests: the tests crate, a `tests.rs`, a file under a `tests/`
/// folder.
fn is_test_file(file: &Path) -> bool {
    let rel = file.strip_prefix(root()).unwrap_or(file);
    rel.starts_with("tests") || rel.file_name().is_some_and(|n| n == "tests.rs") || rel.components().any(|c| c.as_os_str() == "tests")
}

/// The lines of `text` outside `#[cfg(test)]` items, with their numbers (from 1).
fn non_test_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push((n + 1, line));
            continue;
        }
        // Skip the item the attribute applies to: one line, or a block to its closing brace.
        let mut depth = 0i64;
        for (_, item) in lines.by_ref() {
            depth += item.matches('{').count() as i64 - item.matches('}').count() as i64;
            if depth <= 0 && !item.trim_start().starts_with("#[") {
                break;
            }
        }
    }
    out
}

/// Receivers that hold an error's text.
const ERROR_TEXT: &[&str] = &["e", "err", "error", "message", "msg", "reason", "why", "cause", "text"];

/// Whether `line` takes a decision on an error's text: `.to_string().contains(..)` (and
/// `starts_with`, `ends_with`), or one of those on an error-ish name with a string literal.
fn decides_on_text(line: &str) -> bool {
    if line.trim_start().starts_with("//") {
        return false;
    }
    for method in [".contains(", ".starts_with(", ".ends_with("] {
        for (i, _) in line.match_indices(method) {
            let (before, after) = (&line[..i], &line[i + method.len()..]);
            if before.ends_with(".to_string()") || before.ends_with(".to_lowercase()") {
                return true;
            }
            let receiver: String =
                before.chars().rev().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>().chars().rev().collect();
            if ERROR_TEXT.contains(&receiver.as_str()) && after.trim_start().starts_with('"') {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_text_matcher_finds_decisions_on_error_text_and_nothing_else() {
    for yes in [
        r#"if e.to_string().contains("lock") {"#,
        r#"r.is_err_and(|e| e.contains("request failed"))"#,
        r#"Err(RemoteError::Http { message, .. }) if message.contains("is not newer") => 1,"#,
        r#"if err.starts_with("timeout") {"#,
    ] {
        assert!(decides_on_text(yes), "{yes}");
    }
    for no in [
        r#"if name.starts_with('.') || name.contains('/') {"#,
        r#"if !store.contains(&digest) {"#,
        r#"Some(line) if line.starts_with("imgfs: mounted") => {"#,
        r#"// e.contains("x") in a comment"#,
        r#"if seg.contains("..") {"#,
    ] {
        assert!(!decides_on_text(no), "{no}");
    }
    let text = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() { e.contains(\"x\"); }\n}\nfn c() {}\n";
    let kept: Vec<usize> = non_test_lines(text).iter().map(|(n, _)| *n).collect();
    assert_eq!(kept, [1, 6]);
}

#[test]
fn no_code_outside_tests_decides_on_an_error_s_text() {
    let mut offences = Vec::new();
    for file in rust_files(&root()).into_iter().filter(|f| !is_test_file(f)) {
        let text = read(&file);
        for (n, line) in non_test_lines(&text) {
            if decides_on_text(line) {
                offences.push(format!(
                    "{}:{n}: decides on an error's text (match on a typed error or code instead): {}",
                    rel(&file),
                    line.trim()
                ));
            }
        }
    }
    assert_none("decisions taken on an error's text", offences);
}

/// A route template in a comparable spelling: axum's catch-all `{*name}` is OpenAPI's `{name}`.
fn normalise(route: &str) -> String {
    route.replace("{*", "{")
}

/// Every string literal of `text` between the line that starts with `start` and the next `];`.
fn literals_of_list(text: &str, start: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with(start));
    assert!(lines.next().is_some(), "no {start:?} found");
    lines.take_while(|l| !l.trim_start().starts_with("];")).filter_map(|l| l.split('"').nth(1)).map(String::from).collect()
}

#[test]
fn every_route_of_the_server_is_in_openapi_yaml_and_only_those() {
    // The router's paths: the `ROUTES` list its `.route(r(N), ..)` calls index, and any path
    // given to `.route(` as a literal.
    let metrics = root().join("imaged/src/metrics.rs");
    let mut routes: BTreeSet<String> = literals_of_list(&read(&metrics), "pub const ROUTES").iter().map(|r| normalise(r)).collect();
    assert!(routes.len() >= 20, "{}: only {routes:?}", rel(&metrics));
    for file in rust_files(&root().join("imaged/src")) {
        for line in read(&file).lines() {
            for (i, _) in line.match_indices(".route(\"") {
                let path = line[i + 8..].split('"').next().unwrap();
                routes.insert(normalise(path));
            }
        }
    }
    let openapi = root().join("docs/openapi.yaml");
    let text = read(&openapi);
    let mut documented = BTreeSet::new();
    let mut in_paths = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_paths = line.trim_end() == "paths:";
        } else if let Some(path) = line.strip_prefix("  /").and_then(|p| p.trim_end().strip_suffix(':')) {
            if in_paths {
                documented.insert(format!("/{path}"));
            }
        }
    }
    let mut offences: Vec<String> = routes
        .difference(&documented)
        .map(|r| format!("{}: the router serves {r}, which {} does not document", rel(&metrics), rel(&openapi)))
        .collect();
    offences.extend(
        documented
            .difference(&routes)
            .map(|p| format!("{}: documents {p}, which the router ({}) does not serve", rel(&openapi), rel(&metrics))),
    );
    assert_none("routes and docs/openapi.yaml disagree", offences);
}
