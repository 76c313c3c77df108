//! k-means: k-means++ seeding, then Lloyd iterations (docs/QUANTIZATION.md).
//!
//! * Seeding: first centre uniform, each next one drawn with probability ∝ D(x)² (the squared
//!   distance to the nearest chosen centre), from a [`SplitMix64`] stream fixed by the seed. When
//!   every point already coincides with a centre (k > number of distinct points) the draw is
//!   uniform, so duplicate centres appear and their clusters stay empty.
//! * Lloyd: assignment by the blocked search of [`super::search`], centre update as the f64 mean
//!   of its points in point order, early stop as soon as no assignment changes.
//! * Empty cluster: re-seeded, in cluster order, from the point with the largest current error
//!   (squared distance to its updated centre; ties to the lowest point index; only points with a
//!   positive error), which is moved to the new cluster. An iteration with a re-seed is always
//!   followed by another centre update, so the donor clusters' centres are means again.
//!
//! Contract: [`KMeans::loss_history`] (SSE after each assignment step) is non-increasing up to f32
//! rounding; the result is bit-identical for a seed whatever the thread count.

use super::search::{nearest, par_chunks_mut, sq_dist};
use super::{check_buf, VqConfig, VqError, MAX_D, MAX_K};
use crate::rng::SplitMix64;

/// Settings of one k-means run.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansConfig {
    /// Number of centres (1..=65536).
    pub k: usize,
    /// Maximum Lloyd iterations (centre updates). Default 100.
    pub max_iters: usize,
    /// Seed of the k-means++ draws.
    pub seed: u64,
}

impl KMeansConfig {
    /// k-means settings of a quantizer configuration (`k`, `kmeans_iters`, `seed`).
    pub fn from_config(cfg: &VqConfig) -> Self {
        Self {
            k: cfg.k,
            max_iters: cfg.kmeans_iters,
            seed: cfg.seed,
        }
    }
}

/// Result of a k-means run.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans {
    /// Centres.
    pub k: usize,
    /// Point length.
    pub d: usize,
    /// `k × d` centres, row-major.
    pub codebook: Vec<f32>,
    /// Nearest centre of each point under the final codebook.
    pub assign: Vec<u32>,
    /// Sum of squared errors after each assignment step (f64 sum in point order); the last entry
    /// is the error of (`codebook`, `assign`).
    pub loss_history: Vec<f64>,
    /// Lloyd centre updates performed.
    pub iterations: usize,
    /// True when the run stopped because no assignment changed.
    pub converged: bool,
    /// Empty clusters re-seeded over the run.
    pub reseeded: usize,
}

impl KMeans {
    /// Final sum of squared errors.
    pub fn loss(&self) -> f64 {
        self.loss_history.last().copied().unwrap_or(0.0)
    }
}

/// Runs k-means++ then Lloyd on `points` (`N × d`, row-major).
pub fn kmeans(points: &[f32], d: usize, cfg: &KMeansConfig) -> Result<KMeans, VqError> {
    if d == 0 || d > MAX_D {
        return Err(VqError::InvalidConfig {
            name: "d",
            value: d.to_string(),
            why: "must be in 1..=16",
        });
    }
    if cfg.k == 0 || cfg.k > MAX_K {
        return Err(VqError::InvalidConfig {
            name: "k",
            value: cfg.k.to_string(),
            why: "must be in 1..=65536",
        });
    }
    let n = points.len() / d;
    if n == 0 {
        return Err(VqError::Empty {
            what: "k-means points",
            rows: 0,
            cols: d,
        });
    }
    check_buf("k-means points", points, n * d)?;
    let init = kmeans_pp(points, d, cfg.k, cfg.seed);
    Ok(lloyd(points, d, init, cfg.max_iters))
}

/// Points per block of the k-means++ D² buffer: block sums make the draw O(N / B + B) and are
/// computed in parallel without making the result depend on the thread count.
const PP_BLOCK: usize = 1024;

/// One block of the k-means++ D² buffer and its f64 sum.
#[derive(Clone, Debug)]
struct D2Block {
    d2: Vec<f32>,
    sum: f64,
}

/// k-means++ seeding: `k × d` initial centres. Inputs must already be validated (non-empty,
/// finite, `points.len()` a multiple of `d`).
pub fn kmeans_pp(points: &[f32], d: usize, k: usize, seed: u64) -> Vec<f32> {
    let n = points.len() / d;
    let mut rng = SplitMix64::new(seed);
    let mut centers = Vec::with_capacity(k * d);
    let first = rng.below(n);
    centers.extend_from_slice(&points[first * d..(first + 1) * d]);
    let mut blocks: Vec<D2Block> = (0..n.div_ceil(PP_BLOCK))
        .map(|b| D2Block {
            d2: vec![f32::INFINITY; PP_BLOCK.min(n - b * PP_BLOCK)],
            sum: 0.0,
        })
        .collect();
    let update = |blocks: &mut [D2Block], c: &[f32]| {
        par_chunks_mut(blocks, 1, 8, |first_block, bs| {
            for (bi, blk) in bs.iter_mut().enumerate() {
                let base = (first_block + bi) * PP_BLOCK;
                let mut sum = 0.0f64;
                for (i, v) in blk.d2.iter_mut().enumerate() {
                    let x = &points[(base + i) * d..(base + i + 1) * d];
                    let dist = sq_dist(x, c);
                    if dist < *v {
                        *v = dist;
                    }
                    sum += *v as f64;
                }
                blk.sum = sum;
            }
        });
    };
    update(&mut blocks, &points[first * d..(first + 1) * d]);
    for _ in 1..k {
        let total: f64 = blocks.iter().map(|b| b.sum).sum();
        let pick = if total > 0.0 {
            draw(&blocks, total, rng.next_f64())
        } else {
            rng.below(n)
        };
        let c = &points[pick * d..(pick + 1) * d];
        centers.extend_from_slice(c);
        update(&mut blocks, c);
    }
    centers
}

