//! What every listener shares below the gate: the dialler that connects only to what the
//! gate pinned, the splice, the accept loop, graceful drain and the open-tunnel registry.

pub mod dial;
pub mod drain;
pub mod listener;
pub mod owner;
pub mod splice;
pub mod tunnels;
pub mod unix;
