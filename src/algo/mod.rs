//! Detector-frame algorithms: peakfinder8, radial maps, hit decision.
