//! The event log and its projections in SQL: the checks and writes of an append, run by the writer in
//! its transaction, and the reads the event store port answers from a read-only connection.

use rookery_domain::device::{self, Devices};
use rookery_domain::{
    CollectionName, EventPayload, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, UserId,
    Version,
};
use rookery_ports::{AppendError, Failure, IdempotencyRecord};
use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::{
    EVENT_COLUMNS, PreparedAppend, PreparedEvent, PreparedRecord, RawEvent, Rebasing, deserialize, int, limit,
    record_from_row, uint,
};
use crate::error::Context;

/// What a committed append answers: its stored events, and the feed position of the last one.
#[derive(Debug)]
pub(crate) struct Appended {
    pub(crate) events: Vec<StoredEvent>,
    pub(crate) last_position: Option<i64>,
}

/// The last seq of `owner`'s stream ([`Seq`]`(0)` when empty).
pub(crate) fn last_seq(conn: &Connection, owner: &UserId) -> Result<Seq, Failure> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT last_seq FROM streams WHERE owner = ?1")
        .and_then(|mut s| s.query_row([owner.as_str()], |row| row.get(0)).optional())
        .context("reading a stream's last seq")?;
    Ok(Seq(uint(seq.unwrap_or(0), "a stream's last seq")?))
}

/// Answers the seq an append's events continue from: the stream's last seq, which must be `expected`
/// when the append names one.
///
/// This is the one place the condition lives. An append that names no seq simply continues from the
/// current last seq: the writer thread runs appends one at a time in its transaction, so the read and
/// the move of the stream's head are one step, and a user's appends are serialized without a retry.
fn claim_seqs(conn: &Connection, owner: &UserId, expected: Option<Seq>) -> Result<Seq, AppendError> {
    let current = last_seq(conn, owner)?;
    match expected {
        Some(expected) if expected != current => Err(AppendError::SeqMoved { current }),
        _ => Ok(current),
    }
}

/// The version of an item's head ([`Version::NONE`] if the key was never used).
fn item_version(conn: &Connection, owner: &UserId, key: &ItemKey) -> Result<Version, Failure> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM items WHERE owner = ?1 AND collection = ?2 AND item_id = ?3")
        .and_then(|mut s| {
            s.query_row(
                params![owner.as_str(), key.collection.as_str(), key.id.as_str()],
                |row| row.get(0),
            )
            .optional()
        })
        .context("reading an item's version")?;
    Ok(Version(uint(version.unwrap_or(0), "an item's version")?))
}

/// True when a record recorded at or after its write's `expired_before` holds the key.
fn key_taken(conn: &Connection, record: &PreparedRecord) -> Result<bool, Failure> {
    let recorded_at: Option<i64> = conn
        .prepare_cached("SELECT recorded_at FROM idempotency WHERE owner = ?1 AND key = ?2")
        .and_then(|mut s| {
            s.query_row(params![record.owner.as_str(), record.key], |row| row.get(0))
                .optional()
        })
        .context("reading an idempotency record")?;
    Ok(recorded_at.is_some_and(|at| at >= record.expired_before))
}

/// Checks that no live record holds the key of `record`.
pub(crate) fn check_key(conn: &Connection, record: &PreparedRecord) -> Result<(), AppendError> {
    if key_taken(conn, record)? {
        Err(AppendError::KeyTaken)
    } else {
        Ok(())
    }
}

/// Stores an idempotency record, purging its owner's expired ones so records cannot grow without bound.
pub(crate) fn put_record(conn: &Connection, record: &PreparedRecord) -> Result<(), Failure> {
    conn.prepare_cached("DELETE FROM idempotency WHERE owner = ?1 AND recorded_at < ?2")
        .and_then(|mut s| s.execute(params![record.owner.as_str(), record.expired_before]))
        .context("purging expired idempotency records")?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (owner, key, fingerprint, outcome, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            record.owner.as_str(),
            record.key,
            record.fingerprint,
            record.outcome,
            record.recorded_at
        ])
    })
    .context("storing an idempotency record")?;
    Ok(())
}

