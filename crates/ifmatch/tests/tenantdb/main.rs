//! Tenant databases ([`ifmatch::tenantdb`]) against every backend: the seed
//! 003 tests (2.1, 2.2, 4.1, 4.2) plus cache, cost and crash checks, written
//! once in [`suite`] and run on `memory://`, `file://` and `s3://` (moto).

#[path = "../conformance/env.rs"]
#[allow(dead_code)]
mod env;
mod suite;

mod cost;
mod exactly_once;
mod limits;

mod file;
mod memory;
mod s3;
