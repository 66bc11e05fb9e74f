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
// is where the ticket is fetched (a ticket works once). A socket ticketgate closed because the
// login expired (4401) simply reconnects: the ticket request finds the login stale, refreshes
// it and goes on. A revoked login (4403), or a login the ticket endpoint refuses, deactivates
// the client instead of retrying forever.

import { REVOKED, TicketError, fetchTicket, ticketProtocols, ticketUrlFor, withTicket } from "./ticketgate.js";

/**
 * Sets `client` (a @stomp/stompjs Client) up to connect to `url` through ticketgate.
 * Options: url (required), getAccessToken (required), refresh, ticketUrl, ticketIn ("url" or
 * "protocol"), ticketParam ("ticket"), onStep, onRevoked(reason), onTicketError(error).
 * Returns the client.
 */
export function withTicketgate(client, options) {
  if (typeof options?.getAccessToken !== "function" || !options.url) {
    throw new TypeError("withTicketgate(client, { url, getAccessToken }) needs both");
  }
  const settings = {
    ticketUrl: ticketUrlFor(options.url),
    ticketParam: "ticket",
    ticketIn: "url",
    onStep: () => {},
    onRevoked: () => {},
    onTicketError: () => {},
    ...options,
  };
  const ownBeforeConnect = client.beforeConnect;
  client.beforeConnect = async (...args) => {
    let ticket;
    try {
      ticket = await fetchTicket(settings);
    } catch (error) {
      settings.onTicketError(error);
      // A refused login does not get better by retrying.
      if (error instanceof TicketError && error.status === 401) await client.deactivate();
      throw error;
    }
    const stompProtocols = client.stompVersions.protocolVersions();
    const inProtocol = settings.ticketIn === "protocol";
    // The adapter opens the socket itself (in both modes) so that it sees its close code
    // whatever handlers the application sets on the client.
    client.webSocketFactory = () => {
      const socket = inProtocol
        ? new WebSocket(settings.url, ticketProtocols(ticket, stompProtocols))
        : new WebSocket(withTicket(settings.url, ticket, settings.ticketParam), stompProtocols);
      socket.addEventListener("close", (event) => {
        if (event.code === REVOKED) {
          client.deactivate();
          settings.onRevoked(event.reason);
        }
      });
      return socket;
    };
    await ownBeforeConnect?.(...args);
  };
  return client;
}
