//! Finding an interval join in a physical plan: one hash or nested-loop
//! join of two streams, each side a stream scan under row-by-row operators,
//! whose `ON` bounds the difference of the two streams' event times
//! (`p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' MINUTE`, or pairs of
//! `<`, `<=`, `>`, `>=`). The bounds are read from the join's own filter,
//! traced through the projections below it to the scanned columns, so the
//! physical orientation (which side DataFusion builds) is the one used.

use std::sync::Arc;

use datafusion::common::{JoinSide, JoinType, NullEquality, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::expressions::{BinaryExpr, CastExpr, Column, Literal, TryCastExpr};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::streaming::StreamingTableExec;

use crate::catalog::stream_table::BatchSlot;

/// `right time - left time` must lie in `[lo, hi]` (milliseconds; `None`
/// is unbounded) for a pair, in the join's physical orientation. Rounded
/// outwards to whole milliseconds, so it may be looser than the `ON`
/// clause, never tighter: DataFusion still evaluates the clause itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TimeBounds {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

impl TimeBounds {
    /// Whether either side is bounded.
    pub fn any(&self) -> bool {
        self.lo.is_some() || self.hi.is_some()
    }
}

/// How the join matches keys.
pub(crate) enum JoinMatch {
    /// Equal keys (`on`), then the filter.
    Hash {
        on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
        null_equality: NullEquality,
    },
    /// The filter alone.
    NestedLoop,
}

/// One side of the join as found in the plan.
pub(crate) struct SideSite {
    /// The plan below the join on this side (scan, filters, projections).
    pub child: Arc<dyn ExecutionPlan>,
    /// The slot of the stream scan it reads.
    pub slot: Arc<BatchSlot>,
    /// The stream's index among the query's inputs.
    pub input: usize,
    /// The stream's event-time column in the stream's schema.
    pub event_column: usize,
    /// A column of `child`'s output holding the event time plus an offset
    /// (milliseconds).
    pub time: (usize, i64),
}

/// An interval join found in a plan: its node, how it matches, and its
/// two sides (physical left first).
pub(crate) struct JoinSite {
    pub node: Arc<dyn ExecutionPlan>,
    pub matching: JoinMatch,
    pub filter: Option<JoinFilter>,
    pub join_type: JoinType,
    /// The join's own projection of `[left columns, right columns]`.
    pub projection: Option<Vec<usize>>,
    pub sides: [SideSite; 2],
    pub bounds: TimeBounds,
}

/// What a query with a join of two streams is.
pub(crate) enum Found {
    /// Not one join of two streams: planned as before.
    NotAJoin,
    /// A join of two streams without a bound on their event times: it
    /// joins rows of the same batch only.
    Unbounded,
    /// An interval join.
    Interval(Box<JoinSite>),
}

/// Looks for an interval join in `plan`, whose stream scans are `scans`
/// (`(input, slot)`), the streams' event-time columns being
/// `event_columns[input]` (`None` for a stream without `WATERMARK`).
pub(crate) fn find(
    plan: &Arc<dyn ExecutionPlan>,
    scans: &[(usize, Arc<BatchSlot>)],
    event_columns: &[Option<usize>],
) -> Found {
    let mut joins = Vec::new();
    collect_joins(plan, &mut joins);
    let [node] = joins.as_slice() else {
        return Found::NotAJoin;
    };
    let Some((left, right, filter, join_type, projection, matching)) = parts(node) else {
        return Found::NotAJoin;
    };
    let (Some(left_scan), Some(right_scan)) = (scan_of(&left, scans), scan_of(&right, scans))
    else {
        return Found::NotAJoin;
    };
    if left_scan.0 == right_scan.0 {
        return Found::NotAJoin;
    }
    let columns = (
        event_columns.get(left_scan.0).copied().flatten(),
        event_columns.get(right_scan.0).copied().flatten(),
    );
    let (Some(left_event), Some(right_event)) = columns else {
        return Found::Unbounded;
    };
    let children = [&left, &right];
    let events = [left_event, right_event];
    let bounds = filter
        .as_ref()
        .map(|filter| bounds_of(filter, children, events))
        .unwrap_or_default();
    if !bounds.any() {
        return Found::Unbounded;
    }
    let (Some(left_time), Some(right_time)) = (
        time_column(&left, left_event),
        time_column(&right, right_event),
    ) else {
        return Found::Unbounded;
    };
    let side =
        |child: Arc<dyn ExecutionPlan>, scan: (usize, Arc<BatchSlot>), event, time| SideSite {
            child,
            slot: scan.1,
            input: scan.0,
            event_column: event,
            time,
        };
    Found::Interval(Box::new(JoinSite {
        node: Arc::clone(node),
        matching,
        filter,
        join_type,
        projection,
        sides: [
            side(left, left_scan, left_event, left_time),
            side(right, right_scan, right_event, right_time),
        ],
        bounds,
    }))
}

type JoinParts = (
    Arc<dyn ExecutionPlan>,
    Arc<dyn ExecutionPlan>,
    Option<JoinFilter>,
    JoinType,
    Option<Vec<usize>>,
    JoinMatch,
);

/// The inputs, filter, type, projection and matching of a join node.
fn parts(node: &Arc<dyn ExecutionPlan>) -> Option<JoinParts> {
    if let Some(hash) = node.downcast_ref::<HashJoinExec>() {
        return Some((
            Arc::clone(hash.left()),
            Arc::clone(hash.right()),
            hash.filter().cloned(),
            *hash.join_type(),
            hash.projection.as_ref().map(|p| p.to_vec()),
            JoinMatch::Hash {
                on: hash.on().to_vec(),
                null_equality: hash.null_equality(),
            },
        ));
    }
    let nested = node.downcast_ref::<NestedLoopJoinExec>()?;
    Some((
        Arc::clone(nested.left()),
        Arc::clone(nested.right()),
        nested.filter().cloned(),
        *nested.join_type(),
        nested.projection().as_ref().map(|p| p.to_vec()),
        JoinMatch::NestedLoop,
    ))
}

/// Every join node of `plan`, any kind.
fn collect_joins(plan: &Arc<dyn ExecutionPlan>, joins: &mut Vec<Arc<dyn ExecutionPlan>>) {
    let is_join = plan.is::<HashJoinExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<CrossJoinExec>()
        || plan.is::<SortMergeJoinExec>()
        || plan.is::<SymmetricHashJoinExec>()
        || plan.is::<PiecewiseMergeJoinExec>();
    if is_join {
        joins.push(Arc::clone(plan));
    }
    for child in plan.children() {
        collect_joins(child, joins);
    }
}

/// The one stream scan under `child`, when its other operators keep rows
/// row by row (filters, projections).
pub(crate) fn scan_of(
    child: &Arc<dyn ExecutionPlan>,
    scans: &[(usize, Arc<BatchSlot>)],
) -> Option<(usize, Arc<BatchSlot>)> {
    if let Some(scan) = child.downcast_ref::<StreamingTableExec>() {
        let [partition] = scan.partitions().as_slice() else {
            return None;
        };
        return scans
            .iter()
            .find(|(_, slot)| std::ptr::addr_eq(Arc::as_ptr(partition), Arc::as_ptr(slot)))
            .cloned();
    }
    let row_by_row =
        child.is::<ProjectionExec>() || child.is::<FilterExec>() || child.is::<CooperativeExec>();
    match child.children().as_slice() {
        [input] if row_by_row => scan_of(input, scans),
        _ => None,
    }
}

/// The scanned column (index in the stream's schema) and the offset
/// (nanoseconds) column `index` of `plan`'s output is, when it is a
/// scanned column plus a constant.
pub(crate) fn trace(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<(usize, i128)> {
    if let Some(scan) = plan.downcast_ref::<StreamingTableExec>() {
        return Some(match scan.projection() {
            Some(projection) => (*projection.get(index)?, 0),
            None => (index, 0),
        });
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let (column, offset) = linear(&projection.expr().get(index)?.expr)?;
        let (scanned, below) = trace(projection.input(), column)?;
        return Some((scanned, offset + below));
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let index = match filter.projection() {
            Some(projection) => *projection.get(index)?,
            None => index,
        };
        return trace(filter.input(), index);
    }
    if plan.is::<CooperativeExec>() {
        return trace(plan.children().first()?, index);
    }
    None
}

/// `expr` as a column plus a constant (nanoseconds), when it is one.
pub(crate) fn linear(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, i128)> {
    if let Some(column) = expr.downcast_ref::<Column>() {
        return Some((column.index(), 0));
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return linear(cast.expr());
    }
    if let Some(cast) = expr.downcast_ref::<TryCastExpr>() {
        return linear(cast.expr());
    }
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    match binary.op() {
        Operator::Plus => match (linear(binary.left()), constant(binary.right())) {
            (Some((column, offset)), Some(k)) => Some((column, offset + k)),
            _ => {
                let (column, offset) = linear(binary.right())?;
                Some((column, offset + constant(binary.left())?))
            }
        },
        Operator::Minus => {
            let (column, offset) = linear(binary.left())?;
            Some((column, offset - constant(binary.right())?))
        }
        _ => None,
    }
}

/// An interval or duration literal in nanoseconds; `None` for anything
/// else, a month (whose length varies) included.
fn constant(expr: &Arc<dyn PhysicalExpr>) -> Option<i128> {
    const NANOS_PER_DAY: i128 = 86_400_000_000_000;
    let literal = expr.downcast_ref::<Literal>()?;
    match literal.value() {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i128::from(v.days) * NANOS_PER_DAY + i128::from(v.nanoseconds))
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i128::from(v.days) * NANOS_PER_DAY + i128::from(v.milliseconds) * 1_000_000)
        }
        ScalarValue::DurationSecond(Some(v)) => Some(i128::from(*v) * 1_000_000_000),
        ScalarValue::DurationMillisecond(Some(v)) => Some(i128::from(*v) * 1_000_000),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(i128::from(*v) * 1_000),
        ScalarValue::DurationNanosecond(Some(v)) => Some(i128::from(*v)),
        _ => None,
    }
}

