//! The control plane: the authoritative routing state, the changes operators make to it
//! (admin commands, reloads), and publication to the workers as immutable snapshots.
//!
//! Writers (admin commands, reload, SIGHUP) serialize on a mutex that only the control
//! plane takes; each change builds a new [`snapshot::Snapshot`] and swaps it in with one
//! atomic pointer store. Workers never lock: they compare a generation number on each
//! request and re-read the snapshot only when it changed.

pub mod state;

pub use state::{Control, ControlError};
