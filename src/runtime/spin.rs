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
//! Polling only takes CPU time nobody else wants. Between polls the thread yields the CPU
//! to any other runnable thread of its run queue, and no idle period is polled while the
//! machine has more runnable threads than this process has CPUs (counted as polling would
//! start, at most every [`SAMPLE_EVERY`]; a count holds until the next). The count matters
//! more than the yield: a CPU that polls is not idle, so a thread woken elsewhere queues
//! behind a busy CPU instead of taking the idle one (measured by hand, three busy end-to-end
//! tests at once: a UDP burst lost 140-671 datagrams at the host socket with unconditional
//! polling, 0-221 with the count, 0-76 without polling). It reacts for a millisecond only:
//! a stray runnable thread during request/response traffic costs a few polled periods, not
//! tens (a 10 ms back-off left a third of 4,000 round-trip periods unpolled and raised p50
//! by a quarter). Ending a period's polling when a poll iteration was preempted (over
//! 50 us) cost as much: the thread that ran was mostly the container's or host's end of the
//! exchange, woken on this CPU.
//!
//! Plain state with time passed in; the run loop does the polling and the sampling.

use std::time::{Duration, Instant};

/// The first non-zero window.
pub const GROW_START: Duration = Duration::from_micros(25);

/// An iteration of the run loop that moved more bytes than this through the TAP (both ways)
/// is bulk transfer: no polling after it.
pub const BULK_BYTES: u64 = 16 << 10;

/// How long a count of the machine's runnable threads holds.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// The adaptive busy-poll window of one data-path thread.
#[derive(Debug, Clone)]
pub struct Spin {
    window: Duration,
    max: Duration,
    idle_since: Option<Instant>,
    /// Until when the current idle period is polled.
    until: Option<Instant>,
    /// When the runnable threads were last counted, and whether they were too many.
    sampled: Option<(Instant, bool)>,
    backoffs: u64,
}

impl Spin {
    /// A window that may grow to `max` (zero: never poll).
    pub fn new(max: Duration) -> Self {
        Self { window: Duration::ZERO, max, idle_since: None, until: None, sampled: None, backoffs: 0 }
    }

    /// The thread has done its work at `now`, having moved `moved` bytes through the TAP since
    /// it woke, and would sleep: until when it should poll instead, if at all. `crowded`
    /// says whether other threads want the CPUs (more runnable threads than CPUs); it is
    /// asked only when polling would start and the last answer is older than
    /// [`SAMPLE_EVERY`].
    pub fn idle(&mut self, now: Instant, moved: u64, crowded: impl FnOnce() -> bool) -> Option<Instant> {
        self.idle_since = Some(now);
        self.until = None;
        if self.window.is_zero() || moved > BULK_BYTES {
            return None;
        }
        let crowded = match self.sampled {
            Some((at, crowded)) if now.saturating_duration_since(at) < SAMPLE_EVERY => crowded,
            _ => {
                let c = crowded();
                self.sampled = Some((now, c));
                self.backoffs += u64::from(c);
                c
            }
        };
        if crowded {
            return None;
        }
        self.until = Some(now + self.window);
        self.until
    }

    /// A poll iteration ended at `now`: whether to go on polling.
    pub fn polled(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
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

    /// Back-offs so far: counts that found too many runnable threads.
    pub fn backoffs(&self) -> u64 {
        self.backoffs
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
        let d = s.idle(*t, 100, || false);
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
        assert_eq!(s.idle(t, 100, || false), None);
    }

    #[test]
    fn polled_periods_report_whether_the_work_came_in_time() {
        let mut s = Spin::new(us(200));
        let mut t = Instant::now();
        s.idle(t, 100, || false);
        t += us(30);
        assert_eq!(s.woke(t), None, "not polled: the window was closed");
        assert!(s.idle(t, 100, || false).is_some());
        t += us(10);
        assert_eq!(s.woke(t), Some(true));
        s.idle(t, 100, || false);
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
        assert_eq!(s.idle(t, BULK_BYTES + 1, || panic!("sampled for a bulk iteration")), None);
        t += us(40);
        assert_eq!(s.woke(t), None);
        assert_eq!(s.window(), us(50));
        assert_eq!(s.idle(t, BULK_BYTES, || false), Some(t + us(50)));
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

    /// Opens the window to 100 us with gaps of 80 us.
    fn opened(t: &mut Instant) -> Spin {
        let mut s = Spin::new(us(200));
        for _ in 0..3 {
            cycle(&mut s, t, us(80));
        }
        assert_eq!(s.window(), us(100));
        s
    }

    #[test]
    fn a_crowded_machine_is_not_polled_until_the_next_count() {
        let mut t = Instant::now();
        let mut s = opened(&mut t);
        t += SAMPLE_EVERY;
        let counted = t;
        assert_eq!(s.idle(t, 100, || true), None, "more runnable threads than CPUs");
        assert_eq!(s.backoffs(), 1);
        t += us(80);
        assert_eq!(s.woke(t), None);
        // The count holds for a millisecond, without asking again.
        while t < counted + SAMPLE_EVERY {
            assert_eq!(s.idle(t, 100, || panic!("counted again within a millisecond")), None);
            t += us(80);
            s.woke(t);
        }
        assert_eq!(s.window(), us(100), "the window still learns the gaps");
        assert_eq!(s.idle(t, 100, || false), Some(t + us(100)), "not crowded any more");
        assert_eq!(s.backoffs(), 1);
    }

    #[test]
    fn the_load_is_counted_at_most_every_millisecond() {
        let mut t = Instant::now();
        let mut s = opened(&mut t);
        let mut asked = 0;
        let start = t;
        while t < start + SAMPLE_EVERY * 5 {
            assert!(
                s.idle(t, 100, || {
                    asked += 1;
                    false
                })
                .is_some()
            );
            t += us(40);
            s.woke(t);
        }
        assert_eq!(asked, 5, "125 idle periods over 5 ms");
    }

    #[test]
    fn polling_ends_at_the_deadline() {
        let mut t = Instant::now();
        let mut s = opened(&mut t);
        let until = s.idle(t, 100, || false).unwrap();
        while t + us(3) < until {
            t += us(3);
            assert!(s.polled(t));
        }
        assert!(!s.polled(until));
        assert!(!Spin::new(us(200)).polled(t), "not polling at all");
    }
}
