// Compiled (not run) by `npm test`: the declarations describe how the modules are used.
import { Client } from "@stomp/stompjs";
import { LOGIN_EXPIRED, REVOKED, ResumingSocket, TicketError, connect, ticketProtocols } from "../ticketgate.js";
import { withTicketgate } from "../stomp.js";

const socket = connect("wss://chat.example.com/ws", {
  getAccessToken: async () => "token",
  refresh: async () => undefined,
  ticketIn: "protocol",
  protocols: ["chat.v1"],
  onStep: (step, detail) => console.log(step, detail),
});
socket.addEventListener("reconnect", () => undefined);
socket.addEventListener("resume", () => undefined);
socket.send("hello");
const chosen: string = socket.protocol;
const codes: [4401, 4403] = [LOGIN_EXPIRED, REVOKED];
const entries: string[] = ticketProtocols("tg2.x", "v12.stomp");

const client: Client = withTicketgate(new Client({ reconnectDelay: 1000 }), {
  url: "wss://chat.example.com/ws/stomp",
  getAccessToken: () => "token",
  onRevoked: (reason: string) => console.log(reason),
  onRefused: (reason: string) => console.log(reason),
  onTicketError: (error) => console.log(error instanceof TicketError ? error.status : error.message),
});
client.activate();

const resuming = new ResumingSocket(new WebSocket("wss://chat.example.com/ws?ticket=tg2.x"), {
  url: "wss://chat.example.com/ws",
  session: "handle",
  resume: "token",
  refreshUrl: "https://chat.example.com/ws-refresh",
  getAccessToken: () => "token",
});
resuming.onclose = (event) => console.log(event.code);
resuming.binaryType = "arraybuffer";
resuming.takeToken({ resume: "next" });
console.log(chosen, codes, entries, resuming.readyState);
