//! Crypto engine (being written).
