//! Confide's recording storage. Consultation recordings are kept as an append-only log of
//! encrypted segments: each recording has its own data key, wrapped by the server's master key
//! and bound to the recording's id, so a recording can't be decrypted, or passed off, as
//! another patient's.

pub mod keys;
pub mod remux;
pub mod segment;
pub mod sfu;
pub mod throughput;

pub use keys::{DataKey, KeyError, MasterKey, WrappedKey};
pub use segment::{
    Frame, SegmentError, SegmentHeader, SegmentReader, SegmentWriter, Sink, StoredFrame, Track, WriteError,
};
