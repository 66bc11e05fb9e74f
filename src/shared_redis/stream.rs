//! Reading one Redis stream after the last entry read: what every replica does to follow
//! what the others publish (revocations, session refreshes).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::streams::StreamReadReply;

use super::{Connection, SharedError, no_answer, unreachable};

/// Entries per read: catching up on a long stream takes several reads of bounded size.
pub const BATCH: usize = 1000;

/// Where a follower is in a stream: the id of the last entry read; reading resumes after it.
pub struct Cursor(Mutex<String>);

impl Cursor {
    /// At the entry `id` (`0-0`: the stream's start; `<ms>-0`: what came after that moment).
    pub fn at(id: String) -> Self {
        Cursor(Mutex::new(id))
    }

    /// One `XREAD` of `stream` after the cursor, blocking up to `block_ms` when given; `each`
    /// gets the text of every entry's `field`, and the cursor moves past them. Returns how
    /// many entries were read.
    pub async fn read(
        &self,
        connection: &mut Connection,
        stream: &str,
        field: &str,
        block_ms: Option<u64>,
        each: impl FnMut(&str),
    ) -> Result<usize, SharedError> {
        let after = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (read, last) = read(connection, stream, field, &after, block_ms, each).await?;
        if let Some(last) = last {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = last;
        }
        Ok(read)
    }
}

/// One `XREAD` of `stream` after the entry `after`, blocking up to `block_ms` when given;
/// `each` gets the text of every entry's `field`. Returns how many entries were read and the
/// id of the last.
async fn read(
    connection: &mut Connection,
    stream: &str,
    field: &str,
    after: &str,
    block_ms: Option<u64>,
    mut each: impl FnMut(&str),
) -> Result<(usize, Option<String>), SharedError> {
    let mut read = redis::cmd("XREAD");
    read.arg("COUNT").arg(BATCH);
    if let Some(ms) = block_ms {
        read.arg("BLOCK").arg(ms);
    }
    read.arg("STREAMS").arg(stream).arg(after);
    // A read's whole wait: its blocking time and a round trip.
    let deadline = Duration::from_millis(block_ms.unwrap_or(0) + 2000);
    let reply = tokio::time::timeout(
        deadline,
        read.query_async::<Option<StreamReadReply>>(connection),
    )
    .await
    .map_err(|_| no_answer())?
    .map_err(unreachable)?;
    let entries: Vec<_> = reply
        .into_iter()
        .flat_map(|reply| reply.keys)
        .flat_map(|key| key.ids)
        .collect();
    for entry in &entries {
        if let Some(redis::Value::BulkString(bytes)) = entry.map.get(field)
            && let Ok(text) = std::str::from_utf8(bytes)
        {
            each(text);
        }
    }
    Ok((entries.len(), entries.last().map(|e| e.id.clone())))
}
