//! Mechanisms (being written).
