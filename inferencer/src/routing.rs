//! Which served model version reads a stream, free of transport.
//!
//! In order:
//! 1. the stream's own `model` feature (`mouthmap features set stream ID
//!    model=NAME[:VERSION]`), when it names a served version;
//! 2. the model's route (`mouthmap models route NAME --canary V --percent P`):
//!    a stream whose [`bucket`] is under `percent` goes to the canary, the
//!    others to the live version;
//! 3. the default (the live version named at startup).
//!
//! A stream's bucket is a hash of its id, so the choice is the same on
//! every replica and after a restart, and the service keeps each stream's
//! choice for its whole life: a stream never changes model mid-way.

/// A model's route: its live version and, optionally, a canary taking
/// `percent` of the streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub live: Option<u64>,
    pub canary: Option<u64>,
    /// 0..=100.
    pub percent: u8,
}

/// Why a stream reads the version it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its `model` feature named it.
    Feature,
    /// The route's canary share.
    Canary,
    /// The route's live version.
    Live,
    /// No feature, no route (or the route names nothing served).
    Default,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Feature => "feature",
            Reason::Canary => "canary",
            Reason::Live => "live",
            Reason::Default => "default",
        }
    }
}

/// A stream's place in 0..100: FNV-1a of its id, stable everywhere.
pub fn bucket(stream_id: &str) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 100) as u8
}

/// A `model` feature's value: `NAME` (its latest served version) or
/// `NAME:VERSION`.
fn parse_feature(value: &str) -> Option<(&str, Option<u64>)> {
    let value = value.trim();
    match value.split_once(':') {
        None if !value.is_empty() => Some((value, None)),
        None => None,
        Some((n, v)) => Some((n, Some(v.parse().ok()?))),
    }
}

/// Picks the served version for `stream_id`: an index into `served`
/// (name, version pairs; `default` is the index of the live version named
/// at startup), and why. A feature or a route naming a version that is not
/// served is passed over (the caller logs it).
pub fn choose(
    served: &[(String, u64)],
    default: usize,
    stream_id: &str,
    feature: Option<&str>,
    route: Option<&Route>,
) -> (usize, Reason) {
    let find = |name: &str, version: Option<u64>| {
        served
            .iter()
            .enumerate()
            .filter(|(_, (n, v))| n == name && version.is_none_or(|want| *v == want))
            .max_by_key(|(_, (_, v))| *v)
            .map(|(i, _)| i)
    };
    if let Some((name, version)) = feature.and_then(parse_feature)
        && let Some(i) = find(name, version)
    {
        return (i, Reason::Feature);
    }
    let name = &served[default].0;
    if let Some(route) = route {
        if let Some(canary) = route.canary
            && bucket(stream_id) < route.percent.min(100)
            && let Some(i) = find(name, Some(canary))
        {
            return (i, Reason::Canary);
        }
        if let Some(live) = route.live
            && let Some(i) = find(name, Some(live))
        {
            return (i, Reason::Live);
        }
    }
    (default, Reason::Default)
}

/// The automatic rollback guard's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardSettings {
    /// The canary goes when its p95 time per window exceeds the live
    /// version's by more than this share (0.5: half as slow again).
    pub latency_margin: f64,
    /// Windows per version the p95 is taken over (the newest).
    pub window: usize,
    /// Windows each of the two needs before the guard judges.
    pub min_windows: usize,
    /// The canary goes when the share of its windows whose run failed
    /// exceeds the live version's by more than this (0.05: 5 points).
    pub error_margin: f64,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            latency_margin: 0.5,
            window: 200,
            min_windows: 30,
            error_margin: 0.05,
        }
    }
}

/// Watches the live version and the canary side by side, window by window,
/// and says when the canary must go back to 0%.
#[derive(Debug, Default)]
pub struct Guard {
    pub settings: GuardSettings,
    /// Per repository version, the newest windows: their time (seconds),
    /// None where the run failed.
    seconds: std::collections::HashMap<u64, std::collections::VecDeque<Option<f64>>>,
}

impl Guard {
    pub fn new(settings: GuardSettings) -> Self {
        Self {
            settings,
            seconds: Default::default(),
        }
    }

    /// A batch of `windows` windows that version `version` ran in `elapsed`.
    pub fn record(&mut self, version: u64, elapsed: std::time::Duration, windows: usize) {
        if windows == 0 {
            return;
        }
        self.push(
            version,
            Some(elapsed.as_secs_f64() / windows as f64),
            windows,
        );
    }

    /// A batch of `windows` windows whose run by `version` failed.
    pub fn record_failure(&mut self, version: u64, windows: usize) {
        self.push(version, None, windows);
    }

    fn push(&mut self, version: u64, sample: Option<f64>, windows: usize) {
        let q = self.seconds.entry(version).or_default();
        for _ in 0..windows {
            q.push_back(sample);
        }
        while q.len() > self.settings.window.max(1) {
            q.pop_front();
        }
    }

    /// The share of `version`'s windows whose run failed, once it has enough.
    fn error_rate(&self, version: u64) -> Option<f64> {
        let q = self.seconds.get(&version)?;
        (q.len() >= self.settings.min_windows.max(1))
            .then(|| q.iter().filter(|s| s.is_none()).count() as f64 / q.len() as f64)
    }

