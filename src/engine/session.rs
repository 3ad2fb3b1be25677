//! `SESSION` windows in event time: per group, rows closer than the gap to
//! each other form one session `[first row, last row + gap)`.
//!
//! The state is partial aggregate state with `window_start` and
//! `window_end` as group keys: each row enters as a session of its own,
//! `[ts, ts + gap)`, and after every batch the sessions of a group that
//! overlap are merged (so a row that bridges two sessions joins them). A
//! session closes when the watermark reaches its end.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, not};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;

use super::event_clock::{EventClock, OnTime, filter_times};
use super::event_window::{FOLD_CHUNK_ROWS, end_of_input};
use super::session_batch::BatchSessions;
use super::split::{IncrementalPlan, WindowBound};
use super::state::{self, Part};
use super::{reduce, run_on};
use crate::catalog::stream_table::BatchSlot;
use crate::error::{BrookError, Result};
use crate::event_time::watermark::END_OF_TIME;
use crate::query::Retained;
use crate::query::engine::{BatchEngine, Emission, EventReport, LiveBatch, MicroBatch};
use crate::sql::EmitMode;

/// Sessions of one group that overlap, merged: the merged session's
/// bounds (epoch milliseconds), and whether one of its sessions is fresh
/// (see [`SessionEngine::clusters`]).
struct Cluster {
    start: i64,
    end: i64,
    fresh: bool,
}

/// A `SESSION` query in progress.
pub(crate) struct SessionEngine {
    events: EventClock,
    gap: i64,
    plan: IncrementalPlan,
    task_ctx: Arc<TaskContext>,
    scan: Arc<BatchSlot>,
    /// The pane columns holding `window_start` and `window_end`.
    start_column: usize,
    end_column: usize,
    /// The open sessions: one row of partial state per group and session.
    sessions: Option<RecordBatch>,
    /// How a batch's on-time rows are merged into sessions before they are
    /// aggregated (`None`: each row is aggregated as a session of its own).
    batch_sessions: Option<BatchSessions>,
}

impl SessionEngine {
    /// Fails (with the reason) when the plan does not group by both window
    /// columns.
    pub fn new(
        events: EventClock,
        gap: i64,
        plan: IncrementalPlan,
        task_ctx: Arc<TaskContext>,
        scan: Arc<BatchSlot>,
    ) -> std::result::Result<Self, String> {
        let column = |bound: WindowBound| {
            plan.window_keys
                .iter()
                .find(|(_, b)| *b == bound)
                .map(|(index, _)| *index)
        };
        let (Some(start_column), Some(end_column)) =
            (column(WindowBound::Start), column(WindowBound::End))
        else {
            return Err(
                "a SESSION query groups by window_start and window_end (and may group by more)"
                    .into(),
            );
        };
        let batch_sessions = BatchSessions::new(&plan, start_column, end_column);
        Ok(Self {
            events,
            gap,
            batch_sessions,
            plan,
            task_ctx,
            scan,
            start_column,
            end_column,
            sessions: None,
        })
    }

    /// A batch's on-time rows merged into sessions per group and
    /// aggregated into partial state.
    async fn batch_sessions(&self, on_time: &[OnTime]) -> Result<Option<RecordBatch>> {
        let Some(batch_sessions) = &self.batch_sessions else {
            return self.row_sessions(on_time).await;
        };
        let input = self.with_own_sessions(on_time)?;
        if input.is_empty() {
            return Ok(None);
        }
        batch_sessions
            .aggregate(&self.scan, input, self.gap, &self.task_ctx)
            .await
    }

    /// Each row as a session of its own, aggregated into partial state.
    async fn row_sessions(&self, on_time: &[OnTime]) -> Result<Option<RecordBatch>> {
        let input = self.with_own_sessions(on_time)?;
        if input.is_empty() {
            return Ok(None);
        }
        let result = run_on(&self.plan.partial, &self.scan, input, &self.task_ctx).await?;
        Ok(Some(concat_batches(&self.plan.partial.schema(), &result)?))
    }

    /// The rows of `on_time` as the window scan reads them, each with its
    /// own session `[ts, ts + gap)` as its window columns.
    fn with_own_sessions(&self, on_time: &[OnTime]) -> Result<Vec<RecordBatch>> {
        let schema = Arc::clone(self.scan.schema_ref());
        let mut input = Vec::new();
        for OnTime { rows, times, .. } in on_time {
            let starts = times.clone().with_timezone("+00:00");
            let ends: TimestampMillisecondArray = times
                .iter()
                .map(|t| t.map(|t| t.saturating_add(self.gap)))
                .collect::<TimestampMillisecondArray>()
                .with_timezone("+00:00");
            let mut columns = rows.columns().to_vec();
            columns.push(Arc::new(starts) as ArrayRef);
            columns.push(Arc::new(ends) as ArrayRef);
            input.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
        }
        Ok(input)
    }

