// A hybrid-connection listener built with Microsoft's hyco-ws (createRelayedServer): it
// echoes every message back on the connection it came from. Prints "listening" once its
// control channel is open; exits when stdin closes.
// Usage: node listener.js <listen URI> <token>
'use strict';
const WebSocket = require('hyco-ws');

const [uri, token] = process.argv.slice(2);
const server = WebSocket.createRelayedServer({ server: uri, token: token }, (ws) => {
  ws.on('message', (data) => ws.send(data));
});
server.on('listening', () => console.log('listening'));
server.on('error', (error) => console.error('error: ' + (error && error.message)));
process.stdin.on('end', () => {
  server.close();
  process.exit(0);
});
process.stdin.resume();
