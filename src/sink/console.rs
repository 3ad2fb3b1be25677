//! Console output, like DStream `print()`: per batch a header (batch number,
//! time, rows in and out, milliseconds), then the result as a table of at most
//! `max_rows` rows. CSV and JSON write plain rows, with `batch` and
//! `batch_time` first, so stdout can be piped; headers then go to stderr.

use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use prettytable::{Cell, Row, Table, format};

use crate::query::BatchOutput;

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A header per batch and a drawn table (default).
    #[default]
    Table,
    /// CSV rows on stdout, one header line first.
    Csv,
    /// One JSON object per row (newline-delimited).
    Json,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" | "ndjson" => Ok(OutputFormat::Json),
            other => Err(format!("unknown format '{other}': use table, csv or json")),
        }
    }
}

/// Writes query results to a terminal or a pipe.
#[derive(Debug, Clone)]
pub struct ConsoleSink {
    format: OutputFormat,
    max_rows: usize,
    quiet: bool,
    /// Whether the CSV header line has been written (once per sink).
    csv_header_written: bool,
}

impl ConsoleSink {
    /// A sink writing `format`, showing at most `max_rows` rows per table;
    /// `quiet` drops the headers of empty batches.
    pub fn new(format: OutputFormat, max_rows: usize, quiet: bool) -> Self {
        Self {
            format,
            max_rows,
            quiet,
            csv_header_written: false,
        }
    }

    /// Writes one batch of a continuous query: rows to `out`, and in CSV or
    /// JSON format the header to `err`.
    pub fn write_batch(
        &mut self,
        out: &mut dyn Write,
        err: &mut dyn Write,
        output: &BatchOutput,
    ) -> io::Result<()> {
        let empty = output.rows_in == 0;
        if empty && self.quiet {
            return Ok(());
        }
        let header = batch_header(output);
        match self.format {
            OutputFormat::Table => {
                writeln!(out, "{header}")?;
                if !empty {
                    self.write_table(out, &output.schema, &output.batches)?;
                }
                writeln!(out)?;
                out.flush()
            }
            OutputFormat::Csv | OutputFormat::Json => {
                if !self.quiet {
                    writeln!(err, "{}", header.lines().nth(1).unwrap_or_default())?;
                }
                let with_batch = with_batch_columns(output).map_err(io::Error::other)?;
                self.write_plain(out, &with_batch.0, &with_batch.1)
            }
        }
    }

