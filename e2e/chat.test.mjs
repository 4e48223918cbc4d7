// Browser end-to-end tests: the real UI (server-rendered, hydrated WASM) in
// headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core),
// against real server instances sharing a real redis-server, behind a real
// nginx. `make e2e` builds the site and runs this file; see e2e/cluster.mjs.
//
// Waits are bounded polls of the page (never sleeps): a bound only says how
// long to wait before calling it a failure.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO, startCluster, until } from './cluster.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARTIFACTS = process.env.E2E_ARTIFACTS || path.join(REPO, 'target/e2e');
const VIEWPORT = { width: 1000, height: 680 };
/// Bound for anything that crosses the network (reconnect backoff included).
const NET = 15_000;

fs.mkdirSync(ARTIFACTS, { recursive: true });

// ---------------------------------------------------------------- browsers

const browsers = new Set();
after(async () => {
  await Promise.all([...browsers].map((b) => b.close().catch(() => {})));
});

async function launch() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
    ],
  });
  browsers.add(browser);
  browser.on('disconnected', () => browsers.delete(browser));
  return browser;
}

/// One user: a browser of their own, on `url`, with `name` entered.
/// `clock: true` installs Playwright's controllable clock (timers run in
/// real time until paused).
async function openUser(url, name, { clock = false } = {}) {
  const browser = await launch();
  const context = await browser.newContext({ viewport: VIEWPORT });
  if (clock) await context.clock.install();
  const page = await context.newPage();
  page.setDefaultTimeout(NET);
  const user = { name, browser, page, dialogs: [], errors: [] };
  // Any alert/confirm/prompt is a failure (script ran from a message).
  page.on('dialog', (d) => {
    user.dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => user.errors.push(e.message));
  await page.goto(url);
  // The name form appears only once the WASM has hydrated and booted.
  await page.locator('#name').fill(name);
  await page.locator('#name').press('Enter');
  await connected(user);
  return user;
}

/// Waits until the page is connected and the room is joined (composer enabled);
/// returns the instance id it is connected to.
async function connected(user) {
  await user.page.locator('#status[data-state="connected"]').waitFor({ timeout: NET });
  await user.page.locator('#composer:enabled').waitFor({ timeout: NET });
  return server(user);
}

async function server(user) {
  return user.page.locator('#status').getAttribute('data-server');
}

async function send(user, body) {
  const composer = user.page.locator('#composer');
  await composer.fill(body);
  await composer.press('Enter');
  // Enter hands the text to the state and clears the draft.
  await until(`${user.name}'s composer to clear`, async () => (await composer.inputValue()) === '');
}

/// The message list as the page shows it.
async function messages(user) {
  return user.page.$$eval('#messages .web-message', (els) =>
    els.map((e) => ({
      offset: e.dataset.offset === undefined ? null : Number(e.dataset.offset),
      pending: e.dataset.pending === 'true',
      failed: e.dataset.failed === 'true',
      clientId: e.dataset.clientId,
      from: e.dataset.from,
      body: e.querySelector('.ui-msg-body')?.textContent ?? null,
    })),
  );
}

const shape = (list) => list.map((m) => `${m.offset}:${m.body}`);

/// Waits until every page shows exactly `bodies` (in any order, each once),
/// delivered, at offsets 1..N, identically; returns the common list.
async function converged(users, bodies, timeout = NET) {
  const want = [...bodies].sort();
  let last;
  try {
    await until(
      `${users.map((u) => u.name).join(' and ')} to show the same ${bodies.length} messages`,
      async () => {
        last = await Promise.all(users.map(messages));
        return last.every(
          (list) =>
            list.length === want.length &&
            list.every((m, i) => m.offset === i + 1 && !m.pending && !m.failed) &&
            JSON.stringify(list.map((m) => m.body).sort()) === JSON.stringify(want) &&
            JSON.stringify(shape(list)) === JSON.stringify(shape(last[0])),
        );
      },
      { timeout },
    );
  } catch (e) {
    e.message += `\nlast seen:\n${users.map((u, i) => `  ${u.name}: ${JSON.stringify(shape(last?.[i] ?? []))}`).join('\n')}`;
    throw e;
  }
  return last[0];
}

async function memberNames(user) {
  return user.page.locator('#members .web-member-name').allTextContents();
}

/// Saves one PNG showing the pages side by side, each labelled.
async function screenshot(file, users) {
  const shots = [];
  for (const u of users) {
    const png = await u.page.screenshot();
    const state = await u.page.locator('#status').getAttribute('data-state').catch(() => '?');
    const srv = await server(u).catch(() => '');
    shots.push({ label: `${u.name} — ${state}${srv ? ` via ${srv}` : ''}`, png: png.toString('base64') });
  }
  const browser = users[0].browser;
  const page = await browser.newPage({ viewport: { width: users.length * (VIEWPORT.width + 24) + 24, height: 400 } });
  try {
    const cells = shots
      .map(
        (s) => `<figure><figcaption>${s.label.replace(/[<&>]/g, (c) => `&#${c.charCodeAt(0)};`)}</figcaption>
          <img src="data:image/png;base64,${s.png}"></figure>`,
      )
      .join('');
    await page.setContent(`<!doctype html><style>
      body { margin: 0; padding: 12px; display: flex; gap: 24px; background: #444; font: 15px sans-serif; }
      figure { margin: 0; } figcaption { color: #fff; padding: 0 0 6px; }
      img { display: block; width: ${VIEWPORT.width}px; border: 1px solid #000; }
    </style>${cells}`);
    await page.locator('img').last().evaluate((img) => img.decode());
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await page.screenshot({ path: file, fullPage: true });
  } finally {
    await page.close();
  }
}

/// A test with its own cluster and users, closed whatever happens; on
/// failure it saves the pages and prints the processes' logs.
function scenario(name, options, body) {
  test(name, { timeout: 90_000 }, async () => {
    const cluster = await startCluster({ ...options, tag: name.replace(/\W+/g, '-').slice(0, 20) });
    const users = [];
    try {
      await body({ cluster, users });
      for (const u of users) {
        assert.deepEqual(u.dialogs, [], `${u.name}: no dialog may open`);
        assert.deepEqual(u.errors, [], `${u.name}: no uncaught page error`);
      }
    } catch (e) {
      const file = path.join(ARTIFACTS, `failed-${name.replace(/\W+/g, '-').slice(0, 40)}.png`);
      if (users.length) await screenshot(file, users).catch(() => {});
      console.error(`--- ${name} failed; pages in ${file}\n${cluster.logs()}`);
      for (const u of users) console.error(`--- ${u.name} page errors: ${JSON.stringify(u.errors)}`);
      throw e;
    } finally {
      await Promise.all(users.map((u) => u.browser.close().catch(() => {})));
      await cluster.stop();
    }
  });
}

// ------------------------------------------------------------------- tests

scenario('two browsers on two instances see messages, presence and typing', {}, async ({ cluster, users }) => {
  const [a, b] = cluster.instances;
  const [alice, bob] = await Promise.all([openUser(a.url, 'alice'), openUser(b.url, 'bob')]);
  users.push(alice, bob);
  assert.equal(await server(alice), a.id);
  assert.equal(await server(bob), b.id);

  // Presence: each is in the other's member list (across instances).
  for (const [me, other] of [[alice, bob], [bob, alice]]) {
    await until(`${other.name} in ${me.name}'s #members`, async () => (await memberNames(me)).includes(other.name), {
      timeout: NET,
    });
  }

  // Typing: each sees the other typing.
  for (const [typist, watcher] of [[bob, alice], [alice, bob]]) {
    await typist.page.locator('#composer').pressSequentially('hel');
    await until(`${watcher.name} to see "${typist.name} is typing…"`, async () =>
      (await watcher.page.locator('#typing').textContent()) === `${typist.name} is typing…`,
    );
    await typist.page.locator('#composer').fill('');
  }

  // Messages both ways, in one order, on both pages.
  await send(alice, 'hello from alice on a');
  await converged([alice, bob], ['hello from alice on a']);
  await send(bob, 'hi alice, bob on b here');
  const list = await converged([alice, bob], ['hello from alice on a', 'hi alice, bob on b here']);
  assert.deepEqual(shape(list), ['1:hello from alice on a', '2:hi alice, bob on b here']);
  const [aliceView, bobView] = await Promise.all([messages(alice), messages(bob)]);
  assert.equal(aliceView[0].from, bobView[0].from, 'the sender id is the same everywhere');
  assert.notEqual(aliceView[0].from, aliceView[1].from);
});

scenario('a message body is shown as text, never as HTML', {}, async ({ cluster, users }) => {
  const [a, b] = cluster.instances;
  const evil = '<img src=x onerror=alert(1)>';
  const evilName = '<b>mallory</b>';
  const [mallory, bob] = await Promise.all([openUser(a.url, evilName), openUser(b.url, 'bob')]);
  users.push(mallory, bob);

  await send(mallory, evil);
  await send(mallory, '<script>alert(2)</script>');
  // 5,000 bytes of two- and four-byte characters: the server writes it in
  // 1 KiB fragments (cut between characters), the browser reassembles them.
  const long = 'é'.repeat(1500) + '🙂'.repeat(500);
  await send(mallory, long);
  const bodies = [evil, '<script>alert(2)</script>', long];
  await converged([mallory, bob], bodies);
  for (const u of [mallory, bob]) {
    const [first] = await messages(u);
    assert.equal(first.body, evil, `${u.name} shows the body as typed`);
    assert.equal(await u.page.locator('#messages img, #messages script, #messages b').count(), 0);
    assert.equal(await u.page.locator('#messages .ui-msg-name').first().textContent(), evilName);
    assert.equal(await u.page.locator('#members b, #members img').count(), 0);
  }
  await until("mallory in bob's #members, as text", async () => (await memberNames(bob)).includes(evilName));
  // Give an injected handler its chance: the broken image would have
  // errored on load. Reloading re-renders the history on the server (SSR
  // path) and in the browser.
  await bob.page.reload();
  await connected(bob);
  await converged([bob], bodies);
  assert.equal(await bob.page.locator('#messages img, #messages script').count(), 0);
  assert.equal(
    await bob.page.evaluate(() => performance.getEntriesByType('resource').filter((r) => /\/x$/.test(r.name)).length),
    0,
    'no request for the injected <img src=x>',
  );
});

scenario('a reload keeps the name and the room history', { nginx: true }, async ({ cluster, users }) => {
  const [carol, dave] = await Promise.all([openUser(cluster.url, 'carol'), openUser(cluster.url, 'dave')]);
  users.push(carol, dave);
  await send(carol, 'carol 1');
  await converged([carol, dave], ['carol 1']);
  await send(dave, 'dave 1');
  await converged([carol, dave], ['carol 1', 'dave 1']);
  await send(carol, 'carol 2');
  const before = await converged([carol, dave], ['carol 1', 'dave 1', 'carol 2']);
  const carolId = (await messages(carol))[0].from;

  await carol.page.reload();
  await connected(carol);
  // No name form: the stored name is used, and the server keeps the identity.
  assert.equal(await carol.page.locator('#name').count(), 0);
  assert.equal(await carol.page.locator('.web-me-name').textContent(), 'carol');
  const after = await converged([carol], ['carol 1', 'dave 1', 'carol 2']);
  assert.deepEqual(shape(after), shape(before));
  assert.equal((await messages(carol))[0].from, carolId, 'same user after reload');

  // The composer works at once, without entering the name again.
  await send(carol, 'carol after reload');
  const all = await converged([carol, dave], ['carol 1', 'dave 1', 'carol 2', 'carol after reload']);
  assert.equal(all[3].from, carolId);
  assert.ok((await memberNames(dave)).includes('carol'));
});

scenario('killing an instance: reconnect through nginx, nothing lost or doubled', { nginx: true }, async ({ cluster, users }) => {
  // erin's page clock is controllable: while it is paused the reconnect
  // timer cannot fire, so the "reconnecting" state lasts until the test has
  // typed into it (the backoff is otherwise 0–500 ms of random jitter).
  const erin = await openUser(cluster.url, 'erin', { clock: true });
  users.push(erin);
  const frank = await openUser(cluster.url, 'frank');
  users.push(frank);
  // nginx balances round-robin without stickiness: get frank onto the other
  // instance. Extra requests through nginx shift the rotation; one, then
  // two, then one…, so the parity changes whatever number of requests a
  // reload makes (a constant shift of one could keep landing on the same
  // instance).
  for (let i = 0; (await server(frank)) === (await server(erin)); i++) {
    assert.ok(i < 8, 'frank never landed on the other instance');
    for (let extra = 0; extra <= i % 2; extra++) {
      await fetch(`${cluster.url}/healthz`).then((r) => r.arrayBuffer());
    }
    await frank.page.reload();
    await connected(frank);
  }
  const victim = cluster.instance(await server(erin));
  const survivor = cluster.instances.find((i) => i !== victim);
  assert.equal(await server(frank), survivor.id);

  await send(erin, 'erin before the crash');
  await send(frank, 'frank before the crash');
  await converged([erin, frank], ['erin before the crash', 'frank before the crash']);

  await erin.page.clock.pauseAt(Date.now() + 1_000);
  await victim.kill('SIGKILL');
  await erin.page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: NET });

  // Both sides write while erin is cut off.
  await send(erin, 'erin while reconnecting');
  await send(frank, 'frank during the outage');
  const pending = erin.page.locator('.web-message[data-pending="true"]');
  await pending.waitFor();
  assert.equal(await pending.count(), 1);
  assert.equal(await pending.locator('.ui-msg-body').textContent(), 'erin while reconnecting');
  assert.equal(await pending.getAttribute('data-offset'), null);
  const pendingId = await pending.getAttribute('data-client-id');
  await until('frank to see his outage message delivered', async () =>
    (await messages(frank)).some((m) => m.body === 'frank during the outage' && m.offset === 3),
  );
  await screenshot(path.join(ARTIFACTS, 'reconnecting.png'), [erin, frank]);

  // Let erin's timers run: she reconnects through nginx to the survivor.
  await erin.page.clock.resume();
  await until(`erin connected to ${survivor.id}`, async () => (await connected(erin)) === survivor.id, { timeout: NET });

  await send(frank, 'frank after the failover');
  await send(erin, 'erin after the failover');
  const bodies = [
    'erin before the crash', 'frank before the crash', 'erin while reconnecting',
    'frank during the outage', 'frank after the failover', 'erin after the failover',
  ];
  const list = await converged([erin, frank], bodies);
  assert.deepEqual(list.map((m) => m.offset), [1, 2, 3, 4, 5, 6]);
  // The message typed while reconnecting went once, with the id it was
  // given while pending, and is erin's.
  const typed = list.filter((m) => m.body === 'erin while reconnecting');
  assert.equal(typed.length, 1);
  assert.equal(typed[0].clientId, pendingId);
  assert.equal(typed[0].from, list[0].from);
  await until('frank in erin\'s #members', async () => (await memberNames(erin)).includes('frank'));
  await screenshot(path.join(ARTIFACTS, 'chat.png'), [erin, frank]);
});

