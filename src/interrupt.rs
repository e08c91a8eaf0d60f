//! SIGINT and SIGTERM during commands that write or restore: the first signal only sets a
//! flag that their loops check ([`check`]), so the command returns an error and its guards
//! (backup marker, temporary files) clean up as on any other error; a second signal ends the
//! process at once. Commands that never call [`install`] keep the default: die at once.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

struct Flags {
    raised: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Turns SIGINT and SIGTERM into the flag for the rest of the process; later calls do
/// nothing (registering twice would make the first signal look like the second).
pub fn install() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(register)
        .clone()
        .map_err(|e| Error::other(format!("cannot handle signals: {e}")))
}

fn register() -> std::result::Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flags = FLAGS.get_or_init(|| Flags {
        raised: Arc::new(AtomicBool::new(false)),
        signal: Arc::new(AtomicUsize::new(0)),
    });
    for (sig, code) in [
        (SIGINT, crate::error::exit::INTERRUPTED_SIGINT),
        (SIGTERM, crate::error::exit::INTERRUPTED_SIGTERM),
    ] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, code, flags.raised.clone())
            .and_then(|_| {
                signal_hook::flag::register_usize(sig, flags.signal.clone(), sig as usize)
            })
            .and_then(|_| signal_hook::flag::register(sig, flags.raised.clone()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The signal that arrived, if one did since [`install`].
pub fn received() -> Option<&'static str> {
    let flags = FLAGS.get()?;
    if !flags.raised.load(Ordering::Relaxed) {
        return None;
    }
    match flags.signal.load(Ordering::Relaxed) as i32 {
        signal_hook::consts::SIGINT => Some("SIGINT"),
        _ => Some("SIGTERM"),
    }
}

/// An error once a signal has arrived, for long loops to stop at.
pub fn check() -> Result<()> {
    match received() {
        Some(sig) => Err(Error::Interrupted(sig)),
        None => Ok(()),
    }
}