/// Appends a prepared batch inside the writer's transaction: the contract's checks (seq when named, item
/// versions, idempotency key, in that order), then the events and every projection they change.
///
/// On an error the caller rolls back to its savepoint, so nothing of a refused append stays.
pub(crate) fn append(conn: &Connection, batch: PreparedAppend) -> Result<Appended, AppendError> {
    let PreparedAppend {
        owner,
        expected_seq,
        item_versions,
        mut events,
        idempotency,
        rebase,
    } = batch;
    let mut seq = claim_seqs(conn, &owner, expected_seq)?;
    for (key, expected) in &item_versions {
        let current = item_version(conn, &owner, key)?;
        if current != *expected {
            // A rebasable write is planned again on the head it met, in this transaction: no round trip
            // to its caller, so concurrent writes to one item go through one group commit together.
            if let Some(Rebasing { rebase, batch }) = rebase
                && let Some(rebased) = batch.rebased(&item_head(conn, &owner, key)?, &rebase)
            {
                return append(conn, PreparedAppend::new(rebased)?);
            }
            return Err(AppendError::VersionMoved {
                key: key.clone(),
                current,
            });
        }
    }
    if let Some(record) = &idempotency {
        check_key(conn, record)?;
    }
    let mut last_position = None;
    for event in &mut events {
        seq = seq.next();
        event.event.seq = seq;
        last_position = Some(insert_event(conn, event)?);
        project(conn, event)?;
    }
    if !events.is_empty() {
        set_last_seq(conn, &owner, seq)?;
    }
    if let Some(record) = &idempotency {
        put_record(conn, record)?;
    }
    Ok(Appended {
        events: events.into_iter().map(|e| e.event).collect(),
        last_position,
    })
}

/// Moves the head of `owner`'s stream to `seq`.
pub(crate) fn set_last_seq(conn: &Connection, owner: &UserId, seq: Seq) -> Result<(), Failure> {
    conn.prepare_cached(
        "INSERT INTO streams (owner, last_seq) VALUES (?1, ?2)
         ON CONFLICT (owner) DO UPDATE SET last_seq = excluded.last_seq",
    )
    .and_then(|mut s| s.execute(params![owner.as_str(), int(seq.0).map_err(to_sql)?]))
    .context("moving a stream's head")?;
    Ok(())
}

/// Carries a conversion failure through an SQLite call chain.
pub(crate) fn to_sql(failure: Failure) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(failure.message.into())
}

/// Inserts one event into the log and answers its feed position.
pub(crate) fn insert_event(conn: &Connection, prepared: &PreparedEvent) -> Result<i64, Failure> {
    let event = &prepared.event;
    let (collection, item_id, version) = match &prepared.item {
        Some(row) => (
            Some(row.key.collection.as_str()),
            Some(row.key.id.as_str()),
            Some(int(row.version.0)?),
        ),
        None => (None, None, None),
    };
    conn.prepare_cached(
        "INSERT INTO events (owner, seq, event_id, type, schema, at, collection, item_id, version, payload, meta)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut s| {
        s.insert(params![
            event.owner.as_str(),
            int(event.seq.0).map_err(to_sql)?,
            event.event_id.as_str(),
            event.payload.type_name(),
            event.schema,
            int(event.at.as_millis()).map_err(to_sql)?,
            collection,
            item_id,
            version,
            prepared.payload,
            prepared.meta,
        ])
    })
    .context("inserting an event")
}

