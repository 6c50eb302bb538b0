//! The test seams every binary has (`IMAGED_TEST_CLOCK`, `IMAGED_FAULT`), checked once at
//! start: a process that runs with one says so on standard error before doing anything, and a
//! malformed fault specification stops it there rather than at its first write.

/// Warns, naming `program`, when a test seam is set in the environment, and checks the fault
/// specification now (a malformed one panics here, at start).
pub fn warn_if_set(program: &str) {
    if let Some(file) = std::env::var_os(crate::clock::TEST_CLOCK_VAR).filter(|f| !f.is_empty()) {
        eprintln!(
            "{program}: warning: {} is set ({}): the clock runs {} s ahead (a test seam: signatures last longer, imports trust recent files)",
            crate::clock::TEST_CLOCK_VAR,
            std::path::Path::new(&file).display(),
            crate::clock::offset()
        );
    }
    if let Ok(spec) = std::env::var(crate::fault::ENV) {
        eprintln!("{program}: warning: {} is set ({spec}): this process kills itself at that point (a test seam)", crate::fault::ENV);
        crate::fault::check();
    }
}
