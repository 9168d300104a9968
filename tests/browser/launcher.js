'use strict';
/*
 * Starts the demo API and incsearchd from the build folder on free loopback ports, and stops
 * and restarts each of them by PID, so that a test can break one and check that the page
 * recovers. Each program keeps its port across restarts, because the page reconnects to the
 * same address.
 */
const childProcess = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const BUILD_DIR = path.resolve(process.env.INCSEARCHD_BUILD || path.join(__dirname, '../../build'));
const START_TIMEOUT_MS = 5000;
const STOP_TIMEOUT_MS = 3000;

// Returns a TCP port on 127.0.0.1 that was free a moment ago.
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();

    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = server.address().port;

      server.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');

    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// One program from the build folder, with its arguments and log file kept for restarts.
class Program {
  constructor(name, args, logPath) {
    this.name = name;
    this.args = args;
    this.logPath = logPath;
    this.child = null;
  }

  get pid() {
    return this.child === null ? null : this.child.pid;
  }

  // Starts the program and waits until port accepts connections. Rejects when the program
  // exits first or the port stays closed for START_TIMEOUT_MS.
  async start(port) {
    const log = fs.openSync(this.logPath, 'a');
    // setpriv (util-linux) sets PR_SET_PDEATHSIG and then execs the program under the same PID,
    // so that the program gets SIGTERM if this test process dies without stopping it.
    const argv = ['--pdeathsig', 'SIGTERM', '--', path.join(BUILD_DIR, this.name), ...this.args];
    const child = childProcess.spawn('setpriv', argv, {stdio: ['ignore', log, log]});

    fs.closeSync(log);
    this.child = child;
    child.exitStatus = null;
    child.once('exit', (code, signal) => {
      child.exitStatus = signal === null ? `exit status ${code}` : `signal ${signal}`;
    });

    for (let waited = 0; waited < START_TIMEOUT_MS; waited += 20) {
      if (child.exitStatus !== null) {
        throw new Error(`${this.name} exited during start-up (${child.exitStatus}); see ${this.logPath}`);
      }
      if (await canConnect(port)) {
        return;
      }
      await sleep(20);
    }
    await this.stop('SIGKILL');
    throw new Error(`${this.name} did not listen on port ${port} within ${START_TIMEOUT_MS} ms; see ${this.logPath}`);
  }

  // Sends signal to the program's PID and waits for it to exit, with SIGKILL after
  // STOP_TIMEOUT_MS. Does nothing when it is not running.
  async stop(signal = 'SIGTERM') {
    const child = this.child;

    if (child === null) {
      return;
    }
    this.child = null;
    if (child.exitStatus !== null) {
      return;
    }

    const exited = new Promise((resolve) => child.once('exit', resolve));

    process.kill(child.pid, signal);
    const timer = setTimeout(() => {
      if (child.exitStatus === null) {
        process.kill(child.pid, 'SIGKILL');
      }
    }, STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
}

/*
 * The demo API and incsearchd in front of it, in a fresh temporary folder that contains the
 * config and both logs. options.apiRate and apiBurst set the demo API's -r and -b;
 * options.rate and burst set incsearchd's [api] rate and burst, and options.maxWaitMs its
 * max_wait_ms: short by default, so that the error state shows while the demo API is down
 * instead of after the default 10 s of retries.
 */
class Servers {
  constructor(options = {}) {
    this.options = {
      apiRate: '50',
      apiBurst: '10',
      rate: '45',
      burst: '8',
      maxWaitMs: '1500',
      ...options,
    };
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'incsearchd-browser-'));
    this.apiPort = null;
    this.port = null;
    this.api = null;
    this.daemon = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}/`;
  }

  // Starts both programs. A port found free can be taken before the program binds it, so
  // each program gets three tries with a new port.
  async start() {
    await this.#startWithRetries(async () => {
      this.apiPort = await freePort();
      this.api = new Program(
        'incsearch-demo-api',
        ['-l', `127.0.0.1:${this.apiPort}`, '-r', this.options.apiRate, '-b', this.options.apiBurst],
        path.join(this.dir, 'demo-api.log'),
      );
      await this.api.start(this.apiPort);
    });
    await this.#startWithRetries(async () => {
      this.port = await freePort();
      this.#writeConfig();
      this.daemon = new Program(
        'incsearchd',
        ['-c', path.join(this.dir, 'incsearchd.conf')],
        path.join(this.dir, 'incsearchd.log'),
      );
      await this.daemon.start(this.port);
    });
  }

  async #startWithRetries(startOnce) {
    for (let attempt = 1; ; attempt++) {
      try {
        await startOnce();
        return;
      } catch (error) {
        if (attempt === 3) {
          throw error;
        }
      }
    }
  }

  #writeConfig() {
    const config = [
      '[server]',
      `listen = 127.0.0.1:${this.port}`,
      `shm_name = /incsearchd-browser-${process.pid}`,
      `control_socket = ${path.join(this.dir, 'control.sock')}`,
      'max_connections = 64',
      'log_level = debug',
      '[api]',
      `url = http://127.0.0.1:${this.apiPort}/search?q={q}&limit=10`,
      'timeout_ms = 2000',
      `max_wait_ms = ${this.options.maxWaitMs}`,
      `rate = ${this.options.rate}`,
      `burst = ${this.options.burst}`,
      '[workers]',
      'workers = 2',
      '',
    ];

    fs.writeFileSync(path.join(this.dir, 'incsearchd.conf'), config.join('\n'));
  }

  // Stops both programs and removes the temporary folder, unless INCSEARCHD_KEEP_LOGS is set.
  async stop() {
    await Promise.all([this.daemon?.stop(), this.api?.stop()]);
    if (process.env.INCSEARCHD_KEEP_LOGS === undefined) {
      fs.rmSync(this.dir, {recursive: true, force: true});
    }
  }

  // Returns the last lines of a log in the temporary folder, for a failure message.
  tail(name, lines = 40) {
    try {
      return fs.readFileSync(path.join(this.dir, name), 'utf8').split('\n').slice(-lines).join('\n');
    } catch (error) {
      return `(cannot read ${name}: ${error.message})`;
    }
  }
}

module.exports = {BUILD_DIR, Servers};
