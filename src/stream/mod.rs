//! A stream's runtime, in one place: what a registered stream is while
//! queries read it, from its source's rows to the batches its queries run.
//!
//! - [`source`]: the [`Source`] trait, what a stream asks of its source;
//! - [`inbox`]: where the source leaves decoded rows, bounded by
//!   [`StreamLimits`];
//! - [`feed`]: the open batch, read by each query while it arrives;
//! - [`cuts`]: which cuts every reader has finished (what Kafka commits);
//! - [`live`]: the registered stream, [`LiveStream`], and what
//!   `SHOW STREAMS` shows of it, [`StreamInfo`];
//! - [`clock`]: the trigger clock that cuts each batch.
//!
//! Each uses only those listed before it.

pub(crate) mod clock;
pub(crate) mod cuts;
pub(crate) mod feed;
pub(crate) mod inbox;
mod live;
mod source;

pub(crate) use inbox::Inbox;
pub use inbox::StreamLimits;
pub(crate) use live::LiveStream;
pub use live::StreamInfo;
pub(crate) use source::Source;
