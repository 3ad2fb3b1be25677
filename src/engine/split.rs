//! Splitting a window query's physical plan at its aggregate, so that each
//! batch is aggregated once and windows merge partial state.
//!
//! A query qualifies when its plan has one `GROUP BY` aggregate (plain
//! grouping, no grouping sets), every aggregate function can merge partial
//! state (`COUNT`, `SUM`, `MIN`, `MAX`, `AVG`, ... without `DISTINCT` or
//! `ORDER BY`), and below the aggregate there are only row-by-row operators
//! over the window scan (projections, filters, unnest). `window_start` and
//! `window_end` may be grouped by, but not computed with below the
//! aggregate: a batch's partial state is built before the windows it falls
//! into are known, with the window columns null; they are filled in when a
//! window's states are merged.
//!
//! Three plans come out, all sharing the query's own operators:
//! - *partial*: the aggregate in `Partial` mode over the original subtree;
//!   it reads the batch from the window scan's slot and yields one pane;
//! - *reduce*: `PartialReduce` over a slot, merging panes into one pane;
//! - *finish*: the query's plan with the aggregate in `Final` mode, reading
//!   merged panes from a slot.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::unnest::UnnestExec;

use crate::catalog::stream_table::BatchSlot;
use crate::catalog::windows::{WINDOW_END, WINDOW_START};
use crate::exec::split_unnest::SplitUnnestExec;

/// Which end of its window a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowBound {
    Start,
    End,
}

/// A window query's plan split at its aggregate (see the module docs).
pub(crate) struct IncrementalPlan {
    pub partial: Arc<dyn ExecutionPlan>,
    pub reduce: Arc<dyn ExecutionPlan>,
    pub reduce_input: Arc<BatchSlot>,
    pub finish: Arc<dyn ExecutionPlan>,
    pub finish_input: Arc<BatchSlot>,
    /// Columns of a pane that hold a window bound (group keys).
    pub window_keys: Vec<(usize, WindowBound)>,
    /// The number of group key columns at the front of a pane.
    pub group_columns: usize,
}

impl std::fmt::Debug for IncrementalPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncrementalPlan")
            .field("window_keys", &self.window_keys)
            .field("group_columns", &self.group_columns)
            .finish_non_exhaustive()
    }
}

/// Splits `plan` for incremental execution, or says why it cannot be.
pub(crate) fn split(plan: &Arc<dyn ExecutionPlan>) -> Result<IncrementalPlan, String> {
    let SplitPoint { top, raw } = find_aggregate(plan)?;
    let aggregate = raw
        .downcast_ref::<AggregateExec>()
        .ok_or("unexpected aggregate plan")?;
    check_mergeable(aggregate)?;
    // Which columns below the aggregate carry a window bound.
    let window_columns = trace_window_columns(aggregate.input())?;
    let window_keys = window_group_keys(aggregate, &window_columns)?;
    check_no_window_inputs(aggregate, &window_columns)?;
    split_at(plan, &top, aggregate, window_keys).map_err(|e| e.to_string())
}

/// The node of `plan` that gives its one aggregate's final rows, and the
/// aggregate over the raw rows (the same node, or the `Partial` half of a
/// pair); or why the plan has no one aggregate.
pub(crate) fn aggregate_of(plan: &Arc<dyn ExecutionPlan>) -> Result<SplitPoint, String> {
    find_aggregate(plan)
}

/// Where a plan is split: at its one aggregate, which DataFusion may have
/// planned as a `Final` / `Partial` pair.
pub(crate) struct SplitPoint {
    /// The node the final aggregate replaces.
    pub top: Arc<dyn ExecutionPlan>,
    /// The aggregate over the raw rows (`top` itself, or the `Partial`
    /// half of a pair).
    pub raw: Arc<dyn ExecutionPlan>,
}

