//! Batch images: every layout x compression x pixel type round-trips value for value; each
//! filter is really in the dataset pipeline and really shrinks the stored chunks; CXI peak
//! conventions; bad batches are refused with a clear error.

use hdf5::filters::Filter;
use lclstreamer::output::batch::{ExampleKind, example_batch};
use lclstreamer::output::filters::{DEFLATE_FILTER_ID, ZSTD_FILTER_ID, decode_chunk};
use lclstreamer::output::{
    Compression, Frame, Layout, OutputError, Serializer, bitshuffle, h5image, read_batch, serialize,
};

const COMPRESSIONS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip { level: 4 },
    Compression::Zstd { level: 3 },
    Compression::BitshuffleLz4,
    Compression::BitshuffleZstd { level: 3 },
];

#[test]
fn every_layout_compression_and_dtype_round_trips() {
    let kinds = [
        ExampleKind::Raw,
        ExampleKind::Calib { quantum: None },
        ExampleKind::NoFrame,
    ];
    let mut ser = Serializer::default();
    for layout in [Layout::Cxi, Layout::Lclstreamer] {
        for c in COMPRESSIONS {
            for (k, kind) in kinds.iter().enumerate() {
                // 37 x 29 pixels: not a multiple of 8 elements, exercises bitshuffle's leftovers.
                let batch = example_batch(5, 37, 29, *kind, 10 + k as u64);
                let bytes = ser.serialize(&batch, layout, c).unwrap();
                assert!(bytes.starts_with(b"\x89HDF\r\n\x1a\n"));
                let (back, got_layout) = read_batch(&bytes).unwrap();
                assert_eq!(got_layout, layout);
                assert_eq!(back, batch, "{layout:?} {c} {kind:?}");
            }
        }
    }
}

fn frame_dataset(file: &hdf5::File, layout: Layout, u16: bool) -> hdf5::Dataset {
    match layout {
        Layout::Cxi => file.dataset("entry_1/data_1/data").unwrap(),
        Layout::Lclstreamer => file
            .dataset(if u16 {
                "epix10k2M.raw"
            } else {
                "epix10k2M.calib"
            })
            .unwrap(),
    }
}

#[test]
fn each_filter_is_in_the_pipeline_and_applied_to_every_chunk() {
    let (ss, fs) = (128, 96);
    let batch = example_batch(4, ss, fs, ExampleKind::Raw, 3);
    let raw_chunk = ss * fs * 2;
    for layout in [Layout::Cxi, Layout::Lclstreamer] {
        for c in COMPRESSIONS {
            let bytes = serialize(&batch, layout, c).unwrap();
            let file = h5image::open(&bytes).unwrap();
            let ds = frame_dataset(&file, layout, true);
            assert_eq!(ds.chunk(), Some(vec![1, ss, fs]));
            let pipeline: Vec<(i32, Vec<u32>)> = ds
                .filters()
                .into_iter()
                .map(|f| match f {
                    Filter::Deflate(level) => (DEFLATE_FILTER_ID, vec![level.into()]),
                    Filter::User(id, cd) => (id, cd),
                    other => panic!("unexpected filter {other:?}"),
                })
                .collect();
            let expected = c.pipeline(2).into_iter().collect::<Vec<_>>();
            assert_eq!(pipeline, expected, "{c}");
            match c {
                Compression::None => assert!(pipeline.is_empty()),
                Compression::Gzip { .. } => assert_eq!(pipeline[0].0, DEFLATE_FILTER_ID),
                Compression::Zstd { .. } => assert_eq!(pipeline[0], (ZSTD_FILTER_ID, vec![3])),
                Compression::BitshuffleLz4 => {
                    assert_eq!(pipeline[0], (bitshuffle::FILTER_ID, vec![0, 5, 2, 0, 2]))
                }
                Compression::BitshuffleZstd { .. } => {
                    assert_eq!(pipeline[0], (bitshuffle::FILTER_ID, vec![0, 5, 2, 0, 3, 3]))
                }
            }
            let mut stored = 0;
            for (i, ev) in batch.events.iter().enumerate() {
                let (mask, chunk) = h5image::read_chunk_raw(&ds, &[i as u64, 0, 0]).unwrap();
                assert_eq!(mask, 0, "every filter applied to chunk {i}");
                stored += chunk.len();
                let Some(Frame::U16(a)) = &ev.frame else {
                    unreachable!()
                };
                let want: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
                match &pipeline.first() {
                    None => assert_eq!(chunk, want),
                    Some((DEFLATE_FILTER_ID, _)) => {
                        let mut d = flate2::Decompress::new(true);
                        let mut out = Vec::with_capacity(want.len());
                        d.decompress_vec(&chunk, &mut out, flate2::FlushDecompress::Finish)
                            .unwrap();
                        assert_eq!(out, want);
                    }
                    Some((id, cd)) => {
                        let mut out = Vec::new();
                        decode_chunk(*id, cd, &chunk, &mut out).unwrap();
                        assert_eq!(out, want);
                    }
                }
            }
            let raw = batch.events.len() * raw_chunk;
            if c == Compression::None {
                assert_eq!(stored, raw);
            } else {
                assert!(stored * 2 < raw, "{c}: stored {stored} of {raw} bytes");
            }
            assert_eq!(ds.storage_size() as usize, stored);
        }
    }
}

