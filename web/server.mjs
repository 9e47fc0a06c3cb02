// A tiny static file server for the demo page (localhost only, correct `application/wasm` MIME type).
//   node web/server.mjs [--port 8080] [--root web]
// Prints `hvq web: http://127.0.0.1:PORT/` once listening (the e2e test waits for that line).
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const root = resolve(opt('root', fileURLToPath(new URL('.', import.meta.url))));
const port = Number(opt('port', process.env.PORT ?? 8080));

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.svg': 'image/svg+xml',
  '.ts': 'text/plain; charset=utf-8',
  '.safetensors': 'application/octet-stream',
  '.hvq': 'application/octet-stream',
};

export function startServer({ port: p = port, root: r = root, quiet = false } = {}) {
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    let rel = decodeURIComponent(url.pathname);
    if (rel.endsWith('/')) rel += 'index.html';
    const path = normalize(join(r, rel));
    if (!path.startsWith(r)) {
      res.writeHead(403).end('forbidden');
      return;
    }
    let st;
    try {
      st = statSync(path);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${rel}`);
      return;
    }
    if (!st.isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'content-type': MIME[extname(path)] ?? 'application/octet-stream',
      'content-length': st.size,
      'cache-control': 'no-cache',
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(path).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(p, '127.0.0.1', () => {
      const url = `http://127.0.0.1:${server.address().port}/`;
      if (!quiet) console.log(`hvq web: ${url} (serving ${r})`);
      ok({ server, url });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await startServer();
}
