//! Queries over changelog streams: which reads of a changelog can take
//! rows back (`RUNNING`), which cannot (per-batch aggregates, windows) and
//! why, and the engine of `RUNNING` over a changelog.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;

use super::{Planned, Planner};
use crate::catalog::stream_table::BatchSlot;
use crate::catalog::windows::{OutputMode, WindowKind};
use crate::engine::retracting::RetractingEngine;
use crate::error::{BrookError, Result};
use crate::query::engine::BatchEngine;

impl Planner<'_> {
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
