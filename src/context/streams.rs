//! Registering, listing and removing streams; `brook.streams`.

use super::*;
use crate::changelog::Changelog;
use crate::error::Warning;
use crate::event_time::EventTime;

impl StreamContext {
    /// `brook.queries` and `brook.streams`. Their row builders hold the
    /// registries, not the context, so that no cycle keeps it alive.
    pub(super) fn register_system_tables(&self) {
        let queries = self.inner.queries.clone();
        let query_rows: system::RowSource = Arc::new(move || {
            let infos: Vec<QueryInfo> = queries.all().iter().map(|q| q.info()).collect();
            queries_rows(&infos)
        });
        let streams = Arc::clone(&self.inner.streams);
        let batcher = Arc::clone(&self.inner.batcher);
        let stream_rows: system::RowSource =
            Arc::new(move || system::streams_rows(&stream_infos(&streams, &batcher)));
        for (name, table) in [
            ("queries", SystemTable::new(queries_schema(), query_rows)),
            (
                "streams",
                SystemTable::new(system::streams_schema(), stream_rows),
            ),
        ] {
            if let Err(err) = system::register(&self.inner.session, name, table) {
                (self.inner.warn)(&Warning::Context(BrookError::Internal(format!(
                    "cannot register brook.{name}: {err}"
                ))));
            }
        }
    }

    /// Registers a queue stream (Spark's `queueStream`) and returns the
    /// handle that feeds it.
    pub fn register_queue(
        &self,
        name: &str,
        schema: SchemaRef,
        options: QueueOptions,
    ) -> Result<QueueHandle> {
        let limits = options.limits;
        let stream = self.register_stream(
            name,
            Arc::clone(&schema),
            Arc::new(QueueSource { options }),
            limits,
        )?;
        Ok(QueueHandle {
            stream: name.to_string(),
            schema,
            inbox: Arc::clone(&stream.inbox),
        })
    }

    /// Registers a socket stream (Spark's `socketTextStream`): brook connects
    /// to `address` (`host:port`) when the first query reads the stream.
    /// For text lines use [`line_schema`].
    pub fn register_socket(
        &self,
        name: &str,
        address: &str,
        schema: SchemaRef,
        options: SocketOptions,
    ) -> Result<()> {
        let limits = options.limits;
        let source = SocketSource::try_new(
            name.to_string(),
            address.to_string(),
            options,
            Arc::clone(&schema),
            Arc::clone(&self.inner.warn),
        )?;
        self.register_stream(name, schema, Arc::new(source), limits)?;
        Ok(())
    }

    /// Registers a directory stream (Spark's `textFileStream`): each file
    /// that appears in `options.path` is read once, in full. brook starts
    /// watching when the first query reads the stream.
    pub fn register_files(
        &self,
        name: &str,
        schema: SchemaRef,
        options: FilesOptions,
    ) -> Result<()> {
        let limits = options.limits;
        let source = FilesSource::try_new(
            name.to_string(),
            options,
            Arc::clone(&schema),
            Arc::clone(&self.inner.warn),
        )?;
        self.register_stream(name, schema, Arc::new(source), limits)?;
        Ok(())
    }

    /// Registers stream `name` reading a Kafka topic.
    pub fn register_kafka(
        &self,
        name: &str,
        schema: SchemaRef,
        options: KafkaOptions,
    ) -> Result<()> {
        let limits = options.limits;
        let source = KafkaSource::try_new(
            name.to_string(),
            options,
            Arc::clone(&schema),
            Arc::clone(&self.inner.warn),
        )?;
        self.register_stream(name, schema, Arc::new(source), limits)?;
        Ok(())
    }

    /// Registers stream `name` reading a PostgreSQL table's changes.
    pub(super) fn register_postgres_cdc(
        &self,
        name: &str,
        schema: SchemaRef,
        options: crate::source::postgres_cdc::PostgresCdcOptions,
    ) -> Result<()> {
        let limits = options.limits;
        let source = crate::source::postgres_cdc::PostgresCdcSource::try_new(
            name.to_string(),
            options,
            Arc::clone(&schema),
            Arc::clone(&self.inner.warn),
        )?;
        self.register_stream(name, schema, Arc::new(source), limits)?;
        Ok(())
    }

