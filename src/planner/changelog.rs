//! Queries over changelog streams: which reads of a changelog can take
//! rows back (`RUNNING`), which cannot (per-batch aggregates, windows) and
//! why, and the engine of `RUNNING` over a changelog.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;

use super::{ContinuousPlan, Planned, Planner};
use crate::catalog::stream_table::BatchSlot;
use crate::catalog::windows::format_duration;
use crate::catalog::windows::{OutputMode, WindowKind};
use crate::engine::retracting::RetractingEngine;
use crate::engine::temporal_join::{EventColumn, TemporalJoinEngine};
use crate::error::{BrookError, Result};
use crate::query::engine::BatchEngine;

impl Planner<'_> {
    /// The plan of an event-time temporal join, if the query is one.
    pub(super) fn temporal_join_plan(
        &self,
        planned: &Planned,
        scans: &[(usize, Vec<Arc<BatchSlot>>)],
        streams: &mut Vec<String>,
        window: Option<&WindowKind>,
    ) -> Result<Option<ContinuousPlan>> {
        let Some(engine) = self.temporal_join(planned, scans, streams, window)? else {
            return Ok(None);
        };
        Ok(Some(ContinuousPlan {
            description: format!(
                "continuous query over {} (trigger interval {})\n{}",
                streams.join(", "),
                format_duration(self.batch_interval),
                engine.describe()
            ),
            streams: streams.clone(),
            notices: Vec::new(),
            engine,
            physical: Arc::clone(&planned.physical),
            logical: planned.logical.clone(),
            late_route: None,
        }))
    }

    /// The engine of an event-time temporal join, when the query joins a
    /// stream with a table kept current that declares an event time; the
    /// table's changelog then becomes the query's second input.
    pub(super) fn temporal_join(
        &self,
        planned: &Planned,
        scans: &[(usize, Vec<Arc<BatchSlot>>)],
        streams: &mut Vec<String>,
        window: Option<&WindowKind>,
    ) -> Result<Option<Box<dyn BatchEngine>>> {
        let [versioned] = planned.versioned.as_slice() else {
            if let Some(second) = planned.versioned.get(1) {
                return Err(BrookError::invalid(format!(
                    "a query joins one table with event time at a time ('{}' is a second)",
                    second.table
                )));
            }
            return Ok(None);
        };
        let table = &versioned.table;
        if window.is_some() || streams.len() != 1 {
            return Err(BrookError::invalid(format!(
                "table '{table}' declares an event time: one stream is joined with it in event time, outside HOP, TUMBLE, SESSION and RUNNING (join it in a query of its own)"
            )));
        }
        let registered = self.streams.read();
        let event = |name: &str| -> Result<(Arc<crate::stream::LiveStream>, EventColumn)> {
            let stream = registered.get(name).cloned().ok_or_else(|| {
                BrookError::Internal(format!("stream '{name}' was planned but is not registered"))
            })?;
            let Some(event_time) = stream.event_time() else {
                return Err(BrookError::invalid(format!(
                    "table '{table}' declares an event time, and stream '{name}' joined with it does not: declare WATERMARK FOR on the stream (the join meets each row's version as of its event time)"
                )));
            };
            let column = event_time.column_index(name, &stream.schema)?;
            let delay_ms = i64::try_from(event_time.delay.as_millis()).unwrap_or(i64::MAX);
            Ok((stream, EventColumn { column, delay_ms }))
        };
        let (_, stream_time) = event(&streams[0])?;
        let (table_stream, table_time) = event(table)?;
        let Some(changelog) = table_stream.changelog() else {
            return Err(BrookError::Internal(format!(
                "table '{table}' has no changelog"
            )));
        };
        let declared = versioned.rows.schema();
        let key = changelog
            .key
            .iter()
            .map(|k| declared.index_of(k))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let stream_slots = scans
            .iter()
            .find(|(input, _)| *input == 0)
            .map(|(_, slots)| slots.clone())
            .unwrap_or_default();
        let engine = TemporalJoinEngine::new(
            Arc::clone(&planned.physical),
            planned.state.task_ctx(),
            stream_slots,
            Arc::clone(&versioned.slot),
            (stream_time, table_time),
            (table.clone(), key, versioned.rows.clone()),
        )?;
        drop(registered);
        streams.push(table.clone());
        Ok(Some(Box::new(engine)))
    }

    /// The schema and key of the changelog `plan` reads, if it reads one;
    /// an error when it reads it in a way that cannot take rows back.
    pub(super) fn changelog_read(
        &self,
        plan: &LogicalPlan,
        streams: &[String],
        window: Option<&WindowKind>,
    ) -> Result<Option<(SchemaRef, Vec<String>)>> {
        let registered = self.streams.read();
        let Some((name, stream)) = streams.iter().find_map(|name| {
            let stream = registered.get(name)?;
            stream
                .changelog()
                .is_some()
                .then(|| (name, Arc::clone(stream)))
        }) else {
            return Ok(None);
        };
        let Some(changelog) = stream.changelog().cloned() else {
            return Ok(None);
        };
        match window {
            Some(WindowKind::Running(_)) if streams.len() == 1 => {
                Ok(Some((Arc::clone(&stream.schema), changelog.key)))
            }
            Some(WindowKind::Running(_)) => Err(BrookError::invalid(format!(
                "stream '{name}' is a changelog: a RUNNING query reads it alone (joins with a changelog are not supported yet)"
            ))),
            Some(other) => Err(BrookError::invalid(format!(
                "stream '{name}' is a changelog (its rows are changes: +I, -U, +U, -D), and a {other} window cannot take back a row once it is counted; aggregate it with RUNNING({name}), which applies updates and deletes"
            ))),
            None => match stateful_operator(plan) {
                None => Ok(None),
                Some(what) => Err(BrookError::invalid(format!(
                    "stream '{name}' is a changelog (its rows are changes: +I, -U, +U, -D): a per-batch query may filter and project them, but {what} would treat a delete as a row; aggregate it with RUNNING({name}), which applies updates and deletes"
                ))),
            },
        }
    }
}