/// The query's one aggregate, or why the query does not have one.
fn find_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Result<SplitPoint, String> {
    let mut aggregates = Vec::new();
    collect_aggregates(plan, &mut aggregates);
    match aggregates.as_slice() {
        [] => Err("the query has no GROUP BY aggregate".into()),
        [single] => match single.1.mode() {
            AggregateMode::Single | AggregateMode::SinglePartitioned => Ok(SplitPoint {
                top: Arc::clone(&single.0),
                raw: Arc::clone(&single.0),
            }),
            _ => Err("unexpected aggregate plan".into()),
        },
        [last, first]
            if matches!(
                last.1.mode(),
                AggregateMode::Final | AggregateMode::FinalPartitioned
            ) && *first.1.mode() == AggregateMode::Partial =>
        {
            Ok(SplitPoint {
                top: Arc::clone(&last.0),
                raw: Arc::clone(&first.0),
            })
        }
        _ => Err("the query aggregates more than once".into()),
    }
}

/// Checks that `aggregate` groups plainly and that each of its functions
/// merges partial state.
fn check_mergeable(aggregate: &AggregateExec) -> Result<(), String> {
    if !aggregate.group_expr().is_single() {
        return Err("grouping sets are not merged incrementally".into());
    }
    // Every DataFusion aggregate, built in or registered, gives its state
    // and merges states (DataFusion's own partial / final plans rest on
    // it); what depends on the order or the set of all rows does not
    // merge per batch.
    for function in aggregate.aggr_expr() {
        let name = function.fun().name().to_ascii_lowercase();
        if name == "grouping" {
            return Err("grouping() is not merged incrementally".into());
        }
        if function.is_distinct() {
            return Err(format!("{name}(DISTINCT ...) is not merged incrementally"));
        }
        if !function.order_bys().is_empty() {
            return Err(format!(
                "{name}(... ORDER BY ...) is not merged incrementally"
            ));
        }
    }
    Ok(())
}

/// The group keys that hold a window bound, by position; a key that
/// computes with a window column fails.
fn window_group_keys(
    aggregate: &AggregateExec,
    window_columns: &HashMap<String, WindowBound>,
) -> Result<Vec<(usize, WindowBound)>, String> {
    let mut window_keys = Vec::new();
    for (index, (expr, _name)) in aggregate.group_expr().expr().iter().enumerate() {
        let used = referenced(expr, window_columns);
        if used.is_empty() {
            continue;
        }
        match expr.downcast_ref::<Column>() {
            Some(column) => window_keys.push((index, window_columns[column.name()])),
            None => {
                return Err(format!(
                    "GROUP BY {expr} computes with {}; group by the column itself",
                    used.join(", ")
                ));
            }
        }
    }
    Ok(window_keys)
}

/// Checks that no aggregate argument or `FILTER` reads a window column
/// (null while a batch's partial state is built).
fn check_no_window_inputs(
    aggregate: &AggregateExec,
    window_columns: &HashMap<String, WindowBound>,
) -> Result<(), String> {
    for function in aggregate.aggr_expr() {
        for expr in function.expressions() {
            if !referenced(&expr, window_columns).is_empty() {
                return Err(format!("{}() reads a window column", function.fun().name()));
            }
        }
    }
    for filter in aggregate.filter_expr().iter().flatten() {
        if !referenced(filter, window_columns).is_empty() {
            return Err("an aggregate FILTER reads a window column".into());
        }
    }
    Ok(())
}

/// The three plans of a split at `aggregate` (reached at `top` in `plan`).
fn split_at(
    plan: &Arc<dyn ExecutionPlan>,
    top: &Arc<dyn ExecutionPlan>,
    aggregate: &AggregateExec,
    window_keys: Vec<(usize, WindowBound)>,
) -> datafusion::error::Result<IncrementalPlan> {
    let raw_schema = aggregate.input_schema();
    let partial: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        aggregate.group_expr().clone(),
        aggregate.aggr_expr().to_vec(),
        aggregate.filter_expr().to_vec(),
        Arc::clone(aggregate.input()),
        Arc::clone(&raw_schema),
    )?);
    let state_schema = partial.schema();
    let final_group_by = aggregate.group_expr().as_final();
    let (reduce_input, reduce_scan) = BatchSlot::with_scan(&state_schema)?;
    let reduce: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::PartialReduce,
        final_group_by.clone(),
        aggregate.aggr_expr().to_vec(),
        vec![None; aggregate.aggr_expr().len()],
        reduce_scan,
        Arc::clone(&raw_schema),
    )?);
    let (finish_input, finish_scan) = BatchSlot::with_scan(&state_schema)?;
    let final_aggregate: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::Final,
        final_group_by,
        aggregate.aggr_expr().to_vec(),
        vec![None; aggregate.aggr_expr().len()],
        finish_scan,
        raw_schema,
    )?);
    let finish = replace(plan, top, &final_aggregate)?;
    Ok(IncrementalPlan {
        partial,
        reduce,
        reduce_input,
        finish,
        finish_input,
        window_keys,
        group_columns: aggregate.group_expr().expr().len(),
    })
}

