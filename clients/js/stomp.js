// stomp.js — @stomp/stompjs through ticketgate: every (re)connection gets a fresh ticket.
//
//   import { Client } from "@stomp/stompjs";
//   import { withTicketgate } from "ticketgate-client/stomp";
//   const client = withTicketgate(new Client({ reconnectDelay: 2000 }), {
//     url: "wss://chat.example.com/ws/stomp",
//     getAccessToken: () => auth.accessToken,
//     refresh: () => auth.refresh(),
//     ticketIn: "protocol",                          // or "url" (the default)
//     onRevoked: () => showLoggedOut(),
//   });
//   client.activate();
//
// stompjs calls `beforeConnect` before every connection attempt, reconnections included: that
// is where the ticket is fetched (a ticket works once). With `websocket.refresh_path` on at
// ticketgate, the adapter extends the socket's login before it ends (`keepSession`), so the
// STOMP session, its subscriptions included, outlives any number of login expiries. A socket
// ticketgate closed because the login expired anyway (4401) simply reconnects: the ticket
// request finds the login stale, refreshes it and goes on. A revoked login (4403), or a login the ticket endpoint refuses, deactivates
// the client instead of retrying forever. A refused ticket request (429, 503) waits its
// Retry-After before stompjs tries again, and a ticket paced by the upgrade budget is used
// after its connect_after_ms. With resume on at ticketgate, the socket stompjs gets is a
// `ResumingSocket`: a connection that breaks without a close frame is resumed under stompjs,
// which never sees it, so the STOMP session and its subscriptions go on (no CONNECT, no
// SUBSCRIBE again) and no message is missed; only a refused resume reaches stompjs as a close,
// and it reconnects as before. On a route with `stomp:` ticketgate judges destinations: a
// refused frame closes the socket with 1008 after an ERROR frame (stompjs's onStompError sees
// it); the adapter then deactivates the client and calls onRefused, rather than reconnect to
// send the frame again. ticketgate's own closes send an ERROR naming the reason first too.

import {
  REVOKED, ResumingSocket, TicketError, fetchTicketDetails, keepSession, loginExpiry, ticketProtocols, ticketUrlFor,
  withTicket,
} from "./ticketgate.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** The close code of a socket ticketgate closed for a refused STOMP frame. */
const POLICY_VIOLATION = 1008;

/**
 * Sets `client` (a @stomp/stompjs Client) up to connect to `url` through ticketgate.
 * Options: url (required), getAccessToken (required), refresh, ticketUrl, refreshUrl,
 * keepSessions (true), ticketIn ("url" or "protocol"), ticketParam ("ticket"), onStep,
 * onRevoked(reason), onRefused(reason) (a `stomp:` route refused a frame: "forbidden
 * destination" or "malformed frame"; the client is deactivated), onTicketError(error).
 * Returns the client.
 */
export function withTicketgate(client, options) {
  if (typeof options?.getAccessToken !== "function" || !options.url) {
    throw new TypeError("withTicketgate(client, { url, getAccessToken }) needs both");
  }
  const settings = {
    ticketUrl: ticketUrlFor(options.url),
    refreshUrl: ticketUrlFor(options.url, "/ws-refresh"),
    keepSessions: true,
    ticketParam: "ticket",
    ticketIn: "url",
    onStep: () => {},
    onRevoked: () => {},
    onRefused: () => {},
    onTicketError: () => {},
    ...options,
  };
  const ownBeforeConnect = client.beforeConnect;
  client.beforeConnect = async (...args) => {
    let details;
    try {
      details = await fetchTicketDetails(settings);
    } catch (error) {
      settings.onTicketError(error);
      // A refused login does not get better by retrying.
      if (error instanceof TicketError && error.status === 401) await client.deactivate();
      // ticketgate said when to come back: stompjs's next attempt waits that long.
      if (error instanceof TicketError && error.retryAfter) await sleep(error.retryAfter * 1000);
      throw error;
    }
    const { ticket, session, resume, token, connectAfterMs } = details;
    // ticketgate paces upgrades to its budget: the ticket says when this one fits.
    if (connectAfterMs > 0) await sleep(connectAfterMs);
    const stompProtocols = client.stompVersions.protocolVersions();
    const inProtocol = settings.ticketIn === "protocol";
    // The adapter opens the socket itself (in both modes) so that it sees its close code
    // whatever handlers the application sets on the client.
    client.webSocketFactory = () => {
      const first = inProtocol
        ? new WebSocket(settings.url, ticketProtocols(ticket, stompProtocols))
        : new WebSocket(withTicket(settings.url, ticket, settings.ticketParam), stompProtocols);
      const socket = new ResumingSocket(first, { ...settings, session, resume });
      let stopKeeping = () => {};
      socket.addEventListener("open", () => {
        if (session && settings.keepSessions) {
          stopKeeping = keepSession({
            ...settings, session, expiresAt: loginExpiry(token), onRefreshed: (body) => socket.takeToken(body),
          });
        }
      });
      socket.addEventListener("close", (event) => {
        stopKeeping();
        if (event.code === REVOKED) {
          client.deactivate();
          settings.onRevoked(event.reason);
        }
        // ticketgate refused a frame (a destination the login may not use, or a frame it
        // cannot read): reconnecting would only send it again.
        if (event.code === POLICY_VIOLATION) {
          client.deactivate();
          settings.onRefused(event.reason);
        }
      });
      return socket;
    };
    await ownBeforeConnect?.(...args);
  };
  return client;
}
