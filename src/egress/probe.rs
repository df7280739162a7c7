//! Probing a viewer's link: padding sent on top of the layer it gets, to learn
//! whether the link carries the next layer up before moving it there.
//!
//! A viewer on a layer below its link's capacity sends only that layer's rate,
//! so the bandwidth estimate (see [`crate::egress::congestion`]) can only grow
//! untested: a move up is then the test, and a link that cannot carry it costs
//! the viewer a freeze. A probe instead sends, for [`PROBE_SEND_MICROS`],
//! padding-only RTP packets on the viewer's video stream so that all the viewer
//! gets goes at the probe's goal (the next layer's bitrate with headroom, set
//! by the plugin: [`Prober::set_goal`]). Every packet sent meanwhile, media
//! too, belongs to the probe's cluster; the transport feedback about them
//! gives the rate the link carried, measured as Chromium's
//! ProbeBitrateEstimator does: the smaller of the cluster's send and receive
//! rates, and 95% of the receive rate when that fell short of the send rate (a
//! saturated link). A probe is cut short, and failed, as soon as the delay-based
//! detector sees over-use or the feedback shows loss: the queue it built is then
//! a few feedback intervals long, not the whole probe's. One that carried less
//! than [`SUCCESS_SHARE`] of its goal fails too. The over-use and loss a
//! failed probe caused are its own, not the link's news: the estimate is not
//! reported while a probe runs and until the feedback tells about packets
//! sent [`DRAIN_MICROS`] after it stopped (its queue drained), then it goes
//! back to at least what it was before the probe.
//!
//! When to probe follows Chromium's ProbeController (probing while the sender
//! is application-limited) and LiveKit's stream allocator (probe for the next
//! layer, back off after a failure): the first probe [`FIRST_WAIT_MICROS`]
//! after a goal is set, then after each failure twice the wait, up to
//! [`MAX_WAIT_MICROS`]; a success at the goal, or a goal after none, starts
//! again from the first wait (a success at a step short of it: the next step
//! [`FIRST_WAIT_MICROS`] later, the wait kept). How high: the goal, but at most [`PROBE_STEP`] times the
//! estimate, as Chromium's ProbeController probes an application-limited
//! sender at twice its estimate and, after a success, at twice what was
//! carried. A goal far above the link floods it: a 2.8 Mbit/s probe of a
//! 600 kbit/s link (the next layer of a live 720p encoder from 360p) queued
//! and dropped so much of the viewer's own media that it froze, and the loss
//! pulled its estimate under its layer. In steps, a failed probe overshoots
//! the link by at most twice, and a link that carries the next layer gets
//! there in a probe or two more, [`FIRST_WAIT_MICROS`] apart.
//!
//! A probe must outlast a token bucket's burst on a link that cannot carry
//! it: a short one passes through the bucket untouched and claims a rate the
//! link does not have (15 ms at 1.8 Mbit/s, as Chromium's first probes, or
//! 0.3 s at 1.2 Mbit/s, through tc's 32 KB bucket on a 600 kbit/s link). So a
//! probe sends for [`PROBE_SEND_MICROS`], or longer, up to
//! [`MAX_PROBE_SEND_MICROS`], until it sent [`PROBE_EXCESS_BYTES`] more than
//! the estimate would: more than such a burst, so that its last packets
//! arrive late and the receive rate falls short. What it sends past the
//! bucket queues, and the viewer's frames wait behind it, at most as long as
//! the excess takes at the link's rate (at twice the estimate: about as long
//! as the probe lasted past the bucket).

