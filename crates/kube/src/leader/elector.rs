//! The election state machine: one enum of states ([`State`]: standing by, leading,
//! released) and one step function, driven by [`Elector::next`], which yields what changed
//! ([`ElectionEvent`]). The Lease calls are behind [`LeaseApi`], the wall clock behind
//! [`WallClock`], and every decision uses tokio's clock, so the tests script the API's answers
//! and run with paused time.
//!
//! Cancel-safe: a step changes the state only after its call has answered, so a `next()`
//! dropped in the middle of a call leaves the state as it was and the next step makes the same
//! decision again. That is harmless because every write is guarded by the `resourceVersion`
//! read, and a Lease whose holder is this process's own identity is this process's to take
//! back (a write whose answer was lost).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubetrail_core::Timestamp;
use tokio::time::Instant;

use super::config::{JITTER_FACTOR, LeaderElectionConfig};
use super::handover::{CHECKPOINT_ANNOTATION, Handover, HandoverBook};
use super::lease::{Lease, LeaseApi, LeaseError};
use crate::backoff::{Backoff, ExponentialBackoff};

/// The longest `leaseDurationSeconds` honoured from a Lease (a larger value, written by hand,
/// would keep standbys waiting for a day).
const MAX_HONOURED_LEASE: Duration = Duration::from_secs(3600);

/// The wall clock written into the Lease (`renewTime`) and the handover. Decisions never use
/// it: only tokio's monotonic clock.
pub trait WallClock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// When the current term may emit, shared with whoever emits: it checks [`Fence::may_emit`]
/// right before every commit, so emission stops at the fence's end even if the task that
/// renews is stuck.
#[derive(Debug, Default)]
pub struct Fence {
    state: Mutex<FenceState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct FenceState {
    term: u64,
    /// Emission may start (a new leader whose predecessor may still be active waits).
    from: Option<Instant>,
    /// Emission must have stopped: `renew_deadline` after the last successful renewal was sent.
    until: Option<Instant>,
}

impl Fence {
    /// Whether `term` may emit now.
    pub fn may_emit(&self, term: u64) -> bool {
        let s = *self.lock();
        let now = Instant::now();
        s.term == term && s.from.is_some_and(|f| now >= f) && s.until.is_some_and(|u| now < u)
    }

    /// Whether the current term may emit now.
    pub fn emitting(&self) -> bool {
        let term = self.lock().term;
        self.may_emit(term)
    }

    /// The instant `term`'s emission ends unless renewed (`None` once it lost the Lease).
    pub fn until(&self, term: u64) -> Option<Instant> {
        let s = *self.lock();
        (s.term == term).then_some(s.until).flatten()
    }

    fn start(&self, term: u64, from: Instant, until: Instant) {
        *self.lock() = FenceState {
            term,
            from: Some(from),
            until: Some(until),
        };
    }

    fn extend(&self, term: u64, until: Instant) {
        let mut s = self.lock();
        if s.term == term && s.until.is_some() {
            s.until = Some(until);
        }
    }

    fn close(&self) {
        let mut s = self.lock();
        s.from = None;
        s.until = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why this process stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// No renewal succeeded for `renew_deadline`.
    RenewDeadline(Duration),
    /// Another holder has the Lease (the holder written, `None` when cleared).
    TakenBy(Option<String>),
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossReason::RenewDeadline(d) => write!(f, "the Lease could not be renewed for {d:?}"),
            LossReason::TakenBy(Some(h)) => write!(f, "the Lease is held by {h}"),
            LossReason::TakenBy(None) => write!(f, "the Lease was cleared by someone else"),
        }
    }
}

