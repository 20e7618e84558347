//! The tier migration policy: an Ebbinghaus-style retention score per memory and the moves it
//! asks for.
//!
//! Retention is `R = exp(-t / S)`: `t` is the time since the memory was last accessed (if it
//! never was: since its last change in the working tier, since its creation in warm), `S` its
//! strength. Strength starts at `strength` and grows with use and
//! importance: `S = strength × (1 + access_weight × ln(1 + accesses)) × (1 + importance_weight ×
//! importance)`. A memory leaves the working tier once `R` falls to what an unused, unimportant
//! memory reaches after `working_to_warm_after`, and leaves warm for cold once it falls to the
//! `warm_to_cold_after` level, unless its importance is at least `min_importance_to_stay_warm`.
//! So the durations are exact for a memory never accessed with importance 0; use and importance
//! stretch them. A memory used `promote_after_accesses` times since its last move goes up one
//! tier (cold → warm → working).

use std::time::Duration;

use crate::model::Tier;

/// `[tier_migration]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationConfig {
    /// Run the policy in the background every `interval` (`false`: only on request).
    pub enabled: bool,
    pub interval: Duration,
    pub working_to_warm_after: Duration,
    pub warm_to_cold_after: Duration,
    pub min_importance_to_stay_warm: f32,
    /// Accesses since the last move that promote a memory one tier (0: never).
    pub promote_after_accesses: u64,
    /// Strength of a memory never accessed, with importance 0.
    pub strength: Duration,
    pub access_weight: f64,
    pub importance_weight: f64,
    /// Compact a cold segment once this fraction of its entries is dead.
    pub compact_dead_ratio: f64,
    /// zstd level of cold segments.
    pub zstd_level: i32,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            enabled: true,
            interval: Duration::from_secs(60),
            working_to_warm_after: Duration::from_secs(86_400),
            warm_to_cold_after: Duration::from_secs(30 * 86_400),
            min_importance_to_stay_warm: 0.8,
            promote_after_accesses: 3,
            strength: Duration::from_secs(86_400),
            access_weight: 1.0,
            importance_weight: 1.0,
            compact_dead_ratio: 0.3,
            zstd_level: 3,
        }
    }
}

impl MigrationConfig {
    /// Strength in seconds.
    pub fn strength_s(&self, accesses: u64, importance: f32) -> f64 {
        self.strength.as_secs_f64().max(1e-6)
            * (1.0 + self.access_weight * (1.0 + accesses as f64).ln())
            * (1.0 + self.importance_weight * f64::from(importance.clamp(0.0, 1.0)))
    }

    /// `R = exp(-t / S)` for a memory idle `idle_s` seconds.
    pub fn retention(&self, idle_s: f64, accesses: u64, importance: f32) -> f64 {
        (-idle_s.max(0.0) / self.strength_s(accesses, importance)).exp()
    }

    /// The retention below which a memory leaves `tier` (`None`: the policy never demotes it).
    pub fn threshold(&self, tier: Tier) -> Option<f64> {
        let after = match tier {
            Tier::Working => self.working_to_warm_after,
            Tier::Warm => self.warm_to_cold_after,
            Tier::Cold => return None,
        };
        Some((-after.as_secs_f64() / self.strength.as_secs_f64().max(1e-6)).exp())
    }

    /// Where a memory in `tier` should go now, if anywhere.
    pub fn demotion(
        &self,
        tier: Tier,
        idle_s: f64,
        accesses: u64,
        importance: f32,
    ) -> Option<(Tier, f64)> {
        let threshold = self.threshold(tier)?;
        let r = self.retention(idle_s, accesses, importance);
        if r > threshold {
            return None;
        }
        match tier {
            Tier::Working => Some((Tier::Warm, r)),
            Tier::Warm if importance < self.min_importance_to_stay_warm => Some((Tier::Cold, r)),
            _ => None,
        }
    }
}

/// One move the policy planned or made.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMove {
    pub id: uuid::Uuid,
    pub from: Tier,
    pub to: Tier,
    pub retention: f64,
    pub reason: &'static str,
}

/// What a policy run did (or, dry, would do).
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    pub dry_run: bool,
    pub moves: Vec<PlannedMove>,
    /// Moves planned but not made: the memory changed meanwhile.
    pub skipped: usize,
    pub took: Duration,
}

/// What a compaction did.
#[derive(Debug, Clone, Default)]
pub struct CompactionReport {
    pub segments_in: usize,
    pub segments_out: usize,
    pub live_kept: usize,
    pub dead_dropped: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub took: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_exact_for_an_unused_unimportant_memory() {
        let c = MigrationConfig {
            working_to_warm_after: Duration::from_secs(3600),
            ..MigrationConfig::default()
        };
        assert_eq!(c.demotion(Tier::Working, 3599.0, 0, 0.0), None);
        assert_eq!(
            c.demotion(Tier::Working, 3601.0, 0, 0.0).map(|m| m.0),
            Some(Tier::Warm)
        );
        // Accesses and importance stretch the time.
        assert_eq!(c.demotion(Tier::Working, 3601.0, 5, 0.0), None);
        assert_eq!(c.demotion(Tier::Working, 3601.0, 0, 0.5), None);
        let s = c.strength_s(5, 0.5) / c.strength_s(0, 0.0);
        assert!(c.demotion(Tier::Working, 3601.0 * s, 5, 0.5).is_some());
        // Important memories stay warm.
        let idle = c.warm_to_cold_after.as_secs_f64() * 10.0;
        assert_eq!(
            c.demotion(Tier::Warm, idle, 0, 0.1).map(|m| m.0),
            Some(Tier::Cold)
        );
        assert_eq!(c.demotion(Tier::Warm, idle, 0, 0.9), None);
        assert_eq!(c.demotion(Tier::Cold, idle, 0, 0.0), None);
        let r = c.retention(3600.0, 0, 0.0);
        assert!((r - (-1f64 / 24.0).exp()).abs() < 1e-12);
    }
}