    /// Writes a one-off result (a query over static tables, `SHOW STREAMS`).
    pub fn write_rows(
        &mut self,
        out: &mut dyn Write,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> io::Result<()> {
        match self.format {
            OutputFormat::Table => {
                self.write_table(out, schema, batches)?;
                out.flush()
            }
            OutputFormat::Csv | OutputFormat::Json => {
                self.csv_header_written = false;
                self.write_plain(out, schema, batches)
            }
        }
    }

    fn write_table(
        &self,
        out: &mut dyn Write,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> io::Result<()> {
        let total_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut table = Table::new();
        table.set_format(*format::consts::FORMAT_NO_LINESEP_WITH_TITLE);
        table.set_titles(Row::new(
            schema
                .fields()
                .iter()
                .map(|f| Cell::new(f.name()))
                .collect(),
        ));
        let options = FormatOptions::default().with_null("NULL");
        let mut shown = 0;
        'batches: for batch in batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, ArrowError>>()
                .map_err(io::Error::other)?;
            for row in 0..batch.num_rows() {
                if shown == self.max_rows {
                    break 'batches;
                }
                table.add_row(Row::new(
                    formatters
                        .iter()
                        .map(|f| Cell::new(&f.value(row).to_string()))
                        .collect(),
                ));
                shown += 1;
            }
        }
        table.print(out)?;
        if total_rows > shown {
            writeln!(out, "... {} more rows", total_rows - shown)?;
        }
        Ok(())
    }

    fn write_plain(
        &mut self,
        out: &mut dyn Write,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> io::Result<()> {
        match self.format {
            OutputFormat::Csv => {
                let mut writer = arrow_csv::WriterBuilder::new()
                    .with_header(!self.csv_header_written)
                    .build(&mut *out);
                if batches.is_empty() && !self.csv_header_written {
                    writer
                        .write(&RecordBatch::new_empty(Arc::clone(schema)))
                        .map_err(io::Error::other)?;
                }
                for batch in batches {
                    writer.write(batch).map_err(io::Error::other)?;
                }
                self.csv_header_written = true;
            }
            OutputFormat::Json | OutputFormat::Table => {
                let mut writer = arrow_json::LineDelimitedWriter::new(&mut *out);
                for batch in batches {
                    writer.write(batch).map_err(io::Error::other)?;
                }
                writer.finish().map_err(io::Error::other)?;
            }
        }
        out.flush()
    }
}

/// Lag below this is noise (cutting the batch, handing it over) and not shown.
const LAG_SHOWN_FROM: std::time::Duration = std::time::Duration::from_millis(5);

/// The header printed above each batch.
fn batch_header(output: &BatchOutput) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let rows_out = output.rows_out();
    let window = match &output.window {
        None => String::new(),
        Some(window) => {
            let (first, last) = window.batches;
            let batches = if first == last {
                format!("batch {first}")
            } else {
                format!("batches {first}-{last}")
            };
            format!(
                " | window {} - {} ({batches})",
                window.start.format("%H:%M:%S%.3f"),
                window.end.format("%H:%M:%S%.3f")
            )
        }
    };
    // An event-time query shows its watermark, how far behind the tick it
    // is, and the batch's late and far-future rows.
    let event = match output.watermark {
        None => String::new(),
        Some(mark) if mark == chrono::DateTime::<chrono::Utc>::MAX_UTC => {
            " | watermark end of input".to_string()
        }
        Some(mark) => {
            let behind = (output.batch_time - mark).num_milliseconds();
            let behind = if behind.abs() < 3_600_000 {
                format!("{:.1} s", behind as f64 / 1000.0)
            } else if behind.abs() < 172_800_000 {
                format!("{:.1} h", behind as f64 / 3_600_000.0)
            } else {
                format!("{:.0} days", behind as f64 / 86_400_000.0)
            };
            format!(
                " | watermark {} ({behind} behind)",
                mark.format("%Y-%m-%d %H:%M:%S%.3f")
            )
        }
    };
    let late = match (output.late_rows, output.far_future_rows) {
        (0, 0) => String::new(),
        (late, 0) => format!(" | {late} late"),
        (0, ahead) => format!(" | {ahead} far ahead"),
        (late, ahead) => format!(" | {late} late | {ahead} far ahead"),
    };
    let checkpoint = match output.checkpoint {
        Some(batch) => format!(" | checkpoint {batch}"),
        None => String::new(),
    };
    // A query behind the clock says by how much.
    let lag = if output.lag >= LAG_SHOWN_FROM {
        format!(" | lag {:.0} ms", output.lag.as_secs_f64() * 1000.0)
    } else {
        String::new()
    };
    format!(
        "-------------------------------------------\n\
         Batch {} at {}{} | {} row{} in | {} row{} out{late}{event}{checkpoint} | {:.1} ms{lag}\n\
         -------------------------------------------",
        output.batch_number,
        output.batch_time.format("%Y-%m-%d %H:%M:%S%.3f"),
        window,
        output.rows_in,
        plural(output.rows_in),
        rows_out,
        plural(rows_out),
        output.elapsed.as_secs_f64() * 1000.0
    )
}

/// The result batches with `batch` and `batch_time` columns in front.
pub(crate) fn with_batch_columns(
    output: &BatchOutput,
) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let mut fields = vec![
        Arc::new(Field::new("batch", DataType::UInt64, false)),
        Arc::new(Field::new("batch_time", DataType::Utf8, false)),
    ];
    fields.extend(output.schema.fields().iter().cloned());
    let schema = Arc::new(Schema::new(fields));
    let time = output
        .batch_time
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let batches = output
        .batches
        .iter()
        .map(|batch| {
            let rows = batch.num_rows();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(UInt64Array::from(vec![output.batch_number; rows])),
                Arc::new(StringArray::from(vec![time.as_str(); rows])),
            ];
            columns.extend(batch.columns().iter().cloned());
            RecordBatch::try_new(Arc::clone(&schema), columns)
        })
        .collect::<Result<_, _>>()?;
    Ok((schema, batches))
}
