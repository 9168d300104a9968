'use strict';
/*
 * The demo page in headless Debian chromium, driven by playwright-core, against the demo API and
 * incsearchd on free loopback ports. Each step saves a screenshot in build/browser-test/.
 *
 * Run with `make check`, or `node --test page.test.js` in this folder after `make` and `npm ci`.
 * INCSEARCHD_KEEP_LOGS=1 keeps the programs' logs in their temporary folder.
 */
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const {after, afterEach, before, beforeEach, describe, test} = require('node:test');

const {chromium} = require('playwright-core');

const {BUILD_DIR, Servers} = require('./launcher.js');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUTPUT_DIR = path.join(BUILD_DIR, 'browser-test');
const WAIT_MS = 10000; // bound of every wait for the page, far above what a step needs
const PHONE = {width: 390, height: 760};

// Without the background-networking flags Chromium tries to reach outside hosts at start.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let screenshotCount = 0;

// Saves a screenshot of the page as build/browser-test/NN-name.png.
async function screenshot(page, name) {
  screenshotCount++;
  const file = `${String(screenshotCount).padStart(2, '0')}-${name}.png`;

  await page.screenshot({path: path.join(OUTPUT_DIR, file)});
}

// Waits until the list shows the results for query.
async function waitForResults(page, query) {
  await page.waitForFunction((q) => document.getElementById('results').dataset.query === q, query, {
    timeout: WAIT_MS,
  });
}

async function waitForStatus(page, state) {
  await page.waitForSelector(`#status[data-state="${state}"]`, {timeout: WAIT_MS});
}

async function resultNames(page) {
  return page.locator('#results [role="option"] .name').allInnerTexts();
}

// The demo API and incsearchd, which the tests may stop, and a browser with a fresh profile.
// serverOptions go to Servers.
class Session {
  constructor(serverOptions) {
    this.servers = new Servers(serverOptions);
    this.profileDir = null;
    this.context = null;
  }

  async start() {
    await this.servers.start();
    this.profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'incsearchd-chromium-'));
    this.context = await chromium.launchPersistentContext(this.profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: PHONE,
    });
    this.pageErrors = [];
  }

  // Opens the demo page and waits for its WebSocket to connect.
  async open() {
    const page = await this.context.newPage();

    page.on('pageerror', (error) => this.pageErrors.push(error.message));
    page.on('console', (message) => {
      // Chromium logs each refused connection while incsearchd is down, which the page expects.
      if (message.type() === 'error' && !/^WebSocket connection to .* failed/.test(message.text())) {
        this.pageErrors.push(message.text());
      }
    });
    await page.goto(this.servers.url, {timeout: WAIT_MS});
    await waitForStatus(page, 'open');
    return page;
  }

  async stop() {
    await this.context?.close();
    if (this.profileDir !== null) {
      fs.rmSync(this.profileDir, {recursive: true, force: true});
    }
    await this.servers.stop();
  }

  // Prints the end of both programs' logs after a failed test.
  printLogs(t) {
    if (t.passed !== false) {
      return;
    }
    for (const log of ['demo-api.log', 'incsearchd.log']) {
      process.stderr.write(`---- ${log} ----\n${this.servers.tail(log)}\n`);
    }
  }
}

before(() => {
  fs.rmSync(OUTPUT_DIR, {recursive: true, force: true});
  fs.mkdirSync(OUTPUT_DIR, {recursive: true});
});