/// The point whose cumulative D² interval contains `u · total`; never a point with D² = 0.
fn draw(blocks: &[D2Block], total: f64, u: f64) -> usize {
    let target = u * total;
    let mut cum = 0.0f64;
    let mut last_positive = None;
    for (b, blk) in blocks.iter().enumerate() {
        if blk.sum > 0.0 {
            last_positive = Some(b);
        }
        if cum + blk.sum <= target {
            cum += blk.sum;
            continue;
        }
        let mut last_in_block = None;
        for (i, &v) in blk.d2.iter().enumerate() {
            if v > 0.0 {
                last_in_block = Some(i);
                cum += v as f64;
                if cum > target {
                    return b * PP_BLOCK + i;
                }
            }
        }
        // Rounding: the block sum exceeded what its elements add up to here.
        if let Some(i) = last_in_block {
            return b * PP_BLOCK + i;
        }
    }
    let b = last_positive.expect("total > 0 implies a positive block");
    let i = blocks[b]
        .d2
        .iter()
        .rposition(|&v| v > 0.0)
        .expect("positive block");
    b * PP_BLOCK + i
}

/// Lloyd iterations from the given `k × d` centres (at most `max_iters` centre updates; early
/// stop when no assignment changes). Inputs must already be validated.
pub fn lloyd(points: &[f32], d: usize, init: Vec<f32>, max_iters: usize) -> KMeans {
    let n = points.len() / d;
    let k = init.len() / d;
    let mut codebook = init;
    let mut assign = vec![u32::MAX; n];
    let mut loss_history = Vec::new();
    let mut iterations = 0;
    let mut converged = false;
    let mut reseeded = 0;
    let mut reseeded_last = false;
    let mut sums = vec![0.0f64; k * d];
    let mut counts = vec![0usize; k];
    loop {
        let (new_assign, err) = nearest(points, &codebook, d);
        let changed = assign
            .iter()
            .zip(&new_assign)
            .filter(|(a, b)| a != b)
            .count();
        loss_history.push(err.iter().map(|&e| e as f64).sum());
        assign = new_assign;
        // After a re-seed the donor clusters' centres are stale: update them once more.
        if changed == 0 && !reseeded_last {
            converged = true;
            break;
        }
        if iterations == max_iters {
            break;
        }
        iterations += 1;

        sums.fill(0.0);
        counts.fill(0);
        for (x, &a) in points.chunks_exact(d).zip(&assign) {
            let a = a as usize;
            counts[a] += 1;
            for (s, &v) in sums[a * d..(a + 1) * d].iter_mut().zip(x) {
                *s += v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                let inv = 1.0 / counts[c] as f64;
                for t in 0..d {
                    codebook[c * d + t] = (sums[c * d + t] * inv) as f32;
                }
            }
        }
        let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
        reseeded_last = false;
        if !empty.is_empty() {
            let moved = reseed_empty(points, d, &mut codebook, &mut assign, &empty);
            reseeded += moved;
            reseeded_last = moved > 0;
        }
    }
    KMeans {
        k,
        d,
        codebook,
        assign,
        loss_history,
        iterations,
        converged,
        reseeded,
    }
}

/// Moves the largest-error points into the `empty` clusters (one each, in cluster order); returns
/// how many were re-seeded (fewer when not enough points have a positive error).
fn reseed_empty(
    points: &[f32],
    d: usize,
    codebook: &mut [f32],
    assign: &mut [u32],
    empty: &[usize],
) -> usize {
    let mut cand: Vec<(f32, usize)> = points
        .chunks_exact(d)
        .zip(assign.iter())
        .enumerate()
        .map(|(i, (x, &a))| {
            let a = a as usize;
            (sq_dist(x, &codebook[a * d..(a + 1) * d]), i)
        })
        .filter(|&(e, _)| e > 0.0)
        .collect();
    let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let take = empty.len().min(cand.len());
    if take == 0 {
        return 0;
    }
    if take < cand.len() {
        cand.select_nth_unstable_by(take - 1, order);
        cand.truncate(take);
    }
    cand.sort_unstable_by(order);
    for (&c, &(_, i)) in empty.iter().zip(&cand) {
        codebook[c * d..(c + 1) * d].copy_from_slice(&points[i * d..(i + 1) * d]);
        assign[i] = c as u32;
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_never_picks_a_zero_weight_point() {
        let mut blocks = vec![
            D2Block {
                d2: vec![0.0; PP_BLOCK],
                sum: 0.0,
            },
            D2Block {
                d2: vec![0.0; 10],
                sum: 0.0,
            },
        ];
        blocks[0].d2[5] = 2.0;
        blocks[0].sum = 2.0;
        blocks[1].d2[3] = 1.0;
        blocks[1].sum = 1.0;
        assert_eq!(draw(&blocks, 3.0, 0.0), 5);
        assert_eq!(draw(&blocks, 3.0, 0.6), 5);
        assert_eq!(draw(&blocks, 3.0, 0.7), PP_BLOCK + 3);
        assert_eq!(draw(&blocks, 3.0, 0.999_999_999), PP_BLOCK + 3);
        // A total larger than the elements' sum (rounding) still lands on a positive point.
        assert_eq!(draw(&blocks, 3.5, 0.999), PP_BLOCK + 3);
    }
}
