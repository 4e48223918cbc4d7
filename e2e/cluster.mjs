// Real processes for the browser tests: a redis-server on a free port with
// its own data dir, chat server instances sharing it, and nginx in front of
// them rendered from deploy/nginx.conf.template (as scripts/cluster.sh does).
// Everything lives in one temp dir and is killed by `stop()`, and by a
// process exit hook if a test crashes before its cleanup runs.
//
// Environment: SERVER_BIN (the `server` binary, required), SITE_ROOT (the
// `cargo leptos build` output; default ./target/site).

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/// Ports other things on this machine use: the demo cluster and the shared redis.
const RESERVED = new Set([3000, 3001, 3002, 3010, 6379]);

/// Every child of this process, so an unexpected exit still kills them.
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/// A port that was free a moment ago (bind :0, read it, release it).
export async function freePort() {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.unref();
      srv.on('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port } = srv.address();
        srv.close(() => resolve(port));
      });
    });
    if (!RESERVED.has(port)) return port;
  }
}

/// Polls `check` (async, truthy when done) every `every` ms until it
/// succeeds; fails after `timeout` ms with `what` and the last error.
export async function until(what, check, { timeout = 20_000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

async function httpOk(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  await res.arrayBuffer();
  return res.status === 200;
}

function redisPing(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    sock.setTimeout(1_000, () => sock.destroy());
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      data += d;
      if (data.includes('\r\n')) {
        sock.end();
        resolve(data.startsWith('+PONG'));
      }
    });
    sock.on('error', () => resolve(false));
    sock.on('close', () => resolve(false));
  });
}

