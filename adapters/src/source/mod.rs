//! The stream: pgoutput over PostgreSQL's streaming replication protocol (`pg_walstream`
//! connects, authenticates, answers keepalives), decoded here (relation cache, changes in
//! commit order) and handed to the sink; the position confirmed to PostgreSQL is the tracker's
//! (everything up to it acknowledged by the broker).
//!
//! Liveness while waiting: a ticker cancels the stream's read every `feedback_interval_ms`
//! (pg_walstream's multi-thread driver returns buffered frames first, so nothing is lost), which
//! is when feedback goes out, idle positions are confirmed and heartbeats are sent. While the
//! sink applies backpressure (broker down, queue full), the loop keeps sending feedback so the
//! walsender does not time the connection out.

pub mod setup;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_walstream::{
    CancellationToken, ColumnInfo, LogicalReplicationMessage, LogicalReplicationParser,
    LogicalReplicationStream, RawXLogData, ReplicationError, ReplicationStreamConfig, RetryConfig,
    StreamingMode,
};
use prometheus_client::metrics::counter::Counter;
use tracing::Instrument;

use crate::catalog::Catalog;
use crate::config::CdcConfig;
use crate::decode::relation::{ColumnSpec, Relation, Role, TableSpec};
use crate::decode::transaction::{self, Transaction};
use crate::decode::{Decoder, Op, Record, TxContext, now_ms};
use crate::error::CdcError;
use crate::metrics::Metrics;
use crate::sink::{Sink, TrySend};
use crate::snapshot::filter::SnapshotFilter;

/// PostgreSQL timestamps count from 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One replication connection's worth of streaming.
pub struct Streamer<'a> {
    config: Arc<CdcConfig>,
    stream: LogicalReplicationStream,
    parser: LogicalReplicationParser,
    decoder: Decoder,
    catalog: Catalog,
    sink: &'a mut Sink,
    filter: SnapshotFilter,
    metrics: Arc<Metrics>,
    counters: HashMap<(Arc<str>, Op), Counter>,
    tx: Option<TxContext>,
    tx_commit_micros: i64,
    /// Whether the open transaction made a change Debezium's publication sends (one created
    /// `WITH (publish = ...)` without the skipped operations; PostgreSQL does not send it a
    /// transaction with none, so its `sequence` and transaction topic never see one).
    tx_published: bool,
    last_commit_lsn: Option<u64>,
    token: Arc<Mutex<CancellationToken>>,
    shutdown: CancellationToken,
    ticker: tokio::task::JoinHandle<()>,
    last_keepalive: Instant,
    last_heartbeat: Instant,
    heartbeat_topic: Arc<str>,
    /// The heartbeat's key, and what goes before its value's `{"ts_ms":..}` (the
    /// `{"schema":..,"payload":` of Debezium's heartbeat schemas when schema-wrapped).
    heartbeat_key: Vec<u8>,
    heartbeat_value_head: Vec<u8>,
    records: Vec<Record>,
    /// The position last handed to the feedback (fail point bookkeeping).
    last_pushed: std::sync::atomic::AtomicU64,
    /// Transaction metadata (`provide.transaction.metadata`): the open transaction once its
    /// BEGIN record is out, the BEGIN message's position, the topic, and the size of the map
    /// Debezium counts in (for the order of `data_collections`).
    tx_meta: Option<Transaction>,
    tx_begin_lsn: u64,
    transaction_topic: Arc<str>,
    tx_map_capacity: usize,
    /// Logical decoding messages: their topic and which prefixes go there.
    message_topic: Arc<str>,
    message_filter: crate::regex_list::Selection,
}

impl Drop for Streamer<'_> {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