/// A probe sends at its rate for at least this long ...
pub const PROBE_SEND_MICROS: i64 = 300_000;
/// ... and long enough to send this many bytes more than the estimate would
/// (at most [`MAX_PROBE_SEND_MICROS`]): a token bucket's burst passes a probe
/// that fits in it unchanged, and the probe would claim a rate the link does
/// not have (tc's 32 KB bucket on a 600 kbit/s link passed 0.3 s at 1.2 Mbit/s).
pub const PROBE_EXCESS_BYTES: i64 = 48_000;
pub const MAX_PROBE_SEND_MICROS: i64 = 1_000_000;
/// Feedback about the whole cluster must come within this after its last packet, or the probe failed.
const RESULT_WAIT_MICROS: i64 = 1_000_000;
/// A failed probe ends once the feedback tells about packets sent this long after it stopped.
pub const DRAIN_MICROS: i64 = 300_000;
/// A probe whose measured rate reaches this share of its rate succeeded.
const SUCCESS_SHARE: f64 = 0.9;
/// Chromium's ProbeBitrateEstimator: a receive rate under this share of the send rate means the
/// link saturated, and the result is [`SATURATED_SHARE`] of the receive rate.
const UNSATURATED_SHARE: f64 = 0.9;
const SATURATED_SHARE: f64 = 0.95;
/// At least this many packets of a cluster must be acknowledged to measure it.
const MIN_PACKETS: u32 = 5;
/// Loss in a probe's feedback above this share fails it.
const MAX_LOSS: f64 = 0.1;
pub const FIRST_WAIT_MICROS: i64 = 2_000_000;
/// A probe goes at most this many times the estimate.
pub const PROBE_STEP: u64 = 2;
pub const MAX_WAIT_MICROS: i64 = 8_000_000;
/// No probe starts until the estimate went this long without a decrease
/// (over-use or a loss cut): a link still draining a queue would fail it.
pub const QUIET_MICROS: i64 = 2_000_000;
/// Padding not sent when due (the stream was mid-frame) is not made up beyond this much of the probe's time.
const MAX_PADDING_DEBT_MICROS: i64 = 5_000;
/// A padding-only RTP packet carries at most this much padding (RFC 3550 5.1: its count is one byte).
pub const MAX_PADDING: usize = 255;

/// What the feedback told about one cluster's packets (times in microseconds).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterMeasure {
    first_sent: i64,
    last_sent: i64,
    last_sent_size: u32,
    first_arrival: i64,
    first_arrival_size: u32,
    last_arrival: i64,
    bytes: u64,
    received: u32,
    lost: u32,
}

impl ClusterMeasure {
    /// One packet of the cluster that the feedback told about: sent at `sent`, `size` bytes, arrived at `arrival` (None: lost).
    pub fn packet(&mut self, sent: i64, size: u32, arrival: Option<i64>) {
        let Some(arrival) = arrival else {
            self.lost += 1;
            return;
        };
        if self.received == 0 {
            (self.first_sent, self.last_sent, self.last_sent_size) = (sent, sent, size);
            (self.first_arrival, self.first_arrival_size, self.last_arrival) = (arrival, size, arrival);
        } else {
            if sent < self.first_sent {
                self.first_sent = sent;
            }
            if sent >= self.last_sent {
                (self.last_sent, self.last_sent_size) = (sent, size);
            }
            if arrival < self.first_arrival {
                (self.first_arrival, self.first_arrival_size) = (arrival, size);
            }
            self.last_arrival = self.last_arrival.max(arrival);
        }
        self.received += 1;
        self.bytes += u64::from(size);
    }

    pub fn loss(&self) -> f64 {
        f64::from(self.lost) / f64::from((self.lost + self.received).max(1))
    }

    /// The rate the link carried (bits/s), once enough packets were acknowledged over some time.
    pub fn bitrate(&self) -> Option<f64> {
        let send_interval = self.last_sent - self.first_sent;
        let receive_interval = self.last_arrival - self.first_arrival;
        if self.received < MIN_PACKETS || send_interval <= 0 || receive_interval <= 0 {
            return None;
        }
        let send_rate = (self.bytes - u64::from(self.last_sent_size)) as f64 * 8e6 / send_interval as f64;
        let receive_rate = (self.bytes - u64::from(self.first_arrival_size)) as f64 * 8e6 / receive_interval as f64;
        if receive_rate < UNSATURATED_SHARE * send_rate {
            return Some(SATURATED_SHARE * receive_rate);
        }
        Some(send_rate.min(receive_rate))
    }

    /// The span of send times acknowledged so far.
    fn sent_span(&self) -> i64 {
        self.last_sent - self.first_sent
    }
}