/// What [`Elector::next`] yields.
#[derive(Debug)]
pub enum ElectionEvent {
    /// This process holds the Lease from now on (term `term`). It may emit from `emit_from`
    /// (later than now when the Lease was missing: it may have been deleted under a live
    /// holder). `handover` is what the previous holder left in the Lease.
    Acquired {
        term: u64,
        emit_from: Instant,
        handover: Option<Handover>,
    },
    /// This process no longer holds the Lease; its fence is already closed.
    Lost { term: u64, reason: LossReason },
    /// A standby saw the holder change (`None`: nobody holds the Lease).
    Leader { holder: Option<String> },
    /// A Lease call failed; the retry is arranged.
    Failed(LeaseError),
}

enum State {
    /// Polling the Lease, waiting for it to expire or be released.
    Standby {
        next: Instant,
        observed: Option<Observed>,
        /// Since when the Lease has been missing (404 at every poll since).
        missing_since: Option<Instant>,
    },
    /// Holding it and renewing it.
    Leading(Box<Leading>),
    /// Released on shutdown; nothing more happens.
    Released,
}

/// A version of the Lease and when this process first saw it.
struct Observed {
    resource_version: String,
    at: Instant,
}

struct Leading {
    /// The Lease as last written (its `resourceVersion` guards the next write).
    lease: Lease,
    /// When the last successful write was sent.
    renewed_at: Instant,
    /// When to renew next.
    next: Instant,
    /// Conflicts in a row (someone else writing the Lease while this process holds it).
    conflicts: u32,
}

/// The election of one process for one Lease. See the module documentation.
pub struct Elector<A> {
    api: A,
    config: LeaderElectionConfig,
    wall: Arc<dyn WallClock>,
    book: HandoverBook,
    fence: Arc<Fence>,
    state: State,
    term: u64,
    rng: fastrand::Rng,
    errors: ExponentialBackoff,
    /// The holder last reported (to report changes once).
    reported: Option<Option<String>>,
    /// When the Lease API last answered.
    contact: Arc<Mutex<Option<Instant>>>,
}

/// How a standby may take a Lease it just read.
enum Take {
    /// Not yet: held by someone whose record changed less than its duration ago.
    Wait,
    /// Now, and emit at once (expired, released, or this process's own record).
    Now,
}

impl<A: LeaseApi> Elector<A> {
    /// A standby that polls at once.
    pub fn new(api: A, config: LeaderElectionConfig, book: HandoverBook) -> Self {
        Self::with_clock(
            api,
            config,
            book,
            Arc::new(SystemClock),
            fastrand::Rng::new(),
        )
    }

    /// The same with a given wall clock and random source (tests).
    pub fn with_clock(
        api: A,
        config: LeaderElectionConfig,
        book: HandoverBook,
        wall: Arc<dyn WallClock>,
        rng: fastrand::Rng,
    ) -> Self {
        let errors = ExponentialBackoff::with_seed(
            config.retry_period,
            config.lease_duration.max(config.retry_period),
            rng.clone().u64(..),
        );
        Elector {
            api,
            wall,
            book,
            fence: Arc::new(Fence::default()),
            state: State::Standby {
                next: Instant::now(),
                observed: None,
                missing_since: None,
            },
            term: 0,
            rng,
            errors,
            reported: None,
            contact: Arc::new(Mutex::new(None)),
            config,
        }
    }

    /// The fence of this process's terms.
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// The positions written into every renewal.
    pub fn book(&self) -> &HandoverBook {
        &self.book
    }

    /// The election's settings.
    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    /// Whether this process holds the Lease (as far as it knows).
    pub fn is_leading(&self) -> bool {
        matches!(self.state, State::Leading(_))
    }

    /// The next change. Renewals that succeed are not reported (the fence moves on).
    pub async fn next(&mut self) -> ElectionEvent {
        loop {
            if let Some(ev) = self.step().await {
                return ev;
            }
        }
    }

