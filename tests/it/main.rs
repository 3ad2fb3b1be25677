//! brook's integration tests: one test binary (DataFusion is large to link).

mod arrival;
mod avro;
mod cdc;
mod changelog;
mod checkpoint;
mod cli;
mod common;
mod decode;
#[cfg(feature = "delta")]
mod delta;
mod end_of_input;
mod errors;
mod event_time;
mod examples;
mod files;
mod fuzz_regressions;
mod group_by;
mod join;
mod kafka;
#[path = "../support/kafka_broker.rs"]
mod kafka_broker;
mod kafka_restart;
mod layout;
mod lookup;
#[path = "../support/pg_server.rs"]
mod pg_server;
mod postgres;
mod queue;
mod reliability;
mod repl;
mod s3;
mod s3_outage;
#[path = "../support/s3_server.rs"]
mod s3_server;
mod scheduling;
#[path = "../support/schema_registry.rs"]
mod schema_registry;
mod serve;
mod sink;
mod socket;
mod split;
mod sql_errors;
#[path = "../support/tcp_proxy.rs"]
mod tcp_proxy;
mod udf;
mod ui;
mod window;
mod wrong_results;
