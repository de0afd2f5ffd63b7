//! Self-tests (being written).