/// Every aggregate in `plan`, outermost first.
fn collect_aggregates(
    plan: &Arc<dyn ExecutionPlan>,
    found: &mut Vec<(Arc<dyn ExecutionPlan>, AggregateView)>,
) {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        found.push((
            Arc::clone(plan),
            AggregateView {
                mode: *aggregate.mode(),
            },
        ));
    }
    for child in plan.children() {
        collect_aggregates(child, found);
    }
}

/// What [`split`] needs to know of an aggregate while choosing.
struct AggregateView {
    mode: AggregateMode,
}

impl AggregateView {
    fn mode(&self) -> &AggregateMode {
        &self.mode
    }
}

/// Follows `window_start` / `window_end` from the window scan up through
/// the row-by-row operators below the aggregate; fails on any other
/// operator, or on one that computes with a window column.
fn trace_window_columns(
    plan: &Arc<dyn ExecutionPlan>,
) -> Result<HashMap<String, WindowBound>, String> {
    let children = plan.children();
    // A LIMIT (an operator's fetch) counts rows across the whole window,
    // not per batch: it cannot sit below a per-batch partial aggregate.
    if plan.fetch().is_some() {
        return Err(format!(
            "a LIMIT ({}) below the aggregate is not merged incrementally",
            plan.name()
        ));
    }
    if plan.is::<StreamingTableExec>() {
        let mut columns = HashMap::new();
        for field in plan.schema().fields() {
            match field.name().as_str() {
                WINDOW_START => columns.insert(field.name().clone(), WindowBound::Start),
                WINDOW_END => columns.insert(field.name().clone(), WindowBound::End),
                _ => None,
            };
        }
        return Ok(columns);
    }
    let [child] = children.as_slice() else {
        return Err(format!(
            "{} below the aggregate is not merged incrementally",
            plan.name()
        ));
    };
    let below = trace_window_columns(child)?;
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let mut columns = HashMap::new();
        for item in projection.expr() {
            let used = referenced(&item.expr, &below);
            if used.is_empty() {
                continue;
            }
            match item.expr.downcast_ref::<Column>() {
                Some(column) => {
                    columns.insert(item.alias.clone(), below[column.name()]);
                }
                None => {
                    return Err(format!(
                        "{} computes with {} below the aggregate",
                        item.expr,
                        used.join(", ")
                    ));
                }
            }
        }
        return Ok(columns);
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let used = referenced(filter.predicate(), &below);
        if !used.is_empty() {
            return Err(format!("WHERE reads {}", used.join(", ")));
        }
    } else if !(plan.is::<RepartitionExec>()
        || plan.is::<CooperativeExec>()
        || plan.is::<UnnestExec>()
        || plan.is::<SplitUnnestExec>())
    {
        return Err(format!(
            "{} below the aggregate is not merged incrementally",
            plan.name()
        ));
    }
    // Row-by-row operators keep column names.
    let names: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    Ok(below
        .into_iter()
        .filter(|(name, _)| names.contains(name))
        .collect())
}

/// The window columns `expr` reads.
fn referenced(
    expr: &Arc<dyn PhysicalExpr>,
    window_columns: &HashMap<String, WindowBound>,
) -> Vec<String> {
    let mut names: Vec<String> = collect_columns(expr)
        .into_iter()
        .map(|c| c.name().to_string())
        .filter(|name| window_columns.contains_key(name))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `plan` with the node `target` replaced by `replacement`.
pub(crate) fn replace(
    plan: &Arc<dyn ExecutionPlan>,
    target: &Arc<dyn ExecutionPlan>,
    replacement: &Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    if Arc::ptr_eq(plan, target) {
        return Ok(Arc::clone(replacement));
    }
    let children = plan.children();
    if children.is_empty() {
        return Ok(Arc::clone(plan));
    }
    let new_children = children
        .into_iter()
        .map(|child| replace(child, target, replacement))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    replace_children_if_necessary(Arc::clone(plan), new_children)
}
