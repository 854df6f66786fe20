//! The `ifmatch` binary: compare-and-swap on versioned keys, from the shell.
//!
//! Exit codes: 0 success, 1 error, 2 usage (also an invalid key, metadata or
//! store URL), 3 precondition failed (a conflict), 4 not found. See
//! `ifmatch --help` and the `ifmatch_cli` library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    ifmatch_cli::main()
}
