// A real streaming client: Node's fetch (undici) reads server-sent events as they arrive
// and prints, as one JSON line, how late each event came: Date.now() at arrival minus the
// timestamp the upstream wrote into it. Usage: node sse_client.js URL
'use strict';

async function main() {
  const res = await fetch(process.argv[2]);
  const decoder = new TextDecoder();
  const lags = [];
  let text = '';
  for await (const piece of res.body) {
    const now = Date.now();
    text += decoder.decode(piece, { stream: true });
    let end;
    while ((end = text.indexOf('\n\n')) >= 0) {
      const event = text.slice(0, end);
      text = text.slice(end + 2);
      const data = event.split('\n').find((l) => l.startsWith('data: '));
      if (data) lags.push(now - Number(data.slice(6)));
    }
  }
  process.stdout.write(JSON.stringify({ status: res.status, lags }) + '\n');
}

main().catch((e) => { process.stderr.write(`${e.stack || e}\n`); process.exit(1); });