/// A child process whose stdout and stderr go to `log`.
class Proc {
  constructor(name, cmd, args, log) {
    this.name = name;
    this.log = log;
    const fd = fs.openSync(log, 'a');
    this.child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: { ...process.env, RUST_LOG: undefined } });
    fs.closeSync(fd);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        live.delete(this.child);
        resolve({ code, signal });
      });
      this.child.on('error', (e) => {
        live.delete(this.child);
        fs.appendFileSync(log, `spawn failed: ${e.message}\n`);
        resolve({ code: null, signal: null, error: e });
      });
    });
    this.alive = true;
    this.exited.then(() => {
      this.alive = false;
    });
    live.add(this.child);
  }

  /// Sends `signal` (if still running) and waits for the exit.
  async kill(signal = 'SIGKILL') {
    if (this.alive) {
      try {
        this.child.kill(signal);
      } catch {
        // raced with its exit
      }
    }
    const timeout = new Promise((r) => setTimeout(r, 5_000, 'timeout'));
    if ((await Promise.race([this.exited, timeout])) === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  tail(lines = 30) {
    try {
      return fs.readFileSync(this.log, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
}

/// A chat server instance: `url` is its own origin, `id` its instance id.
class Instance extends Proc {
  constructor(id, port, bin, argv, log) {
    super(id, bin, argv, log);
    this.id = id;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
  }
}

/// Starts redis-server, `instances` chat servers (ids e2e-a, e2e-b, ...)
/// sharing it and one session secret, and, with `nginx: true`, nginx in
/// front of the first two; `args` go to every instance. Resolves when every
/// one of them is ready.
export async function startCluster({ instances = 2, nginx = false, tag = 'chat', args = [] } = {}) {
  const server = process.env.SERVER_BIN;
  if (!server || !fs.existsSync(server)) {
    throw new Error(`SERVER_BIN must name the built server binary (got ${server ?? 'nothing'})`);
  }
  const siteRoot = process.env.SITE_ROOT || path.join(REPO, 'target/site');
  if (!fs.existsSync(path.join(siteRoot, 'pkg'))) {
    throw new Error(`SITE_ROOT ${siteRoot} has no pkg/: run cargo leptos build first`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `chat-e2e-${tag}-`));
  const cluster = new Cluster(dir);
  try {
    // Redis: its own port and data dir, nothing persisted.
    const redisPort = await freePort();
    fs.mkdirSync(path.join(dir, 'redis'));
    cluster.redis = cluster.track(
      new Proc('redis', 'redis-server', [
        '--port', String(redisPort), '--bind', '127.0.0.1', '--protected-mode', 'no',
        '--save', '', '--appendonly', 'no', '--dir', path.join(dir, 'redis'),
      ], path.join(dir, 'redis.log')),
    );
    cluster.redisUrl = `redis://127.0.0.1:${redisPort}`;
    await cluster.ready('redis-server', () => redisPing(redisPort), cluster.redis);

    const secret = `e2e-secret-${Math.random().toString(36).slice(2)}-0123456789`;
    for (let i = 0; i < instances; i++) {
      const id = `e2e-${String.fromCharCode(97 + i)}`;
      const port = await freePort();
      const argv = [
        '--bind', '127.0.0.1', '--port', String(port), '--instance-id', id,
        '--redis-url', cluster.redisUrl, '--session-secret', secret,
        '--site-root', siteRoot, '--trusted-proxies', '127.0.0.1', '--log', 'info',
        ...args,
      ];
      const inst = cluster.track(new Instance(id, port, server, argv, path.join(dir, `${id}.log`)));
      cluster.instances.push(inst);
    }
    await Promise.all(
      cluster.instances.map((inst) => cluster.ready(`${inst.id} /readyz`, () => httpOk(`${inst.url}/readyz`), inst)),
    );

    if (nginx) {
      const [a, b] = cluster.instances;
      const port = await freePort();
      const ngx = path.join(dir, 'nginx');
      fs.mkdirSync(path.join(ngx, 'logs'), { recursive: true });
      fs.mkdirSync(path.join(ngx, 'tmp'));
      // nginx workers run as `nobody` when the master is root: they must
      // reach the temp dirs (the WASM bundle is buffered to disk).
      for (const d of [dir, ngx, path.join(ngx, 'tmp')]) fs.chmodSync(d, 0o755);
      const rendered = spawnSync('envsubst', ['${LISTEN} ${UPSTREAM_A} ${UPSTREAM_B}'], {
        input: fs.readFileSync(path.join(REPO, 'deploy/nginx.conf.template')),
        env: {
          ...process.env,
          LISTEN: `127.0.0.1:${port}`,
          UPSTREAM_A: `127.0.0.1:${a.port}`,
          UPSTREAM_B: `127.0.0.1:${b.port}`,
        },
      });
      if (rendered.status !== 0) throw new Error(`envsubst failed: ${rendered.stderr}`);
      fs.writeFileSync(path.join(ngx, 'chat.conf'), rendered.stdout);
      fs.writeFileSync(
        path.join(ngx, 'nginx.conf'),
        `worker_processes 1;
daemon off;
master_process on;
pid ${ngx}/nginx.pid;
error_log ${ngx}/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path ${ngx}/tmp/body;
    proxy_temp_path ${ngx}/tmp/proxy;
    fastcgi_temp_path ${ngx}/tmp/fastcgi;
    uwsgi_temp_path ${ngx}/tmp/uwsgi;
    scgi_temp_path ${ngx}/tmp/scgi;
    include ${ngx}/chat.conf;
}
`,
      );
      cluster.nginx = cluster.track(
        new Proc('nginx', 'nginx', ['-e', `${ngx}/logs/error.log`, '-p', ngx, '-c', `${ngx}/nginx.conf`],
          path.join(dir, 'nginx.log')),
      );
      cluster.url = `http://127.0.0.1:${port}`;
      await cluster.ready('nginx', () => httpOk(`${cluster.url}/readyz`), cluster.nginx);
    }
    return cluster;
  } catch (e) {
    await cluster.stop();
    throw e;
  }
}

class Cluster {
  constructor(dir) {
    this.dir = dir;
    this.procs = [];
    this.instances = [];
    this.redis = null;
    this.nginx = null;
    this.url = null;
  }

  track(proc) {
    this.procs.push(proc);
    return proc;
  }

  /// Waits for `check`, failing early (with its log) if `proc` exits.
  async ready(what, check, proc) {
    await until(what, async () => {
      if (!proc.alive) throw new Error(`${proc.name} exited:\n${proc.tail()}`);
      return check();
    });
  }

  instance(id) {
    const inst = this.instances.find((i) => i.id === id);
    if (!inst) throw new Error(`no instance ${id}`);
    return inst;
  }

  /// The last lines of every process's log, for a failing test.
  logs() {
    return this.procs.map((p) => `--- ${p.name} (${p.alive ? 'running' : 'exited'}) ---\n${p.tail()}`).join('\n');
  }

  /// Kills everything (nginx gets SIGTERM so its workers go too) and
  /// removes the temp dir. Safe to call twice.
  async stop() {
    await Promise.all(this.procs.map((p) => p.kill(p.name === 'nginx' ? 'SIGTERM' : 'SIGKILL')));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