    /// Merges the overlapping sessions of each group in `state` (old
    /// sessions first, then `fresh` ones); returns the merged state and the
    /// sessions that took fresh rows.
    async fn merge(
        &self,
        old: Option<RecordBatch>,
        fresh: RecordBatch,
    ) -> Result<(RecordBatch, RecordBatch)> {
        let old_rows = old.as_ref().map_or(0, RecordBatch::num_rows);
        let schema = fresh.schema();
        let all = match old {
            Some(old) => concat_batches(&schema, [&old, &fresh])?,
            None => fresh,
        };
        let (cluster_of, bounds) = self.clusters(&all, old_rows)?;
        let new_start: TimestampMillisecondArray = (0..all.num_rows())
            .map(|row| Some(bounds[cluster_of[row]].start))
            .collect::<TimestampMillisecondArray>()
            .with_timezone("+00:00");
        let new_end: TimestampMillisecondArray = (0..all.num_rows())
            .map(|row| Some(bounds[cluster_of[row]].end))
            .collect::<TimestampMillisecondArray>()
            .with_timezone("+00:00");
        let mut columns = all.columns().to_vec();
        columns[self.start_column] = Arc::new(new_start);
        columns[self.end_column] = Arc::new(new_end);
        let all = RecordBatch::try_new(schema, columns)?;
        // Sessions without fresh rows are single rows already.
        let touched: BooleanArray = (0..all.num_rows())
            .map(|row| Some(bounds[cluster_of[row]].fresh))
            .collect();
        let untouched = filter_record_batch(&all, &not(&touched)?)?;
        let touched = filter_record_batch(&all, &touched)?;
        let touched = if touched.num_rows() == 0 {
            touched
        } else {
            reduce(&self.plan, vec![touched], &self.task_ctx).await?
        };
        let merged = concat_batches(&all.schema(), [&untouched, &touched])?;
        Ok((merged, touched))
    }

    /// Sorts the sessions in `all` into clusters: runs of one group's
    /// sessions that overlap (so merge into one). Returns each row's
    /// cluster and the clusters, `fresh` when one holds a row at or after
    /// index `fresh_from`.
    fn clusters(&self, all: &RecordBatch, fresh_from: usize) -> Result<(Vec<usize>, Vec<Cluster>)> {
        let keys = self.group_keys(all)?;
        let starts = millis_column(all, self.start_column)?;
        let ends = millis_column(all, self.end_column)?;
        let mut order: Vec<usize> = (0..all.num_rows()).collect();
        order.sort_by(|&a, &b| {
            keys.row(a)
                .cmp(&keys.row(b))
                .then(starts[a].cmp(&starts[b]))
        });
        // Sweep: a cluster is a run of one group's sessions that overlap.
        let mut cluster_of = vec![0usize; all.num_rows()];
        let mut bounds: Vec<Cluster> = Vec::new();
        let mut previous: Option<usize> = None;
        for &row in &order {
            let fresh_row = row >= fresh_from;
            let joins = previous.is_some_and(|p| {
                keys.row(p) == keys.row(row)
                    && bounds.last().is_some_and(|last| starts[row] < last.end)
            });
            if joins {
                if let Some(last) = bounds.last_mut() {
                    last.end = last.end.max(ends[row]);
                    last.fresh |= fresh_row;
                }
            } else {
                bounds.push(Cluster {
                    start: starts[row],
                    end: ends[row],
                    fresh: fresh_row,
                });
            }
            cluster_of[row] = bounds.len() - 1;
            previous = Some(row);
        }
        Ok((cluster_of, bounds))
    }