impl<'a> Streamer<'a> {
    /// Opens the replication connection and starts streaming from the slot (or from
    /// `start_lsn`, when everything below it is known to be acknowledged).
    pub async fn connect(
        config: Arc<CdcConfig>,
        server_version: u32,
        catalog: Catalog,
        sink: &'a mut Sink,
        filter: SnapshotFilter,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Streamer<'a>, CdcError> {
        let stream_config = ReplicationStreamConfig::builder(&config.slot, &config.publication)
            .with_protocol_version(1)
            .with_streaming_mode(StreamingMode::Off)
            // Logical decoding messages (`pg_logical_emit_message`), as Debezium asks for them
            // from PostgreSQL 14 on (older servers refuse the option).
            .with_messages(server_version >= 140_000)
            .with_feedback_interval(config.feedback_interval())
            .with_connection_timeout(Duration::from_secs(30))
            .with_health_check_interval(Duration::from_secs(3600))
            .with_retry_config(RetryConfig {
                max_attempts: 1,
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                multiplier: 2.0,
                max_duration: Duration::from_secs(30),
                jitter: false,
            });
        let mut stream =
            LogicalReplicationStream::new(&config.replication_url(), stream_config).await?;
        let confirmed = sink.tracker().confirmed();
        stream.start((confirmed > 0).then_some(confirmed)).await?;
        tracing::info!(
            slot = %config.slot,
            publication = %config.publication,
            from = %if confirmed > 0 { pg_walstream::format_lsn(confirmed) } else { "the slot's position".to_owned() },
            "streaming"
        );
        let token = Arc::new(Mutex::new(CancellationToken::new()));
        let ticker = {
            let token = token.clone();
            let shutdown = shutdown.clone();
            let interval = config.feedback_interval();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                    token.lock().expect("tick token").cancel();
                    if shutdown.is_cancelled() {
                        return;
                    }
                }
            })
        };
        let heartbeat_topic: Arc<str> = Arc::from(config.heartbeat_topic().as_str());
        let config_transaction_topic = config.transaction_topic();
        let config_message_topic = config.message_topic();
        let message_filter = config.lists().message_prefixes.clone();
        let (heartbeat_key, heartbeat_value_head) = heartbeat_parts(&config);
        Ok(Self {
            decoder: Decoder::new(config.clone()),
            config,
            stream,
            parser: LogicalReplicationParser::with_protocol_version(1),
            catalog,
            sink,
            filter,
            metrics,
            counters: HashMap::new(),
            tx: None,
            tx_commit_micros: 0,
            tx_published: false,
            last_commit_lsn: None,
            token,
            shutdown,
            ticker,
            last_keepalive: Instant::now(),
            last_heartbeat: Instant::now(),
            heartbeat_topic,
            heartbeat_key,
            heartbeat_value_head,
            records: Vec::with_capacity(16),
            last_pushed: std::sync::atomic::AtomicU64::new(confirmed),
            tx_meta: None,
            tx_begin_lsn: 0,
            transaction_topic: Arc::from(config_transaction_topic.as_str()),
            tx_map_capacity: transaction::JAVA_HASH_MAP_CAPACITY,
            message_topic: Arc::from(config_message_topic.as_str()),
            message_filter,
        })
    }

    /// Streams until shutdown (`Ok`) or an error (the supervisor reconnects).
    pub async fn run(mut self) -> Result<(), CdcError> {
        let result = self.stream_loop().await;
        match result {
            Ok(()) | Err(CdcError::Stopped) => {
                self.finish().await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn stream_loop(&mut self) -> Result<(), CdcError> {
        loop {
            let token = self.token.lock().expect("tick token").clone();
            match self.stream.next_raw_event(&token).await {
                Ok(raw) => {
                    self.handle(raw).await?;
                    self.push_feedback();
                }
                Err(ReplicationError::Cancelled(_)) => {
                    if self.shutdown.is_cancelled() {
                        return Ok(());
                    }
                    {
                        let mut slot = self.token.lock().expect("tick token");
                        if slot.is_cancelled() {
                            *slot = CancellationToken::new();
                        }
                    }
                    self.tick().await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// On shutdown: give in-flight events a moment to be acknowledged, confirm, say goodbye.
    async fn finish(&mut self) {
        let tracker = self.sink.tracker().clone();
        if !tracker
            .wait_until(Duration::from_secs(10), |t| t.drained())
            .await
        {
            tracing::warn!(
                outstanding = tracker.outstanding(),
                "stopping with unacknowledged events; they are sent again at the next start"
            );
        }
        self.push_feedback();
        if self.tx.is_none() && tracker.drained() {
            let current = self.stream.current_lsn();
            self.stream.shared_lsn_feedback.update_flushed_lsn(current);
            self.stream.shared_lsn_feedback.update_applied_lsn(current);
        }
        if let Err(error) = self.stream.send_feedback().await {
            tracing::debug!(%error, "final feedback not sent");
        }
        tracing::info!(
            confirmed = %pg_walstream::format_lsn(tracker.confirmed()),
            "stream stopped"
        );
    }

    /// Copies the tracker's confirmed position into the feedback PostgreSQL receives.
    fn push_feedback(&self) {
        let confirmed = self.sink.tracker().confirmed();
        let previous = self
            .last_pushed
            .swap(confirmed, std::sync::atomic::Ordering::Relaxed);
        if confirmed > previous {
            // The broker has these events; PostgreSQL does not know yet.
            crate::failpoint::hit(crate::failpoint::AFTER_ACK_BEFORE_CONFIRM);
        }
        if confirmed > 0 {
            self.stream
                .shared_lsn_feedback
                .update_flushed_lsn(confirmed);
            self.stream
                .shared_lsn_feedback
                .update_applied_lsn(confirmed);
        }
    }

    async fn tick(&mut self) -> Result<(), CdcError> {
        if let Some(failure) = self.sink.tracker().failure() {
            return Err(CdcError::Delivery(failure));
        }
        self.push_feedback();
        // Nothing open, nothing unacknowledged: everything the server sent so far (its
        // keepalives' positions included) is done, filtered or not. Confirming it lets an idle
        // or filtered database release WAL.
        if self.tx.is_none() && self.sink.tracker().drained() {
            let current = self.stream.current_lsn();
            self.stream.shared_lsn_feedback.update_flushed_lsn(current);
            self.stream.shared_lsn_feedback.update_applied_lsn(current);
        }
        self.stream.maybe_send_feedback().await;
        self.last_keepalive = Instant::now();
        let interval = self.config.heartbeat.interval_ms;
        if interval > 0 && self.last_heartbeat.elapsed() >= Duration::from_millis(interval) {
            self.last_heartbeat = Instant::now();
            let value = heartbeat_value(&self.heartbeat_value_head, now_ms());
            let record = Record {
                topic: self.heartbeat_topic.clone(),
                key: Some(self.heartbeat_key.clone()),
                value: Some(value),
                headers: Vec::new(),
                table: Arc::from("heartbeat"),
                op: Op::Heartbeat,
                key_text: None,
            };
            self.send(&record).await?;
        }
        Ok(())
    }

    /// Keeps the replication connection alive while the sink holds us up.
    async fn keepalive(&mut self) -> Result<(), CdcError> {
        if self.shutdown.is_cancelled() {
            return Err(CdcError::Stopped);
        }
        if let Some(failure) = self.sink.tracker().failure() {
            return Err(CdcError::Delivery(failure));
        }
        if self.last_keepalive.elapsed() >= Duration::from_secs(5) {
            self.last_keepalive = Instant::now();
            self.push_feedback();
            self.stream.send_feedback().await?;
        }
        Ok(())
    }

    async fn handle(&mut self, raw: RawXLogData) -> Result<(), CdcError> {
        if raw.data.is_empty() {
            return Ok(());
        }
        let lsn = raw.wal_start.value();
        let message = self.parser.parse_wal_message_bytes(raw.data)?.message;
        match message {
            LogicalReplicationMessage::Begin {
                final_lsn,
                timestamp,
                xid,
            } => {
                let micros = timestamp.saturating_add(PG_EPOCH_MICROS);
                self.tx_commit_micros = micros;
                self.tx_begin_lsn = lsn;
                self.tx_meta = None;
                self.tx_published = false;
                self.tx = Some(TxContext {
                    xid,
                    commit_ts_us: micros,
                    commit_lsn: final_lsn,
                    last_commit_lsn: self.last_commit_lsn,
                });
            }
            LogicalReplicationMessage::Commit { end_lsn, .. } => {
                // END before the commit is recorded: the position moves past this transaction
                // only once its END is acknowledged too, so a crash never loses it (the replay
                // after one sends the whole transaction again, BEGIN to END, as Debezium does).
                if let Some(meta) = self.tx_meta.take() {
                    let value = meta.end_value(lsn, &mut self.tx_map_capacity);
                    let record = self.transaction_record(meta.key(lsn), value);
                    self.send(&record).await?;
                }
                // Confirmed to PostgreSQL whatever it held (the slot must not keep its WAL); but
                // a transaction of skipped operations only is not a commit Debezium's
                // `sequence` names (its publication never sent it).
                self.sink.tracker().commit(end_lsn, self.tx_commit_micros);
                if self.tx_published {
                    self.last_commit_lsn = Some(end_lsn);
                }
                self.tx = None;
            }
            LogicalReplicationMessage::Relation {
                relation_id,
                namespace,
                relation_name,
                replica_identity,
                columns,
            } => {
                self.on_relation(
                    relation_id,
                    &namespace,
                    &relation_name,
                    replica_identity,
                    &columns,
                )
                .await?;
            }
            LogicalReplicationMessage::Insert { relation_id, tuple } => {
                let (relation, tx, check) = self.context(relation_id)?;
                let published = self.published(!self.config.debezium.skipped_operations.create);
                self.open_transaction(in_transaction_topic(&relation) && published, &tx)
                    .await?;
                self.decoder
                    .insert(&relation, &tuple, lsn, &tx, check, &mut self.records);
                self.emit(&relation, &tx, check, lsn).await?;
            }
            LogicalReplicationMessage::Update {
                relation_id,
                old_tuple,
                new_tuple,
                ..
            } => {
                let (relation, tx, check) = self.context(relation_id)?;
                let published = self.published(!self.config.debezium.skipped_operations.update);
                self.open_transaction(in_transaction_topic(&relation) && published, &tx)
                    .await?;
                self.decoder.update(
                    &relation,
                    old_tuple.as_ref(),
                    &new_tuple,
                    lsn,
                    &tx,
                    check,
                    &mut self.records,
                );
                self.emit(&relation, &tx, check, lsn).await?;
            }
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                ..
            } => {
                let (relation, tx, check) = self.context(relation_id)?;
                let published = self.published(!self.config.debezium.skipped_operations.delete);
                self.open_transaction(in_transaction_topic(&relation) && published, &tx)
                    .await?;
                self.decoder
                    .delete(&relation, &old_tuple, lsn, &tx, check, &mut self.records);
                self.emit(&relation, &tx, check, lsn).await?;
            }
            LogicalReplicationMessage::Truncate { relation_ids, .. } => {
                for relation_id in relation_ids {
                    let (relation, tx, _) = self.context(relation_id)?;
                    // Debezium's publication sends truncates even when it skips them.
                    let published = self.published(true);
                    self.open_transaction(in_transaction_topic(&relation) && published, &tx)
                        .await?;
                    if !self
                        .filter
                        .keep_truncate(&relation.schema, &relation.table, tx.commit_lsn)
                    {
                        continue;
                    }
                    self.decoder
                        .truncate(&relation, lsn, &tx, &mut self.records);
                    self.emit(&relation, &tx, false, lsn).await?;
                }
            }
            LogicalReplicationMessage::Message {
                flags,
                prefix,
                content,
                ..
            } => {
                self.on_message(flags & 1 == 1, &prefix, &content, lsn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A logical decoding message at `lsn`. A transactional one belongs to the open
    /// transaction (its `txId`, commit time, `transaction` block); a non-transactional one
    /// stands alone: it is its own commit for the position confirmed to PostgreSQL (a restart
    /// at its end does not decode it again), and Debezium's `sequence` names it from then on.
    async fn on_message(
        &mut self,
        transactional: bool,
        prefix: &str,
        content: &[u8],
        lsn: u64,
    ) -> Result<(), CdcError> {
        let tx = if transactional { self.tx } else { None };
        if transactional {
            self.published(true);
        }
        if !transactional {
            self.last_commit_lsn = Some(lsn);
        }
        if self.message_filter.includes(prefix) {
            let mut record = self.decoder.message(
                &self.message_topic,
                prefix,
                content,
                lsn,
                tx.as_ref(),
                self.tx_commit_micros,
                self.last_commit_lsn,
            );
            if let Some(tx) = &tx {
                self.open_transaction(true, tx).await?;
                if let Some(meta) = &mut self.tx_meta {
                    let block = meta.event(&Arc::from(transaction::MESSAGE_COLLECTION), lsn);
                    if let Some(value) = &mut record.value {
                        transaction::splice_block(value, &block);
                    }
                }
            }
            self.send(&record).await?;
        }
        if !transactional {
            self.sink.tracker().commit(lsn, self.tx_commit_micros);
        }
        Ok(())
    }

    /// Notes a change of the open transaction that Debezium's publication sends (`published`:
    /// an insert, update or delete not in `skipped.operations`, any truncate, a transactional
    /// message; every table is in it, excluded or not, as the Debezium oracle shows); returns
    /// `published`.
    fn published(&mut self, published: bool) -> bool {
        self.tx_published |= published;
        published
    }

    /// The relation and transaction of a change, and whether it needs the snapshot filter.
    fn context(&self, relation_id: u32) -> Result<(Arc<Relation>, TxContext, bool), CdcError> {
        let relation = self.decoder.relation(relation_id).cloned().ok_or_else(|| {
            CdcError::Replication(ReplicationError::protocol(format!(
                "a change of relation {relation_id} arrived before its Relation message"
            )))
        })?;
        let tx = self.tx.ok_or_else(|| {
            CdcError::Replication(ReplicationError::protocol(
                "a change arrived outside a transaction".to_owned(),
            ))
        })?;
        let check = self.filter.active(tx.commit_lsn);
        Ok((relation, tx, check))
    }

    async fn on_relation(
        &mut self,
        oid: u32,
        schema: &str,
        table: &str,
        replica_identity: u8,
        columns: &[ColumnInfo],
    ) -> Result<(), CdcError> {
        let specs: Vec<ColumnSpec> = columns
            .iter()
            .map(|c| ColumnSpec {
                name: c.name.to_string(),
                type_oid: c.type_id,
                type_modifier: c.type_modifier,
                facts: Default::default(),
            })
            .collect();
        let identity_full = replica_identity == b'f';
        if let Some(existing) = self.decoder.relation(oid)
            && &*existing.schema == schema
            && &*existing.table == table
            && existing.identity_full == identity_full
            && same_columns(existing, &specs, columns)
        {
            return Ok(());
        }
        let span = tracing::info_span!("relation", slot = %self.config.slot, table = %format!("{schema}.{table}"));
        self.rebuild_relation(oid, schema, table, specs, identity_full)
            .instrument(span)
            .await
    }

    async fn rebuild_relation(
        &mut self,
        oid: u32,
        schema: &str,
        table: &str,
        specs: Vec<ColumnSpec>,
        identity_full: bool,
    ) -> Result<(), CdcError> {
        let primary_key = self.catalog.primary_key(oid).await?;
        let mut specs = specs;
        self.catalog.column_facts(oid, &mut specs).await?;
        let spec = TableSpec {
            oid,
            schema: schema.to_owned(),
            table: table.to_owned(),
            columns: specs,
            primary_key,
            identity_full,
        };
        let kinds = self.catalog.kinds(&spec.columns).await?;
        let relation = Relation::build(&spec, kinds, &self.config);
        if let Some(previous) = self.decoder.relation(oid) {
            let added: Vec<&str> = relation
                .columns
                .iter()
                .filter(|c| !previous.columns.iter().any(|p| p.name == c.name))
                .map(|c| &*c.name)
                .collect();
            let dropped: Vec<&str> = previous
                .columns
                .iter()
                .filter(|p| !relation.columns.iter().any(|c| c.name == p.name))
                .map(|p| &*p.name)
                .collect();
            tracing::info!(?added, ?dropped, "schema change picked up");
        }
        if matches!(relation.role, Role::Table) && !relation.has_message_key() {
            tracing::warn!(
                "table has no primary key: its events are keyed null (no per-row ordering across partitions); updates and deletes need REPLICA IDENTITY FULL to carry the old row"
            );
        }
        self.decoder.set_relation(relation);
        Ok(())
    }

    /// With transaction metadata on, sends the BEGIN record at the transaction's first change
    /// of a captured table (Debezium sends it at BEGIN; a transaction that changes only ficus's
    /// own tables, which Debezium would see as filtered, gets none).
    async fn open_transaction(&mut self, captured: bool, tx: &TxContext) -> Result<(), CdcError> {
        if !self.config.debezium.provide_transaction_metadata || self.tx_meta.is_some() || !captured
        {
            return Ok(());
        }
        let meta = Transaction::new(tx.xid, tx.commit_ts_us);
        let record = self.transaction_record(
            meta.key(self.tx_begin_lsn),
            meta.begin_value(self.tx_begin_lsn),
        );
        self.tx_meta = Some(meta);
        self.send(&record).await
    }

    /// A BEGIN or END record for `<prefix>.transaction`, schema-wrapped as the `[connect]`
    /// converters say (Debezium's `TransactionMetadataKey` and `TransactionMetadataValue`).
    fn transaction_record(&self, mut key: Vec<u8>, mut value: Vec<u8>) -> Record {
        use crate::decode::schema;
        let connect = &self.config.connect;
        if connect.key_converter_schemas_enable {
            key = schema::wrap(schema::TRANSACTION_KEY_SCHEMA.as_bytes(), &key);
        }
        if connect.value_converter_schemas_enable {
            value = schema::wrap(schema::TRANSACTION_VALUE_SCHEMA.as_bytes(), &value);
        }
        Record {
            topic: self.transaction_topic.clone(),
            key: Some(key),
            value: Some(value),
            headers: Vec::new(),
            table: Arc::from("transaction"),
            op: Op::Transaction,
            key_text: None,
        }
    }

    /// Sends what the decoder produced for one change (at `lsn`), each change event with its
    /// `transaction` block when transaction metadata is on.
    async fn emit(
        &mut self,
        relation: &Relation,
        tx: &TxContext,
        check: bool,
        lsn: u64,
    ) -> Result<(), CdcError> {
        let mut records = std::mem::take(&mut self.records);
        let mut result = Ok(());
        for mut record in records.drain(..) {
            if check
                && record.op != Op::Outbox
                && !self
                    .filter
                    .keep(
                        &relation.schema,
                        &relation.table,
                        record.key_text.as_deref(),
                        tx.commit_lsn,
                    )
                    .await?
            {
                continue;
            }
            if let Some(meta) = &mut self.tx_meta
                && matches!(
                    record.op,
                    Op::Create | Op::Update | Op::Delete | Op::Truncate | Op::Outbox
                )
            {
                let block = meta.event(&record.table, lsn);
                if record.op != Op::Outbox
                    && let Some(value) = &mut record.value
                {
                    transaction::splice_block(value, &block);
                }
            }
            if let Err(error) = self.send(&record).await {
                result = Err(error);
                break;
            }
        }
        records.clear();
        self.records = records;
        result
    }

    /// Sends one record, waiting (and keeping PostgreSQL's connection alive) while the broker
    /// or the in-flight bound holds it back.
    async fn send(&mut self, record: &Record) -> Result<(), CdcError> {
        if !self.sink.has_topic(&record.topic) {
            let mut backoff = Duration::from_millis(200);
            loop {
                match self
                    .sink
                    .ensure_topic(&record.topic, &record.table, Duration::from_secs(5))
                    .await
                {
                    Ok(()) => break,
                    // Not authorized, an invalid name or replication factor: waiting
                    // cannot help.
                    Err(error) if !error.is_retriable() => return Err(error),
                    Err(error) => {
                        tracing::warn!(%error, topic = %record.topic, "topic not ready; retrying");
                        self.keepalive().await?;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        let tracker = self.sink.tracker().clone();
        let max = self.config.kafka.max_inflight_events as u64;
        // Resume below a low-water mark, not at the first acknowledgement: one wake-up per
        // batch of acknowledgements instead of one per message.
        let resume = max - max / 10;
        if tracker.outstanding() >= max {
            while tracker.outstanding() >= resume {
                tokio::time::sleep(Duration::from_millis(2)).await;
                self.keepalive().await?;
            }
        }
        let seq = tracker.register();
        loop {
            let step = match self.sink.try_send(record, seq) {
                Ok(TrySend::Sent) => break,
                Ok(TrySend::Full) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    self.keepalive().await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = step {
                // Never handed to the producer: the restarted stream sends it again.
                tracker.abandon(seq);
                return Err(error);
            }
        }
        let key = (record.table.clone(), record.op);
        match self.counters.get(&key) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                let counter = self
                    .metrics
                    .events_counter(&record.table, record.op.as_str());
                counter.inc();
                self.counters.insert(key, counter);
            }
        }
        Ok(())
    }
}

/// The heartbeat's key (`{"serverName": <topic prefix>}`) and the head of its value, each
/// schema-wrapped as the `[connect]` converters say (Debezium's `ServerNameKey` and
/// `Heartbeat` schemas).
fn heartbeat_parts(config: &CdcConfig) -> (Vec<u8>, Vec<u8>) {
    use crate::decode::schema;
    let mut key = b"{\"serverName\":".to_vec();
    crate::decode::json::push_str(&mut key, &config.topic_prefix);
    key.push(b'}');
    if config.connect.key_converter_schemas_enable {
        key = schema::wrap(schema::HEARTBEAT_KEY_SCHEMA.as_bytes(), &key);
    }
    let value_head = if config.connect.value_converter_schemas_enable {
        schema::head(schema::HEARTBEAT_VALUE_SCHEMA.as_bytes())
    } else {
        Vec::new()
    };
    (key, value_head)
}

/// A heartbeat's value, `{"ts_ms": ts_ms}` after `head` (from [`heartbeat_parts`]: empty, or
/// the schema-wrapped form's `{"schema":..,"payload":`, closed here).
fn heartbeat_value(head: &[u8], ts_ms: i64) -> Vec<u8> {
    let mut value = Vec::with_capacity(head.len() + 32);
    value.extend_from_slice(head);
    value.extend_from_slice(b"{\"ts_ms\":");
    crate::decode::json::push_i64(&mut value, ts_ms);
    value.push(b'}');
    if !head.is_empty() {
        value.push(b'}');
    }
    value
}

/// Whether a change of `relation` opens a transaction on the transaction topic (BEGIN, then END
/// at its commit): any table outside ficus's own schema, excluded ones too, as Debezium does
/// (its publication has every table; it writes BEGIN and END, with no events, for a
/// transaction of tables its lists leave out).
fn in_transaction_topic(relation: &Relation) -> bool {
    &*relation.schema != crate::migrations::SCHEMA
}

fn same_columns(existing: &Relation, specs: &[ColumnSpec], columns: &[ColumnInfo]) -> bool {
    if existing.columns.len() != specs.len()
        || !existing.columns.iter().zip(specs).all(|(c, s)| {
            &*c.name == s.name.as_str()
                && c.type_oid == s.type_oid
                && c.type_modifier == s.type_modifier
        })
    {
        return false;
    }
    if existing.identity_full {
        return true;
    }
    // pgoutput flags the replica identity's columns: a new primary key changes them.
    let flagged: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key())
        .map(|(i, _)| i)
        .collect();
    let mut key = existing.key.clone();
    key.sort_unstable();
    flagged == key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(schemas: bool) -> CdcConfig {
        let mut config: CdcConfig = serde_json::from_value(serde_json::json!({
            "database_url": "postgres://u:p@h/app",
            "kafka": {"brokers": "b:9092"},
            "connect": {
                "key.converter.schemas.enable": schemas,
                "value.converter.schemas.enable": schemas,
            },
        }))
        .unwrap();
        config.topic_prefix = "inventory".to_owned();
        config
    }

    /// The heartbeat's key and value byte for byte as Debezium 3.6's JsonConverter writes them
    /// (copied from a record of the real connector; tests/cdc/conformance.rs compares a live
    /// one), schema-wrapped and schemaless.
    #[test]
    fn heartbeats_are_debeziums_bytes() {
        let (key, head) = heartbeat_parts(&config(true));
        assert_eq!(
            String::from_utf8(key).unwrap(),
            concat!(
                r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"#,
                r#""field":"serverName"}],"optional":false,"#,
                r#""name":"io.debezium.connector.common.ServerNameKey","version":1},"#,
                r#""payload":{"serverName":"inventory"}}"#
            )
        );
        assert_eq!(
            String::from_utf8(heartbeat_value(&head, 1_795_859_801_117)).unwrap(),
            concat!(
                r#"{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"#,
                r#""field":"ts_ms"}],"optional":false,"#,
                r#""name":"io.debezium.connector.common.Heartbeat","version":1},"#,
                r#""payload":{"ts_ms":1795859801117}}"#
            )
        );

        let (key, head) = heartbeat_parts(&config(false));
        assert_eq!(
            String::from_utf8(key).unwrap(),
            r#"{"serverName":"inventory"}"#
        );
        assert_eq!(
            String::from_utf8(heartbeat_value(&head, -1)).unwrap(),
            r#"{"ts_ms":-1}"#
        );
    }
}
