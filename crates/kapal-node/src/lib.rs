//! Kapal's node agent.

pub mod connect;
pub mod simulate;
