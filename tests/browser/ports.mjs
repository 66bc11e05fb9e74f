// Loopback ports for the servers a browser test starts.

import net from "node:net";

/** A port nothing listens on right now (the servers bind it themselves a moment later). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}
