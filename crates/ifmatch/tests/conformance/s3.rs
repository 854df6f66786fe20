//! Conformance on this backend (not yet).
