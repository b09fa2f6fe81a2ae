// Many tiny HTTP servers in one Node process, for the health-checker load test.
// Usage: node many_ports.js N. Listens on N ephemeral loopback ports, then prints their
// numbers as one JSON array on one line. Every request on any of them gets 200 "ok"
// (kept alive); a request to /down on a port makes that port answer 503 from then on.
'use strict';
const http = require('http');

const n = Number(process.argv[2] || 1000);
const ports = [];
let ready = 0;
for (let i = 0; i < n; i += 1) {
  let down = false;
  const server = http.createServer((req, res) => {
    if (req.url === '/down') down = true;
    const status = down ? 503 : 200;
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': 2 });
    res.end('ok');
  });
  server.keepAliveTimeout = 60000;
  server.listen(0, '127.0.0.1', () => {
    ports[i] = server.address().port;
    ready += 1;
    if (ready === n) process.stdout.write(JSON.stringify(ports) + '\n');
  });
}
