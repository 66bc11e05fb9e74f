import type { Client } from "@stomp/stompjs";
import type { TicketError, TicketOptions } from "./ticketgate.js";

export interface StompOptions extends TicketOptions {
  /** The STOMP endpoint's ws:// or wss:// URL. */
  url: string;
  ticketIn?: "url" | "protocol";
  ticketParam?: string;
  /** The login was revoked (close code 4403); the client is deactivated. */
  onRevoked?: (reason: string) => void;
  /** ticketgate refused a frame (close code 1008): "forbidden destination" or "malformed
   * frame"; the client is deactivated. */
  onRefused?: (reason: string) => void;
  onTicketError?: (error: TicketError | Error) => void;
}

export function withTicketgate<C extends Client>(client: C, options: StompOptions): C;
