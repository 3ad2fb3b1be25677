//! Starting a planned continuous query: its checkpoints opened and its
//! engine restored from the latest, its streams started (from where the
//! checkpoint left them), and the stream its late rows go to.

use super::*;
use crate::query::driver::DriverSettings;

impl StreamContext {
    /// Starts a planned continuous query: its streams' sources, its ticks.
    pub(super) async fn start(
        &self,
        mut plan: planner::ContinuousPlan,
        sql: &str,
        query_name: Option<&str>,
    ) -> Result<ContinuousQuery> {
        // What SHOW QUERIES, the dashboard and the checkpoint files show of
        // the statement. A query's checkpoints are still named after its
        // whole text: two statements that differ only in a masked value
        // keep apart.
        let shown_sql = redact_secrets(sql);
        let restored = self
            .restore_checkpoint(&mut plan, sql, &shown_sql, query_name)
            .await?;
        let (streams, sources) = self.start_streams(&plan.streams, &restored).await?;
        for notice in &plan.notices {
            (self.inner.warn)(&Warning::Notice(notice.clone()));
        }
        if let Some(route) = &plan.late_route {
            let late = self.late_stream(route)?;
            // A fresh route: set once, here.
            let _ = route.inbox.set(late);
        }
        let id = self.inner.next_query_id.fetch_add(1, Ordering::Relaxed);
        let batches = self.inner.batcher.subscribe(id, streams);
        Ok(ContinuousQuery::start(
            plan.engine,
            batches,
            DriverSettings {
                id,
                sql: shown_sql,
                tick_now: self.inner.batcher.tick_now_handle(),
                registry: self.inner.queries.clone(),
                stop_on_error: self.inner.stop_on_query_error.load(Ordering::Relaxed),
                warnings: Arc::clone(&self.inner.recent_warnings),
                checkpoints: restored.checkpoints,
                sources,
                warn: Arc::clone(&self.inner.warn),
            },
        ))
    }

    /// Opens the query's checkpoints, when the context keeps them, and
    /// restores `plan`'s engine from the latest one.
    async fn restore_checkpoint(
        &self,
        plan: &mut planner::ContinuousPlan,
        sql: &str,
        shown_sql: &str,
        query_name: Option<&str>,
    ) -> Result<RestoredQuery> {
        let Some(dir) = self.checkpoint_dir() else {
            return Ok(RestoredQuery {
                checkpoints: None,
                positions: BTreeMap::new(),
            });
        };
        let name = query_name
            .map(str::to_string)
            .unwrap_or_else(|| crate::checkpoint::default_query_name(sql));
        let checkpoints = crate::checkpoint::QueryCheckpoints::open(&dir, &name, shown_sql)?;
        let mut restored_batch = 0;
        let mut positions = BTreeMap::new();
        if let Some(restored) = checkpoints.latest()? {
            for skipped in &restored.skipped {
                (self.inner.warn)(&Warning::Notice(skipped.clone()));
            }
            if restored.header.batch > 0 {
                plan.engine.restore(restored.state).await?;
                restored_batch = restored.header.batch;
                positions = restored.header.positions;
            }
        }
        let interval = self.inner.checkpoint_interval.load(Ordering::Relaxed);
        Ok(RestoredQuery {
            checkpoints: Some((checkpoints, restored_batch, interval)),
            positions,
        })
    }

    /// Starts the streams `names` for a query, each from where `restored`
    /// left it when this query is the one that starts it: the streams, and
    /// their sources by name.
    async fn start_streams(
        &self,
        names: &[String],
        restored: &RestoredQuery,
    ) -> Result<(Vec<Arc<LiveStream>>, QuerySources)> {
        let mut streams = Vec::with_capacity(names.len());
        let mut sources = Vec::with_capacity(names.len());
        for name in names {
            let stream = self.stream(name).ok_or_else(|| {
                BrookError::Internal(format!("stream '{name}' was planned but is not registered"))
            })?;
            if let Some((checkpoints, ..)) = &restored.checkpoints
                && !stream.started.load(Ordering::SeqCst)
            {
                stream
                    .source
                    .checkpointed_as(&format!("{}#{name}", checkpoints.dir()));
            }
            // A stream that can replay reads from where the checkpoint left
            // it, if this query is the one that starts it.
            if let Some(position) = restored.positions.get(name) {
                if stream.started.load(Ordering::SeqCst) {
                    (self.inner.warn)(&Warning::Notice(format!(
                        "stream '{name}' is already read by a running query: this query's state is restored, but the stream goes on from where it is, not from the checkpoint"
                    )));
                } else {
                    stream.source.resume_from(position)?;
                }
            }
            stream.ensure_started().await?;
            sources.push((name.clone(), Arc::clone(&stream.source)));
            streams.push(stream);
        }
        Ok((streams, sources))
    }
}

/// The streams a query reads, by name, with their sources.
type QuerySources = Vec<(String, Arc<dyn Source>)>;

/// A query's checkpoints as it starts, and what the latest one restored.
struct RestoredQuery {
    /// Where its checkpoints go, the batch its restored state ends with
    /// (0 if none), and every how many batches to write one; none when the
    /// context keeps no checkpoints.
    checkpoints: Option<(crate::checkpoint::QueryCheckpoints, u64, u64)>,
    /// Per stream, where the restored checkpoint left it.
    positions: BTreeMap<String, serde_json::Value>,
}

impl StreamContext {
    /// The inbox of the stream late rows go to: an existing queue stream
    /// with the late rows' columns, or a new one.
    fn late_stream(
        &self,
        route: &crate::engine::event_clock::LateRoute,
    ) -> Result<crate::engine::event_clock::LateInbox> {
        use crate::engine::event_clock::LateInbox;
        if let Some(stream) = self.stream(&route.stream) {
            if stream.source.connector() != "queue" {
                return Err(BrookError::invalid(format!(
                    "LATE DATA TO '{}': the stream exists and is not a queue stream",
                    route.stream
                )));
            }
            let expected = crate::sql::column_list(&route.schema);
            if crate::sql::column_list(&stream.schema) != expected {
                return Err(BrookError::invalid(format!(
                    "LATE DATA TO '{}': the stream's columns are ({}), late rows have ({expected})",
                    route.stream,
                    crate::sql::column_list(&stream.schema)
                )));
            }
            return Ok(LateInbox {
                inbox: Arc::clone(&stream.inbox),
                close_at_end: false,
            });
        }
        self.register_queue(
            &route.stream,
            Arc::clone(&route.schema),
            QueueOptions::default(),
        )?;
        let stream = self
            .stream(&route.stream)
            .ok_or_else(|| BrookError::Internal("the late-rows stream vanished".into()))?;
        // `brook run` closes queues at the end of its file; this one ends
        // with the query that feeds it.
        stream.fed_by_query.store(true, Ordering::Relaxed);
        Ok(LateInbox {
            inbox: Arc::clone(&stream.inbox),
            close_at_end: true,
        })
    }
}