    /// Judges the rows behind the watermark `mark` (their own session
    /// `[ts, ts + gap)` closed): a row is late only when the session it
    /// makes, merged with its group's open sessions and this batch's
    /// rows, is closed too (Flink's rule: merge first, then judge the
    /// merged window). Late rows are counted and routed; the others'
    /// sessions join `fresh`.
    async fn rescue(
        &mut self,
        fresh: Option<RecordBatch>,
        behind: Vec<OnTime>,
        mark: i64,
        time: DateTime<Utc>,
        report: &mut EventReport,
    ) -> Result<Option<RecordBatch>> {
        let Some(candidates) = self.row_sessions(&behind).await? else {
            for rows in behind {
                self.events.late(rows, report)?;
            }
            return Ok(fresh);
        };
        let schema = candidates.schema();
        let kept = self.still_open(fresh.as_ref(), &candidates, mark)?;
        let judgement = self.judge(&candidates, &kept)?;
        for rows in behind {
            let keep = self.keep_mask(&rows, &judgement).await?;
            self.route(&rows, &keep, time, report)?;
        }
        let kept = filter_record_batch(&candidates, &BooleanArray::from(kept))?;
        if kept.num_rows() == 0 {
            return Ok(fresh);
        }
        Ok(Some(match fresh {
            Some(fresh) => concat_batches(&schema, [&fresh, &kept])?,
            None => kept,
        }))
    }

    /// Whether each candidate session (one per group and event time) is
    /// kept: merged with the open sessions and `fresh`, its cluster is still
    /// open at the watermark `mark`.
    fn still_open(
        &self,
        fresh: Option<&RecordBatch>,
        candidates: &RecordBatch,
        mark: i64,
    ) -> Result<Vec<bool>> {
        let mut parts: Vec<&RecordBatch> = Vec::new();
        if let Some(open) = &self.sessions {
            parts.push(open);
        }
        if let Some(fresh) = fresh {
            parts.push(fresh);
        }
        let first_candidate: usize = parts.iter().map(|b| b.num_rows()).sum();
        parts.push(candidates);
        let all = concat_batches(&candidates.schema(), parts)?;
        let (cluster_of, bounds) = self.clusters(&all, first_candidate)?;
        Ok((first_candidate..all.num_rows())
            .map(|row| bounds[cluster_of[row]].end > mark)
            .collect())
    }

    /// The verdict on each event time of the `candidates`, from which of
    /// them were `kept`.
    fn judge<'a>(&self, candidates: &'a RecordBatch, kept: &'a [bool]) -> Result<Judgement<'a>> {
        let starts = millis_column(candidates, self.start_column)?;
        let verdicts = verdicts(&starts, kept);
        let mixed_keys = if verdicts.values().any(|v| *v == Verdict::Mixed) {
            Some(self.group_keys(candidates)?)
        } else {
            None
        };
        Ok(Judgement {
            candidates,
            kept,
            starts,
            verdicts,
            mixed_keys,
        })
    }

    /// Which of `rows` are kept, by the verdict on their event time.
    async fn keep_mask(&self, rows: &OnTime, judgement: &Judgement<'_>) -> Result<BooleanArray> {
        let mut keep = Vec::with_capacity(rows.rows.num_rows());
        for row in 0..rows.rows.num_rows() {
            let time = rows.times.value(row);
            keep.push(match judgement.verdicts.get(&time) {
                Some(Verdict::Kept) => true,
                Some(Verdict::Mixed) => self.kept_in_its_group(rows, row, judgement).await?,
                Some(Verdict::Late) | None => false,
            });
        }
        Ok(BooleanArray::from(keep))
    }

    /// For an event time kept in some groups only: whether the candidate of
    /// `row`'s own group was kept.
    async fn kept_in_its_group(
        &self,
        rows: &OnTime,
        row: usize,
        judgement: &Judgement<'_>,
    ) -> Result<bool> {
        let time = rows.times.value(row);
        let one = OnTime {
            input: rows.input,
            rows: rows.rows.slice(row, 1),
            times: rows.times.slice(row, 1),
        };
        Ok(
            match (self.row_sessions(&[one]).await?, &judgement.mixed_keys) {
                (Some(session), Some(keys)) if session.num_rows() == 1 => {
                    let own = self.group_keys(&session)?;
                    (0..judgement.candidates.num_rows()).any(|c| {
                        judgement.starts[c] == time
                            && judgement.kept[c]
                            && keys.row(c) == own.row(0)
                    })
                }
                _ => false,
            },
        )
    }

