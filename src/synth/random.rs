//! Deterministic randomness for synthetic runs: independent SplitMix64 streams per (seed, a, b),
//! fast standard-normal deviates from a quantile table, and Poisson sampling.

use crate::algo::spots::SplitMix64;
use std::sync::OnceLock;

/// A generator for the sub-stream `(a, b)` of `seed`: streams never overlap in practice and do
/// not depend on the order in which they are used.
pub fn substream(seed: u64, a: u64, b: u64) -> SplitMix64 {
    let mut mix = SplitMix64::new(
        seed ^ a.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ b.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7),
    );
    SplitMix64::new(mix.next_u64())
}

const TABLE_BITS: u32 = 16;

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9).
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    const P_LOW: f64 = 0.02425;
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

fn normal_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let n = 1usize << TABLE_BITS;
        (0..n)
            .map(|i| inverse_normal_cdf((i as f64 + 0.5) / n as f64) as f32)
            .collect()
    })
}

/// Standard-normal deviates looked up from 2^16 equiprobable quantiles: four per `u64`, tails cut
/// at ±4.3 σ (electronic noise and per-pixel constants need speed, not extreme tails).
#[derive(Debug, Clone, Copy)]
pub struct FastNormal {
    table: &'static [f32],
}

impl Default for FastNormal {
    fn default() -> Self {
        Self::new()
    }
}

impl FastNormal {
    pub fn new() -> Self {
        Self {
            table: normal_table(),
        }
    }

    /// The deviate for the low 16 bits of `bits`.
    #[inline]
    pub fn from_bits(&self, bits: u64) -> f32 {
        self.table[(bits & 0xFFFF) as usize]
    }

    /// One deviate from `rng`.
    #[inline]
    pub fn sample(&self, rng: &mut SplitMix64) -> f32 {
        self.from_bits(rng.next_u64())
    }
}

/// Uniform in [0, 1) from the high 32 bits of `bits`.
#[inline]
pub fn uniform_hi32(bits: u64) -> f32 {
    (bits >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A Poisson deviate of mean `mu` given one uniform `u` (inversion) for `mu < 30`; a rounded
/// normal approximation (deviate `z`) above.
#[inline]
pub fn poisson(mu: f32, u: f32, z: f32) -> f32 {
    if mu <= 0.0 {
        return 0.0;
    }
    if mu >= 30.0 {
        return (mu + mu.sqrt() * z).round().max(0.0);
    }
    let mut p = (-mu).exp();
    let mut cdf = p;
    let mut k = 0.0f32;
    while u > cdf && k < 200.0 {
        k += 1.0;
        p *= mu / k;
        cdf += p;
        if p == 0.0 {
            break;
        }
    }
    k
}

/// `erf(x)` (Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7).
pub fn erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    s * y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_table_has_unit_moments() {
        let t = normal_table();
        let n = t.len() as f64;
        let mean = t.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = t.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-6, "{mean}");
        assert!((var - 1.0).abs() < 2e-3, "{var}");
        assert!((inverse_normal_cdf(0.975) - 1.959_964).abs() < 1e-5);
        assert!((inverse_normal_cdf(0.001) + 3.090_232).abs() < 1e-5);
    }

    #[test]
    fn poisson_has_the_right_mean_and_variance() {
        let fast = FastNormal::new();
        for mu in [0.05f32, 0.7, 4.0, 25.0, 80.0] {
            let mut rng = substream(7, 1, (mu * 100.0) as u64);
            let n = 200_000;
            let xs: Vec<f64> = (0..n)
                .map(|_| {
                    let b = rng.next_u64();
                    f64::from(poisson(mu, uniform_hi32(b), fast.from_bits(b)))
                })
                .collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let mu = f64::from(mu);
            assert!(
                (mean - mu).abs() < 5.0 * (mu / n as f64).sqrt() + 1e-3,
                "{mu}: {mean}"
            );
            assert!((var / mu - 1.0).abs() < 0.05, "{mu}: var {var}");
        }
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "{x}");
        }
    }

    #[test]
    fn substreams_differ_and_repeat() {
        let a: Vec<u64> = (0..4).map(|_| substream(1, 2, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(substream(1, 2, 3).next_u64(), substream(1, 3, 2).next_u64());
        assert_ne!(substream(1, 2, 3).next_u64(), substream(2, 2, 3).next_u64());
    }
}
