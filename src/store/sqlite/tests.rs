//! Tests of what is SQLite's own: its errors' meaning, and the migrations.

use super::*;
use crate::store::Store;
use crate::store::fixtures::stored_job;
use rusqlite::Connection;

#[test]
fn a_refused_write_is_named_disk_full() {
    let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
    assert!(StoreError::from(failure(rusqlite::ffi::SQLITE_FULL)).is_disk_full());
    // EFBIG (a quota, RLIMIT_FSIZE) reaches SQLite as a failed write.
    assert!(StoreError::from(failure(rusqlite::ffi::SQLITE_IOERR_WRITE)).is_disk_full());
    assert!(!StoreError::from(failure(rusqlite::ffi::SQLITE_IOERR_READ)).is_disk_full());
    assert!(!StoreError::from(failure(rusqlite::ffi::SQLITE_BUSY)).is_disk_full());
}

#[tokio::test]
async fn a_database_of_an_older_schema_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = Store::open(&path, "test").unwrap();
    stored_job(&store, "0a0b0c", "user:alice").await;
    drop(store);
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::MIGRATIONS.len() as i64);
    let indexes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'jobs_created'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 1);
}

/// A database from before the id sequence (schema step 10) with messages in it: the sequence
/// goes on from the highest id, so no key is drawn twice.
#[tokio::test]
async fn the_id_sequence_goes_on_from_a_database_with_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &schema::MIGRATIONS[..10] {
            tx.execute_batch(sql).unwrap();
        }
        tx.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('install_id', 'abcd');
             INSERT INTO outbox (id, key, channel, chat_key, route, kind, state, created_at)
             VALUES (41, 'abcd29', 'webhook', 'webhook|a', '{}', 'reply', 'delivered', 1);",
        )
        .unwrap();
        tx.pragma_update(None, "user_version", 10).unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(&path, "test").unwrap();
    store
        .enqueue_outbox(vec![NewOutbox {
            route: crate::store::fixtures::route("a"),
            session: None,
            kind: "reply",
            chunks: vec!["next".into()],
        }])
        .await
        .unwrap();
    let listed = store.list_outbox(10).await.unwrap();
    assert_eq!(listed[0].key, "abcd2a", "id 42, after the 41 already there");
}
