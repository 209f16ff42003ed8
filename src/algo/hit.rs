//! Frame-level hit decision from a peak count, as OM does it.

use serde::{Deserialize, Serialize};

/// OM's hit criteria: a frame is a hit when `min < n_peaks < max` (both strict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitCriteria {
    pub min_num_peaks_for_hit: usize,
    pub max_num_peaks_for_hit: usize,
}

impl Default for HitCriteria {
    /// OM's MFX ePix10k2M monitor values (8 / 5000).
    fn default() -> Self {
        HitCriteria {
            min_num_peaks_for_hit: 8,
            max_num_peaks_for_hit: 5000,
        }
    }
}

impl HitCriteria {
    /// True when `num_peaks` lies strictly between the two limits.
    pub fn is_hit(&self, num_peaks: usize) -> bool {
        self.min_num_peaks_for_hit < num_peaks && num_peaks < self.max_num_peaks_for_hit
    }
}