/// How a probe ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProbeOutcome {
    /// The link carried this many bits per second, at least
    /// [`SUCCESS_SHARE`] of the probe's rate, without over-use or loss.
    Carried { bitrate: u64 },
    /// Over-use, loss, less than the probe's rate carried, or no feedback in time.
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    cluster: u8,
    /// What it sends at (bits/s): the goal, or a step short of it.
    rate: u64,
    started: i64,
    /// How long it sends at its rate.
    duration: i64,
    /// Bytes the viewer was sent since the probe started, padding and media.
    sent_bytes: u64,
    /// Sending stopped (its time is up, or it failed early).
    sending: bool,
    /// It failed at this time: it ends once its queue drained.
    failed_at: Option<i64>,
}

/// When a viewer's link is probed, and the probe in progress.
#[derive(Debug)]
pub struct Prober {
    goal: Option<u64>,
    wait: i64,
    next_at: Option<i64>,
    probe: Option<Probe>,
    last_cluster: u8,
}

impl Default for Prober {
    fn default() -> Self {
        Self { goal: None, wait: FIRST_WAIT_MICROS, next_at: None, probe: None, last_cluster: 0 }
    }
}

impl Prober {
    /// The bitrate (bits/s) the viewer's next layer up needs, with headroom;
    /// None: nothing to probe for. The first goal after none starts the waits
    /// from the first; a goal that changes (the layers' rates vary) keeps them.
    pub fn set_goal(&mut self, goal: Option<u64>, now: i64) {
        if self.goal.is_none() && goal.is_some() {
            self.wait = FIRST_WAIT_MICROS;
            self.next_at = Some(now + self.wait);
        }
        if goal.is_none() {
            self.next_at = None;
        }
        self.goal = goal;
    }

    /// Starts a probe if one is due: a goal above `estimate`, which rests on
    /// transport feedback (`measured`) and did not decrease since [`QUIET_MICROS`]
    /// before `now` (`last_decrease`); it goes at the goal or [`PROBE_STEP`]
    /// times the estimate, whichever is lower. Returns whether it started.
    pub fn start_if_due(&mut self, estimate: u64, measured: bool, last_decrease: i64, now: i64) -> bool {
        let (Some(goal), Some(next_at)) = (self.goal, self.next_at) else {
            return false;
        };
        let quiet = now.saturating_sub(last_decrease) >= QUIET_MICROS;
        if self.probe.is_some() || now < next_at || !measured || !quiet || estimate >= goal {
            return false;
        }
        let step = goal.min(estimate.saturating_mul(PROBE_STEP));
        self.last_cluster = self.last_cluster.wrapping_add(1).max(1);
        let excess = step.saturating_sub(estimate).max(1) as i64;
        let duration = (PROBE_EXCESS_BYTES * 8 * 1_000_000 / excess).clamp(PROBE_SEND_MICROS, MAX_PROBE_SEND_MICROS);
        self.probe = Some(Probe {
            cluster: self.last_cluster,
            rate: step,
            started: now,
            duration,
            sent_bytes: 0,
            sending: true,
            failed_at: None,
        });
        true
    }

    /// How long the probe in progress sends at its rate.
    pub fn duration(&self) -> Option<i64> {
        self.probe.map(|probe| probe.duration)
    }

    /// The cluster every packet sent now belongs to (0: none).
    pub fn cluster(&self) -> u8 {
        self.probe.filter(|probe| probe.sending).map_or(0, |probe| probe.cluster)
    }

    /// The cluster being measured (0: none).
    pub fn measured_cluster(&self) -> u8 {
        self.probe.map_or(0, |probe| probe.cluster)
    }

    pub fn is_sending(&self) -> bool {
        self.cluster() != 0
    }

    /// Whether a probe is sending, waiting for its feedback or draining its queue.
    pub fn is_active(&self) -> bool {
        self.probe.is_some()
    }

    /// A packet of `bytes` was sent to the viewer (media or padding).
    pub fn sent(&mut self, bytes: usize) {
        if let Some(probe) = self.probe.as_mut().filter(|probe| probe.sending) {
            probe.sent_bytes += bytes as u64;
        }
    }

