//! SQL functions brook adds to DataFusion, and the plan rewrite that makes
//! the common use of one of them cheap.
//!
//! - `split(text, delimiter)` ([`split`]): the parts of `text` as a list of
//!   views into `text`'s own buffers, so splitting copies no string bytes.
//! - [`split_unnest`]: `unnest(split(text, 'd'))`, brook's word split, runs
//!   as one operator that writes the parts straight into a flat column,
//!   without building the list that `unnest` would take apart again.

use datafusion::logical_expr::ScalarUDF;

pub(crate) mod split;
pub(crate) mod split_unnest;

pub(crate) use split_unnest::SplitUnnestRule;

/// The functions brook registers in every [`crate::StreamContext`].
pub(crate) fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(split::Split::new())]
}
