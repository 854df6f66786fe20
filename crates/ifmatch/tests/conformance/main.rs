//! One conformance suite ([`suite`]), written once, run against every backend.
//!
//! S3 and DynamoDB run against real protocol servers on loopback started by
//! `scripts/test-servers start` (see [`env`]): in CI a missing server fails the
//! run; on a developer machine those tests skip with a printed reason.

mod dynamodb;
mod env;
mod fault;
mod file;
mod localstack;
mod memory;
mod s3;
mod suite;
