//! Synthetic runs: detector frames, calibration constants, geometry and ground truth.