    pub(super) fn register_stream(
        &self,
        name: &str,
        schema: SchemaRef,
        source: Arc<dyn Source>,
        limits: StreamLimits,
    ) -> Result<Arc<LiveStream>> {
        check_columns(name, &schema)?;
        let mut streams = self.inner.streams.write();
        if streams.contains_key(name) {
            return Err(BrookError::invalid(format!(
                "stream '{name}' already exists"
            )));
        }
        if self.inner.session.table_exist(name)? {
            return Err(BrookError::invalid(format!(
                "a table named '{name}' already exists"
            )));
        }
        let stream = Arc::new(LiveStream::new(
            name.to_string(),
            Arc::clone(&schema),
            source,
            limits,
        ));
        self.inner.session.register_table(
            name,
            Arc::new(StreamTable {
                name: name.to_string(),
                schema,
                window: None,
            }),
        )?;
        streams.insert(name.to_string(), Arc::clone(&stream));
        Ok(stream)
    }

    pub(super) fn stream(&self, name: &str) -> Option<Arc<LiveStream>> {
        self.inner.streams.read().get(name).cloned()
    }

    /// Names of the registered streams, sorted.
    pub fn stream_names(&self) -> Vec<String> {
        self.inner.streams.read().keys().cloned().collect()
    }

    /// The handle of queue stream `name`, if there is one.
    pub fn queue(&self, name: &str) -> Option<QueueHandle> {
        let stream = self.stream(name)?;
        (stream.source.connector() == "queue").then(|| QueueHandle {
            stream: stream.name.clone(),
            schema: Arc::clone(&stream.schema),
            inbox: Arc::clone(&stream.inbox),
        })
    }

    /// Removes stream `name`. Fails while a query reads it.
    pub fn deregister_stream(&self, name: &str) -> Result<()> {
        let readers = self.inner.batcher.readers_of(name);
        if !readers.is_empty() {
            let ids: Vec<String> = readers.iter().map(u64::to_string).collect();
            return Err(BrookError::invalid(format!(
                "stream '{name}' is read by running query {}; stop it first",
                ids.join(", ")
            )));
        }
        match self.inner.streams.write().remove(name) {
            Some(_) => {
                self.inner.session.deregister_table(name)?;
                Ok(())
            }
            None => Err(BrookError::invalid(format!(
                "stream '{name}' does not exist"
            ))),
        }
    }

