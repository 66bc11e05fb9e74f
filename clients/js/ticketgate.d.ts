/** Close code of a socket whose login expired. */
export const LOGIN_EXPIRED: 4401;
/** Close code of a socket whose login was revoked. */
export const REVOKED: 4403;

export class TicketError extends Error {
  readonly status: number;
  readonly error?: string;
  readonly description?: string;
}

export type Step =
  | "ticket:request"
  | "ticket:received"
  | "login:refresh"
  | "socket:connecting"
  | "socket:open"
  | "socket:closed";

export interface TicketOptions {
  /** The login JWT, sync or async. */
  getAccessToken: () => string | Promise<string>;
  /** Refreshes the login; resolves when `getAccessToken` returns the new one. */
  refresh?: () => unknown | Promise<unknown>;
  /** The ticket endpoint; default `/ws-ticket` on the socket's host. */
  ticketUrl?: string;
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
export function fetchTicket(options: TicketOptions & { ticketUrl: string }): Promise<string>;
export function ticketUrlFor(socketUrl: string, ticketPath?: string): string;
export function withTicket(url: string, ticket: string, param?: string): string;
export function ticketProtocols(ticket: string, appProtocols?: string | string[]): string[];
