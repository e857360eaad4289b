//! The live probe.
