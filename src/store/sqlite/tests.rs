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
            job_id: None,
            buttons: Vec::new(),
        }])
        .await
        .unwrap();
    let listed = store.list_outbox(10).await.unwrap();
    assert_eq!(listed[0].key, "abcd2a", "id 42, after the 41 already there");
}

/// The CI failure of 2026-12-07: with the disk full, a webhook message was answered 503
/// because its route lookup had shared a group commit with a write whose COMMIT failed.
#[tokio::test]
async fn a_read_is_not_failed_by_a_write_whose_commit_fails_beside_it() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let dir = tempfile::tempdir().unwrap();
    let engine = engine::Engine::open(&dir.path().join("db.sqlite")).unwrap();
    // A deferred foreign key fails at COMMIT, as a full disk does.
    engine
        .call(|conn| {
            conn.execute_batch(
                "CREATE TABLE parent (id INTEGER PRIMARY KEY);
                 CREATE TABLE child (parent INTEGER
                     REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
                 INSERT INTO parent VALUES (1);",
            )?;
            Ok(())
        })
        .await
        .unwrap();

    // Hold the store thread so that the write and the read queue up for one batch. One poll
    // queues an op; the store thread is a thread of its own, so blocking here is fine.
    let mut cx = Context::from_waker(Waker::noop());
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let mut holder = std::pin::pin!(engine.call(move |_| {
        let _ = started_tx.send(());
        let _ = release_rx.recv_timeout(std::time::Duration::from_secs(10));
        Ok(())
    }));
    assert!(matches!(holder.as_mut().poll(&mut cx), Poll::Pending));
    started_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the store thread runs the holder");

    let mut write = std::pin::pin!(engine.call(|conn| {
        conn.execute("INSERT INTO child VALUES (99)", [])?;
        Ok(())
    }));
    let mut read = std::pin::pin!(engine.read(|conn| {
        Ok(conn.query_row("SELECT COUNT(*) FROM parent", [], |row| {
            row.get::<_, i64>(0)
        })?)
    }));
    // Queued in this order while the thread is held.
    assert!(matches!(write.as_mut().poll(&mut cx), Poll::Pending));
    assert!(matches!(read.as_mut().poll(&mut cx), Poll::Pending));
    release_tx.send(()).unwrap();

    let (held, written, count) = tokio::join!(holder, write, read);
    held.unwrap();
    assert!(written.is_err(), "the deferred key fails the commit");
    assert_eq!(count.unwrap(), 1, "the read beside it is answered");
}
