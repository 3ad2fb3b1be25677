//! Aggregates that take rows back: per group, what `COUNT`, `SUM`, `AVG`,
//! `MIN`, `MAX` and `COUNT(DISTINCT ...)` need so that a retracted row
//! leaves the result as if it had never been added.
//!
//! `COUNT`, `SUM` and `AVG` keep a count and a sum per group. `MIN`, `MAX`
//! and `COUNT(DISTINCT)` keep every distinct value of the group with how
//! many current rows hold it (an ordered map for `MIN`/`MAX`): the current
//! extreme may be deleted, and the next one must be known. That costs one
//! entry per distinct (group, value).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, new_null_array,
};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Float64Type};
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::{BrookError, Result};

/// What one aggregate keeps, per group slot.
pub(crate) enum Retractable {
    /// `COUNT(x)`: rows whose arguments are all non-null.
    Count { counts: Vec<i64> },
    /// `SUM(x)` / `AVG(x)` over integers (as i128), decimals (unscaled
    /// i128) or floats.
    Sum {
        exact: bool,
        average: bool,
        ints: Vec<i128>,
        floats: Vec<f64>,
        counts: Vec<i64>,
    },
    /// `MIN(x)` / `MAX(x)`, and `COUNT(DISTINCT x)`: each distinct value
    /// (row format) with how many rows hold it.
    Values {
        kind: ValuesKind,
        converter: RowConverter,
        values: Vec<BTreeMap<Box<[u8]>, i64>>,
    },
}

/// What a [`Retractable::Values`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValuesKind {
    Min,
    Max,
    CountDistinct,
}

impl Retractable {
    /// The state of aggregate `name` over arguments of `arg_type`, or why
    /// it cannot take rows back.
    pub fn new(name: &str, distinct: bool, arg_type: Option<&DataType>) -> Result<Self, String> {
        let supported = "over a changelog, RUNNING takes rows back through COUNT, SUM, AVG, MIN, MAX and COUNT(DISTINCT ...)";
        let values = |kind| -> Result<Self, String> {
            let arg_type = arg_type.ok_or_else(|| format!("{name}() needs an argument"))?;
            Ok(Retractable::Values {
                kind,
                converter: RowConverter::new(vec![SortField::new(arg_type.clone())])
                    .map_err(|e| e.to_string())?,
                values: Vec::new(),
            })
        };
        let sum = |average: bool| -> Result<Self, String> {
            let exact = match arg_type {
                Some(t) if t.is_integer() => true,
                Some(DataType::Decimal128(..)) if !average => true,
                Some(t) if t.is_floating() => false,
                Some(t) => return Err(format!("{name}() over {t} cannot take rows back")),
                None => return Err(format!("{name}() needs an argument")),
            };
            Ok(Retractable::Sum {
                exact,
                average,
                ints: Vec::new(),
                floats: Vec::new(),
                counts: Vec::new(),
            })
        };
        match (name, distinct) {
            ("count", false) => Ok(Retractable::Count { counts: Vec::new() }),
            ("count", true) => values(ValuesKind::CountDistinct),
            ("sum", false) => sum(false),
            ("avg" | "mean", false) => sum(true),
            ("min", _) => values(ValuesKind::Min),
            ("max", _) => values(ValuesKind::Max),
            _ if distinct => Err(format!("{name}(DISTINCT ...): {supported}")),
            _ => Err(format!("{name}(): {supported}")),
        }
    }

    /// Makes room for group slot `slot`, empty.
    pub fn reset(&mut self, slot: usize) {
        fn at<T: Default + Clone>(values: &mut Vec<T>, slot: usize) {
            if values.len() <= slot {
                values.resize(slot + 1, T::default());
            } else {
                values[slot] = T::default();
            }
        }
        match self {
            Retractable::Count { counts } => at(counts, slot),
            Retractable::Sum {
                ints,
                floats,
                counts,
                ..
            } => {
                at(ints, slot);
                at(floats, slot);
                at(counts, slot);
            }
            Retractable::Values { values, .. } => at(values, slot),
        }
    }