describe('demo page', () => {
  const session = new Session();
  const servers = session.servers;
  let page = null;

  before(() => session.start());
  after(() => session.stop());

  beforeEach(async () => {
    page = await session.open();
  });

  afterEach(async (t) => {
    await page.close();
    session.printLogs(t);
  });

  test('focus and empty state on load', async () => {
    await screenshot(page, 'loaded');

    assert.equal(await page.evaluate(() => document.activeElement.id), 'query');
    assert.match(await page.locator('#summary').innerText(), /Type a country or subdivision name/);
    assert.equal(await page.locator('#results [role="option"]').count(), 0);
    assert.match(await page.locator('#status').innerText(), /^connected/);
  });

  test('typing new a key at a time', async () => {
    for (const prefix of ['n', 'ne', 'new']) {
      await page.keyboard.press(prefix.at(-1));
      await waitForResults(page, prefix);
      await screenshot(page, `typed-${prefix}`);
    }

    const zealand = page.locator('#results [role="option"]', {hasText: 'New Zealand'});

    assert.equal(await zealand.count(), 1);
    assert.ok(await zealand.isVisible());
    assert.equal(await zealand.locator('mark').innerText(), 'New');
    assert.match(await page.locator('#summary').innerText(), /^\d+ results? for “new”$/);
    assert.match(await page.locator('#status').innerText(), /last result in \d+ ms, from the API/);
    assert.equal(await page.getAttribute('#query', 'aria-expanded'), 'true');
  });

  test('arrow keys and Enter choose a result', async () => {
    await page.keyboard.type('new');
    await waitForResults(page, 'new');
    const names = await resultNames(page);

    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await screenshot(page, 'second-result-active');

    const active = page.locator('#results [aria-selected="true"]');

    assert.equal(await active.count(), 1);
    assert.equal(await active.locator('.name').innerText(), names[1]);
    assert.equal(await page.getAttribute('#query', 'aria-activedescendant'), 'result-1');

    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('ArrowUp');
    assert.equal(await active.locator('.name').innerText(), names.at(-1), 'ArrowUp wraps around');

    await page.keyboard.press('Enter');
    assert.equal(await page.inputValue('#query'), names.at(-1));
    assert.match(await page.locator('#selection').innerText(), new RegExp(`^Selected: ${names.at(-1)}`));
    await waitForResults(page, names.at(-1));
    await screenshot(page, 'result-chosen');
  });

  test('no matches shows the empty state', async () => {
    await page.keyboard.type('zzqx');
    await waitForResults(page, 'zzqx');
    await screenshot(page, 'no-matches');

    assert.equal(await page.locator('#results [role="option"]').count(), 0);
    assert.equal(await page.locator('#summary').innerText(), 'No matches for “zzqx”.');
    assert.equal(await page.getAttribute('#query', 'aria-expanded'), 'false');
  });

  test('fast typing ends on the final text', async () => {
    const text = 'united kingdom';

    await page.keyboard.type(text);
    await waitForResults(page, text);
    await screenshot(page, 'typed-fast');

    assert.equal(await page.inputValue('#query'), text);
    assert.equal((await resultNames(page))[0], 'United Kingdom');
    for (const marked of await page.locator('#results mark').allInnerTexts()) {
      assert.equal(marked.toLowerCase(), text);
    }
  });

  test('too long query shows the code meaning', async () => {
    await page.fill('#query', 'x'.repeat(300));
    await page.waitForSelector('#error:not([hidden])', {timeout: WAIT_MS});
    await screenshot(page, 'query-too-long');

    const error = await page.locator('#error').innerText();

    assert.match(error, /The query is too long/);
    assert.match(error, /query_too_long/);
  });

  test('stopped API shows the error state', async () => {
    await page.keyboard.type('swi');
    await waitForResults(page, 'swi');

    await servers.api.stop();
    await page.keyboard.type('t');
    await page.waitForSelector('#error:not([hidden])', {timeout: WAIT_MS});
    await screenshot(page, 'api-stopped');

    const error = await page.locator('#error').innerText();

    assert.match(error, /The search API failed\. Press Enter to retry\./);
    assert.match(error, /upstream_error/);
    assert.equal(await page.locator('#results [role="option"]').count(), 0);

    await servers.api.start(servers.apiPort);
    await page.keyboard.press('Enter');
    await waitForResults(page, 'swit');
    await screenshot(page, 'api-restarted');

    assert.ok(await page.locator('#error').isHidden());
    assert.equal((await resultNames(page))[0], 'Switzerland');
  });

  test('killed incsearchd, page reconnects', async () => {
    await page.keyboard.type('ger');
    await waitForResults(page, 'ger');

    await servers.daemon.stop('SIGKILL');
    await waitForStatus(page, 'reconnecting');
    assert.match(await page.locator('#status').innerText(), /^reconnecting in \d+ s/);
    await screenshot(page, 'daemon-killed');

    // A second failure shows that the page keeps trying while incsearchd is down.
    await page.waitForSelector('#status[data-state="reconnecting"][data-attempt="2"]', {
      timeout: WAIT_MS,
    });

    // Typed while disconnected: the client sends the latest text once it reconnects.
    await page.keyboard.type('many');
    await servers.daemon.start(servers.port);
    await waitForStatus(page, 'open');
    await waitForResults(page, 'germany');
    await screenshot(page, 'daemon-restarted');

    assert.equal((await resultNames(page))[0], 'Germany');
    assert.match(await page.locator('#status').innerText(), /^connected/);
  });

  test('page logs no errors', () => {
    assert.deepEqual(session.pageErrors, []);
  });
});

// The demo API allows 1 call per second and incsearchd spends 1 every 2 s, so a second query
// right after a first one waits about 2 s for its token, past the client's 1 s lateMs.
describe('demo page under a tight rate limit', () => {
  const session = new Session({
    apiRate: '1',
    apiBurst: '1',
    rate: '0.5',
    burst: '1',
    maxWaitMs: '10000',
  });

  before(() => session.start());
  after(() => session.stop());
  afterEach((t) => session.printLogs(t));

  test('late result shows the rate limit hint', async () => {
    const page = await session.open();

    await page.keyboard.type('a');
    await waitForResults(page, 'a');
    assert.ok(await page.locator('#late').isHidden());

    await page.keyboard.type('u');
    await page.waitForSelector('#late:not([hidden])', {timeout: WAIT_MS});
    await screenshot(page, 'waiting-for-rate-limit');
    assert.match(await page.locator('#late').innerText(), /^Waiting for the rate limit/);

    await waitForResults(page, 'au');
    await screenshot(page, 'rate-limit-passed');
    assert.ok(await page.locator('#late').isHidden());
    await page.close();
  });
});
