//! Reading one Redis stream after the last entry read: what every replica does to follow
//! what the others publish (revocations, session refreshes).

use std::time::Duration;

use redis::streams::StreamReadReply;

use super::{Connection, SharedError, no_answer, unreachable};

/// Entries per read: catching up on a long stream takes several reads of bounded size.
pub const BATCH: usize = 1000;

/// One `XREAD` of `stream` after the entry `after`, blocking up to `block_ms` when given;
/// `each` gets the text of every entry's `field`. Returns how many entries were read and the
/// id of the last.
pub async fn read(
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
