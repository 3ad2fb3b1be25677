//! What a stream's runtime asks of its source: start delivering into the
//! stream's [`Inbox`], say where it stands for a checkpoint, and resume
//! from there. The sources themselves are in [`crate::source`], one file
//! each.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use super::Inbox;
use crate::error::{BrookError, Result};

/// A kind of source behind a stream.
#[async_trait]
pub(crate) trait Source: Send + Sync + Debug {
    /// The connector's name as written in `CREATE STREAM ... WITH (connector = ...)`.
    fn connector(&self) -> &'static str;

    /// The source's options as a user would write them, for `SHOW STREAMS`.
    fn describe(&self) -> String;

    /// Whether each tick takes one item rather than everything that arrived
    /// (a queue with `one_at_a_time = 'true'`).
    fn one_item_per_batch(&self) -> bool {
        false
    }

    /// Starts delivering into `inbox`. Called once, when the first query
    /// that reads the stream starts; fails if the source cannot start
    /// (for example, the connection is refused).
    async fn start(&self, inbox: Arc<Inbox>) -> Result<()>;

    /// Where the source stands once the first `items` items it pushed into
    /// its inbox are consumed: what a checkpoint records so that a restart
    /// reads from there. `None` for a source that cannot replay (queue,
    /// socket).
    fn position_after(&self, _items: u64) -> Option<serde_json::Value> {
        None
    }

    /// Before [`Source::start`]: the stream is started by a query that
    /// keeps checkpoints, and `identity` names that query's checkpoints
    /// (the same in every run that resumes from them). A Kafka stream joins
    /// its group as a static member of that name, so that a restart takes
    /// over the partitions of the run it replaces at once.
    fn checkpointed_as(&self, _identity: &str) {}

    /// Before [`Source::start`]: read from `position` (which
    /// [`Source::position_after`] gave in an earlier run) instead of from
    /// the start.
    fn resume_from(&self, _position: &serde_json::Value) -> Result<()> {
        Err(BrookError::invalid(format!(
            "a {} stream cannot resume from a checkpoint",
            self.connector()
        )))
    }
}