const ADMIN_TOKEN = 'e2e-admin-token-0123456789';

scenario('the admin page asks for its token, then shows instances and rooms and disconnects a user',
  { args: ['--admin-token', ADMIN_TOKEN] }, async ({ cluster, users }) => {
  const [a, b] = cluster.instances;
  const dora = await openUser(b.url, 'dora');
  users.push(dora);
  await until('dora to be in the member list', async () =>
    (await dora.page.locator('#members .web-member').count()) === 1);
  const doraId = await dora.page.locator('#members .web-member').first().getAttribute('data-user');
  await send(dora, 'hello, admin');

  const browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(NET);
  const admin = { name: 'admin', browser, page, dialogs: [], errors: [] };
  page.on('pageerror', (e) => admin.errors.push(e.message));
  users.push(admin);
  await page.goto(`${a.url}/admin`);

  // Without the token: the sign-in form, nothing of the chat.
  await page.locator('#admin-sign-in').waitFor();
  assert.equal(await page.locator('#admin-instances').count(), 0, 'no instance table before signing in');
  const unauth = await page.evaluate(async () => (await fetch('/admin/api/overview')).status);
  assert.equal(unauth, 401, 'the API refuses a request without the token');

  // A wrong token is refused and forgotten.
  await page.locator('#admin-token').fill('not-the-admin-token-0123');
  await page.locator('#admin-token').press('Enter');
  await until('the wrong token to be refused', async () =>
    /refused/.test((await page.locator('#admin-error').textContent()) ?? ''));
  await page.locator('#admin-sign-in').waitFor();
  assert.equal(await page.locator('#admin-instances').count(), 0);

  // The token: both instances, ready; dora's room with its one member.
  await page.locator('#admin-token').fill(ADMIN_TOKEN);
  await page.locator('#admin-token').press('Enter');
  for (const inst of [a, b]) {
    await page.locator(`#admin-instances tr[data-instance="${inst.id}"][data-ready="true"]`).waitFor();
  }
  const connections = await page.locator(`#admin-instances tr[data-instance="${b.id}"] td`).nth(3).textContent();
  assert.equal(connections, '1', `${b.id} serves dora's one connection`);
  const room = page.locator('#admin-rooms tr[data-room="general"] td');
  await until('general to show one member and one message', async () =>
    (await room.nth(1).textContent()) === '1' && (await room.nth(2).textContent()) === '1');
  await until('the chart to draw a line of 3 reads per instance', async () => {
    const lines = await page.locator('#admin-chart polyline').evaluateAll((ls) =>
      ls.map((l) => l.getAttribute('points').split(' ').length));
    return lines.length === 2 && lines.every((n) => n >= 3);
  });
  await page.screenshot({ path: path.join(ARTIFACTS, 'admin.png'), fullPage: true });

  // Disconnect dora (on the other instance): her page goes offline.
  await page.locator('#admin-user').fill(doraId);
  await page.locator('#admin-user').press('Enter');
  await until('the action to be accepted', async () =>
    /Disconnecting/.test((await page.locator('#admin-notice').textContent()) ?? ''));
  await dora.page.locator('#status[data-state="offline"]').waitFor({ timeout: NET });
});

