//! Andon tiers. Each raised tier is tracked like a Prometheus alert, so that the alert
//! rules `andon rules` generates fire exactly when the core raises the tier:
//! - pending while some signal is above the tier's entry threshold;
//! - active once pending has lasted `for`;
//! - held while some signal is above its exit level (hysteresis), or its reading is bad
//!   (Jidoka: bad data never relaxes a tier);
//! - left after every signal has been at or below its exit level for `cooldown`.
//!
//! The current tier is the highest active one.

use super::observation::Quality;
use super::reason::{HoldCause, Reason};
use super::state::TierTrack;
use crate::policy::{Policy, SignalKind, Tier};

/// Signal qualities of one tick, indexed by [`SignalKind::index`].
pub type Qualities = [Option<Quality>; 7];

pub fn evaluate(
    policy: &Policy,
    q: &Qualities,
    tracks: &mut [TierTrack; 3],
    current_replicas: u32,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> Tier {
    let mut top = Tier::Green;
    for (spec, track) in policy.tiers.iter().zip(tracks.iter_mut()) {
        let above_enter = spec.enter.iter().find_map(|(k, th)| {
            q[k.index()]
                .and_then(Quality::value)
                .filter(|v| v > th)
                .map(|v| (*k, v, *th))
        });
        match above_enter {
            Some(_) => {
                track.pending_since_ms.get_or_insert(now_ms);
            }
            None => track.pending_since_ms = None,
        }
        let for_ms = spec.for_.as_millis() as u64;
        if !track.active {
            if let (Some(since), Some((signal, value, threshold))) =
                (track.pending_since_ms, above_enter)
            {
                let held = now_ms.saturating_sub(since);
                if held >= for_ms {
                    track.active = true;
                    track.entry_replicas = current_replicas;
                    track.calm_since_ms = None;
                    reasons.push(Reason::TierEntered {
                        tier: spec.tier,
                        signal,
                        value,
                        threshold,
                        for_s: spec.for_.as_secs_f64(),
                    });
                } else {
                    reasons.push(Reason::TierPending {
                        tier: spec.tier,
                        signal,
                        value,
                        threshold,
                        held_s: held as f64 / 1000.0,
                        for_s: spec.for_.as_secs_f64(),
                    });
                }
            }
        } else {
            match hold_cause(spec.exit.iter().copied(), above_enter, q) {
                Some(cause) => {
                    track.calm_since_ms = None;
                    reasons.push(Reason::TierHeld {
                        tier: spec.tier,
                        cause,
                    });
                }
                None => {
                    let since = *track.calm_since_ms.get_or_insert(now_ms);
                    let calm = now_ms.saturating_sub(since);
                    if calm >= spec.cooldown.as_millis() as u64 {
                        track.active = false;
                        track.calm_since_ms = None;
                        reasons.push(Reason::TierLeft {
                            tier: spec.tier,
                            cooldown_s: spec.cooldown.as_secs_f64(),
                        });
                    } else {
                        reasons.push(Reason::TierHeld {
                            tier: spec.tier,
                            cause: HoldCause::Cooldown {
                                calm_s: calm as f64 / 1000.0,
                                cooldown_s: spec.cooldown.as_secs_f64(),
                            },
                        });
                    }
                }
            }
        }
        if track.active {
            top = spec.tier;
        }
    }
    top
}

/// Why an active tier may not start its cool-down, if anything holds it.
fn hold_cause(
    exits: impl Iterator<Item = (SignalKind, f64)>,
    above_enter: Option<(SignalKind, f64, f64)>,
    q: &Qualities,
) -> Option<HoldCause> {
    if let Some((signal, value, threshold)) = above_enter {
        return Some(HoldCause::AboveEntry {
            signal,
            value,
            threshold,
        });
    }
    for (signal, level) in exits {
        match q[signal.index()] {
            Some(Quality::Good { value }) if value > level => {
                return Some(HoldCause::AboveExit {
                    signal,
                    value,
                    level,
                })
            }
            Some(Quality::Good { .. }) => {}
            Some(bad) => {
                return Some(HoldCause::BadData {
                    signal,
                    quality: bad.label(),
                })
            }
            None => {
                return Some(HoldCause::BadData {
                    signal,
                    quality: "absent",
                })
            }
        }
    }
    None
}
