//! brook's own physical operators, and the optimizer rules that put them in
//! DataFusion's plans. Each replaces a common shape of a per-batch plan
//! with one operator that does the same work with less set-up and copying;
//! everything else stays DataFusion's. Each runs the same rows through and
//! gives the same results (the tests compare them with DataFusion's).
//!
//! - [`split_unnest`]: `unnest(split(text, 'd'))` in one operator.
//! - [`text_group_by`]: `GROUP BY` one text column.
//! - [`AbsorbRenamesRule`]: a projection that only renames the columns of
//!   one of these operators becomes part of it.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, internal_err};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

pub(crate) mod split_unnest;
pub(crate) mod text_group_by;

use split_unnest::SplitUnnestExec;
use text_group_by::TextGroupByExec;

/// What a plan is for, which decides the operators brook may put in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanShape {
    /// Executed as it is, once per batch or window.
    Executed,
    /// Taken apart at its aggregate into partial and final phases
    /// (incremental windows, running aggregates): its aggregates stay
    /// DataFusion's, whose phases brook can build.
    Split,
}

/// DataFusion's physical optimizer rules followed by brook's for `shape`,
/// in the order they must run.
pub(crate) fn optimizer_rules(
    shape: PlanShape,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    rules.push(Arc::new(split_unnest::SplitUnnestRule));
    if shape == PlanShape::Executed {
        rules.push(Arc::new(text_group_by::TextGroupByRule));
    }
    rules.push(Arc::new(AbsorbRenamesRule));
    rules
}

/// Folds a projection that only renames its input's columns, in place,
/// into the brook operator below it: one operator less to set up and run
/// per batch.
#[derive(Debug, Default)]
pub(crate) struct AbsorbRenamesRule;

impl PhysicalOptimizerRule for AbsorbRenamesRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_each(plan, |node| {
            let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
                return Ok(None);
            };
            if !renames_only(projection) {
                return Ok(None);
            }
            let input = projection.input();
            let properties = Arc::clone(projection.properties());
            Ok(
                if let Some(split) = input.downcast_ref::<SplitUnnestExec>() {
                    Some(Arc::new(split.renamed(projection.schema(), properties)))
                } else {
                    input.downcast_ref::<TextGroupByExec>().map(|group_by| {
                        Arc::new(group_by.renamed(projection.schema(), properties)) as _
                    })
                },
            )
        })
    }

    fn name(&self) -> &str {
        "brook_absorb_renames"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with each node for which `replacement` gives a new node replaced
/// by it, children first.
fn replace_each(
    plan: Arc<dyn ExecutionPlan>,
    replacement: impl Fn(&Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(match replacement(&node)? {
            Some(new) => Transformed::yes(new),
            None => Transformed::no(node),
        })
    })
    .map(|transformed| transformed.data)
}

/// The one child of a brook operator, from `replace_children`' arguments.
fn only_child(
    mut children: Vec<Arc<dyn ExecutionPlan>>,
    operator: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    match (children.pop(), children.is_empty()) {
        (Some(child), true) => Ok(child),
        _ => internal_err!("{operator} has exactly one child"),
    }
}

/// Whether `projection` outputs exactly its input's columns, in order,
/// under (possibly) new names.
fn renames_only(projection: &ProjectionExec) -> bool {
    projection.expr().len() == projection.input().schema().fields().len()
        && projection.expr().iter().enumerate().all(|(index, item)| {
            item.expr
                .downcast_ref::<Column>()
                .is_some_and(|column| column.index() == index)
        })
}

/// A projection of `input`'s columns, in order, named as in `schema`.
fn renaming(input: Arc<dyn ExecutionPlan>, schema: &SchemaRef) -> Result<Arc<dyn ExecutionPlan>> {
    let input_schema = input.schema();
    let exprs: Vec<ProjectionExpr> = schema
        .fields()
        .iter()
        .zip(input_schema.fields())
        .enumerate()
        .map(|(index, (output, field))| {
            ProjectionExpr::new(
                Arc::new(Column::new(field.name(), index)),
                output.name().clone(),
            )
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
}
