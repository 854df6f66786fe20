//! The deterministic simulation suite: every primitive under the whole fault
//! model (`ifmatch::store::fault`: errors, lost answers, late and duplicated
//! delivery, S3's 409, brownouts, reordering), many seeds, several concurrent
//! clients, exact invariants after each schedule (`ifmatch::sim`).
//!
//! `cargo test --workspace --test sim` runs the default number of schedules
//! of each scenario; `IFMATCH_SIM_SEEDS=N` runs N per scenario,
//! `IFMATCH_SIM_SECONDS=S` keeps going for S seconds per scenario, and
//! `IFMATCH_SIM_SEED=X` replays one seed (a failure prints it).

mod idempotency;
mod leases;
mod snapshots;
mod update;
