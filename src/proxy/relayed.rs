//! A WebSocket after its 101 belongs to the relay (`crate::relay`), not to Pingora: the
//! handshake's upstream connection is made by `handover::Connector` (so its stream can be
//! taken), the client's connection is asked for at the 101 (`connection::hand_over`), and
//! once Pingora let go of the request both go to a relay task of their own, which writes the
//! socket's access-log line and updates its metrics when it ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pingora::prelude::HttpPeer;
use pingora::proxy::Session;

use super::admit::Seen;
use super::log::Relayed;
use super::policy::Policy;
use super::upgrade::{self, Handshake};
use crate::access_log::AccessLog;
use crate::admission::Admission;
use crate::connection::{self, Handover, Watched};
use crate::handover::{Connector, Upstream, UpstreamSlot};
use crate::lifecycle::InFlightGuard;
use crate::live::{CloseReason, SocketEnd};
use crate::metrics::Metrics;
use crate::refreshes::SharedSessions;
use crate::relay::{self, Judging, Resumable, Terms};
use crate::resume::ring::Ring;
use crate::resume::{ResumeConfig, Resumes};
use crate::stomp::SUBJECT_CLAIM;
use crate::stomp::pattern::ClaimLists;
use crate::subjects::Counted;

/// Where a handshake's two connections are taken from.
#[derive(Default)]
pub struct Slots {
    upstream: Arc<UpstreamSlot>,
    client: Option<Arc<Handover>>,
}

/// Each handshake's upstream connection is its own: a pool key no other request has, so
/// Pingora never hands the connection (and its slot) to another request.
static NEXT_POOL_KEY: AtomicU64 = AtomicU64::new(1);

/// The handshake's upstream connection is made by the handover connector, and never pooled.
pub fn connect_through(peer: &mut HttpPeer, slots: &Slots) {
    peer.options.custom_l4 = Some(Arc::new(Connector {
        slot: slots.upstream.clone(),
    }));
    peer.group_key = NEXT_POOL_KEY.fetch_add(1, Ordering::Relaxed);
    peer.options.idle_timeout = Some(Duration::ZERO);
}

/// The upstream answered 101: the client's connection is to be handed over once the 101 is
/// written. When it cannot be (a connection not accepted through `connection::Watch`),
/// Pingora carries the socket: a route whose frames are `judged` refuses it instead (fail
/// closed: only the relay judges STOMP frames).
pub fn ask_for_client(
    session: &Session,
    slots: Option<&mut Slots>,
    judged: bool,
) -> pingora::Result<()> {
    let handed = slots.is_some_and(|slots| {
        slots.client = connection::hand_over(session);
        slots.client.is_some()
    });
    if judged && !handed {
        return Err(pingora::Error::explain(
            pingora::ErrorType::HTTPStatus(502),
            "a stomp route's socket cannot be carried by the relay",
        ));
    }
    Ok(())
}

/// What a socket's end updates, wherever the socket was carried.
#[derive(Clone)]
pub struct Books {
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    pub shared_sessions: Option<Arc<SharedSessions>>,
    pub access_log: Arc<AccessLog>,
    pub resumes: Arc<Resumes>,
}

impl Books {
    /// An open socket ended: its metrics, its admission place, its subject's count, its
    /// shared session record.
    pub async fn socket_closed(
        &self,
        end: SocketEnd,
        counted: Option<Counted>,
        handshake: Option<&Handshake>,
    ) {
        self.metrics.websocket_closed(end);
        self.admission.websocket_closed();
        if let Some(counted) = counted {
            self.admission.subjects.closed(&counted);
            self.admission.subjects.forget(&counted).await;
        }
        if let Some(handshake) = handshake {
            upgrade::closed(handshake, self.shared_sessions.as_ref());
        }
    }
}

/// What the relay task takes of the request to finish its books.
pub struct Leftovers {
    pub counted: Option<Counted>,
    pub handshake: Option<Handshake>,
    pub line: Relayed,
    pub in_flight: Option<InFlightGuard>,
    pub upstream_write_timeout: Duration,
    /// With resume on the socket's route, the settings and the route's label.
    pub resume: Option<(ResumeConfig, String)>,
    /// On a `stomp:` route: its rules and the caller's claims.
    pub judging: Option<Judging>,
}

/// Both connections, once both were handed over (not when the 101 never reached the client).
pub struct Handed(Watched, Upstream);

impl Slots {
    pub fn take_both(&self) -> Option<Handed> {
        let client = self.client.as_ref()?.take()?;
        Some(Handed(client, self.upstream.take()?))
    }
}

/// On a `stomp:` route: its rules, and the caller's claims they may name (its subject as
/// `sub`, and the lists its identity kept).
pub fn judging(policy: &Policy, seen: &Seen) -> Option<Judging> {
    let rules = policy.route(seen.destination)?.stomp.clone()?;
    let mut claims: ClaimLists = BTreeMap::new();
    if let Some(caller) = &seen.caller {
        let identity = &caller.identity;
        claims.extend(identity.lists.clone());
        claims.insert(SUBJECT_CLAIM.to_owned(), vec![identity.subject.clone()]);
    }
    Some(Judging { rules, claims })
}

/// A socket opened with a resume token becomes resumable here: a door in this replica's
/// registry, an empty ring.
fn resumable(resumes: &Resumes, leftovers: &Leftovers) -> Option<Resumable> {
    let (config, route) = leftovers.resume.as_ref()?;
    let handshake = leftovers.handshake.as_ref()?;
    let (session, token) = (handshake.session.as_ref()?, handshake.resume.as_ref()?);
    Some(Resumable {
        door: resumes.open(route, session, token),
        ring: Ring::new(config.buffer_bytes),
        window: config.window,
    })
}

/// Relays the socket in a task of its own, which finishes its books when it ends.
pub fn start(Handed(client, upstream): Handed, books: Books, mut leftovers: Leftovers) {
    let resumable = resumable(&books.resumes, &leftovers);
    let door = resumable.as_ref().map(|r| r.door.clone());
    let terms = Terms {
        write_timeout: leftovers.upstream_write_timeout,
        resumable,
        judging: leftovers.judging.take(),
    };
    tokio::spawn(async move {
        let ended = relay::run(client, upstream, terms).await;
        if let Some(door) = door {
            books.resumes.closed(&door);
        }
        if let Some(refused) = &ended.stomp_refused {
            books.metrics.stomp_frame_refused(refused.label());
        }
        let end = match (ended.closed_by_us, &ended.error) {
            (Some(reason), _) => SocketEnd::ClosedBy(reason),
            (None, None) => SocketEnd::Normal,
            (None, Some(_)) => SocketEnd::Error,
        };
        books
            .socket_closed(end, leftovers.counted, leftovers.handshake.as_ref())
            .await;
        let reason = ended.closed_by_us.map(CloseReason::label);
        leftovers
            .line
            .record(reason, &books.access_log, &books.metrics);
        drop(leftovers.in_flight);
    });
}
