//! Incremental vector quantization (IVQ, docs/QUANTIZATION.md): confirmation of sub-vectors
//! after each optimiser step, and the schedule floor.
//!
//! 1. Threshold: every unconfirmed `j` with `max_m r_jm > τ` is confirmed: `a_j = h_j,argmax`, its
//!    logits freeze and from then on `ŵ_j = C[a_j]` exactly.
//! 2. Floor: once `at_i · steps` steps are done, the unconfirmed sub-vectors with the highest
//!    `max r` (ties to the lowest index) are force-confirmed until at least `floor_i` of the layer
//!    is (defaults 20/40/60/80 % → 25/50/75/100 %).

use super::fcco::{argmax, Fcco};
use super::VqConfig;

/// Minimum confirmed fraction once `steps_done` of `total_steps` optimiser steps are done: the
/// floor of the last schedule point reached (point `i` is reached at step
/// `round(schedule_at[i] · total_steps)`), 0 before the first.
pub fn schedule_floor(cfg: &VqConfig, steps_done: usize, total_steps: usize) -> f64 {
    let mut floor = 0.0f64;
    for (&at, &fl) in cfg.schedule_at.iter().zip(&cfg.schedule_floor) {
        let milestone = (at as f64 * total_steps as f64).round() as usize;
        if steps_done >= milestone {
            floor = floor.max(fl as f64);
        }
    }
    floor
}

/// Number of sub-vectors of `n` that a confirmed fraction of at least `fraction` requires.
pub fn required_count(fraction: f64, n: usize) -> usize {
    ((fraction * n as f64) - 1e-9).ceil().clamp(0.0, n as f64) as usize
}

impl Fcco {
    /// Confirms sub-vector `j` at its argmax hull member; false if it already was confirmed.
    pub fn confirm(&mut self, j: usize) -> bool {
        if self.confirmed[j] {
            return false;
        }
        let n = self.hull_size();
        let m = argmax(&self.ratios()[j * n..(j + 1) * n]);
        self.assign[j] = self.hull()[j * n + m];
        self.confirmed[j] = true;
        self.n_confirmed += 1;
        true
    }

    /// Confirms sub-vector `j` at codeword `a` (any codeword, not only a hull member), e.g. to
    /// fine-tune a codebook under fixed assignments; false if it already was confirmed.
    pub fn confirm_to(&mut self, j: usize, a: u32) -> bool {
        assert!((a as usize) < self.k(), "confirm_to: index {a} >= k");
        if self.confirmed[j] {
            return false;
        }
        self.assign[j] = a;
        self.confirmed[j] = true;
        self.n_confirmed += 1;
        true
    }

    /// Confirms every unconfirmed sub-vector with `max_m r_jm > tau`; returns how many.
    pub fn confirm_above(&mut self, tau: f32) -> usize {
        let mut count = 0;
        for j in 0..self.len() {
            if !self.confirmed[j] && self.max_ratio(j) > tau && self.confirm(j) {
                count += 1;
            }
        }
        count
    }

    /// Force-confirms the unconfirmed sub-vectors with the highest `max r` (ties to the lowest
    /// index) until at least `fraction` of the layer is confirmed; returns how many were forced.
    pub fn confirm_at_least(&mut self, fraction: f64) -> usize {
        let need = required_count(fraction, self.len()).saturating_sub(self.n_confirmed);
        if need == 0 {
            return 0;
        }
        let mut cand: Vec<(f32, usize)> = (0..self.len())
            .filter(|&j| !self.confirmed[j])
            .map(|j| (self.max_ratio(j), j))
            .collect();
        let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if need < cand.len() {
            cand.select_nth_unstable_by(need - 1, order);
            cand.truncate(need);
        }
        let mut forced = 0;
        for &(_, j) in &cand {
            if self.confirm(j) {
                forced += 1;
            }
        }
        forced
    }

    /// Confirms every remaining sub-vector at its argmax (one-shot hardening); returns how many.
    pub fn confirm_all(&mut self) -> usize {
        let mut count = 0;
        for j in 0..self.len() {
            if self.confirm(j) {
                count += 1;
            }
        }
        count
    }

    /// Confirmed flags, one per sub-vector.
    pub fn confirmed_flags(&self) -> &[bool] {
        &self.confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_floor_steps_at_the_default_points() {
        let cfg = VqConfig::default();
        let f = |s| schedule_floor(&cfg, s, 300);
        assert_eq!(f(0), 0.0);
        assert_eq!(f(59), 0.0);
        assert_eq!(f(60), 0.25);
        assert_eq!(f(119), 0.25);
        assert_eq!(f(120), 0.5);
        assert_eq!(f(180), 0.75);
        assert_eq!(f(239), 0.75);
        assert_eq!(f(240), 1.0);
        assert_eq!(f(300), 1.0);
        assert_eq!(schedule_floor(&cfg, 1, 1), 1.0);
    }

    #[test]
    fn required_count_rounds_up() {
        assert_eq!(required_count(0.25, 10), 3);
        assert_eq!(required_count(0.5, 10), 5);
        assert_eq!(required_count(1.0, 7), 7);
        assert_eq!(required_count(0.0, 7), 0);
    }
}