    /// Forgets what was seen of `version` (after a rollback, a new canary
    /// starts from nothing).
    pub fn forget(&mut self, version: u64) {
        self.seconds.remove(&version);
    }

    fn p95(&self, version: u64) -> Option<f64> {
        let q = self.seconds.get(&version)?;
        let mut v: Vec<f64> = q.iter().flatten().copied().collect();
        if v.len() < self.settings.min_windows.max(1) {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1])
    }

    /// Why the canary must go back to 0%, when it must: the share of its
    /// windows that failed over the live version's by more than the error
    /// margin (the live version's counted as 0 until it has enough), or its
    /// p95 time per window over the live version's by more than the latency
    /// margin, with enough windows of each seen.
    pub fn verdict(&self, live: u64, canary: u64) -> Option<String> {
        if let Some(c) = self.error_rate(canary) {
            let l = self.error_rate(live).unwrap_or(0.0);
            if c > l + self.settings.error_margin {
                return Some(format!(
                    "canary version {canary} failed {:.0}% of its windows vs live version {live} {:.0}%",
                    c * 100.0,
                    l * 100.0
                ));
            }
        }
        let (l, c) = (self.p95(live)?, self.p95(canary)?);
        (c > l * (1.0 + self.settings.latency_margin)).then(|| {
            format!(
                "canary version {canary} p95 {:.1} ms per window vs live version {live} {:.1} ms (margin {:.0}%)",
                c * 1000.0,
                l * 1000.0,
                self.settings.latency_margin * 100.0
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<(String, u64)> {
        vec![
            ("lipnet".into(), 1),
            ("lipnet".into(), 2),
            ("other".into(), 7),
        ]
    }

    #[test]
    fn the_guard_judges_a_slow_canary_once_it_has_seen_enough() {
        let mut g = Guard::new(GuardSettings {
            latency_margin: 0.5,
            window: 100,
            min_windows: 20,
            error_margin: 0.05,
        });
        let ms = std::time::Duration::from_millis;
        g.record(1, ms(300), 10); // 30 ms a window
        g.record(2, ms(400), 10); // 40 ms: within the margin
        assert_eq!(g.verdict(1, 2), None, "too few windows yet");
        g.record(1, ms(300), 10);
        g.record(2, ms(400), 10);
        assert_eq!(g.verdict(1, 2), None, "within the margin");
        g.record(2, ms(10_000), 100); // now 100 ms a window
        let why = g.verdict(1, 2).expect("rolled back");
        assert!(
            why.contains("p95 100.0 ms") && why.contains("30.0 ms"),
            "{why}"
        );
        g.forget(2);
        assert_eq!(g.verdict(1, 2), None);
        // Failures: judged on the share of windows, before any latency.
        g.record(2, ms(300), 15);
        g.record_failure(2, 5);
        let why = g.verdict(1, 2).expect("rolled back");
        assert!(
            why.contains("failed 25% of its windows vs live version 1 0%"),
            "{why}"
        );
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket("cam-1"), bucket("cam-1"));
        let mut seen = [0u32; 10];
        for i in 0..1000 {
            seen[bucket(&format!("stream-{i}")) as usize / 10] += 1;
        }
        // Each tenth of the range gets roughly its share.
        assert!(seen.iter().all(|&n| (60..=140).contains(&n)), "{seen:?}");
    }

    #[test]
    fn a_canary_takes_its_share_and_the_rest_stays_live() {
        let route = Route {
            live: Some(1),
            canary: Some(2),
            percent: 30,
        };
        let mut canary = 0;
        for i in 0..1000 {
            let id = format!("s{i}");
            let (v, why) = choose(&served(), 0, &id, None, Some(&route));
            if bucket(&id) < 30 {
                assert_eq!((v, why), (1, Reason::Canary));
                canary += 1;
            } else {
                assert_eq!((v, why), (0, Reason::Live));
            }
        }
        assert!((250..=350).contains(&canary), "{canary}");
        let off = Route {
            percent: 0,
            ..route
        };
        assert_eq!(choose(&served(), 0, "s1", None, Some(&off)).1, Reason::Live);
    }

    #[test]
    fn a_streams_feature_wins_and_what_is_not_served_is_passed_over() {
        let route = Route {
            live: Some(1),
            canary: Some(2),
            percent: 100,
        };
        let s = served();
        assert_eq!(
            choose(&s, 0, "a", Some("lipnet:1"), Some(&route)),
            (0, Reason::Feature)
        );
        assert_eq!(
            choose(&s, 0, "a", Some("other"), Some(&route)),
            (2, Reason::Feature)
        );
        assert_eq!(
            choose(&s, 0, "a", Some("lipnet"), None),
            (1, Reason::Feature)
        );
        // Not served, or not a model name: the route decides.
        assert_eq!(
            choose(&s, 0, "a", Some("lipnet:9"), Some(&route)),
            (1, Reason::Canary)
        );
        assert_eq!(choose(&s, 0, "a", Some("x:y"), None), (0, Reason::Default));
        let gone = Route {
            live: Some(5),
            canary: Some(6),
            percent: 100,
        };
        assert_eq!(choose(&s, 0, "a", None, Some(&gone)), (0, Reason::Default));
    }
}