const JWT_SECRET = 'e2e-host-app-secret-0123456789';

/// An HS256 JWT, as the host app's backend would sign it.
function hostToken(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  const sig = crypto.createHmac('sha256', JWT_SECRET).update(unsigned).digest('base64url');
  return `${unsigned}.${sig}`;
}

scenario('the page signs in with a token from the host app, and private rooms follow its claim',
  { args: ['--jwt-secret', JWT_SECRET, '--private-rooms', 'team-*'] }, async ({ cluster, users }) => {
  const [a, b] = cluster.instances;
  const token = hostToken({
    sub: 'dora-7', name: 'Dora Host', rooms: ['team-red'], exp: Math.floor(Date.now() / 1000) + 3600,
  });
  const browser = await launch();
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  page.setDefaultTimeout(NET);
  const dora = { name: 'dora', browser, page, dialogs: [], errors: [] };
  page.on('pageerror', (e) => dora.errors.push(e.message));
  users.push(dora);
  await page.goto(`${a.url}/#token=${token}`);
  await connected(dora);
  assert.ok(!page.url().includes('#token'), `the token left the address bar: ${page.url()}`);
  assert.equal(await page.locator('#name').count(), 0, 'no name to type');
  assert.equal(await page.locator('#change-name').count(), 0, 'the host app names her');
  await until('dora-7 in the member list', async () =>
    (await page.locator('#members .web-member[data-user="dora-7"]').count()) === 1);
  assert.match(await page.locator('#members').textContent(), /Dora Host/);

  // Her token lists team-red: she joins it.
  await page.locator('#room-input').fill('team-red');
  await page.locator('#room-input').press('Enter');
  await page.locator('#rooms [data-room="team-red"]').waitFor({ state: 'attached' });
  await until('team-red to be live with dora in it', async () =>
    (await page.locator('#members .web-member[data-user="dora-7"]').count()) === 1
      && (await page.locator('#status[data-state="connected"]').count()) === 1);

  // A guest on the other instance is refused it.
  const guest = await openUser(b.url, 'guest');
  users.push(guest);
  await guest.page.locator('#room-input').fill('team-red');
  await guest.page.locator('#room-input').press('Enter');
  await until('the guest to be told the room is private', async () =>
    /private room/.test((await guest.page.locator('#room-error').textContent()) ?? ''));
  await page.screenshot({ path: path.join(ARTIFACTS, 'host-token.png') });
});
