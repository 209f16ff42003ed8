//! XTC2: datagrams, the self-describing Names/ShapesData layer, writer, small data, runs and
//! event building. Knows nothing about MPI, detectors or HDF5.

pub mod bytes;
pub mod container;
pub mod dgram;
pub mod error;
pub mod eventbuild;
pub mod header;
pub mod index;
pub mod live;
pub mod names;
pub mod reader;
pub mod replay;
pub mod run;
pub mod shapes_data;
pub mod smalldata;
pub mod stream_writer;
pub mod writer;

pub use container::XtcNode;
pub use dgram::Dgram;
pub use error::{FormatError, XtcError};
pub use header::{Damage, DgramHeader, NamesId, TransitionId, TypeId, XtcHeader};
pub use names::{Alg, DataType, NamesLookup, Schema, VarDesc};
pub use reader::{DgramReader, Truncation, read_dgram_at};
pub use shapes_data::{Block, Scalar, Shape, VarView};
pub use writer::{ChildOrder, DgramBuilder, VarData};
