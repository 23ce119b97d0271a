//! Builders the store's tests and the tests of its callers (retention) share.

use execrelay_channel::{ChatType, Route};

use super::*;

pub(crate) fn route(chat: &str) -> Route {
    Route {
        channel: "webhook".into(),
        account: String::new(),
        chat_id: chat.into(),
        thread_id: None,
        reply_to_message_id: None,
        chat_type: ChatType::Direct,
    }
}

pub(crate) fn inbound(chat: &str, id: Option<&str>) -> InboundRecord {
    InboundRecord {
        session: "user:webhook:alice".into(),
        route: route(chat),
        sender: "webhook:alice".into(),
        text: "/status".into(),
        platform_message_id: id.map(str::to_string),
        sent_at_ms: None,
    }
}

pub(crate) fn new_job(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        session: "user:webhook:alice".into(),
        origin: route("a"),
        command: "true".into(),
        cwd: ".".into(),
        requester: "webhook:alice".into(),
    }
}

pub(crate) fn exit_ok() -> JobFinal {
    JobFinal {
        state: JobState::Exited,
        exit_code: Some(0),
        signal: None,
        started_at: Some(1),
        finished_at: 2,
        detail: None,
    }
}

/// A stored job for `session` with id `id`, through the inbox as the relay makes them.
pub(crate) async fn stored_job(store: &Store, id: &str, session: &str) {
    let mut message = inbound("a", None);
    message.session = session.into();
    let InboundResult::Stored { inbox_id, .. } = store.accept_inbound(message).await.unwrap()
    else {
        panic!("not stored")
    };
    let job = NewJob {
        session: session.into(),
        ..new_job(id)
    };
    store
        .finish_inbox(inbox_id, Some(job), vec![])
        .await
        .unwrap();
}

/// Records that the platform took `chunk`.
pub(crate) async fn mark_sent(store: &Store, chunk: &ClaimedChunk) {
    let sent = ChunkOutcome::Delivered { platform_id: None };
    store
        .record_outcome(chunk.outbox_id, chunk.index, sent)
        .await
        .unwrap();
}

/// The backend the domain and model tests run against: the one place a second backend is
/// named, to run them all against it too.
pub(crate) fn open_in(dir: &std::path::Path, node: &str) -> Store {
    Store::open(&dir.join("db.sqlite"), node).unwrap()
}

/// A store in a fresh temporary folder (kept while the `TempDir` lives).
pub(crate) fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "test");
    (dir, store)
}

/// A reply to `chat` in the given chunks.
pub(crate) fn reply(chat: &str, chunks: &[&str]) -> NewOutbox {
    NewOutbox {
        route: route(chat),
        session: None,
        kind: "reply",
        chunks: chunks.iter().map(|c| c.to_string()).collect(),
        job_id: None,
        buttons: Vec::new(),
    }
}

/// The completion event of job `job`.
pub(crate) fn completion(job: &str) -> NewEvent {
    NewEvent {
        session: "user:webhook:alice".into(),
        context_key: Some(format!("exec:{job}")),
        text: format!("exec finished: true (exit 0 after 1ms, job {job})"),
        origin: Some(route("a")),
        wake: Some("exec-event".into()),
    }
}

/// The jobs retention may forget before `before`, by id.
pub(crate) async fn forgettable(store: &Store, before: Millis) -> Vec<String> {
    let jobs = store
        .forgettable_jobs(before, &JobCursor::start(), 10)
        .await
        .unwrap();
    jobs.into_iter().map(|job| job.id).collect()
}