    /// What `SHOW STREAMS` shows of each stream, by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        stream_infos(&self.inner.streams, &self.inner.batcher)
    }

    /// `CREATE TABLE name (columns) WITH (connector = 'postgres', ...)`: a
    /// table looked up by key as batches need it.
    pub(super) fn create_lookup_table(&self, create: &CreateStream) -> Result<()> {
        let exists = self.inner.session.table_exist(create.name.as_str())?;
        if exists && create.if_not_exists {
            return Ok(());
        }
        if exists {
            return Err(BrookError::invalid(format!(
                "table '{}' already exists",
                create.name
            )));
        }
        if create.columns.is_empty() {
            return Err(BrookError::invalid(format!(
                "table '{}': declare the columns to look up (CREATE TABLE {} (id INT, name TEXT) WITH (...))",
                create.name, create.name
            )));
        }
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            create.columns.clone(),
        ));
        let lookup = crate::source::lookup::PostgresLookup::from_options(
            &create.name,
            schema,
            &create.options,
        )?;
        let table = crate::catalog::lookup_table::LookupTable {
            lookup: Arc::new(lookup),
        };
        self.inner
            .session
            .register_table(create.name.as_str(), Arc::new(table))?;
        Ok(())
    }

    pub(super) fn create_stream(&self, create: &CreateStream) -> Result<()> {
        if create.if_not_exists && self.stream(&create.name).is_some() {
            return Ok(());
        }
        let mut options = create.options.clone();
        let mut columns = create.columns.clone();
        let event_time = match &create.watermark {
            Some((column, delay)) => {
                let event_time = EventTime::new(column.clone(), *delay)
                    .take_options(&create.name, &mut options)?;
                // A row without an event time is a bad row, reported where
                // it is read.
                if let Some(field) = columns.iter_mut().find(|f| f.name() == column) {
                    *field = field.clone().with_nullable(false);
                }
                Some(event_time)
            }
            None => {
                if let Some((key, _)) = options.iter().find(|(key, _)| {
                    crate::event_time::EVENT_TIME_OPTIONS
                        .iter()
                        .any(|o| o.key == key)
                }) {
                    return Err(BrookError::invalid(format!(
                        "stream '{}': option '{key}' needs an event-time column: declare WATERMARK FOR column AS column - INTERVAL '5' SECOND",
                        create.name
                    )));
                }
                None
            }
        };
        if let Some(event_time) = &event_time {
            event_time.column_index(&create.name, &Schema::new(columns.clone()))?;
        }
        let key = changelog_key(create, &mut options)?;
        let mut connector = Connector::from_options(&create.name, &options)?;
        let changelog = changelog_of(create, key, &mut connector, &mut columns)?;
        let schema = Arc::new(Schema::new(columns));
        match connector {
            Connector::Queue(options) => {
                if create.columns.is_empty() {
                    return Err(BrookError::invalid(format!(
                        "stream '{}': a queue stream needs a column list, e.g. CREATE STREAM {} (line TEXT) WITH (connector = 'queue')",
                        create.name, create.name
                    )));
                }
                self.register_queue(&create.name, schema, options)?;
            }
            Connector::Socket { address, options } => {
                self.register_socket(&create.name, &address, lines_or(schema), options)?;
            }
            Connector::Files(options) => {
                self.register_files(&create.name, lines_or(schema), options)?;
            }
            Connector::Kafka(mut options) => {
                let schema = match options.columns(&create.name, Arc::clone(&schema))? {
                    Some(columns) => columns,
                    None => lines_or(schema),
                };
                self.register_kafka(&create.name, schema, *options)?;
            }
            Connector::PostgresCdc(options) => {
                self.register_postgres_cdc(&create.name, schema, *options)?;
            }
        }
        if let Some(event_time) = event_time {
            self.set_event_time(&create.name, event_time)?;
        }
        if let Some(changelog) = changelog
            && let Some(stream) = self.stream(&create.name)
        {
            let _ = stream.changelog.set(changelog);
        }
        Ok(())
    }

    /// Declares stream `name` a changelog keyed by `key` (what `format =
    /// 'debezium-json'` or upsert Kafka make a stream): its first column
    /// must be `op` (TEXT), holding each row's kind of change (`+I`, `-U`,
    /// `+U`, `-D`; see [`crate::changelog`]). Declare it before a query
    /// reads the stream.
    pub fn declare_changelog(&self, name: &str, key: &[&str]) -> Result<()> {
        let stream = self
            .stream(name)
            .ok_or_else(|| BrookError::invalid(format!("stream '{name}' does not exist")))?;
        let first = stream.schema.fields().first();
        if first.is_none_or(|f| {
            f.name() != crate::changelog::OP_COLUMN
                || !matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View)
        }) {
            return Err(BrookError::invalid(format!(
                "stream '{name}': a changelog's first column is op TEXT, holding +I, -U, +U or -D"
            )));
        }
        let declared = Schema::new(stream.schema.fields()[1..].to_vec());
        let changelog =
            Changelog::new(name, key.iter().map(|k| k.to_string()).collect(), &declared)?;
        if !self.inner.batcher.readers_of(name).is_empty() {
            return Err(BrookError::invalid(format!(
                "stream '{name}' is read by a running query; declare it a changelog before"
            )));
        }
        stream
            .changelog
            .set(changelog)
            .map_err(|_| BrookError::invalid(format!("stream '{name}' is already a changelog")))
    }

    /// Declares stream `name`'s event-time column and watermark (what
    /// `WATERMARK FOR ...` in `CREATE STREAM` does), before a query reads
    /// it. Declare the column NOT NULL in the stream's schema so that a row
    /// without an event time is a bad row where it is read; one that gets
    /// through is counted as late.
    pub fn set_event_time(&self, name: &str, event_time: EventTime) -> Result<()> {
        let stream = self
            .stream(name)
            .ok_or_else(|| BrookError::invalid(format!("stream '{name}' does not exist")))?;
        event_time.column_index(name, &stream.schema)?;
        if !self.inner.batcher.readers_of(name).is_empty() {
            return Err(BrookError::invalid(format!(
                "stream '{name}' is read by a running query; declare its event time before"
            )));
        }
        stream.event_time.set(event_time).map_err(|_| {
            BrookError::invalid(format!("stream '{name}' already declares its event time"))
        })
    }

    /// Closes every queue stream (what `brook run` does at the end of a file).
    pub fn close_queues(&self) {
        for name in self.stream_names() {
            let fed_by_query = self
                .stream(&name)
                .is_some_and(|s| s.fed_by_query.load(Ordering::Relaxed));
            if let Some(queue) = self.queue(&name)
                && !fed_by_query
            {
                queue.close();
            }
        }
    }
}

