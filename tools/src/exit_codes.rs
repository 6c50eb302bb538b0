//! Exit codes of `imgctl`, documented in the README so scripts can branch on them.

/// Success.
pub const OK: i32 = 0;
/// Any failure not listed below (IO errors, a full disk).
pub const FAILURE: i32 = 1;
/// Bad command-line usage (clap's own code).
#[allow(dead_code)]
pub const USAGE: i32 = 2;
/// The named generation, path, endpoint, group or rollout does not exist.
pub const NOT_FOUND: i32 = 3;
/// Verification found corrupt or missing objects, or the server's audit log does not verify.
pub const VERIFY_FAILED: i32 = 4;
/// The input was refused: an unsafe or corrupt archive, an unsupported file, a bad name, label,
/// label selector, namespace file or rollout plan.
pub const BAD_INPUT: i32 = 5;
/// The server refused the request (bad token, conflict, invalid input; `rollout_active`,
/// `rollout_state`, `withdrawn`).
pub const REFUSED: i32 = 6;
/// The server could not be reached or did not answer in time.
pub const UNREACHABLE: i32 = 7;
/// `imgctl test`: the test ran and its evidence is recorded, but it failed or timed out.
pub const TEST_FAILED: i32 = 8;
