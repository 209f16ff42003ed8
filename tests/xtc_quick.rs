use lclstreamer::xtc::*;
#[test]
fn quick() {
    for f in ["detector/test_epix_calib.xtc2","mixed_rate/xpptut15-r0014-s000-c000.xtc2","chunking/data-r0001-s000-c001.xtc2"] {
        let p = std::path::Path::new("../shared/data/xtc2").join(f);
        let mut r = DgramReader::open(&p).unwrap();
        let mut buf = Vec::new();
        let mut lookup = NamesLookup::new();
        let mut n = 0;
        while let Some(d) = r.next_into(&mut buf).unwrap() {
            if d.service() == TransitionId::Configure { lookup = NamesLookup::from_configure(&d.root()).unwrap(); }
            if !lookup.is_empty() { d.validate(&lookup).unwrap(); }
            n += 1;
        }
        println!("{f}: {n} {:?}", r.truncation());
    }
}
