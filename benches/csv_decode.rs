//! CSV decode throughput of the socket's line decoder, on clean input and
//! on input with one bad row per 1,000 (a value that does not parse). The
//! input is cut into 256 KiB runs of whole lines, as the socket hands them
//! to the decoder. A plain harness: it prints MB/s and rows/s, the best of
//! several runs (the VM is noisy; the best run is the least disturbed).
//!
//! Run: `cargo bench --bench csv_decode -- [lines] [runs]` (defaults
//! 1,000,000 lines, 7 runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::LineFormat;
use brook::fuzzing::decode_chunks;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

/// What the socket reads at a time.
const CHUNK_BYTES: usize = 256 * 1024;

/// `lines` rows of `(sensor TEXT, temp DOUBLE, count BIGINT, ok BOOLEAN,
/// at TIMESTAMP)`; every `bad_every`-th line (if any) has a temperature
/// that does not parse.
fn csv_input(lines: usize, bad_every: Option<usize>) -> Vec<u8> {
    let mut rng = brook::testing::Rng::new(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next();
    let mut text = Vec::with_capacity(lines * 56);
    for line in 1..=lines {
        let r = next();
        let temp = if bad_every.is_some_and(|every| line % every == 0) {
            "warm".to_string()
        } else {
            format!("{}.{}", r % 40, r % 10)
        };
        text.extend_from_slice(
            format!(
                "sensor-{},{temp},{},{},2026-11-24T10:{:02}:{:02}.{:03}\n",
                r % 500,
                r % 100_000,
                r % 2 == 0,
                (r >> 8) % 60,
                (r >> 16) % 60,
                (r >> 24) % 1000
            )
            .as_bytes(),
        );
    }
    text
}

/// `text` cut into runs of whole lines of about `CHUNK_BYTES`.
fn chunks(text: &[u8]) -> Vec<Buffer> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = if rest.len() <= CHUNK_BYTES {
            rest.len()
        } else {
            rest[..CHUNK_BYTES]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(rest.len(), |newline| newline + 1)
        };
        chunks.push(Buffer::from(&rest[..end]));
        rest = &rest[end..];
    }
    chunks
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("a number"))
        .collect();
    let lines = args.first().copied().unwrap_or(1_000_000);
    let runs = args.get(1).copied().unwrap_or(7);
    let schema = Arc::new(Schema::new(vec![
        Field::new("sensor", DataType::Utf8View, true),
        Field::new("temp", DataType::Float64, true),
        Field::new("count", DataType::Int64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]));
    let mut clean_rate = None;
    for (name, bad_every) in [("clean", None), ("1 bad row per 1,000", Some(1000))] {
        let text = csv_input(lines, bad_every);
        let input = chunks(&text);
        let mut best = Duration::MAX;
        let mut counted = (0, 0);
        for _ in 0..runs {
            let started = Instant::now();
            counted = decode_chunks(Arc::clone(&schema), LineFormat::Csv, &input).expect("decode");
            best = best.min(started.elapsed());
        }
        let expected_bad = bad_every.map_or(0, |every| lines / every);
        assert_eq!(counted, (lines - expected_bad, expected_bad), "{name}");
        let mb_per_s = text.len() as f64 / best.as_secs_f64() / 1e6;
        let rows_per_s = lines as f64 / best.as_secs_f64() / 1e6;
        let ratio = clean_rate.map_or(String::new(), |clean: f64| {
            format!(", {:.2}x clean", mb_per_s / clean)
        });
        println!(
            "{name}: {lines} lines, {:.1} MB: best of {runs} {best:?}: {mb_per_s:.0} MB/s, {rows_per_s:.2} M rows/s{ratio}",
            text.len() as f64 / 1e6
        );
        clean_rate.get_or_insert(mb_per_s);
    }
}