    /// One transition; `Some` when there is something to report.
    async fn step(&mut self) -> Option<ElectionEvent> {
        match &self.state {
            State::Released => std::future::pending().await,
            State::Standby { next, .. } => {
                tokio::time::sleep_until(*next).await;
                self.poll().await
            }
            State::Leading(l) => {
                // At the renewal's time, or at once when a stream waits for its position to
                // be in the Lease.
                let next = l.next;
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = self.book.wanted() => {}
                }
                self.renew().await
            }
        }
    }

    /// A standby reads the Lease and takes it when it may.
    async fn poll(&mut self) -> Option<ElectionEvent> {
        let read = self.call(self.config.renew_deadline, self.api.get()).await;
        let now = Instant::now();
        let lease = match read {
            Err(e) => return Some(self.standby_failed(e)),
            Ok(None) => return self.missing().await,
            Ok(Some(l)) => l,
        };
        self.errors.reset();
        let rv = lease.resource_version().unwrap_or_default().to_string();
        let observed_at = {
            let State::Standby {
                observed,
                missing_since,
                ..
            } = &mut self.state
            else {
                return None;
            };
            *missing_since = None;
            match observed {
                Some(o) if o.resource_version == rv => o.at,
                _ => {
                    *observed = Some(Observed {
                        resource_version: rv,
                        at: now,
                    });
                    now
                }
            }
        };
        let handover = self.handover_of(&lease);
        let holder = lease.holder().map(str::to_string);
        let take = match holder.as_deref() {
            Some(h) if h == self.config.holder => Take::Now,
            None if handover.as_ref().is_some_and(|h| h.released) => Take::Now,
            _ => {
                if now >= observed_at + self.honoured_duration(&lease) {
                    Take::Now
                } else {
                    Take::Wait
                }
            }
        };
        if let Take::Wait = take {
            // The next poll at the usual pace, or right when the record would expire.
            let jittered = self.jittered();
            let next = (now + jittered).min(observed_at + self.honoured_duration(&lease));
            self.schedule_poll(next);
            return self.report(holder);
        }
        // Take it: the holder's record expired by this process's clock, or was released, or
        // is this process's own.
        let own = holder.as_deref() == Some(self.config.holder.as_str());
        let transitions = lease.transitions() + i64::from(!own);
        let mut mine = lease.clone();
        let wall = self.wall.now();
        mine.set_acquired(
            &self.config.holder,
            self.config.lease_duration,
            wall,
            transitions,
        );
        let streams = handover
            .as_ref()
            .map(|h| h.streams.clone())
            .unwrap_or_default();
        self.book.reset(streams);
        let generation = self.write_handover(&mut mine, wall, false);
        let sent = Instant::now();
        match self
            .call(self.config.renew_deadline, self.api.update(&mine))
            .await
        {
            Ok(written) => {
                self.book.mark_handed_over(generation);
                Some(self.acquired(written, sent, sent, handover))
            }
            // Someone else took it first, or it is gone: read it again now.
            Err(LeaseError::Conflict(_) | LeaseError::NotFound(_)) => {
                self.schedule_poll(Instant::now());
                self.report(holder)
            }
            Err(e) => Some(self.standby_failed(e)),
        }
    }

    /// A standby found no Lease. If it has seen one before, it was deleted, perhaps under a
    /// live holder, which creates it again at its next renewal with its handover: the standby
    /// leaves it a `lease_duration` to do so before creating it itself (a holder that did not
    /// has died, and its handover is lost). The very first Lease is created at once.
    async fn missing(&mut self) -> Option<ElectionEvent> {
        self.errors.reset();
        let now = Instant::now();
        let lease_duration = self.config.lease_duration;
        let jittered = self.jittered();
        let State::Standby {
            observed,
            missing_since,
            next,
        } = &mut self.state
        else {
            return None;
        };
        if observed.is_some() {
            let since = *missing_since.get_or_insert(now);
            if now < since + lease_duration {
                *next = (now + jittered).min(since + lease_duration);
                return self.report(None);
            }
            tracing::warn!(lease = %self.lease_ref(), "the Lease was deleted and its holder did not create it again: creating it; the checkpoint it held is lost");
        }
        self.create_missing().await
    }

    /// Creates the missing Lease, and waits a whole `lease_duration` before emitting (it may
    /// have been deleted under a holder that is still active).
    async fn create_missing(&mut self) -> Option<ElectionEvent> {
        let mut lease = Lease::new(&self.config.namespace, &self.config.name);
        let wall = self.wall.now();
        lease.set_acquired(&self.config.holder, self.config.lease_duration, wall, 0);
        self.book.reset(Default::default());
        let generation = self.write_handover(&mut lease, wall, false);
        let sent = Instant::now();
        match self
            .call(self.config.renew_deadline, self.api.create(&lease))
            .await
        {
            Ok(written) => {
                self.book.mark_handed_over(generation);
                let from = sent + self.config.lease_duration;
                Some(self.acquired(written, sent, from, None))
            }
            Err(LeaseError::Conflict(_)) => {
                // Someone else created it: read it at the next poll.
                let next = Instant::now() + self.jittered();
                self.schedule_poll(next);
                None
            }
            Err(e) => Some(self.standby_failed(e)),
        }
    }

    /// The leader renews, or finds out it lost the Lease.
    async fn renew(&mut self) -> Option<ElectionEvent> {
        let State::Leading(l) = &self.state else {
            return None;
        };
        let deadline = l.renewed_at + self.config.renew_deadline;
        let now = Instant::now();
        if now >= deadline {
            return Some(self.lose(LossReason::RenewDeadline(self.config.renew_deadline)));
        }
        let mut lease = l.lease.clone();
        let wall = self.wall.now();
        lease.set_renewed(wall);
        let generation = self.write_handover(&mut lease, wall, false);
        let sent = Instant::now();
        let answer = self.call_until(deadline, self.api.update(&lease)).await;
        match answer {
            Ok(written) => {
                self.book.mark_handed_over(generation);
                self.renewed(written, sent);
                None
            }
            Err(LeaseError::Conflict(e)) => self.after_conflict(deadline, e).await,
            Err(LeaseError::NotFound(_)) => self.recreate(deadline).await,
            Err(e) => Some(self.retry_renewal(e)),
        }
    }

    /// A renewal got 409: someone else wrote the Lease. If it is still this process's (an
    /// annotation edited by hand, or an earlier renewal whose answer was lost), renew again
    /// from the new version; otherwise the Lease is lost.
    async fn after_conflict(
        &mut self,
        deadline: Instant,
        conflict: crate::status::ApiError,
    ) -> Option<ElectionEvent> {
        match self.call_until(deadline, self.api.get()).await {
            Ok(Some(current)) if current.holder() == Some(self.config.holder.as_str()) => {
                let retry = self.config.retry_period;
                let State::Leading(l) = &mut self.state else {
                    return None;
                };
                l.lease = current;
                l.conflicts += 1;
                // At once the first time; then at the renewal pace (someone keeps writing).
                l.next = if l.conflicts <= 1 {
                    Instant::now()
                } else {
                    Instant::now() + retry
                };
                Some(ElectionEvent::Failed(LeaseError::Conflict(conflict)))
            }
            Ok(Some(current)) => {
                let holder = current.holder().map(str::to_string);
                let ev = self.lose(LossReason::TakenBy(holder.clone()));
                self.observe(&current);
                Some(ev)
            }
            Ok(None) => self.recreate(deadline).await,
            Err(e) => Some(self.retry_renewal(e)),
        }
    }

    /// The leader's Lease was deleted: create it again at once and go on leading (a standby
    /// that creates it first makes this one lose with 409).
    async fn recreate(&mut self, deadline: Instant) -> Option<ElectionEvent> {
        let State::Leading(l) = &self.state else {
            return None;
        };
        let mut lease = l.lease.clone();
        lease.forget_identity();
        let wall = self.wall.now();
        lease.set_renewed(wall);
        let generation = self.write_handover(&mut lease, wall, false);
        let sent = Instant::now();
        match self.call_until(deadline, self.api.create(&lease)).await {
            Ok(written) => {
                self.book.mark_handed_over(generation);
                tracing::warn!(lease = %self.lease_ref(), "the Lease was deleted; created it again and go on leading");
                self.renewed(written, sent);
                None
            }
            Err(LeaseError::Conflict(_)) => Some(self.lose(LossReason::TakenBy(None))),
            Err(e) => Some(self.retry_renewal(e)),
        }
    }

    fn renewed(&mut self, written: Lease, sent: Instant) {
        let until = sent + self.config.renew_deadline;
        let retry = self.config.retry_period;
        if let State::Leading(l) = &mut self.state {
            l.lease = written;
            l.renewed_at = sent;
            l.next = sent + retry;
            l.conflicts = 0;
        }
        self.fence.extend(self.term, until);
    }

    fn retry_renewal(&mut self, e: LeaseError) -> ElectionEvent {
        let retry = self.config.retry_period;
        let deadline = self.config.renew_deadline;
        if let State::Leading(l) = &mut self.state {
            // Never later than the deadline, so that the loss is reported when it happens.
            l.next = (Instant::now() + retry).min(l.renewed_at + deadline);
        }
        ElectionEvent::Failed(e)
    }

    fn acquired(
        &mut self,
        written: Lease,
        sent: Instant,
        emit_from: Instant,
        handover: Option<Handover>,
    ) -> ElectionEvent {
        self.term += 1;
        self.fence
            .start(self.term, emit_from, sent + self.config.renew_deadline);
        self.state = State::Leading(Box::new(Leading {
            lease: written,
            renewed_at: sent,
            next: sent + self.config.retry_period,
            conflicts: 0,
        }));
        self.reported = Some(Some(self.config.holder.clone()));
        tracing::info!(lease = %self.lease_ref(), holder = %self.config.holder, term = self.term,
            "acquired the Lease");
        ElectionEvent::Acquired {
            term: self.term,
            emit_from,
            handover,
        }
    }

    /// Closes the fence first, then stands by.
    fn lose(&mut self, reason: LossReason) -> ElectionEvent {
        self.fence.close();
        tracing::warn!(lease = %self.lease_ref(), term = self.term, %reason, "lost the Lease; stopped emitting");
        let observed = match &self.state {
            State::Leading(l) => l.lease.resource_version().map(|rv| Observed {
                resource_version: rv.to_string(),
                at: Instant::now(),
            }),
            _ => None,
        };
        self.state = State::Standby {
            next: Instant::now() + self.jittered(),
            observed,
            missing_since: None,
        };
        self.reported = None;
        ElectionEvent::Lost {
            term: self.term,
            reason,
        }
    }

    /// Remembers a version of the Lease seen (after losing it to another holder).
    fn observe(&mut self, lease: &Lease) {
        if let State::Standby { observed, .. } = &mut self.state {
            *observed = lease.resource_version().map(|rv| Observed {
                resource_version: rv.to_string(),
                at: Instant::now(),
            });
        }
    }

    fn standby_failed(&mut self, e: LeaseError) -> ElectionEvent {
        let delay = self.errors.next_delay().max(self.jittered());
        self.schedule_poll(Instant::now() + delay);
        ElectionEvent::Failed(e)
    }

    fn schedule_poll(&mut self, at: Instant) {
        if let State::Standby { next, .. } = &mut self.state {
            *next = at;
        }
    }

    /// Reports a new holder once.
    fn report(&mut self, holder: Option<String>) -> Option<ElectionEvent> {
        if self.reported.as_ref() == Some(&holder) {
            return None;
        }
        self.reported = Some(holder.clone());
        Some(ElectionEvent::Leader { holder })
    }

    /// How long a record must stay unchanged before a standby may take it: the holder's own
    /// `leaseDurationSeconds` (it promised to stop before then), else this process's.
    fn honoured_duration(&self, lease: &Lease) -> Duration {
        lease
            .lease_duration()
            .unwrap_or(self.config.lease_duration)
            .min(MAX_HONOURED_LEASE)
    }

    /// `retry_period` with client-go's jitter: uniformly ×1.0 to ×2.2.
    fn jittered(&mut self) -> Duration {
        self.config
            .retry_period
            .mul_f64(1.0 + self.rng.f64() * JITTER_FACTOR)
    }

    fn handover_of(&self, lease: &Lease) -> Option<Handover> {
        let text = lease.annotation(CHECKPOINT_ANNOTATION)?;
        match Handover::parse(text) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(lease = %self.lease_ref(), error = %e,
                    "ignoring an unreadable checkpoint annotation in the Lease");
                None
            }
        }
    }

    /// Writes the book's positions into the Lease's annotation; returns the book's generation
    /// they are, to mark handed over once the Lease is written.
    fn write_handover(&self, lease: &mut Lease, wall: Timestamp, released: bool) -> u64 {
        let until = if released {
            wall
        } else {
            Timestamp::from_unix_nanos(wall.unix_nanos().saturating_add(
                i64::try_from(self.config.renew_deadline.as_nanos()).unwrap_or(i64::MAX),
            ))
        };
        let (streams, generation) = self.book.snapshot_generation();
        let h = Handover {
            v: 1,
            holder: self.config.holder.clone(),
            written: wall,
            until,
            released,
            streams,
        };
        let (text, left_out) = h.to_annotation();
        if left_out > 0 {
            tracing::error!(lease = %self.lease_ref(), left_out,
                "the checkpoint annotation would be too large: some streams are left out and a new leader resumes them from its own state");
        }
        lease.set_annotation(CHECKPOINT_ANNOTATION, Some(text));
        generation
    }

    /// Releases the Lease on a graceful shutdown, after the last commit: the holder is
    /// cleared and the handover marked as released, so the next leader starts at once.
    /// Returns whether the Lease was released (false when this process did not hold it).
    pub async fn release(&mut self) -> Result<bool, LeaseError> {
        self.fence.close();
        let state = std::mem::replace(&mut self.state, State::Released);
        let State::Leading(l) = state else {
            return Ok(false);
        };
        let mut lease = l.lease;
        for attempt in 0..2 {
            let wall = self.wall.now();
            lease.set_released(wall);
            let _ = self.write_handover(&mut lease, wall, true);
            match self
                .call(self.config.renew_deadline, self.api.update(&lease))
                .await
            {
                Ok(_) => {
                    tracing::info!(lease = %self.lease_ref(), "released the Lease");
                    return Ok(true);
                }
                // Written meanwhile (an edit by hand): release the new version if still ours.
                Err(LeaseError::Conflict(_)) if attempt == 0 => {
                    match self
                        .call(self.config.renew_deadline, self.api.get())
                        .await?
                    {
                        Some(current) if current.holder() == Some(self.config.holder.as_str()) => {
                            lease = current;
                        }
                        _ => return Ok(false),
                    }
                }
                Err(LeaseError::Conflict(_) | LeaseError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    async fn call<T>(
        &self,
        limit: Duration,
        f: impl std::future::Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        self.call_until(Instant::now() + limit, f).await
    }

    async fn call_until<T>(
        &self,
        deadline: Instant,
        f: impl std::future::Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        let limit = deadline.saturating_duration_since(Instant::now());
        let r = match tokio::time::timeout_at(deadline, f).await {
            Ok(r) => r,
            Err(_) => Err(LeaseError::Timeout(limit)),
        };
        // A 409 or a 404 is an answer too: the Lease API is reachable.
        if matches!(
            r,
            Ok(_) | Err(LeaseError::Conflict(_) | LeaseError::NotFound(_))
        ) {
            *self.contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        r
    }

    /// When the Lease API last answered (for readiness: a replica that cannot reach it can
    /// neither lead nor take over).
    pub fn last_contact(&self) -> Arc<Mutex<Option<Instant>>> {
        self.contact.clone()
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }
}
