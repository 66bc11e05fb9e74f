//! Why a credential was refused. Each variant knows its metric label and the text a client
//! sees; none of them can hold the credential itself, so an error can be logged anywhere.

/// A refusal of the caller's credentials (always a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("{0}")]
    Token(TokenProblem),
    #[error("{0}")]
    Ticket(TicketProblem),
    /// A credential in `Sec-WebSocket-Protocol` beside another one: which one counts would
    /// be a guess, so neither does (and no ticket is consumed).
    #[error("more than one credential")]
    TwoCredentials,
    /// A `Sec-WebSocket-Protocol` line that is not text: ticketgate cannot rewrite it, so a
    /// credential in it could not be kept from the upstream; no credential is taken at all.
    #[error("unreadable Sec-WebSocket-Protocol")]
    UnreadableProtocols,
}

impl AuthError {
    /// Every refusal, each token and ticket problem among them.
    pub fn all() -> impl Iterator<Item = AuthError> {
        [
            AuthError::Missing,
            AuthError::TwoCredentials,
            AuthError::UnreadableProtocols,
        ]
        .into_iter()
        .chain(TokenProblem::ALL.map(AuthError::Token))
        .chain(TicketProblem::ALL.map(AuthError::Ticket))
    }

    /// The `reason` label of `ticketgate_auth_failures_total` and of the access log.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Token(p) => p.reason(),
            AuthError::Ticket(p) => p.auth_failure_reason(),
            AuthError::TwoCredentials => "two_credentials",
            AuthError::UnreadableProtocols => "unreadable_protocols",
        }
    }
}

/// What was wrong with a bearer JWT. The description of `Expired` is the only one that says
/// "expired": clients look for it to know that refreshing their login will help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token issuer not accepted")]
    WrongIssuer,
    #[error("token audience not accepted")]
    WrongAudience,
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("token signature invalid")]
    BadSignature,
    #[error("no key for this token")]
    UnknownKey,
    #[error("token lacks a required claim")]
    MissingClaim,
    #[error("token too large")]
    TooLarge,
    /// RFC 7515 §4.1.11: a `crit` header names extensions the verifier must understand, and
    /// ticketgate understands none.
    #[error("token has a critical header extension")]
    CriticalHeader,
    /// The subject or a forwarded claim cannot be carried in a header value unchanged.
    #[error("token identity cannot be forwarded")]
    UnusableIdentity,
    /// The subject's logins up to some moment were revoked (`POST /revoke`).
    #[error("token revoked")]
    Revoked,
    #[error("token malformed")]
    Malformed,
}

impl TokenProblem {
    pub const ALL: [TokenProblem; 14] = [
        TokenProblem::Expired,
        TokenProblem::NotYetValid,
        TokenProblem::IssuedInFuture,
        TokenProblem::WrongIssuer,
        TokenProblem::WrongAudience,
        TokenProblem::AlgorithmNotAllowed,
        TokenProblem::BadSignature,
        TokenProblem::UnknownKey,
        TokenProblem::MissingClaim,
        TokenProblem::TooLarge,
        TokenProblem::CriticalHeader,
        TokenProblem::UnusableIdentity,
        TokenProblem::Revoked,
        TokenProblem::Malformed,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            TokenProblem::Expired => "expired",
            TokenProblem::NotYetValid => "not_yet_valid",
            TokenProblem::IssuedInFuture => "issued_in_future",
            TokenProblem::WrongIssuer => "wrong_issuer",
            TokenProblem::WrongAudience => "wrong_audience",
            TokenProblem::AlgorithmNotAllowed => "algorithm_not_allowed",
            TokenProblem::BadSignature => "bad_signature",
            TokenProblem::UnknownKey => "unknown_key",
            TokenProblem::MissingClaim => "missing_claim",
            TokenProblem::TooLarge => "too_large",
            TokenProblem::CriticalHeader => "critical_header",
            TokenProblem::UnusableIdentity => "unusable_identity",
            TokenProblem::Revoked => "revoked",
            TokenProblem::Malformed => "malformed",
        }
    }
}

/// What was wrong with a WebSocket ticket. None of the descriptions says "expired": that
/// word is reserved for login tokens, where it tells the client to refresh its login. A
/// client holding a stale ticket simply fetches a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketProblem {
    #[error("ticket invalid")]
    Invalid,
    #[error("ticket too old, fetch a new one")]
    Expired,
    #[error("ticket already used")]
    Replayed,
    /// Minted before this process restarted, when the store could not remember its use.
    #[error("ticket from before a restart, fetch a new one")]
    EarlierRun,
    #[error("tickets are only accepted on WebSocket upgrades")]
    NotUpgrade,
    /// Minted before its subject's logins were revoked.
    #[error("ticket revoked")]
    Revoked,
}

impl TicketProblem {
    pub const ALL: [TicketProblem; 6] = [
        TicketProblem::Invalid,
        TicketProblem::Expired,
        TicketProblem::Replayed,
        TicketProblem::NotUpgrade,
        TicketProblem::EarlierRun,
        TicketProblem::Revoked,
    ];

    /// The `reason` label of `ticketgate_tickets_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            TicketProblem::Invalid => "invalid",
            TicketProblem::Expired => "expired",
            TicketProblem::Replayed => "replayed",
            TicketProblem::EarlierRun => "earlier_run",
            TicketProblem::NotUpgrade => "not_upgrade",
            TicketProblem::Revoked => "revoked",
        }
    }

    /// The `reason` label of `ticketgate_auth_failures_total` and of the access log.
    pub fn auth_failure_reason(self) -> &'static str {
        match self {
            TicketProblem::Invalid => "ticket_invalid",
            TicketProblem::Expired => "ticket_expired",
            TicketProblem::Replayed => "ticket_replayed",
            TicketProblem::EarlierRun => "ticket_earlier_run",
            TicketProblem::NotUpgrade => "ticket_not_upgrade",
            TicketProblem::Revoked => "ticket_revoked",
        }
    }
}

/// Why a ticket was not redeemed: the `reason` of `ticketgate_tickets_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketRejection {
    Ticket(TicketProblem),
    /// The store could not say whether the ticket was used.
    StoreUnavailable,
}

impl TicketRejection {
    pub const ALL: [TicketRejection; 7] = [
        TicketRejection::Ticket(TicketProblem::ALL[0]),
        TicketRejection::Ticket(TicketProblem::ALL[1]),
        TicketRejection::Ticket(TicketProblem::ALL[2]),
        TicketRejection::Ticket(TicketProblem::ALL[3]),
        TicketRejection::Ticket(TicketProblem::ALL[4]),
        TicketRejection::Ticket(TicketProblem::ALL[5]),
        TicketRejection::StoreUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TicketRejection::Ticket(problem) => problem.reason(),
            TicketRejection::StoreUnavailable => "store_unavailable",
        }
    }
}