#[test]
fn cxi_peak_lists_follow_crystfel_conventions() {
    let batch = example_batch(6, 50, 40, ExampleKind::Calib { quantum: Some(0.5) }, 7);
    let bytes = serialize(&batch, Layout::Cxi, Compression::BitshuffleLz4).unwrap();
    let file = h5image::open(&bytes).unwrap();
    let n = file
        .dataset("entry_1/result_1/nPeaks")
        .unwrap()
        .read_1d::<i32>()
        .unwrap();
    let max = batch.events.iter().map(|e| e.peaks.len()).max().unwrap();
    assert_eq!(n.len(), 6);
    for name in [
        "peakXPosRaw",
        "peakYPosRaw",
        "peakTotalIntensity",
        "peakMaximumValue",
        "peakNPixels",
        "peakSNR",
        "peakSigma",
    ] {
        let a = file
            .dataset(&format!("entry_1/result_1/{name}"))
            .unwrap()
            .read_2d::<f32>()
            .unwrap();
        assert_eq!(a.dim(), (6, max.max(1)), "{name}");
    }
    let x = file
        .dataset("entry_1/result_1/peakXPosRaw")
        .unwrap()
        .read_2d::<f32>()
        .unwrap();
    let y = file
        .dataset("entry_1/result_1/peakYPosRaw")
        .unwrap()
        .read_2d::<f32>()
        .unwrap();
    for (i, ev) in batch.events.iter().enumerate() {
        assert_eq!(n[i] as usize, ev.peaks.len());
        assert_eq!(
            &x.row(i).to_vec()[..ev.peaks.len()],
            &ev.peaks.fs[..],
            "X = fs"
        );
        assert_eq!(
            &y.row(i).to_vec()[..ev.peaks.len()],
            &ev.peaks.ss[..],
            "Y = ss"
        );
        assert!(
            x.row(i).iter().skip(ev.peaks.len()).all(|&v| v == 0.0),
            "unused slots are 0"
        );
    }
    assert_eq!(
        file.dataset("cxi_version")
            .unwrap()
            .read_scalar::<i32>()
            .unwrap(),
        140
    );
    let ts = file
        .dataset("LCLS/timestamp")
        .unwrap()
        .read_1d::<u64>()
        .unwrap();
    assert_eq!(
        ts.to_vec(),
        batch.events.iter().map(|e| e.timestamp).collect::<Vec<_>>()
    );
    let d = file.dataset("entry_1/data_1/data").unwrap();
    assert_eq!(d.shape(), vec![6, 50, 40]);
    assert!(d.dtype().unwrap().is::<f32>());
}

#[test]
fn min_peak_width_pads_and_never_truncates() {
    let batch = example_batch(3, 16, 16, ExampleKind::NoFrame, 1);
    let mut ser = Serializer::default();
    ser.min_peak_width = 2048;
    let file = h5image::open(
        &ser.serialize(&batch, Layout::Cxi, Compression::None)
            .unwrap(),
    )
    .unwrap();
    let x = file.dataset("entry_1/result_1/peakXPosRaw").unwrap();
    assert_eq!(x.shape(), vec![3, 2048]);
    assert!(!file.link_exists("entry_1/data_1/data"));
}

#[test]
fn inconsistent_batches_are_refused() {
    let mut batch = example_batch(3, 16, 16, ExampleKind::Raw, 1);
    batch.events[1].frame = None;
    let e = serialize(&batch, Layout::Cxi, Compression::None).unwrap_err();
    assert!(
        matches!(e, OutputError::InvalidBatch(_)) && e.to_string().contains("event 1"),
        "{e}"
    );

    let mut batch = example_batch(2, 16, 16, ExampleKind::Raw, 1);
    batch.events[1].fields.pop();
    assert!(
        serialize(&batch, Layout::Cxi, Compression::None)
            .unwrap_err()
            .to_string()
            .contains("fields")
    );

    let mut batch = example_batch(2, 16, 16, ExampleKind::Raw, 1);
    batch.events[0].peaks.snr.pop();
    assert!(
        serialize(&batch, Layout::Cxi, Compression::None)
            .unwrap_err()
            .to_string()
            .contains("peak columns")
    );

    let mut batch = example_batch(1, 16, 16, ExampleKind::Raw, 1);
    batch.events.clear();
    assert!(serialize(&batch, Layout::Cxi, Compression::None).is_err());

    assert!(matches!(read_batch(b"not hdf5"), Err(OutputError::NotHdf5)));
}
