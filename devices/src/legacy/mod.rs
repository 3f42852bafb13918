//! Legacy PC devices.

pub mod cmos;
pub mod debug_exit;
pub mod debugcon;
pub mod fw_cfg;
pub mod i8042;
pub mod pflash;
pub mod port92;
pub mod reset_control;
pub mod serial;

pub use cmos::Cmos;
pub use debug_exit::DebugExit;
pub use debugcon::Debugcon;
pub use fw_cfg::{FileGenerator, FwCfg, FwCfgError, GeneratedFiles};
pub use i8042::I8042;
pub use pflash::Pflash;
pub use port92::Port92;
pub use reset_control::ResetControl;
pub use serial::{Serial, SerialInputWaker};
