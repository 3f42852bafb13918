//! A small stderr logger: `tessera: LEVEL message`, with the time since start.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr {
    start: Instant,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        // vfio-ioctls warns about things tessera handles itself (a function
        // without the optional error/request interrupts): debug detail.
        let level = match r.level() {
            log::Level::Warn if r.target().starts_with("vfio_ioctls") => log::Level::Debug,
            l => l,
        };
        if level > log::max_level() {
            return;
        }
        let t = self.start.elapsed();
        // A message may span lines (register dumps); indent the rest.
        let msg = r.args().to_string().replace('\n', "\n    ");
        // One write per message: stderr is unbuffered, and a line written
        // in pieces interleaves with other threads' lines in a shared log.
        let line = format!(
            "[{:>4}.{:03}] tessera {}: {msg}\n",
            t.as_secs(),
            t.subsec_millis(),
            level.as_str().to_lowercase()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: OnceLock<Stderr> = OnceLock::new();

/// Install the logger at `level` (idempotent).
pub fn init(level: LevelFilter) {
    let logger = LOGGER.get_or_init(|| Stderr {
        start: Instant::now(),
    });
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}
