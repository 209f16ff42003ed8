//! lclstreamer: LCLS-II XTC2 runs to science-ready HDF5 streams.
//!
//! Data flows one way: `xtc` (files, events) → `detector` (frames, calibration) →
//! `algo` (peakfinder8, hits) → `output` (HDF5 batches) → `transport` (sinks).
//! `roles` ties them into the SPMD job; `synth` makes synthetic runs.

pub mod algo;
pub mod arp;
pub mod atomic_file;
pub mod config;
pub mod detector;
pub mod eval;
pub mod huge_pages;
pub mod inspect;
pub mod interrupt;
pub mod job;
pub mod monitor;
pub mod output;
pub mod serialize;
pub mod synth;
pub mod transport;
pub mod xtc;