    /// Routes the rows `keep` marks to the event clock as rescued (seen at
    /// `time`), the others as late.
    fn route(
        &mut self,
        rows: &OnTime,
        keep: &BooleanArray,
        time: DateTime<Utc>,
        report: &mut EventReport,
    ) -> Result<()> {
        let rescued = OnTime {
            input: rows.input,
            rows: filter_record_batch(&rows.rows, keep)?,
            times: filter_times(&rows.times, keep)?,
        };
        let late = not(keep)?;
        self.events.late(
            OnTime {
                input: rows.input,
                rows: filter_record_batch(&rows.rows, &late)?,
                times: filter_times(&rows.times, &late)?,
            },
            report,
        )?;
        if rescued.rows.num_rows() > 0 {
            self.events.rescued(&rescued, time, report);
        }
        Ok(())
    }

    /// The non-window group keys of each row, comparable.
    fn group_keys(&self, state: &RecordBatch) -> Result<datafusion::arrow::row::Rows> {
        let columns: Vec<ArrayRef> = (0..self.plan.group_columns)
            .filter(|c| *c != self.start_column && *c != self.end_column)
            .map(|c| Arc::clone(state.column(c)))
            .collect();
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        Ok(converter.convert_columns(&columns)?)
    }

    async fn finish(&self, state: RecordBatch) -> Result<Vec<RecordBatch>> {
        if state.num_rows() == 0 {
            return Ok(Vec::new());
        }
        run_on(
            &self.plan.finish,
            &self.plan.finish_input,
            vec![state],
            &self.task_ctx,
        )
        .await
    }

    /// Ends a batch cut at `time` whose on-time rows made the sessions
    /// `fresh`: rows `behind` the watermark join a session still open or
    /// are late, the sessions merge into the state, the watermark moves,
    /// and what the emit mode says is emitted.
    async fn end_batch(
        &mut self,
        mut fresh: Option<RecordBatch>,
        behind: Vec<OnTime>,
        mut report: EventReport,
        time: DateTime<Utc>,
        ended: &[bool],
    ) -> Result<Option<Emission>> {
        let mut batches = Vec::new();
        if !behind.is_empty()
            && let Some(mark) = self.events.clock.current()
        {
            fresh = self.rescue(fresh, behind, mark, time, &mut report).await?;
        }
        if let Some(fresh) = fresh {
            let old = self.sessions.take();
            let (merged, touched) = self.merge(old, fresh).await?;
            self.sessions = Some(merged);
            if self.events.emit == EmitMode::OnUpdate {
                batches = self.finish(touched).await?;
            }
        }
        let mark = self.events.advance(time, ended);
        report.watermark = mark;
        if let Some(mark) = mark
            && let Some(closed) = self.take_closed(mark)?
            && self.events.emit == EmitMode::OnWindowClose
        {
            batches = self.finish(closed).await?;
        }
        Ok(Some(Emission {
            batches,
            window: None,
            event: Some(report),
        }))
    }

    /// Takes the sessions the watermark `mark` has closed out of the state.
    fn take_closed(&mut self, mark: i64) -> Result<Option<RecordBatch>> {
        let Some(sessions) = self.sessions.take() else {
            return Ok(None);
        };
        let ends = millis_column(&sessions, self.end_column)?;
        let closed: BooleanArray = ends.iter().map(|end| Some(*end <= mark)).collect();
        if closed.true_count() == 0 {
            self.sessions = Some(sessions);
            return Ok(None);
        }
        let open = filter_record_batch(&sessions, &not(&closed)?)?;
        let closed = filter_record_batch(&sessions, &closed)?;
        self.sessions = (open.num_rows() > 0).then_some(open);
        Ok(Some(closed))
    }
}

/// What became of the rows behind the watermark at one event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Kept,
    Late,
    /// Kept in some groups, late in others.
    Mixed,
}

/// The candidate sessions of the rows behind the watermark, judged (see
/// [`SessionEngine::rescue`]).
struct Judgement<'a> {
    /// One session per group and event time, as partial state.
    candidates: &'a RecordBatch,
    /// Whether each candidate is kept.
    kept: &'a [bool],
    /// Each candidate's event time (its `window_start`).
    starts: Vec<i64>,
    /// The verdict on each event time.
    verdicts: HashMap<i64, Verdict>,
    /// The candidates' group keys, when some event time is mixed.
    mixed_keys: Option<datafusion::arrow::row::Rows>,
}

/// Per event time: whether its candidates were kept (all, none, or some:
/// then the group of each row decides).
fn verdicts(starts: &[i64], kept: &[bool]) -> HashMap<i64, Verdict> {
    let mut verdicts: HashMap<i64, Verdict> = HashMap::new();
    for (start, kept) in starts.iter().zip(kept) {
        let entry =
            verdicts
                .entry(*start)
                .or_insert(if *kept { Verdict::Kept } else { Verdict::Late });
        if (*entry == Verdict::Kept) != *kept {
            *entry = Verdict::Mixed;
        }
    }
    verdicts
}

