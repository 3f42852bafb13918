//! The machine as the vCPUs see it: the buses, and the code that applies
//! what device writes changed (see [`devices::Effect`]).

use devices::{Effect, Effects};
use log::warn;

use crate::bus::Buses;
use crate::exit::EffectSink;

/// Buses plus the effect applier, shared by every vCPU thread.
#[derive(Debug, Default)]
pub struct Platform {
    /// Port and MMIO buses.
    pub buses: Buses,
}

impl EffectSink for Platform {
    fn apply(&self, effects: Effects) {
        for effect in effects {
            match effect {
                // The direct-boot machine has no PCI functions or flash yet,
                // so no device can produce these; say so if one ever does.
                e @ (Effect::Pci { .. } | Effect::FlashMode { .. }) => {
                    warn!("ignoring {e:?}: this machine has no device that applies it");
                }
            }
        }
    }
}