/// The bounds on `right time - left time` that `filter` sets: every
/// comparison of one side's event time (plus a constant) with the other's.
fn bounds_of(
    filter: &JoinFilter,
    children: [&Arc<dyn ExecutionPlan>; 2],
    events: [usize; 2],
) -> TimeBounds {
    // An operand as (side: 0 left / 1 right, offset in ns) of its side's
    // event time.
    let operand = |expr: &Arc<dyn PhysicalExpr>| -> Option<(usize, i128)> {
        let (column, offset) = linear(expr)?;
        let index = filter.column_indices().get(column)?;
        let side = match index.side {
            JoinSide::Left => 0,
            JoinSide::Right => 1,
            JoinSide::None => return None,
        };
        let (scanned, below) = trace(children[side], index.index)?;
        (scanned == events[side]).then_some((side, offset + below))
    };
    let (mut lo, mut hi): (Option<i128>, Option<i128>) = (None, None);
    for conjunct in split_conjunction(filter.expression()) {
        let Some(binary) = conjunct.downcast_ref::<BinaryExpr>() else {
            continue;
        };
        let (Some((side_a, off_a)), Some((side_b, off_b))) =
            (operand(binary.left()), operand(binary.right()))
        else {
            continue;
        };
        // a + off_a OP b + off_b, as d = right - left OP k.
        let (op, k) = match (side_a, side_b) {
            (1, 0) => (*binary.op(), off_b - off_a),
            (0, 1) => match binary.op().swap() {
                Some(op) => (op, off_a - off_b),
                None => continue,
            },
            _ => continue,
        };
        let (raise_lo, lower_hi) = match op {
            Operator::Gt | Operator::GtEq => (true, false),
            Operator::Lt | Operator::LtEq => (false, true),
            Operator::Eq => (true, true),
            _ => continue,
        };
        if raise_lo {
            lo = Some(lo.map_or(k, |lo| lo.max(k)));
        }
        if lower_hi {
            hi = Some(hi.map_or(k, |hi| hi.min(k)));
        }
    }
    let to_millis = |ns: i128, up: bool| -> i64 {
        let ms = if up {
            ns.div_euclid(1_000_000) + i128::from(ns.rem_euclid(1_000_000) != 0)
        } else {
            ns.div_euclid(1_000_000)
        };
        i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
    };
    TimeBounds {
        lo: lo.map(|ns| to_millis(ns, false)),
        hi: hi.map(|ns| to_millis(ns, true)),
    }
}

/// A column of `child`'s output that holds the event time plus a whole
/// number of milliseconds, the plain event time first.
fn time_column(child: &Arc<dyn ExecutionPlan>, event: usize) -> Option<(usize, i64)> {
    let traced: Vec<(usize, i128)> = (0..child.schema().fields().len())
        .filter_map(|column| {
            let (scanned, offset) = trace(child, column)?;
            (scanned == event && offset % 1_000_000 == 0).then_some((column, offset))
        })
        .collect();
    let (column, offset) = traced
        .iter()
        .find(|(_, offset)| *offset == 0)
        .or_else(|| traced.first())?;
    Some((*column, i64::try_from(offset / 1_000_000).ok()?))
}
