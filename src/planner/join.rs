//! How the planner builds the engine of a query without a window that
//! joins two streams: an interval join when the join bounds the streams'
//! event times, else per batch (with a notice that it joins rows of the
//! same batch only).

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;

use super::{Planned, Planner, Purpose, clauses_misplaced, window_scans};
use crate::catalog::stream_table::BatchSlot;
use crate::engine::event_clock::{LateRoute, join_late_schema};
use crate::engine::interval_join::IntervalJoinEngine;
use crate::engine::join_bounds::{self, Found, JoinSite};
use crate::engine::join_side::SideClock;
use crate::engine::lookup_join::{LookupJoinEngine, find_sites};
use crate::error::{BrookError, Result};
use crate::query::engine::BatchEngine;

impl Planner<'_> {
    /// The engine of a query without a window: an interval join, or per
    /// batch; a join of two streams without a bound adds a notice.
    pub(super) async fn unwindowed_engine(
        &self,
        plan: &LogicalPlan,
        planned: &Planned,
        scans: Vec<(usize, Vec<Arc<BatchSlot>>)>,
        streams: &[String],
        purpose: Purpose,
        notices: &mut Vec<String>,
    ) -> Result<(Box<dyn BatchEngine>, Option<LateRoute>)> {
        match self.find_join(planned, &scans, streams)? {
            Found::Interval(site) => self.interval_join_engine(*site, streams, planned),
            _ if !self.clauses.is_empty() => Err(clauses_misplaced()),
            found => {
                if matches!(found, Found::Unbounded) {
                    notices.push(format!(
                        "the join of {} has no bound on the streams' event times: it joins rows of the same batch only; for pairs across batches, bound it (ON ... AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' MINUTE, with WATERMARK FOR on both streams)",
                        streams.join(" and ")
                    ));
                }
                let stream_scans = window_scans(scans.clone());
                let engine = self
                    .per_batch_engine(plan, planned, scans, streams, purpose)
                    .await;
                if planned.lookups.is_empty() {
                    return Ok((engine, None));
                }
                let sites = find_sites(&planned.physical, &stream_scans, planned.lookups.clone())?;
                Ok((Box::new(LookupJoinEngine::new(engine, sites)?), None))
            }
        }
    }

    /// Whether the query (without a window) joins two streams, and how.
    pub(super) fn find_join(
        &self,
        planned: &Planned,
        scans: &[(usize, Vec<Arc<BatchSlot>>)],
        streams: &[String],
    ) -> Result<Found> {
        if streams.len() != 2 {
            return Ok(Found::NotAJoin);
        }
        let mut event_columns = Vec::with_capacity(streams.len());
        for name in streams {
            let stream = self.registered(name)?;
            let column = match stream.event_time() {
                Some(event_time) => Some(event_time.column_index(name, &stream.schema)?),
                None => None,
            };
            event_columns.push(column);
        }
        Ok(join_bounds::find(
            &planned.physical,
            &window_scans(scans.to_vec()),
            &event_columns,
        ))
    }

    /// The engine of an interval join, and where its late rows go.
    fn interval_join_engine(
        &self,
        site: JoinSite,
        streams: &[String],
        planned: &Planned,
    ) -> Result<(Box<dyn BatchEngine>, Option<LateRoute>)> {
        let clock_of = |input: usize, column: usize| -> Result<SideClock> {
            let name = streams.get(input).ok_or_else(|| {
                BrookError::Internal(format!("an interval join reads input {input}"))
            })?;
            let stream = self.registered(name)?;
            let event_time = stream.event_time().ok_or_else(|| {
                BrookError::Internal(format!("stream '{name}' lost its event time"))
            })?;
            let mut declared = vec![event_time.describe()];
            let clock = self.watermark_clock(
                std::slice::from_ref(name),
                vec![(event_time, column)],
                &mut declared,
            );
            Ok(SideClock {
                stream: name.clone(),
                schema: Arc::clone(&stream.schema),
                clock,
                declared: declared.join("; "),
            })
        };
        let clocks = [
            clock_of(site.sides[0].input, site.sides[0].event_column)?,
            clock_of(site.sides[1].input, site.sides[1].event_column)?,
        ];
        let late_route = self.clauses.late_data_to.as_ref().map(|target| LateRoute {
            stream: target.clone(),
            schema: join_late_schema([
                (clocks[0].stream.as_str(), clocks[0].schema.as_ref()),
                (clocks[1].stream.as_str(), clocks[1].schema.as_ref()),
            ]),
            inbox: Arc::new(std::sync::OnceLock::new()),
        });
        let engine = IntervalJoinEngine::new(
            &planned.physical,
            site,
            clocks,
            late_route.clone(),
            planned.state.task_ctx(),
        )?;
        Ok((Box::new(engine), late_route))
    }

    /// The registered stream `name`, which a plan read.
    pub(super) fn registered(&self, name: &str) -> Result<Arc<crate::stream::LiveStream>> {
        self.streams.read().get(name).cloned().ok_or_else(|| {
            BrookError::Internal(format!("stream '{name}' was planned but is not registered"))
        })
    }
}