/// Folds one event into the projections kept beside the log (messages need none: an index finds them).
pub(crate) fn project(conn: &Connection, prepared: &PreparedEvent) -> Result<(), Failure> {
    let event = &prepared.event;
    let owner = event.owner.as_str();
    if let Some(row) = &prepared.item {
        // As `rookery_domain::item::evolve`: an event at or below the head's version leaves it unchanged.
        conn.prepare_cached(
            "INSERT INTO items (owner, collection, item_id, version, item) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (owner, collection, item_id) DO UPDATE SET version = excluded.version, item = excluded.item
             WHERE excluded.version > items.version",
        )
        .and_then(|mut s| {
            s.execute(params![
                owner,
                row.key.collection.as_str(),
                row.key.id.as_str(),
                int(row.version.0).map_err(to_sql)?,
                row.item,
            ])
        })
        .context("moving an item's head")?;
        return Ok(());
    }
    match &event.payload {
        EventPayload::Device(change) => {
            let id = match change {
                device::DeviceEvent::Registered { device_id, .. }
                | device::DeviceEvent::Disabled { device_id, .. }
                | device::DeviceEvent::Removed { device_id, .. } => device_id,
            };
            // The domain's own fold, on the one device the event is about.
            let mut devices = Devices::new();
            let stored: Option<String> = conn
                .prepare_cached("SELECT device FROM devices WHERE owner = ?1 AND device_id = ?2")
                .and_then(|mut s| s.query_row([owner, id.as_str()], |row| row.get(0)).optional())
                .context("reading a device")?;
            if let Some(text) = stored {
                devices.insert(id.clone(), deserialize(&text, "a device")?);
            }
            device::evolve(&mut devices, change, event.at);
            match devices.get(id) {
                Some(device) => {
                    let text = serde_json::to_string(device)
                        .map_err(|e| Failure::permanent(format!("cannot serialize a device: {e}")))?;
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO devices (owner, device_id, device) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut s| s.execute(params![owner, id.as_str(), text]))
                    .context("storing a device")?;
                }
                None => {
                    conn.prepare_cached("DELETE FROM devices WHERE owner = ?1 AND device_id = ?2")
                        .and_then(|mut s| s.execute([owner, id.as_str()]))
                        .context("removing a device")?;
                }
            }
        }
        EventPayload::MediaDeclared(object) => {
            let text = serde_json::to_string(object)
                .map_err(|e| Failure::permanent(format!("cannot serialize a media object: {e}")))?;
            conn.prepare_cached("INSERT OR REPLACE INTO media (owner, media_id, object) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![owner, object.id.as_str(), text]))
                .context("storing a media object")?;
        }
        _ => {}
    }
    Ok(())
}

/// Runs an event query and decodes every row, failing on the first that cannot be read.
fn events(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<StoredEvent>, Failure> {
    let raw: Vec<RawEvent> = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_map(params, RawEvent::from_row)?.collect())
        .context("reading events")?;
    raw.into_iter().map(RawEvent::decode).collect()
}

pub(crate) fn idempotency(conn: &Connection, owner: &UserId, key: &str) -> Result<Option<IdempotencyRecord>, Failure> {
    conn.prepare_cached("SELECT key, fingerprint, outcome, recorded_at FROM idempotency WHERE owner = ?1 AND key = ?2")
        .and_then(|mut s| s.query_row([owner.as_str(), key], record_from_row).optional())
        .context("reading an idempotency record")?
        .transpose()
}

pub(crate) fn read_feed(
    conn: &Connection,
    owner: &UserId,
    after: Seq,
    max: usize,
) -> Result<Vec<StoredEvent>, Failure> {
    events(
        conn,
        &format!("SELECT {EVENT_COLUMNS} FROM events WHERE owner = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"),
        params![owner.as_str(), int(after.0).unwrap_or(i64::MAX), limit(max)],
    )
}

pub(crate) fn read_messages(
    conn: &Connection,
    owner: &UserId,
    after: Seq,
    max: usize,
) -> Result<Vec<StoredEvent>, Failure> {
    events(
        conn,
        &format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE owner = ?1 AND type = 'message.received' AND seq > ?2
             ORDER BY seq LIMIT ?3"
        ),
        params![owner.as_str(), int(after.0).unwrap_or(i64::MAX), limit(max)],
    )
}

pub(crate) fn item_head(conn: &Connection, owner: &UserId, key: &ItemKey) -> Result<ItemHead, Failure> {
    let row: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT version, item FROM items WHERE owner = ?1 AND collection = ?2 AND item_id = ?3")
        .and_then(|mut s| {
            s.query_row(
                params![owner.as_str(), key.collection.as_str(), key.id.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
        })
        .context("reading an item's head")?;
    let Some((version, item)) = row else {
        return Ok(ItemHead::default());
    };
    Ok(ItemHead {
        version: Version(uint(version, "an item's version")?),
        item: item.map(|text| deserialize(&text, "an item")).transpose()?,
    })
}

pub(crate) fn item_history(
    conn: &Connection,
    owner: &UserId,
    key: &ItemKey,
    after: Version,
    max: usize,
) -> Result<Vec<StoredEvent>, Failure> {
    events(
        conn,
        &format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE owner = ?1 AND collection = ?2 AND item_id = ?3 AND version > ?4
             ORDER BY version, seq LIMIT ?5"
        ),
        params![
            owner.as_str(),
            key.collection.as_str(),
            key.id.as_str(),
            int(after.0).unwrap_or(i64::MAX),
            limit(max)
        ],
    )
}

pub(crate) fn list_items(
    conn: &Connection,
    owner: &UserId,
    collection: &CollectionName,
    after: Option<&ItemId>,
    max: usize,
) -> Result<Vec<Item>, Failure> {
    let texts: Vec<String> = conn
        .prepare_cached(
            "SELECT item FROM items WHERE owner = ?1 AND collection = ?2 AND item_id > ?3 AND item IS NOT NULL
             ORDER BY item_id LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(
                params![
                    owner.as_str(),
                    collection.as_str(),
                    after.map_or("", ItemId::as_str),
                    limit(max)
                ],
                |row| row.get(0),
            )?
            .collect()
        })
        .context("listing items")?;
    texts.iter().map(|text| deserialize(text, "an item")).collect()
}