/// The changelog a stream of `connector` is, keyed by `key` (its columns
/// then get `op` in front), or `None` for a stream of rows appended.
fn changelog_of(
    create: &CreateStream,
    key: Vec<String>,
    connector: &mut Connector,
    columns: &mut Vec<Field>,
) -> Result<Option<Changelog>> {
    if !connector.reads_changes() {
        if !key.is_empty() {
            return Err(BrookError::invalid(format!(
                "stream '{}': a key (PRIMARY KEY or key = '...') is for a changelog stream: format = 'debezium-json', or mode = 'upsert' on Kafka; an append-only stream has none",
                create.name
            )));
        }
        return Ok(None);
    }
    let changelog = Changelog::new(&create.name, key, &Schema::new(columns.clone()))?;
    connector.set_key(&changelog.key);
    *columns = Changelog::schema(&Schema::new(columns.clone()))
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    Ok(Some(changelog))
}

/// A changelog stream's key: its `PRIMARY KEY`, or the `key` option
/// (comma-separated columns), which is taken out of `options`.
fn changelog_key(
    create: &CreateStream,
    options: &mut Vec<(String, String)>,
) -> Result<Vec<String>> {
    let given = options
        .iter()
        .position(|(key, _)| key == "key")
        .map(|at| options.remove(at).1);
    let from_option: Vec<String> = given
        .iter()
        .flat_map(|text| text.split(','))
        .map(|column| column.trim().to_string())
        .filter(|column| !column.is_empty())
        .collect();
    match (create.primary_key.is_empty(), from_option.is_empty()) {
        (false, false) if create.primary_key != from_option => Err(BrookError::invalid(format!(
            "stream '{}': PRIMARY KEY ({}) and key = '{}' differ; give one",
            create.name,
            create.primary_key.join(", "),
            from_option.join(",")
        ))),
        (false, _) => Ok(create.primary_key.clone()),
        (true, _) => Ok(from_option),
    }
}

/// The declared columns, or one `line` TEXT column when none are declared
/// (sources of lines: socket, files, Kafka).
fn lines_or(declared: SchemaRef) -> SchemaRef {
    if declared.fields().is_empty() {
        line_schema()
    } else {
        declared
    }
}

/// Refuses a schema without columns or with a column name twice.
pub(super) fn check_columns(stream: &str, schema: &Schema) -> Result<()> {
    if schema.fields().is_empty() {
        return Err(BrookError::invalid(format!(
            "stream '{stream}': declare at least one column"
        )));
    }
    for (index, field) in schema.fields().iter().enumerate() {
        if schema.fields()[..index]
            .iter()
            .any(|f| f.name() == field.name())
        {
            return Err(BrookError::invalid(format!(
                "stream '{stream}': column '{}' is declared twice",
                field.name()
            )));
        }
    }
    Ok(())
}

/// Every stream's [`StreamInfo`], by name.
pub(super) fn stream_infos(streams: &StreamMap, batcher: &Batcher) -> Vec<StreamInfo> {
    let streams: Vec<Arc<LiveStream>> = streams.read().values().cloned().collect();
    streams
        .iter()
        .map(|s| s.info(!batcher.readers_of(&s.name).is_empty()))
        .collect()
}
