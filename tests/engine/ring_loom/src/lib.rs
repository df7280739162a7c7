//! The engine's ring, compiled on its own so that loom can replace its atomics.
#[path = "../../../../src/ring.rs"]
pub mod ring;