/// A window column of a state as milliseconds (never null in a state).
fn millis_column(state: &RecordBatch, column: usize) -> Result<Vec<i64>> {
    let values = state
        .column(column)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| BrookError::Internal("a session bound is not a timestamp".into()))?;
    Ok((0..values.len()).map(|i| values.value(i)).collect())
}

#[async_trait]
impl BatchEngine for SessionEngine {
    fn describe(&self) -> String {
        let rows = if self.batch_sessions.is_some() {
            "a batch's rows of one group whose sessions [ts, ts + gap) overlap are merged into one session, then aggregated into partial state"
        } else {
            "each row enters as a session [ts, ts + gap) of partial state"
        };
        format!(
            "{}\nincremental: {rows}; a group's overlapping sessions merge after every batch; retains one state row per open session\na batch's rows are judged and merged into sessions while the batch arrives; rows behind the watermark wait for its tick, where they join a session still open or are late",
            self.events.describe()
        )
    }

    fn schema(&self) -> SchemaRef {
        self.plan.finish.schema()
    }

    async fn on_batch(&mut self, batch: &MicroBatch) -> Result<Option<Emission>> {
        let (on_time, behind, report) = self.events.sort_out(batch)?;
        let fresh = self.batch_sessions(&on_time).await?;
        self.end_batch(fresh, behind, report, batch.time, &batch.ended)
            .await
    }

    /// Each chunk of the batch is judged and merged into sessions (partial
    /// state) as it arrives; rows behind the watermark wait for the tick,
    /// where they may still join a session this batch extends.
    async fn on_live_batch(&mut self, batch: &LiveBatch) -> Result<Option<Emission>> {
        let mut report = EventReport::default();
        let mut fresh: Option<RecordBatch> = None;
        let mut behind = Vec::new();
        // The batch's sessions are merged where they overlap once they hold
        // this many rows; then at twice what the merge left, so that a
        // batch of many sessions that do not overlap is not merged again
        // and again (the merges stay linear in the batch's sessions).
        let mut merge_at = FOLD_CHUNK_ROWS;
        while let Some(chunk) = batch.next_chunk(FOLD_CHUNK_ROWS).await {
            let (on_time, chunk_behind, part) = self.events.sort_out_rows(&chunk, Utc::now())?;
            report.absorb(part);
            behind.extend(chunk_behind);
            let Some(sessions) = self.batch_sessions(&on_time).await? else {
                continue;
            };
            let joined = match fresh.take() {
                Some(fresh) => concat_batches(&sessions.schema(), [&fresh, &sessions])?,
                None => sessions,
            };
            fresh = Some(if joined.num_rows() >= merge_at {
                let merged = self.merge(None, joined).await?.0;
                merge_at = FOLD_CHUNK_ROWS.max(2 * merged.num_rows());
                merged
            } else {
                joined
            });
        }
        let end = batch.end().await;
        self.end_batch(fresh, behind, report, end.time, &end.ended())
            .await
    }
    async fn on_end(&mut self) -> Result<Option<Emission>> {
        self.events.end();
        let Some(closed) = self.take_closed(END_OF_TIME)? else {
            return Ok(None);
        };
        if self.events.emit != EmitMode::OnWindowClose {
            return Ok(None);
        }
        Ok(Some(end_of_input(self.finish(closed).await?)))
    }

    async fn on_stop(&mut self) -> Result<Option<Emission>> {
        self.events.end();
        Ok(None)
    }

    fn retained(&self) -> Retained {
        let mut held = Retained::default();
        if let Some(sessions) = &self.sessions {
            held.add(sessions);
            held.batches = 1;
        }
        held
    }

    fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = vec![self.events.snapshot()?];
        if let Some(sessions) = &self.sessions {
            batches.push(state::label(sessions.clone(), Part::Sessions)?);
        }
        Ok(batches)
    }

    async fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.events.restore(&batches)?;
        self.sessions = None;
        for batch in batches {
            match state::part_of(&batch)? {
                Part::EventClock => {}
                Part::Sessions => self.sessions = Some(state::unlabel(batch)?),
                other => {
                    return Err(BrookError::Internal(format!(
                        "a SESSION state holds a '{other}' part"
                    )));
                }
            }
        }
        Ok(())
    }
}
