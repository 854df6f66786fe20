//! Reliability: crash tests, fault schedules checked against a model, and
//! linearizability checking of concurrent histories (issue 8). See
//! `docs/RELIABILITY.md` for what each test demonstrates and the environment
//! variables for longer runs.

mod common;
mod crash_file;
mod crash_tenantdb;
mod faults;
mod history;
mod linearizability;
mod model;