    /// The padding due at `now` (bytes) to keep what the viewer gets at the
    /// probe's rate; stops sending once the probe's time is up.
    pub fn padding_due(&mut self, now: i64) -> usize {
        let Some(probe) = self.probe.as_mut().filter(|probe| probe.sending) else {
            return 0;
        };
        let elapsed = now - probe.started;
        if elapsed >= probe.duration {
            probe.sending = false;
            return 0;
        }
        let bytes_per_second = probe.rate as i64 / 8;
        let due = bytes_per_second * elapsed / 1_000_000;
        let floor = due - bytes_per_second * MAX_PADDING_DEBT_MICROS / 1_000_000;
        probe.sent_bytes = probe.sent_bytes.max(floor.max(0) as u64);
        (due - probe.sent_bytes as i64).max(0) as usize
    }

    /// Judges the probe in progress from what feedback told about its cluster
    /// (`measure`), whether the estimator saw over-use and the newest send time
    /// the feedback told about (`reported_sent`); the outcome once known.
    pub fn on_feedback(
        &mut self,
        measure: &ClusterMeasure,
        over_use: bool,
        reported_sent: i64,
        now: i64,
    ) -> Option<ProbeOutcome> {
        let probe = self.probe.as_mut()?;
        if let Some(failed_at) = probe.failed_at {
            if reported_sent < failed_at + DRAIN_MICROS && now < failed_at + DRAIN_MICROS + RESULT_WAIT_MICROS {
                return None;
            }
            return Some(self.end(ProbeOutcome::Failed, now));
        }
        let sent_long_enough = measure.sent_span() >= probe.duration * 4 / 5;
        let failed = over_use || (measure.lost + measure.received >= MIN_PACKETS && measure.loss() > MAX_LOSS);
        let measurable = !probe.sending && sent_long_enough;
        let carried = measure.bitrate().filter(|_| measurable);
        if failed || carried.is_some_and(|bitrate| bitrate < probe.rate as f64 * SUCCESS_SHARE) {
            // Short of its goal the link queued what the probe sent: its over-use and loss may yet show.
            probe.sending = false;
            probe.failed_at = Some(now);
            return None;
        }
        let outcome = match carried {
            Some(bitrate) => ProbeOutcome::Carried { bitrate: bitrate as u64 },
            // Too few packets acknowledged to measure, or no feedback in time.
            None if measurable || now - probe.started > probe.duration + RESULT_WAIT_MICROS => ProbeOutcome::Failed,
            None => return None,
        };
        Some(self.end(outcome, now))
    }

