// A Node.js `http` upstream for the end-to-end tests, with Node's defaults (keepAliveTimeout
// 5 s, announced as `Keep-Alive: timeout=5`; Node waits about a second longer before it
// closes). Usage: node node_upstream.js PORT [KEEP_ALIVE_TIMEOUT_MS]
//   /events?n=N&gap_ms=MS  server-sent events, one every MS ms; each event's data is the
//                          Date.now() at which it was written (chunked response)
//   /upload-times          answers, once the request body ended, the Date.now() at which
//                          each piece of it arrived (JSON array)
//   /echo                  streams the request body back as it arrives (chunked)
//   /trailers              a chunked body in two writes, then trailers x-checksum and
//                          x-status
//   /headers               answers the request's headers as JSON
//   /zeros?n=N             N bytes of 'z' in 64 KiB writes (chunked)
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
  if (url.pathname === '/echo') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-port': port });
    req.pipe(res);
    return;
  }
  if (url.pathname === '/trailers') {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum, x-status', 'x-port': port });
      res.write('part one\n');
      res.write('part two\n');
      res.addTrailers({ 'x-checksum': 'c0ffee', 'x-status': '0' });
      res.end();
    });
    return;
  }
  if (url.pathname === '/zeros') {
    let left = Number(url.searchParams.get('n') || 0);
    const piece = Buffer.alloc(64 * 1024, 'z');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-port': port });
    const more = () => {
      while (left > 0) {
        const n = Math.min(left, piece.length);
        left -= n;
        if (!res.write(n === piece.length ? piece : piece.subarray(0, n))) {
          res.once('drain', more);
          return;
        }
      }
      res.end();
    };
    more();
    return;
  }
  if (url.pathname === '/headers') {
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify(req.headers) + '\n';
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-port': port });
      res.end(body);
    });
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
