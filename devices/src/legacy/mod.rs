//! Legacy PC devices.

pub mod cmos;
pub mod debug_exit;
pub mod i8042;
pub mod reset_control;
pub mod serial;

pub use cmos::Cmos;
pub use debug_exit::DebugExit;
pub use i8042::I8042;
pub use reset_control::ResetControl;
pub use serial::{Serial, SerialInputWaker};