    /// Adds (`sign` 1) or takes back (`sign` -1) the rows of `args` (the
    /// arguments, evaluated) whose `filter` holds, each in its group slot.
    pub fn update(
        &mut self,
        args: &[ArrayRef],
        filter: Option<&datafusion::arrow::array::BooleanArray>,
        slots: &[usize],
        sign: i64,
    ) -> Result<()> {
        let counted = |row: usize| {
            filter.is_none_or(|f| f.is_valid(row) && f.value(row))
                && args.iter().all(|a| a.is_valid(row))
        };
        match self {
            Retractable::Count { counts } => {
                for (row, &slot) in slots.iter().enumerate() {
                    if counted(row) {
                        counts[slot] += sign;
                    }
                }
            }
            Retractable::Sum {
                exact,
                ints,
                floats,
                counts,
                ..
            } => {
                let sums = Sums {
                    ints,
                    floats,
                    counts,
                };
                sums.update(*exact, &args[0], &counted, slots, sign)?;
            }
            Retractable::Values {
                converter, values, ..
            } => {
                let rows = converter.convert_columns(&args[..1])?;
                for (row, &slot) in slots.iter().enumerate() {
                    if !counted(row) {
                        continue;
                    }
                    let key = rows.row(row).data();
                    let held = &mut values[slot];
                    let count = match held.get_mut(key) {
                        Some(count) => {
                            *count += sign;
                            *count
                        }
                        None => {
                            held.insert(key.into(), sign);
                            sign
                        }
                    };
                    if count == 0 {
                        held.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    /// The aggregate's values for `slots`, as `field` types them.
    pub fn results(&self, slots: &[usize], field: &Field) -> Result<ArrayRef> {
        let data_type = field.data_type();
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let array: ArrayRef = match self {
            Retractable::Count { counts } => Arc::new(Int64Array::from_iter_values(
                slots.iter().map(|&s| counts[s]),
            )),
            Retractable::Sum {
                exact,
                average,
                ints,
                floats,
                counts,
            } => sum_results((*exact, *average), (ints, floats, counts), slots, data_type)?,
            Retractable::Values {
                kind,
                converter,
                values,
            } => match kind {
                ValuesKind::CountDistinct => Arc::new(Int64Array::from_iter_values(
                    slots.iter().map(|&s| values[s].len() as i64),
                )),
                ValuesKind::Min | ValuesKind::Max => {
                    let parser = converter.parser();
                    let mut picked = Vec::with_capacity(slots.len());
                    let mut missing = Vec::new();
                    for (index, &s) in slots.iter().enumerate() {
                        let extreme = match kind {
                            ValuesKind::Min => values[s].keys().next(),
                            _ => values[s].keys().next_back(),
                        };
                        match extreme {
                            Some(value) => picked.push(parser.parse(value)),
                            None => missing.push(index),
                        }
                    }
                    if !missing.is_empty() {
                        return self.with_nulls(slots, field, missing);
                    }
                    converter.convert_rows(picked)?.remove(0)
                }
            },
        };
        if array.data_type() == data_type {
            return Ok(array);
        }
        cast_with_options(&array, data_type, &strict).map_err(|err| {
            BrookError::invalid(format!(
                "the aggregate {} does not fit its type {data_type}: {err}",
                field.name()
            ))
        })
    }

    /// `MIN`/`MAX` where some groups hold no value (all NULL): built value
    /// by value.
    fn with_nulls(&self, slots: &[usize], field: &Field, missing: Vec<usize>) -> Result<ArrayRef> {
        let Retractable::Values {
            kind,
            converter,
            values,
        } = self
        else {
            return Ok(new_null_array(field.data_type(), slots.len()));
        };
        let parser = converter.parser();
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(slots.len());
        let null = new_null_array(field.data_type(), 1);
        let missing: std::collections::HashSet<usize> = missing.into_iter().collect();
        for (index, &s) in slots.iter().enumerate() {
            if missing.contains(&index) {
                pieces.push(Arc::clone(&null));
                continue;
            }
            let extreme = match kind {
                ValuesKind::Min => values[s].keys().next(),
                _ => values[s].keys().next_back(),
            };
            let value = extreme
                .map(|v| parser.parse(v))
                .into_iter()
                .collect::<Vec<_>>();
            let column = converter.convert_rows(value)?.remove(0);
            pieces.push(cast(&column, field.data_type())?);
        }
        let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
        Ok(datafusion::arrow::compute::concat(&refs)?)
    }

    /// Entries held for the group slots in use (for `SHOW QUERIES`).
    pub fn entries(&self) -> usize {
        match self {
            Retractable::Values { values, .. } => values.iter().map(BTreeMap::len).sum(),
            _ => 0,
        }
    }
}

/// The running sums of a `SUM` / `AVG`, per group slot.
struct Sums<'a> {
    ints: &'a mut [i128],
    floats: &'a mut [f64],
    counts: &'a mut [i64],
}

impl Sums<'_> {
    /// Adds or takes back (`sign`) the values of `arg` counted by
    /// `counted`, each in its slot.
    fn update(
        self,
        exact: bool,
        arg: &ArrayRef,
        counted: &dyn Fn(usize) -> bool,
        slots: &[usize],
        sign: i64,
    ) -> Result<()> {
        if exact {
            let values = match arg.data_type() {
                DataType::Decimal128(..) => Arc::clone(arg),
                _ => cast(arg, &DataType::Decimal128(38, 0))?,
            };
            let values = values.as_primitive::<Decimal128Type>();
            for (row, &slot) in slots.iter().enumerate() {
                if counted(row) {
                    self.ints[slot] += sign as i128 * values.value(row);
                    self.counts[slot] += sign;
                }
            }
        } else {
            let values = cast(arg, &DataType::Float64)?;
            let values = values.as_primitive::<Float64Type>();
            for (row, &slot) in slots.iter().enumerate() {
                if counted(row) {
                    self.floats[slot] += sign as f64 * values.value(row);
                    self.counts[slot] += sign;
                    if self.counts[slot] == 0 {
                        // No drift left behind by an empty group.
                        self.floats[slot] = 0.0;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The sums or averages of `slots` (NULL for a group with no value).
fn sum_results(
    (exact, average): (bool, bool),
    (ints, floats, counts): (&[i128], &[f64], &[i64]),
    slots: &[usize],
    data_type: &DataType,
) -> Result<ArrayRef> {
    let present = |s: usize| counts[s] > 0;
    Ok(match (exact, average) {
        (true, false) => {
            let scale = match data_type {
                DataType::Decimal128(_, scale) => *scale,
                _ => 0,
            };
            let sums: Decimal128Array = slots
                .iter()
                .map(|&s| present(s).then_some(ints[s]))
                .collect();
            Arc::new(sums.with_precision_and_scale(38, scale)?)
        }
        (true, true) => Arc::new(
            slots
                .iter()
                .map(|&s| present(s).then(|| ints[s] as f64 / counts[s] as f64))
                .collect::<Float64Array>(),
        ),
        (false, false) => Arc::new(
            slots
                .iter()
                .map(|&s| present(s).then_some(floats[s]))
                .collect::<Float64Array>(),
        ),
        (false, true) => Arc::new(
            slots
                .iter()
                .map(|&s| present(s).then(|| floats[s] / counts[s] as f64))
                .collect::<Float64Array>(),
        ),
    })
}

/// Slots of groups, by their key in row format, reused once freed.
#[derive(Default)]
pub(crate) struct Slots {
    index: HashMap<Box<[u8]>, usize, foldhash::fast::FixedState>,
    keys: Vec<Box<[u8]>>,
    free: Vec<usize>,
}

impl Slots {
    /// The slot of `key`, if it has one.
    pub fn get(&self, key: &[u8]) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The slot of `key`, and whether it is new.
    pub fn get_or_insert(&mut self, key: &[u8]) -> (usize, bool) {
        if let Some(&slot) = self.index.get(key) {
            return (slot, false);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.keys[slot] = key.into();
                slot
            }
            None => {
                self.keys.push(key.into());
                self.keys.len() - 1
            }
        };
        self.index.insert(key.into(), slot);
        (slot, true)
    }

    /// Frees `slot`.
    pub fn remove(&mut self, slot: usize) {
        let key = std::mem::take(&mut self.keys[slot]);
        self.index.remove(&key);
        self.free.push(slot);
    }

    /// The key of `slot`.
    pub fn key(&self, slot: usize) -> &[u8] {
        &self.keys[slot]
    }

    /// The slots in use.
    pub fn in_use(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = self.index.values().copied().collect();
        slots.sort_unstable();
        slots
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }
}