/// The first operator of `plan` that is not row by row (a per-batch query
/// over a changelog may only filter and project its changes).
fn stateful_operator(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        let what = match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::TableScan(_)
            | LogicalPlan::SubqueryAlias(_) => return Ok(TreeNodeRecursion::Continue),
            LogicalPlan::Aggregate(_) => "an aggregate",
            LogicalPlan::Join(_) => "a join",
            LogicalPlan::Distinct(_) => "DISTINCT",
            LogicalPlan::Sort(_) => "ORDER BY (which reorders changes)",
            LogicalPlan::Limit(_) => "LIMIT (which drops changes)",
            LogicalPlan::Window(_) => "a window function",
            _ => "this operator",
        };
        found = Some(what.to_string());
        Ok(TreeNodeRecursion::Stop)
    });
    found
}

/// A `RUNNING` query over a changelog: aggregates that take rows back.
pub(super) fn retracting_engine(
    mode: OutputMode,
    planned: &Planned,
    scans: Vec<(usize, Arc<BatchSlot>)>,
    schema: SchemaRef,
    key: &[String],
) -> Result<Box<dyn BatchEngine>> {
    let [(input, slot)] = scans.as_slice() else {
        return Err(BrookError::invalid(
            "RUNNING over a changelog reads its stream once, in one scan".to_string(),
        ));
    };
    let engine = RetractingEngine::new(
        mode,
        &planned.physical,
        planned.state.task_ctx(),
        *input,
        Arc::clone(slot),
        schema,
        key,
    )
    .map_err(|reason| {
        BrookError::invalid(format!(
            "RUNNING over a changelog needs one GROUP BY aggregate over row-by-row operators; here {reason}"
        ))
    })?;
    Ok(Box::new(engine))
}