    fn end(&mut self, outcome: ProbeOutcome, now: i64) -> ProbeOutcome {
        let step = self.probe.take().map_or(0, |probe| probe.rate);
        let next_wait = match outcome {
            ProbeOutcome::Carried { .. } if self.goal.is_some_and(|goal| step >= goal) => {
                self.wait = FIRST_WAIT_MICROS;
                self.wait
            }
            // A step short of the goal: the next step soon, but the waits a failure
            // doubled stay, or a bucket that lets each first step through would
            // have the link flooded by the second every few seconds.
            ProbeOutcome::Carried { .. } => FIRST_WAIT_MICROS,
            ProbeOutcome::Failed => {
                self.wait = (self.wait * 2).min(MAX_WAIT_MICROS);
                self.wait
            }
        };
        self.next_at = self.goal.map(|_| now + next_wait);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe's cluster through a link of `capacity` bits/s: packets of
    /// 300 bytes sent at `rate` for the probe's time, arriving spaced by the bottleneck.
    fn measured(rate: f64, capacity: f64) -> ClusterMeasure {
        measured_for(PROBE_SEND_MICROS, rate, capacity)
    }

    /// The probe in progress, started at `started`, sent to its end at `rate`
    /// through a link of `capacity`; the feedback about all of it comes
    /// `delay` later. Returns when that was, and the outcome.
    fn run_probe(
        prober: &mut Prober,
        started: i64,
        rate: f64,
        capacity: f64,
        delay: i64,
    ) -> (i64, Option<ProbeOutcome>) {
        let duration = prober.duration().expect("a probe in progress");
        let end = started + duration;
        prober.padding_due(end);
        (end + delay, prober.on_feedback(&measured_for(duration, rate, capacity), false, end, end + delay))
    }

    fn measured_for(duration: i64, rate: f64, capacity: f64) -> ClusterMeasure {
        let mut measure = ClusterMeasure::default();
        let size = 300u32;
        let (mut sent, mut free_at) = (0.0f64, 0.0f64);
        while sent < duration as f64 {
            let arrival = sent.max(free_at) + f64::from(size) * 8e6 / capacity;
            free_at = arrival;
            measure.packet(sent as i64, size, Some(arrival as i64 + 20_000));
            sent += f64::from(size) * 8e6 / rate;
        }
        measure
    }

    #[test]
    fn an_unsaturated_link_measures_the_send_rate() {
        let bitrate = measured(1_800_000.0, 5_000_000.0).bitrate().unwrap();
        assert!((1_750_000.0..1_850_000.0).contains(&bitrate), "{bitrate}");
    }

    #[test]
    fn a_saturated_link_measures_under_its_capacity() {
        let bitrate = measured(1_800_000.0, 600_000.0).bitrate().unwrap();
        assert!((500_000.0..600_000.0).contains(&bitrate), "{bitrate}");
    }

    #[test]
    fn a_probe_starts_after_the_first_wait_and_pads_up_to_its_goal() {
        let mut prober = Prober::default();
        prober.set_goal(Some(1_600_000), 0);
        assert!(!prober.start_if_due(900_000, true, i64::MIN, FIRST_WAIT_MICROS - 1));
        assert!(
            !prober.start_if_due(900_000, false, i64::MIN, FIRST_WAIT_MICROS),
            "not before the estimate is measured"
        );
        assert!(
            !prober.start_if_due(1_600_000, true, i64::MIN, FIRST_WAIT_MICROS),
            "not when the estimate reaches the goal"
        );
        let start = FIRST_WAIT_MICROS;
        assert!(!prober.start_if_due(900_000, true, start - QUIET_MICROS + 1, start), "not soon after a decrease");
        assert!(prober.start_if_due(900_000, true, start - QUIET_MICROS, start));
        // 48 KB more than 0.9 Mbit/s would send: 0.55 s at 1.6 Mbit/s.
        let duration = prober.duration().unwrap();
        assert_eq!(duration, 548_571);
        assert_ne!(prober.cluster(), 0);
        // 4 ms at 1.6 Mbit/s: 800 bytes, less the media sent meanwhile.
        prober.sent(300);
        assert_eq!(prober.padding_due(start + 4_000), 500);
        prober.sent(500);
        assert_eq!(prober.padding_due(start + 4_000), 0);
        // Padding that could not go is made up for 5 ms of the goal at most.
        assert_eq!(prober.padding_due(start + 104_000), 1000);
        assert!(prober.padding_due(start + duration - 1) > 0);
        assert_eq!(prober.padding_due(start + duration), 0);
        assert!(!prober.is_sending());
        assert_ne!(prober.measured_cluster(), 0, "measured after its sending ends");
    }

    #[test]
    fn a_carried_probe_reports_its_rate_and_a_failed_one_doubles_the_wait() {
        let mut prober = Prober::default();
        prober.set_goal(Some(1_800_000), 0);
        let mut now = FIRST_WAIT_MICROS;
        assert!(prober.start_if_due(900_000, true, i64::MIN, now));
        let outcome;
        (now, outcome) = run_probe(&mut prober, now, 1_800_000.0, 5_000_000.0, 100_000);
        assert!(matches!(outcome, Some(ProbeOutcome::Carried { bitrate }) if bitrate > 1_700_000), "{outcome:?}");

        now += FIRST_WAIT_MICROS;
        assert!(prober.start_if_due(500_000, true, i64::MIN, now));
        let failed_at = now + 200_000;
        let outcome = prober.on_feedback(&ClusterMeasure::default(), true, now + 100_000, failed_at);
        assert_eq!(outcome, None, "over-use stops it at once; it ends once its queue drained");
        assert!(!prober.is_sending() && prober.is_active());
        let drained = failed_at + DRAIN_MICROS;
        assert_eq!(prober.on_feedback(&ClusterMeasure::default(), true, drained - 1, drained + 50_000), None);
        assert_eq!(
            prober.on_feedback(&ClusterMeasure::default(), false, drained, drained + 100_000),
            Some(ProbeOutcome::Failed)
        );
        assert!(!prober.is_active());
        now = drained + 100_000;
        assert!(!prober.start_if_due(500_000, true, i64::MIN, now + 2 * FIRST_WAIT_MICROS - 1));
        assert!(prober.start_if_due(500_000, true, i64::MIN, now + 2 * FIRST_WAIT_MICROS));
    }

    #[test]
    fn a_saturated_probe_fails_once_its_queue_drained_and_backs_off() {
        let mut prober = Prober::default();
        prober.set_goal(Some(1_800_000), 0);
        let now = FIRST_WAIT_MICROS;
        assert!(prober.start_if_due(900_000, true, i64::MIN, now));
        let duration = prober.duration().unwrap();
        prober.padding_due(now + duration);
        let end = now + duration;
        let saturated = measured_for(duration, 1_800_000.0, 600_000.0);
        assert_eq!(prober.on_feedback(&saturated, false, end, end), None, "its queue drains first");
        let drained = end + DRAIN_MICROS;
        assert_eq!(prober.on_feedback(&saturated, false, drained, drained), Some(ProbeOutcome::Failed));
        assert!(!prober.start_if_due(500_000, true, i64::MIN, drained + FIRST_WAIT_MICROS), "backed off");
    }

    #[test]
    fn waits_grow_to_the_most_and_a_first_goal_starts_them_again() {
        let mut prober = Prober::default();
        prober.set_goal(Some(1_000_000), 0);
        let mut now = 0;
        for _ in 0..10 {
            now += MAX_WAIT_MICROS;
            assert!(prober.start_if_due(100_000, true, i64::MIN, now));
            prober.on_feedback(&ClusterMeasure::default(), true, now, now);
            prober.on_feedback(&ClusterMeasure::default(), false, now + DRAIN_MICROS, now);
        }
        assert_eq!(prober.wait, MAX_WAIT_MICROS);
        prober.set_goal(Some(1_100_000), now);
        assert!(
            !prober.start_if_due(100_000, true, i64::MIN, now + FIRST_WAIT_MICROS),
            "a goal that changes keeps the wait"
        );
        prober.set_goal(None, now);
        prober.set_goal(Some(2_000_000), now);
        assert!(prober.start_if_due(100_000, true, i64::MIN, now + FIRST_WAIT_MICROS));
    }

    #[test]
    fn no_feedback_in_time_fails_the_probe() {
        let mut prober = Prober::default();
        prober.set_goal(Some(1_000_000), 0);
        assert!(prober.start_if_due(100_000, true, i64::MIN, FIRST_WAIT_MICROS));
        assert_eq!(prober.duration(), Some(MAX_PROBE_SEND_MICROS), "48 KB over 0.1 Mbit/s: more than the longest");
        let end = FIRST_WAIT_MICROS + MAX_PROBE_SEND_MICROS + RESULT_WAIT_MICROS;
        assert_eq!(prober.on_feedback(&ClusterMeasure::default(), false, 0, end), None);
        assert_eq!(prober.on_feedback(&ClusterMeasure::default(), false, 0, end + 1), Some(ProbeOutcome::Failed));
    }

    /// A thin link's viewer probing for a layer far above it: the probe goes at
    /// twice the estimate, not at the goal, and the next, after a success, twice
    /// what was carried, until the goal.
    #[test]
    fn a_goal_far_above_the_estimate_is_probed_for_in_steps_of_twice_the_estimate() {
        let mut prober = Prober::default();
        prober.set_goal(Some(2_800_000), 0);
        let mut now = FIRST_WAIT_MICROS;
        assert!(prober.start_if_due(600_000, true, i64::MIN, now));
        prober.sent(0);
        // 4 ms at 1.2 Mbit/s: 600 bytes, not 1,400 at the goal's 2.8 Mbit/s.
        assert_eq!(prober.padding_due(now + 4_000), 600);
        assert_eq!(prober.duration(), Some(640_000), "48 KB more than 0.6 Mbit/s would send, at 1.2 Mbit/s");
        let outcome;
        (now, outcome) = run_probe(&mut prober, now, 1_200_000.0, 5_000_000.0, 100_000);
        assert!(matches!(outcome, Some(ProbeOutcome::Carried { bitrate }) if bitrate > 1_100_000), "{outcome:?}");

        now += FIRST_WAIT_MICROS;
        assert!(prober.start_if_due(1_200_000, true, i64::MIN, now));
        assert_eq!(prober.padding_due(now + 4_000), 1_200, "2.4 Mbit/s");
        let outcome;
        (now, outcome) = run_probe(&mut prober, now, 2_400_000.0, 5_000_000.0, 100_000);
        assert!(matches!(outcome, Some(ProbeOutcome::Carried { .. })), "{outcome:?}");
        now += FIRST_WAIT_MICROS;
        assert!(prober.start_if_due(2_400_000, true, i64::MIN, now));
        assert_eq!(prober.padding_due(now + 4_000), 1_400, "the goal's 2.8 Mbit/s");
    }

    /// A token bucket lets a first step through whatever the link's rate (its
    /// burst outlasts a probe at twice a thin link's rate) and the second step
    /// fails: the failures' waits must still grow.
    #[test]
    fn a_step_carried_short_of_the_goal_keeps_the_wait_a_failure_doubled() {
        let mut prober = Prober::default();
        prober.set_goal(Some(2_800_000), 0);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..4 {
            let mut started = now;
            while !prober.start_if_due(600_000, true, i64::MIN, started) {
                started += 100_000;
            }
            waits.push((started - now) / 100_000);
            let outcome;
            (now, outcome) = run_probe(&mut prober, started, 1_200_000.0, 5_000_000.0, 0);
            assert!(matches!(outcome, Some(ProbeOutcome::Carried { .. })), "{outcome:?}");
            now += FIRST_WAIT_MICROS;
            assert!(prober.start_if_due(1_200_000, true, i64::MIN, now), "the next step soon after");
            prober.on_feedback(&ClusterMeasure::default(), true, now, now);
            now += DRAIN_MICROS;
            assert_eq!(prober.on_feedback(&ClusterMeasure::default(), false, now, now), Some(ProbeOutcome::Failed));
        }
        assert_eq!(waits, [20, 40, 80, 80], "tenths of a second from each failure to the next first step");
    }

    /// tc's token bucket (32 KB) on a 600 kbit/s link: a 0.3 s probe at twice
    /// the link fits in its burst and passes unchanged; one that sends 48 KB
    /// more than the link carries in its time outlasts it, and fails.
    #[test]
    fn a_probe_outlasts_a_token_buckets_burst() {
        let through_bucket = |duration: i64| {
            let (rate, link, burst) = (1_200_000.0f64, 600_000.0f64, 32_000.0f64);
            let mut measure = ClusterMeasure::default();
            let (size, mut sent, mut tokens, mut free_at, mut last) = (300.0f64, 0.0f64, burst, 0.0f64, 0.0f64);
            while sent < duration as f64 {
                tokens = (tokens + (sent - last) * link / 8e6).min(burst);
                last = sent;
                let arrival = if tokens >= size && free_at <= sent {
                    tokens -= size;
                    sent
                } else {
                    free_at = free_at.max(sent) + size * 8e6 / link;
                    free_at
                };
                measure.packet(sent as i64, size as u32, Some(arrival as i64 + 20_000));
                sent += size * 8e6 / rate;
            }
            measure.bitrate().unwrap()
        };
        assert!(through_bucket(PROBE_SEND_MICROS) > 1_100_000.0, "fooled by the burst");
        let mut prober = Prober::default();
        prober.set_goal(Some(2_800_000), 0);
        assert!(prober.start_if_due(600_000, true, i64::MIN, FIRST_WAIT_MICROS));
        let carried = through_bucket(prober.duration().unwrap());
        assert!(carried < 1_200_000.0 * SUCCESS_SHARE, "{carried}");
    }
}