pub(crate) fn devices(conn: &Connection, owner: &UserId) -> Result<Devices, Failure> {
    let texts: Vec<String> = conn
        .prepare_cached("SELECT device FROM devices WHERE owner = ?1")
        .and_then(|mut s| s.query_map([owner.as_str()], |row| row.get(0))?.collect())
        .context("reading devices")?;
    let mut devices = Devices::new();
    for text in texts {
        let device: rookery_domain::Device = deserialize(&text, "a device")?;
        devices.insert(device.device_id.clone(), device);
    }
    Ok(devices)
}

pub(crate) fn media(conn: &Connection, owner: &UserId, id: &MediaId) -> Result<Option<MediaObject>, Failure> {
    let text: Option<String> = conn
        .prepare_cached("SELECT object FROM media WHERE owner = ?1 AND media_id = ?2")
        .and_then(|mut s| s.query_row([owner.as_str(), id.as_str()], |row| row.get(0)).optional())
        .context("reading a media object")?;
    text.map(|text| deserialize(&text, "a media object")).transpose()
}

pub(crate) fn owners(conn: &Connection, after: Option<&UserId>, max: usize) -> Result<Vec<UserId>, Failure> {
    let names: Vec<String> = conn
        .prepare_cached("SELECT owner FROM streams WHERE owner > ?1 ORDER BY owner LIMIT ?2")
        .and_then(|mut s| {
            s.query_map(params![after.map_or("", UserId::as_str), limit(max)], |row| row.get(0))?
                .collect()
        })
        .context("listing owners")?;
    names
        .into_iter()
        .map(|name| UserId::parse(name).map_err(|e| Failure::permanent(format!("sqlite store: a stored owner: {e}"))))
        .collect()
}

/// The feed position of the last committed event (0 when the log is empty).
pub(crate) fn last_position(conn: &Connection) -> Result<u64, Failure> {
    let position: Option<i64> = conn
        // The sequence too: an erasure may have deleted the newest events, and a position never goes back.
        .query_row(
            "SELECT max(coalesce((SELECT max(position) FROM events), 0),
                        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))",
            [],
            |row| row.get(0),
        )
        .context("reading the change feed's position")?;
    uint(position.unwrap_or(0), "a feed position")
}

/// Up to `max` events of every user after feed position `after`, in commit order, and the position
/// after them (`after` itself when there are none).
pub(crate) fn changes_after(conn: &Connection, after: u64, max: usize) -> Result<(Vec<StoredEvent>, u64), Failure> {
    let raw: Vec<RawEvent> = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
        ))
        .and_then(|mut s| {
            s.query_map(params![int(after).unwrap_or(i64::MAX), limit(max)], RawEvent::from_row)?
                .collect()
        })
        .context("reading the change feed")?;
    let next = match raw.last() {
        Some(last) => uint(last.position, "a feed position")?,
        None => after,
    };
    let events = raw.into_iter().map(RawEvent::decode).collect::<Result<_, _>>()?;
    Ok((events, next))
}

pub(crate) fn consumer_position(conn: &Connection, name: &str) -> Result<u64, Failure> {
    let position: Option<i64> = conn
        .prepare_cached("SELECT position FROM consumers WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |row| row.get(0)).optional())
        .context("reading a consumer's position")?;
    uint(position.unwrap_or(0), "a consumer's position")
}

pub(crate) fn set_consumer_position(conn: &Connection, name: &str, position: i64) -> Result<(), Failure> {
    conn.prepare_cached(
        "INSERT INTO consumers (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    )
    .and_then(|mut s| s.execute(params![name, position]))
    .context("storing a consumer's position")?;
    Ok(())
}
