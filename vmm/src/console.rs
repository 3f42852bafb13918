//! The serial console's host side: where guest output goes, the watcher
//! behind `--expect-serial` and the last lines kept for `--timeout`, the
//! terminal's raw mode and the Ctrl-A escape.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use crate::config::{SerialConfig, io_reason};
use crate::control::{Controller, StopReason};

/// Console errors.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The `--serial file=` target cannot be opened.
    #[error("--serial file '{}': {}", .0.display(), .1)]
    OpenFile(std::path::PathBuf, String),
    /// tcgetattr/tcsetattr failed.
    #[error("cannot set the terminal to raw mode: {0}")]
    Termios(io::Error),
}

const TAIL_BYTES: usize = 16 * 1024;

/// Watches everything the guest prints.
#[derive(Debug)]
pub struct Watcher {
    expect: Option<Vec<u8>>,
    window: Vec<u8>,
    tail: VecDeque<u8>,
    controller: Arc<Controller>,
}

impl Watcher {
    /// A watcher that stops the VM when `expect` appears.
    pub fn new(expect: Option<&str>, controller: Arc<Controller>) -> Self {
        Self {
            expect: expect.map(|s| s.as_bytes().to_vec()),
            window: Vec::new(),
            tail: VecDeque::new(),
            controller,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.tail.len() == TAIL_BYTES {
                self.tail.pop_front();
            }
            self.tail.push_back(b);
        }
        if let Some(expect) = &self.expect {
            // Keep just enough of the previous output to match across writes.
            self.window.extend_from_slice(bytes);
            if self
                .window
                .windows(expect.len())
                .any(|w| w == expect.as_slice())
            {
                self.controller.stop(StopReason::ExpectSeen);
                self.expect = None;
                self.window.clear();
                return;
            }
            let keep = expect.len().saturating_sub(1);
            if self.window.len() > keep {
                self.window.drain(..self.window.len() - keep);
            }
        }
    }

    /// The last `lines` lines of output.
    pub fn last_lines(&self, lines: usize) -> String {
        let bytes: Vec<u8> = self.tail.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        all[from..].join("\n")
    }
}

/// The `Write` the UART sends guest output to.
pub struct ConsoleOut {
    inner: Box<dyn Write + Send>,
    watcher: Arc<Mutex<Watcher>>,
}

impl ConsoleOut {
    /// Output to `serial`'s target, watched by `watcher`.
    pub fn open(serial: &SerialConfig, watcher: Arc<Mutex<Watcher>>) -> Result<Self, ConsoleError> {
        let inner: Box<dyn Write + Send> = match serial {
            SerialConfig::Stdio => Box::new(io::stdout()),
            SerialConfig::Null => Box::new(io::sink()),
            SerialConfig::Capture(buf) => Box::new(buf.clone()),
            SerialConfig::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| ConsoleError::OpenFile(path.clone(), io_reason(&e)))?,
            ),
        };
        Ok(Self { inner, watcher })
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .feed(buf);
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Raw mode on a terminal, undone on drop.
pub struct RawTerminal {
    fd: i32,
    saved: libc::termios,
}

impl std::fmt::Debug for RawTerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTerminal").field("fd", &self.fd).finish()
    }
}

static SAVED_TERMIOS: Mutex<Option<(i32, libc::termios)>> = Mutex::new(None);

impl RawTerminal {
    /// Put stdin in raw mode if it is a terminal: no echo, no line editing,
    /// no signal keys (Ctrl-C goes to the guest; Ctrl-A x quits). Output
    /// processing stays on so host log lines keep their line starts.
    pub fn stdin() -> Result<Option<Self>, ConsoleError> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is a terminal, `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(ConsoleError::Termios(io::Error::last_os_error()));
        }
        let mut raw = saved;
        raw.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
        raw.c_cflag &= !(libc::CSIZE | libc::PARENB);
        raw.c_cflag |= libc::CS8;
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: fd is a terminal, `raw` is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(ConsoleError::Termios(io::Error::last_os_error()));
        }
        *SAVED_TERMIOS.lock().unwrap_or_else(|e| e.into_inner()) = Some((fd, saved));
        Ok(Some(Self { fd, saved }))
    }
}

/// Restore the terminal saved by [`RawTerminal::stdin`], if any. Called from
/// the panic hook, so a crash never leaves the user's terminal raw.
pub fn restore_terminal() {
    if let Ok(mut s) = SAVED_TERMIOS.try_lock() {
        if let Some((fd, saved)) = s.take() {
            // SAFETY: restoring a termios previously read from this fd.
            unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restoring the termios read from this fd at creation.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
        *SAVED_TERMIOS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Ctrl-A, the escape key (as in QEMU): Ctrl-A x quits, Ctrl-A Ctrl-A sends
/// one Ctrl-A to the guest.
pub const ESCAPE: u8 = 0x01;

/// Result of filtering host input through the escape state machine.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes for the guest.
    pub to_guest: Vec<u8>,
    /// The user asked to quit.
    pub quit: bool,
}

/// Tracks a pending escape across reads.
#[derive(Debug, Default)]
pub struct EscapeFilter {
    pending: bool,
}

impl EscapeFilter {
    /// Filter one read of host input.
    pub fn filter(&mut self, input: &[u8]) -> Filtered {
        let mut out = Filtered::default();
        for &b in input {
            if self.pending {
                self.pending = false;
                match b {
                    b'x' | b'X' => {
                        out.quit = true;
                        return out;
                    }
                    ESCAPE => out.to_guest.push(ESCAPE),
                    other => {
                        out.to_guest.push(ESCAPE);
                        out.to_guest.push(other);
                    }
                }
            } else if b == ESCAPE {
                self.pending = true;
            } else {
                out.to_guest.push(b);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_matches_across_writes() {
        let c = Controller::new().unwrap();
        let mut w = Watcher::new(Some("BOOT-OK"), c.clone());
        w.feed(b"hello BOO");
        assert!(!c.is_stopping());
        w.feed(b"T");
        w.feed(b"-O");
        assert!(!c.is_stopping());
        w.feed(b"K\n");
        assert_eq!(c.reason(), Some(StopReason::ExpectSeen));
    }

    #[test]
    fn no_false_match_and_tail() {
        let c = Controller::new().unwrap();
        let mut w = Watcher::new(Some("abc"), c.clone());
        for i in 0..100 {
            w.feed(format!("line {i} ab\n").as_bytes());
        }
        assert!(!c.is_stopping());
        assert_eq!(w.last_lines(2), "line 98 ab\nline 99 ab");
    }

    #[test]
    fn escape_sequences() {
        let mut f = EscapeFilter::default();
        assert_eq!(f.filter(b"ls\r").to_guest, b"ls\r");
        let r = f.filter(&[ESCAPE]);
        assert!(r.to_guest.is_empty() && !r.quit);
        assert!(f.filter(b"x").quit);
        assert_eq!(
            f.filter(&[ESCAPE, ESCAPE, b'a']).to_guest,
            vec![ESCAPE, b'a']
        );
        assert_eq!(f.filter(&[ESCAPE, b'c']).to_guest, vec![ESCAPE, b'c']);
    }
}
