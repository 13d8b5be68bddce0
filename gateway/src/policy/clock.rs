//! The clock of policy deadlines: a thread advances the engine's epoch every tick while at
//! least one policy call runs, and sleeps otherwise, so an idle gateway makes no wakeups.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;
use wasmtime::Engine;

/// How often the epoch advances while a policy runs: the granularity of deadlines.
pub const TICK: Duration = Duration::from_millis(2);
/// A parked clock looks this often whether its host is gone.
const PARKED_CHECK: Duration = Duration::from_secs(1);

/// Counts the policy calls in flight; the ticking thread runs while it is above zero.
pub struct Clock {
    running: Mutex<usize>,
    started: Condvar,
}

/// Held for the length of one policy call.
pub struct Ticking(Arc<Clock>);

impl Clock {
    /// Starts the ticking thread for `engine`; it ends once the engine and the clock are
    /// both dropped.
    pub fn start(engine: &Engine) -> std::io::Result<Arc<Clock>> {
        let clock = Arc::new(Clock {
            running: Mutex::new(0),
            started: Condvar::new(),
        });
        let weak_clock = Arc::downgrade(&clock);
        let weak_engine = engine.weak();
        thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                loop {
                    let Some(clock) = weak_clock.upgrade() else {
                        return;
                    };
                    let running = clock.lock();
                    if *running == 0 {
                        drop(
                            clock
                                .started
                                .wait_timeout(running, PARKED_CHECK)
                                .unwrap_or_else(PoisonError::into_inner),
                        );
                        continue;
                    }
                    drop(running);
                    drop(clock);
                    let Some(engine) = weak_engine.upgrade() else {
                        return;
                    };
                    engine.increment_epoch();
                    drop(engine);
                    thread::sleep(TICK);
                }
            })?;
        Ok(clock)
    }

    /// Marks a policy call as running until the returned guard drops.
    pub fn ticking(self: &Arc<Self>) -> Ticking {
        let mut running = self.lock();
        *running += 1;
        if *running == 1 {
            self.started.notify_one();
        }
        Ticking(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        *self.0.lock() -= 1;
    }
}
