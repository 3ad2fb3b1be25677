//! What DataFusion sees of brook: the table of each stream (whose scans a
//! continuous query binds to batch slots), the window table functions
//! (`HOP`, `TUMBLE`, `RUNNING`), and the system tables (`brook.queries`,
//! `brook.streams`).

pub(crate) mod changelog_table;
pub(crate) mod lookup_table;
pub(crate) mod stream_table;
pub(crate) mod system;
pub mod view_table;
pub(crate) mod window_kind;
pub(crate) mod windows;

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::stream::LiveStream;

/// The streams by name, shared by the context and the table functions.
pub(crate) type StreamMap = Arc<RwLock<BTreeMap<String, Arc<LiveStream>>>>;
