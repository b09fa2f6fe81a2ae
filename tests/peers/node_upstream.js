// A Node.js `http` upstream for the end-to-end tests, with Node's defaults (keepAliveTimeout
// 5 s, announced as `Keep-Alive: timeout=5`; Node waits about a second longer before it
// closes). Usage: node node_upstream.js PORT [KEEP_ALIVE_TIMEOUT_MS]
//   /events?n=N&gap_ms=MS  server-sent events, one every MS ms; each event's data is the
//                          Date.now() at which it was written (chunked response)
//   /upload-times          answers, once the request body ended, the Date.now() at which
//                          each piece of it arrived (JSON array)
//   anything else          reads the body, answers "node METHOD BYTES\n"
// Every answer carries `x-port: PORT`, so a test can tell its endpoints apart.
'use strict';
const http = require('http');

const port = Number(process.argv[2]);
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://upstream');
  if (url.pathname === '/events') {
    const n = Number(url.searchParams.get('n') || 6);
    const gap = Number(url.searchParams.get('gap_ms') || 300);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-port': port });
    let i = 0;
    const send = () => {
      res.write(`id: ${i}\ndata: ${Date.now()}\n\n`);
      i += 1;
      if (i < n) setTimeout(send, gap); else res.end();
    };
    send();
    return;
  }
  const times = [];
  let bytes = 0;
  req.on('data', (d) => { bytes += d.length; times.push(Date.now()); });
  req.on('end', () => {
    const body = url.pathname === '/upload-times'
      ? JSON.stringify(times) + '\n'
      : `node ${req.method} ${bytes}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-port': port });
    res.end(body);
  });
});
if (process.argv[3]) server.keepAliveTimeout = Number(process.argv[3]);
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => process.exit(0));
