// A Node.js https upstream for the TLS tests: `node https_upstream.js PORT CERT KEY NAME
// [CLIENT_CA]`. Answers every request with `NAME PATH`, plus whether the request came
// with a client certificate; with CLIENT_CA it requires one signed by that CA (mTLS).
const https = require('https');
const fs = require('fs');
const [port, cert, key, name, clientCa] = process.argv.slice(2);
const options = { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };
if (clientCa) {
  options.ca = fs.readFileSync(clientCa);
  options.requestCert = true;
  options.rejectUnauthorized = true;
}
const server = https.createServer(options, (req, res) => {
  const peer = req.socket.getPeerCertificate();
  const who = peer && peer.subject ? peer.subject.CN : 'none';
  res.setHeader('x-client-cert', who);
  res.setHeader('x-forwarded-proto-seen', req.headers['x-forwarded-proto'] || '');
  res.end(`${name} ${req.url}\n`);
});
server.listen(Number(port), '127.0.0.1');
