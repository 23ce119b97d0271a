//! Reading where each session was last active (the writes are part of accepting a message,
//! `inbound.rs`).

use execrelay_channel::Route;
use rusqlite::{Connection, OptionalExtension};

use super::rows::*;
use crate::store::types::*;

pub(super) fn last_route(conn: &Connection, session: &str) -> Result<Option<Route>, StoreError> {
    let route: Option<String> = conn
        .prepare_cached("SELECT route FROM routes WHERE session = ?1")?
        .query_row([session], |row| row.get(0))
        .optional()?;
    route.as_deref().map(route_from).transpose()
}

pub(super) fn has_route(conn: &Connection, session: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM routes WHERE session = ?1")?
        .exists([session])?)
}

pub(super) fn list_routes(conn: &Connection) -> Result<Vec<(String, Route)>, StoreError> {
    collect_rows(
        conn,
        "SELECT session, route FROM routes ORDER BY session",
        [],
        |row| {
            let route: String = row.get(1)?;
            Ok((row.get(0)?, route_from(&route)?))
        },
    )
}
