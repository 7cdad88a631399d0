// A hybrid-connection sender built with Microsoft's hyco-ws (relayedConnect): sends
// binary messages of several sizes to an echo behind the listener and checks the bytes
// come back unchanged (a TCP target keeps the bytes, not the message boundaries), then
// closes with 1000. Prints one JSON line: {"ok": bool, "messages": n, "error": text}.
// Usage: node sender.js <connect URI> <token> <count>
'use strict';
const WebSocket = require('hyco-ws');

const [uri, token, countText] = process.argv.slice(2);
const count = parseInt(countText, 10);
const sent = [];
for (let i = 0; i < count; i++) {
  const size = [1, 17, 1400, 70000][i % 4];
  sent.push(Buffer.alloc(size, (i * 31) % 256));
}
const expected = Buffer.concat(sent);
let echoed = Buffer.alloc(0);
let received = 0;
let done = false;
const finish = (ok, error) => {
  if (done) return;
  done = true;
  console.log(JSON.stringify({ ok: ok, messages: received, error: error || null }));
  process.exit(ok ? 0 : 1);
};
const client = WebSocket.relayedConnect(uri, token, (ws) => {
  ws.on('message', (data) => {
    echoed = Buffer.concat([echoed, Buffer.from(data)]);
    if (!expected.subarray(0, echoed.length).equals(echoed)) {
      finish(false, 'the bytes came back changed at ' + echoed.length);
      return;
    }
    if (echoed.length === expected.length) {
      received = count;
      ws.close(1000, 'done');
    }
  });
  ws.on('close', () => finish(received === count, received === count ? null : 'closed early'));
  for (const message of sent) ws.send(message);
});
client.on('error', (error) => finish(false, String(error && error.message)));
client.on('unexpected-response', (request, response) =>
  finish(false, 'HTTP ' + response.statusCode));
setTimeout(() => finish(false, 'timed out'), 20000);
