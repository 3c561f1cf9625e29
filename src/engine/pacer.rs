//! The bound on reconciliation read-backs: at most `rate` per second per installation, shared
//! by every run of that installation, so a run with many overdue spokes cannot flood GitHub.
//! Time is passed in (unix ms) so the rule is unit-tested without a clock.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::hub::InstallationId;

/// One-second windows per installation.
#[derive(Debug, Default)]
pub struct Pacer {
    windows: Mutex<HashMap<InstallationId, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    used: u32,
}

impl Pacer {
    /// Takes one read-back slot of `installation` at `now_ms` when fewer than `rate` were taken
    /// in the current second; otherwise `Err(when)`: the unix ms at which a slot frees up.
    pub fn take(&self, installation: InstallationId, rate: u32, now_ms: i64) -> Result<(), i64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.entry(installation).or_insert(Window {
            start_ms: now_ms,
            used: 0,
        });
        if now_ms >= w.start_ms + 1000 || now_ms < w.start_ms {
            *w = Window {
                start_ms: now_ms,
                used: 0,
            };
        }
        if w.used < rate.max(1) {
            w.used += 1;
            Ok(())
        } else {
            Err(w.start_ms + 1000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_rate_per_second_per_installation() {
        let p = Pacer::default();
        let (a, b) = (InstallationId(1), InstallationId(2));
        for i in 0..3 {
            assert_eq!(p.take(a, 3, 10_000 + i), Ok(()));
        }
        assert_eq!(p.take(a, 3, 10_500), Err(11_000));
        // Another installation has its own budget.
        assert_eq!(p.take(b, 3, 10_500), Ok(()));
        // The next second frees the slots.
        assert_eq!(p.take(a, 3, 11_000), Ok(()));
        assert_eq!(p.take(a, 3, 11_001), Ok(()));
        assert_eq!(p.take(a, 3, 11_002), Ok(()));
        assert_eq!(p.take(a, 3, 11_003), Err(12_000));
    }

    #[test]
    fn a_zero_rate_still_lets_one_through() {
        let p = Pacer::default();
        assert_eq!(p.take(InstallationId(1), 0, 0), Ok(()));
        assert_eq!(p.take(InstallationId(1), 0, 1), Err(1000));
    }
}
