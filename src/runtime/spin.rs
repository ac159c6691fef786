//! Adaptive busy polling: how long a data-path thread keeps polling for work before it sleeps.
//!
//! A thread that sleeps in `epoll_wait` is woken by an inter-processor interrupt, and on a
//! virtual machine whose idle CPUs halt (no guest halt polling) that wake-up costs tens of
//! microseconds each time: a request/response round trip through the engine pays it twice.
//! Polling a little longer before sleeping catches the answer without the wake-up. The window
//! adapts the way the kernel's `cpuidle-haltpoll` governor does: it grows (doubling, from
//! [`GROW_START`]) while the idle periods it missed were short enough to be worth catching (at
//! most `max`), stays while events arrive within it, and halves (to zero below
//! [`GROW_START`]) after each idle period longer than `max`. Sparse traffic therefore polls
//! for nothing and an idle engine never spins: the window only opens after events that
//! followed each other closely.
//!
//! Bulk transfers do not poll: an iteration that moved more than [`BULK_BYTES`] through the
//! TAP is followed by sleep, as before. Their idle periods are short and many, so polling
//! them cost about a tenth more CPU per byte and bought no throughput (measured by hand,
//! `iperf3` container -> host: 209 CPU ticks per 3 s without polling, 236-243 when every idle
//! period was polled, 209-214 with bulk iterations left out).
//!
//! Plain state with time passed in; the run loop does the polling (and yields the CPU to
//! any other runnable thread between polls, so polling never delays the container's or the
//! host's processes).

use std::time::{Duration, Instant};

/// The first non-zero window.
pub const GROW_START: Duration = Duration::from_micros(25);

/// An iteration of the run loop that moved more bytes than this through the TAP (both ways)
/// is bulk transfer: no polling after it.
pub const BULK_BYTES: u64 = 16 << 10;

/// The adaptive busy-poll window of one data-path thread.
#[derive(Debug, Clone)]
pub struct Spin {
    window: Duration,
    max: Duration,
    idle_since: Option<Instant>,
    /// Until when the current idle period is polled.
    until: Option<Instant>,
}

impl Spin {
    /// A window that may grow to `max` (zero: never poll).
    pub fn new(max: Duration) -> Self {
        Self { window: Duration::ZERO, max, idle_since: None, until: None }
    }

    /// The thread has done its work at `now`, having moved `moved` bytes through the TAP since
    /// it woke, and would sleep: until when it should poll instead, if at all.
    pub fn idle(&mut self, now: Instant, moved: u64) -> Option<Instant> {
        self.idle_since = Some(now);
        self.until = (!self.window.is_zero() && moved <= BULK_BYTES).then(|| now + self.window);
        self.until
    }

    /// Work arrived at `now` (polled or woken): adapts the window to the idle period it
    /// ended. Returns whether that period was polled, and if so whether the work came
    /// within the window (`Some(true)`: a wake-up saved).
    pub fn woke(&mut self, now: Instant) -> Option<bool> {
        let since = self.idle_since.take()?;
        let polled = self.until.take().map(|until| now <= until);
        let idle = now.saturating_duration_since(since);
        if self.max.is_zero() || idle <= self.window {
            return polled;
        }
        if idle <= self.max {
            self.window = (self.window * 2).max(GROW_START).min(self.max);
        } else {
            self.window /= 2;
            if self.window < GROW_START {
                self.window = Duration::ZERO;
            }
        }
        polled
    }

    /// The current window.
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Goes idle after a small exchange, then work arrives `gap` later; returns the deadline
    /// `idle` gave.
    fn cycle(s: &mut Spin, t: &mut Instant, gap: Duration) -> Option<Instant> {
        let d = s.idle(*t, 100);
        *t += gap;
        s.woke(*t);
        d
    }

    #[test]
    fn short_gaps_open_the_window_long_ones_close_it() {
        let mut s = Spin::new(us(200));
        let mut t = Instant::now();
        // Closed at first: an engine that never had work never polls.
        assert_eq!(cycle(&mut s, &mut t, us(80)), None);
        assert_eq!(s.window(), us(25));
        cycle(&mut s, &mut t, us(80));
        assert_eq!(s.window(), us(50));
        cycle(&mut s, &mut t, us(80));
        assert_eq!(s.window(), us(100));
        // Gaps within the window leave it as it is: it covers them.
        for _ in 0..10 {
            let start = t;
            assert_eq!(cycle(&mut s, &mut t, us(80)), Some(start + us(100)));
        }
        assert_eq!(s.window(), us(100));
        // Never past the longest window.
        for _ in 0..10 {
            cycle(&mut s, &mut t, us(190));
        }
        assert_eq!(s.window(), us(200));
        // Long gaps halve it, and below the first step it closes.
        cycle(&mut s, &mut t, Duration::from_millis(5));
        assert_eq!(s.window(), us(100));
        cycle(&mut s, &mut t, Duration::from_millis(5));
        cycle(&mut s, &mut t, Duration::from_millis(5));
        assert_eq!(s.window(), us(25));
        cycle(&mut s, &mut t, Duration::from_millis(5));
        assert_eq!(s.window(), Duration::ZERO);
        assert_eq!(s.idle(t, 100), None);
    }

    #[test]
    fn polled_periods_report_whether_the_work_came_in_time() {
        let mut s = Spin::new(us(200));
        let mut t = Instant::now();
        s.idle(t, 100);
        t += us(30);
        assert_eq!(s.woke(t), None, "not polled: the window was closed");
        assert!(s.idle(t, 100).is_some());
        t += us(10);
        assert_eq!(s.woke(t), Some(true));
        s.idle(t, 100);
        t += us(300);
        assert_eq!(s.woke(t), Some(false), "polled in vain, then slept");
    }

    #[test]
    fn bulk_iterations_sleep_at_once_but_keep_the_window() {
        let mut s = Spin::new(us(200));
        let mut t = Instant::now();
        cycle(&mut s, &mut t, us(40));
        cycle(&mut s, &mut t, us(40));
        assert_eq!(s.window(), us(50));
        assert_eq!(s.idle(t, BULK_BYTES + 1), None);
        t += us(40);
        assert_eq!(s.woke(t), None);
        assert_eq!(s.window(), us(50));
        assert_eq!(s.idle(t, BULK_BYTES), Some(t + us(50)));
    }

    #[test]
    fn zero_longest_window_never_polls() {
        let mut s = Spin::new(Duration::ZERO);
        let mut t = Instant::now();
        for _ in 0..10 {
            assert_eq!(cycle(&mut s, &mut t, us(1)), None);
        }
    }

    #[test]
    fn work_without_an_idle_period_changes_nothing() {
        let mut s = Spin::new(us(200));
        s.woke(Instant::now());
        assert_eq!(s.window(), Duration::ZERO);
    }
}
