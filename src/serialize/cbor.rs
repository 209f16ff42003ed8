//! CBOR helpers over `minicbor`: an infallible encoder into a `Vec<u8>`, the shared maps
//! (end-of-stream counts, peak lists) and a reader of small maps into JSON values for
//! [`super::identify`] (byte strings become their length, tags their content).

use minicbor::data::{Tag, Type};
use minicbor::{Decoder, Encoder};

use crate::output::{Peaks, PixelType};
use crate::transport::EndOfStream;

/// Tag of an RFC 8746 row-major multi-dimensional array.
pub const TAG_MULTI_DIM: u64 = 40;
/// Tag of DECTRIS compressed bytes `[algorithm, modifier, bytes]`.
pub const TAG_DECTRIS_COMPRESSION: u64 = 56500;

/// RFC 8746 typed-array tag of little-endian pixels: `float32` 85, `uint16` 69, `float16` 84.
pub fn typed_array_tag(pixel: PixelType) -> u64 {
    match pixel {
        PixelType::F32 => 85,
        PixelType::U16 => 69,
        PixelType::F16 => 84,
    }
}

/// Writing into a `Vec<u8>` cannot fail.
const VEC_WRITE: &str = "writing CBOR into a Vec cannot fail";

/// An encoder whose writes cannot fail (it writes into a `Vec<u8>`).
pub struct Cbor(Encoder<Vec<u8>>);

macro_rules! infallible {
    ($($name:ident($t:ty)),*) => {$(
        pub fn $name(&mut self, x: $t) -> &mut Self {
            self.0.$name(x).expect(VEC_WRITE);
            self
        }
    )*};
}

impl Cbor {
    pub fn with_capacity(n: usize) -> Self {
        Cbor(Encoder::new(Vec::with_capacity(n)))
    }
    infallible!(
        map(u64),
        array(u64),
        str(&str),
        u64(u64),
        u32(u32),
        f64(f64),
        bytes(&[u8]),
        bool(bool)
    );
    pub fn tag(&mut self, t: u64) -> &mut Self {
        self.0.tag(Tag::new(t)).expect(VEC_WRITE);
        self
    }
    pub fn null(&mut self) -> &mut Self {
        self.0.null().expect(VEC_WRITE);
        self
    }
    pub fn opt_u32(&mut self, x: Option<u32>) -> &mut Self {
        match x {
            Some(v) => self.u32(v),
            None => self.null(),
        }
    }
    pub fn f32s(&mut self, xs: &[f32]) -> &mut Self {
        self.array(xs.len() as u64);
        for &x in xs {
            self.f64(x as f64);
        }
        self
    }
    /// `{fs, ss, intensity}` of the peaks (slab pixel-index coordinates), as float arrays.
    pub fn peaks(&mut self, p: &Peaks) -> &mut Self {
        self.map(3);
        self.str("fs").f32s(&p.fs);
        self.str("ss").f32s(&p.ss);
        self.str("intensity").f32s(&p.total_intensity)
    }
    /// The end-of-stream counts as a map with [`EndOfStream`]'s field names.
    pub fn eos(&mut self, e: &EndOfStream) -> &mut Self {
        self.map(13);
        self.str("sender").str(&e.sender);
        self.str("writer_rank").opt_u32(e.writer_rank);
        self.str("run").opt_u32(e.run);
        self.str("url").str(&e.url);
        for (k, v) in [
            ("batches", e.batches),
            ("events", e.events),
            ("bytes", e.bytes),
            ("spilled", e.spilled),
            ("spilled_events", e.spilled_events),
            ("dropped", e.dropped),
            ("dropped_events", e.dropped_events),
            ("resent", e.resent),
            ("rejected", e.rejected),
        ] {
            self.str(k).u64(v);
        }
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.0.into_writer()
    }
}

/// Reads one CBOR item (maps, arrays, numbers, strings) as JSON; byte strings become their
/// length, tags the value they wrap. Only small control fields are looked at by callers.
pub fn to_json(msg: &[u8]) -> Result<serde_json::Value, String> {
    let mut d = Decoder::new(msg);
    item(&mut d, 0).map_err(|e| format!("malformed CBOR message: {e}"))
}

fn item(d: &mut Decoder, depth: usize) -> Result<serde_json::Value, minicbor::decode::Error> {
    use serde_json::Value;
    if depth > 32 {
        return Err(minicbor::decode::Error::message("nested too deeply"));
    }
    Ok(match d.datatype()? {
        Type::Bool => Value::Bool(d.bool()?),
        Type::Null | Type::Undefined => {
            d.skip()?;
            Value::Null
        }
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64()?.into(),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => d.i64()?.into(),
        Type::F16 | Type::F32 | Type::F64 => {
            let x = if d.datatype()? == Type::F64 {
                d.f64()?
            } else {
                d.f32()? as f64
            };
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        Type::Bytes => d.bytes()?.len().into(),
        Type::String => Value::String(d.str()?.to_owned()),
        Type::Tag => {
            d.tag()?;
            item(d, depth + 1)?
        }
        Type::Array => {
            let n = d.array()?.unwrap_or(0);
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(item(d, depth + 1)?);
            }
            Value::Array(v)
        }
        Type::Map => {
            let n = d.map()?.unwrap_or(0);
            let mut m = serde_json::Map::new();
            for _ in 0..n {
                let k = match d.datatype()? {
                    Type::String => d.str()?.to_owned(),
                    _ => {
                        d.skip()?;
                        String::new()
                    }
                };
                let v = item(d, depth + 1)?;
                m.insert(k, v);
            }
            Value::Object(m)
        }
        _ => {
            d.skip()?;
            Value::Null
        }
    })
}
