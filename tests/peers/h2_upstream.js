// An HTTP/2 cleartext (h2c, prior knowledge) upstream on Node's http2 module, for the
// gateway's HTTP/2 upstream tests.
//
// Usage: node h2_upstream.js PORT NAME
//   /echo      streams every DATA frame back as it arrives (a full-duplex echo) and
//              ends with trailers x-bytes (the bytes echoed) and x-served-by
//   /zeros?n=N N zero bytes, then trailers
//   anything   "NAME METHOD PATH PROTOCOL" and the stream's id (to tell connections
//              apart: ids grow on one connection)
const http2 = require('http2');

const port = Number(process.argv[2]);
const name = process.argv[3] || 'h2';
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  const url = new URL(headers[':path'], 'http://upstream');
  if (url.pathname === '/echo') {
    stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' },
      { waitForTrailers: true });
    let n = 0;
    stream.on('data', (d) => { n += d.length; stream.write(d); });
    stream.on('end', () => stream.end());
    stream.on('wantTrailers', () =>
      stream.sendTrailers({ 'x-bytes': String(n), 'x-served-by': name }));
    return;
  }
  if (url.pathname === '/zeros') {
    let left = Number(url.searchParams.get('n') || 0);
    stream.respond({ ':status': 200 }, { waitForTrailers: true });
    const chunk = Buffer.alloc(64 * 1024);
    const pump = () => {
      while (left > 0) {
        const piece = chunk.subarray(0, Math.min(left, chunk.length));
        left -= piece.length;
        if (!stream.write(piece)) { stream.once('drain', pump); return; }
      }
      stream.end();
    };
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-served-by': name }));
    pump();
    return;
  }
  stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-stream-id': String(stream.id) });
  stream.end(`${name} ${headers[':method']} ${headers[':path']} ${headers['x-test'] || ''}`);
});
server.listen(port, '127.0.0.1');
