/** Close code of a socket whose login expired. */
export const LOGIN_EXPIRED: 4401;
/** Close code of a socket whose login was revoked. */
export const REVOKED: 4403;

export class TicketError extends Error {
  readonly status: number;
  readonly error?: string;
  readonly description?: string;
  /** Seconds before asking again, when ticketgate said (429 busy, 503 upstream_unavailable). */
  readonly retryAfter?: number;
}

/** The wait before reconnection attempt `attempt`: full jitter over a capped exponential backoff. */
export function backoffMs(attempt: number, maxBackoffMs?: number, random?: () => number): number;

export type Step =
  | "ticket:request"
  | "ticket:received"
  | "login:refresh"
  | "session:refresh"
  | "session:extended"
  | "session:refused"
  | "socket:connecting"
  | "socket:open"
  | "socket:closed"
  | "socket:resuming"
  | "socket:resumed"
  | "resume:token"
  | "resume:refused";

export interface TicketOptions {
  /** The login JWT, sync or async. */
  getAccessToken: () => string | Promise<string>;
  /** Refreshes the login; resolves when `getAccessToken` returns the new one. */
  refresh?: () => unknown | Promise<unknown>;
  /** The ticket endpoint; default `/ws-ticket` on the socket's host. */
  ticketUrl?: string;
  /** The refresh endpoint; default `/ws-refresh` on the socket's host. */
  refreshUrl?: string;
  /** Extend the socket's login before it ends when ticketgate offers it (default true). */
  keepSessions?: boolean;
  onStep?: (step: Step, detail: Record<string, unknown>) => void;
}

export interface ConnectOptions extends TicketOptions {
  /** Where the ticket travels: the socket URL (default) or `Sec-WebSocket-Protocol`. */
  ticketIn?: "url" | "protocol";
  ticketParam?: string;
  /** The application's own subprotocols. */
  protocols?: string | string[];
  reconnect?: boolean;
  maxBackoffMs?: number;
}

export interface TicketgateSocket extends EventTarget {
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  /** Drops the current socket and connects again with a fresh ticket. */
  reconnect(): Promise<void>;
  readonly readyState: number;
  /** The application protocol the server chose ("" for none). */
  readonly protocol: string;
}

export function connect(url: string, options: ConnectOptions): TicketgateSocket;

/**
 * A WebSocket-shaped wrapper around a socket opened with a ticket that resumes it after a
 * 1006 close while it holds a resume token ("resume" event, no "close"); a refused resume ends
 * it with a "close" whose `resumeRefused` is true.
 */
export class ResumingSocket extends EventTarget {
  constructor(
    first: WebSocket,
    options: {
      /** The socket's URL without a ticket (resumes reopen it). */
      url: string;
      session?: string;
      /** The first resume token (the ticket answer's `resume`). */
      resume?: string;
      refreshUrl: string;
      getAccessToken: () => string | Promise<string>;
      onStep?: (step: Step, detail: Record<string, unknown>) => void;
    },
  );
  readonly url: string;
  readonly readyState: number;
  readonly protocol: string;
  binaryType: BinaryType;
  onopen: ((event: Event) => void) | null;
  onmessage: ((event: MessageEvent) => void) | null;
  onclose: ((event: CloseEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  /** A refresh's answer: its `resume` becomes the next token. */
  takeToken(body: Record<string, unknown>): void;
}
export function fetchTicket(options: TicketOptions & { ticketUrl: string }): Promise<string>;
export function fetchTicketDetails(
  options: TicketOptions & { ticketUrl: string },
): Promise<{ ticket: string; session?: string; resume?: string; token: string; connectAfterMs: number }>;
/** The `exp` of a login JWT (Unix seconds), read without verifying; null without one. */
export function loginExpiry(token: string): number | null;
/** Extends `session` before `expiresAt` (Unix seconds), again and again; returns stop(). */
export function keepSession(options: {
  session: string;
  expiresAt: number | null;
  refreshUrl: string;
  getAccessToken: () => string | Promise<string>;
  refresh?: () => unknown | Promise<unknown>;
  onStep?: (step: Step, detail: Record<string, unknown>) => void;
  /** Each 200's body; its `resume` is the socket's next resume token. */
  onRefreshed?: (body: Record<string, unknown>) => void;
  marginMs?: number;
}): () => void;
/** `POST refreshUrl` for `session` with the current login. */
export function postRefresh(options: {
  session: string;
  refreshUrl: string;
  getAccessToken: () => string | Promise<string>;
}): Promise<{ response: Response; body: Record<string, unknown> }>;
export function ticketUrlFor(socketUrl: string, ticketPath?: string): string;
export function withTicket(url: string, ticket: string, param?: string): string;
export function ticketProtocols(ticket: string, appProtocols?: string | string[]): string[];
