//! SIGINT and SIGTERM at any moment of a run.
//!
//! - Before the first step (loading data, building pipelines, tuning) there is nothing to
//!   save: the process says so and exits at once with 130 (SIGINT) or 143 (SIGTERM), from a
//!   watcher thread, whatever the main thread is busy with.
//! - Once training runs, the first signal asks for a clean stop: the loop finishes the step
//!   (or, in a step split into several submits, stops at the next submit), checkpoints when it
//!   has a whole step to save, and exits with the same codes. A second signal exits at once.
//!
//! The watcher is one per process; every run in it shares it.

use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::OnceLock;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::dist::Dist;

const SETUP: u8 = 0;
const TRAINING: u8 = 1;

/// The process's signal state: its phase, and the exit code of the signal seen (0: none).
pub struct Stop {
    phase: AtomicU8,
    code: AtomicI32,
}

static STOP: OnceLock<Stop> = OnceLock::new();

impl Stop {
    /// The process's watcher, started on first use (in the setup phase).
    pub fn install() -> anyhow::Result<&'static Stop> {
        if let Some(s) = STOP.get() {
            return Ok(s);
        }
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let stop = STOP.get_or_init(|| Stop { phase: AtomicU8::new(SETUP), code: AtomicI32::new(0) });
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for sig in signals.forever() {
                stop.on_signal(sig);
            }
        })?;
        Ok(stop)
    }

    fn on_signal(&self, sig: i32) {
        let (code, name) = if sig == SIGINT { (130, "SIGINT") } else { (143, "SIGTERM") };
        if self.phase.load(Ordering::SeqCst) == SETUP {
            eprintln!("{name} before the first step: nothing to save yet; exiting");
            // _exit: no destructors, so nothing races the main thread's driver calls.
            signal_hook::low_level::exit(code);
        }
        if self.code.swap(code, Ordering::SeqCst) != 0 {
            eprintln!("{name} again: exiting at once, the last checkpoint is the one on disk");
            signal_hook::low_level::exit(code);
        }
    }

    /// Setup is over: from now on a signal asks the loop to stop.
    pub fn training(&self) {
        self.phase.store(TRAINING, Ordering::SeqCst);
    }

    /// A run ended (or failed): a signal exits at once again, as in setup.
    pub fn idle(&self) {
        self.phase.store(SETUP, Ordering::SeqCst);
        self.code.store(0, Ordering::SeqCst);
    }

    /// The exit code of a signal this rank has seen (None: none).
    pub fn seen(&self) -> Option<i32> {
        Some(self.code.load(Ordering::SeqCst)).filter(|&c| c != 0)
    }

    /// `seen`, agreed by every rank: mpirun forwards signals to every rank, not at the same
    /// moment, so the ranks take the largest code any has seen, at the same point of the
    /// loop, and their collectives stay in step. A collective with several ranks.
    pub fn agreed(&self, dist: &Dist) -> Option<i32> {
        let mine = self.seen().unwrap_or(0);
        if dist.size == 1 {
            return self.seen();
        }
        let all = dist.all_reduce_f64(vec![f64::from(u8::from(mine == 130)), f64::from(u8::from(mine == 143))]);
        if all[0] > 0.0 {
            Some(130)
        } else if all[1] > 0.0 {
            Some(143)
        } else {
            None
        }
    }
}
