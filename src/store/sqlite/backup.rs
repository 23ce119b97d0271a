//! `execrelay backup PATH`: a consistent copy of the database, taken while the relay runs.
//!
//! `VACUUM INTO` reads one snapshot through a read-only connection of its own: the relay's
//! writer carries on meanwhile (WAL), and the copy is a complete, compact database file that
//! a relay can start on as it is.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Copies the database at `db` to `dest`, which must not exist yet. The copy is private
/// (0600): it holds message texts and routes.
pub fn backup(db: &Path, dest: &Path) -> Result<u64, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    if !db.exists() {
        return Err(StoreError::NotFound(format!(
            "there is no database at {} (has the relay run with this config?)",
            db.display()
        )));
    }
    // Made empty and private first: VACUUM INTO fills an empty file, with its mode.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|error| StoreError::Io(format!("cannot create {}: {error}", dest.display())))?;
    let copied = (|| -> Result<(), rusqlite::Error> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let dest = dest.to_string_lossy();
        conn.execute("VACUUM INTO ?1", [dest.as_ref()])?;
        Ok(())
    })();
    if let Err(error) = copied {
        let _ = std::fs::remove_file(dest);
        return Err(StoreError::Io(format!(
            "cannot copy {}: {error}",
            db.display()
        )));
    }
    let file = std::fs::File::open(dest)
        .and_then(|file| {
            file.sync_all()?;
            file.metadata()
        })
        .map_err(|error| StoreError::Io(format!("cannot sync {}: {error}", dest.display())))?;
    Ok(file.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn a_backup_is_a_store_the_relay_can_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("execrelay.db");
        let store = Store::open(&db, "local").unwrap();
        store
            .accept_inbound(crate::store::fixtures::inbound("a", Some("m1")))
            .await
            .unwrap();
        let copy = dir.path().join("copy.db");
        let bytes = backup(&db, &copy).unwrap();
        assert!(bytes > 0);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let restored = Store::open(&copy, "local").unwrap();
        assert_eq!(restored.pending_inbox(10).await.unwrap().len(), 1);
        // An existing file is never overwritten.
        let again = backup(&db, &copy).unwrap_err();
        assert!(again.to_string().contains("cannot create"), "{again}");
    }
}
