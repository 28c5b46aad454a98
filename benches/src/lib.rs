//! Shared fixtures for the SpacePanda benchmarks.
