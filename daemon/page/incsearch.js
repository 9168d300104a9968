/*
 * IncSearch: browser client for the incsearchd type-ahead protocol over WebSocket.
 *
 *   const client = new IncSearch(null, {
 *     onResults(results, info) {},  // info: {q, seq, latencyMs, cached, latest}
 *     onError(error) {},            // error: {code, message, q, seq, latencyMs}
 *     onStatus(status) {},          // status: {state, attempt, delayMs}
 *     onLate(late) {},              // late: {q, seq, waitedMs}
 *   });
 *   input.addEventListener('input', () => client.search(input.value));
 *
 * search() sends the text frame {"q": text, "seq": n} at once when the connection is open,
 * and otherwise when it opens. The seq restarts at 1 on each new connection and increases by
 * one per frame sent on it. The server responds with
 * {"type": "results", "seq", "q", "results", "cached"} or {"type": "error", "seq", "q",
 * "error", "message"}, and may skip the response to a seq that a newer query made obsolete.
 *
 * Callbacks see only responses at least as new as the last one delivered on the connection,
 * so a slow response to an old query never replaces a newer one. latencyMs is the time in ms
 * from sending that seq to receiving its response, or null when the send time is unknown.
 * latest is true when the response is for the last query sent. error.seq is null for an
 * error that the server did not tie to a query, and error.code is "unknown" when missing.
 *
 * onLate runs when a query sent on the connection has had no response for options.lateMs ms,
 * usually because incsearchd queues it until the API's rate limit allows another call. late.q
 * and late.seq are those of the last query sent, and late.waitedMs is the time since the
 * oldest query still without a response was sent. It runs once per wait: again only after a
 * response or a new connection.
 *
 * status.state is one of:
 *   "connecting"    a connection is being opened, after attempt failures in a row
 *   "open"          connected, so queries are sent at once
 *   "reconnecting"  the connection failed or dropped, and the next try starts in delayMs ms
 *   "closed"        close() was called, and no callback runs after this one
 *
 * The latest text passed to search() is sent again on every new connection, so the last
 * query gets a response even when the connection drops before the response arrives.
 *
 * Loaded as a plain script, the file declares IncSearch in the global scope (as a class
 * declaration, so not as a window property). Under CommonJS it exports the class.
 */
class IncSearch {
  #socket = null;
  #retryTimer = null;
  #isClosed = false;
  #query = null; // latest text given to search(), null before the first call
  #failures = 0; // connections that failed or dropped since the last open

  // Per-connection state, reset by #connect().
  #lastSentSeq = 0;
  #lastShownSeq = 0; // seq of the last response delivered to a callback
  #sentAt = new Map(); // seq -> send time in ms, for each seq still without a response
  #lateTimer = null;

  /**
   * Opens the connection at once.
   *
   * url defaults to IncSearch.defaultUrl(). options.onResults, onError and onStatus are the
   * callbacks described above, and options.onLate too. options.lateMs (default 1000) is the
   * wait in ms after which a query without a response counts as late. options.minDelayMs (default 250) is the first reconnect
   * backoff step in ms, which doubles after each failure up to options.maxDelayMs (default
   * 10000), and each delay is a random value from half the step to the step. The step
   * returns to minDelayMs once a connection opens. options.WebSocket replaces the global
   * WebSocket class, for runtimes that have none. Throws TypeError when no WebSocket class
   * is available, or when url is missing outside a browser.
   */
  constructor(url, options = {}) {
    this.url = url || IncSearch.defaultUrl();
    this.onResults = options.onResults || function () {};
    this.onError = options.onError || function () {};
    this.onStatus = options.onStatus || function () {};
    this.onLate = options.onLate || function () {};
    this.lateMs = options.lateMs ?? 1000;
    this.minDelayMs = options.minDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 10000;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('IncSearch: no WebSocket class is available; pass options.WebSocket');
    }

    this.#connect();
  }

  /** Returns ws://HOST/ws, or wss://HOST/ws on an https page, for the page's host and port. */
  static defaultUrl() {
    const location = globalThis.location;

    if (!location || !location.host) {
      throw new TypeError('IncSearch: no page location is available; pass a ws:// url');
    }
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return scheme + '//' + location.host + '/ws';
  }

  /** Whether the connection is open, so that search() sends at once. */
  get isOpen() {
    return this.#socket !== null && this.#socket.readyState === 1; // 1 is OPEN
  }

  /** Sends text as the current query, or keeps it until the connection opens. */
  search(text) {
    if (this.#isClosed) {
      return;
    }
    this.#query = String(text);
    if (this.isOpen) {
      this.#send(this.#query);
    }
  }

  /** Closes the connection and stops reconnecting. Calling it again does nothing. */
  close() {
    if (this.#isClosed) {
      return;
    }
    this.#isClosed = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#stopLateTimer();
    if (this.#socket !== null) {
      const socket = this.#socket;

      this.#socket = null;
      socket.close(1000);
    }
    this.onStatus({state: 'closed', attempt: this.#failures, delayMs: null});
  }

  #connect() {
    const socket = new this.WebSocket(this.url);

    this.#socket = socket;
    this.#lastSentSeq = 0;
    this.#lastShownSeq = 0;
    this.#sentAt.clear();
    this.#stopLateTimer();

    // A socket that close() or a reconnect replaced may still fire events, and they must
    // not touch the state of its successor.
    socket.onopen = () => {
      if (socket === this.#socket) {
        this.#handleOpen();
      }
    };
    socket.onmessage = (event) => {
      if (socket === this.#socket) {
        this.#handleMessage(event.data);
      }
    };
    socket.onclose = () => {
      if (socket === this.#socket) {
        this.#handleClose();
      }
    };
    this.onStatus({state: 'connecting', attempt: this.#failures, delayMs: null});
  }

  #handleOpen() {
    this.#failures = 0;
    this.onStatus({state: 'open', attempt: 0, delayMs: null});
    if (this.#query !== null) {
      this.#send(this.#query);
    }
  }

  // A failed handshake and a dropped connection both end here, because a WebSocket fires
  // close after every error event.
  #handleClose() {
    this.#socket = null;
    this.#stopLateTimer();

    // Equal jitter: a random delay between half the backoff step and the whole step, so
    // that clients dropped together do not all come back at the same moment.
    const step = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.#failures);
    const delayMs = Math.round(step / 2 + (Math.random() * step) / 2);

    this.#failures++;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#connect();
    }, delayMs);
    this.onStatus({state: 'reconnecting', attempt: this.#failures, delayMs});
  }

  #send(text) {
    const seq = ++this.#lastSentSeq;

    this.#sentAt.set(seq, IncSearch.#now());
    this.#socket.send(JSON.stringify({q: text, seq}));
    if (this.#lateTimer === null) {
      this.#startLateTimer();
    }
  }

  // Arms the late timer for the oldest query still without a response, if there is one.
  #startLateTimer() {
    const oldest = this.#sentAt.values().next();

    if (oldest.done) {
      return;
    }
    const remainingMs = Math.max(0, oldest.value + this.lateMs - IncSearch.#now());

    this.#lateTimer = setTimeout(() => {
      // The timer stays set, though fired, so that #send() does not arm it again before the
      // next response.
      this.onLate({
        q: this.#query,
        seq: this.#lastSentSeq,
        waitedMs: IncSearch.#now() - oldest.value,
      });
    }, remainingMs);
  }

  #stopLateTimer() {
    clearTimeout(this.#lateTimer);
    this.#lateTimer = null;
  }

  // Drops frames that are not JSON objects, and responses with a seq that this connection
  // never sent or that is older than the last one delivered.
  #handleMessage(data) {
    let message;

    if (typeof data !== 'string') {
      return;
    }
    try {
      message = JSON.parse(data);
    } catch (error) {
      return;
    }
    if (message === null || typeof message !== 'object') {
      return;
    }

    const seq = message.seq;
    const hasSeq = Number.isSafeInteger(seq) && seq >= 0;

    if (hasSeq && (seq > this.#lastSentSeq || seq < this.#lastShownSeq)) {
      return;
    }

    if (message.type === 'results' && hasSeq) {
      this.#deliverResults(message, seq);
    } else if (message.type === 'error') {
      this.#deliverError(message, hasSeq ? seq : null);
    }
  }

  #deliverResults(message, seq) {
    const info = {
      q: typeof message.q === 'string' ? message.q : '',
      seq,
      latencyMs: this.#takeLatency(seq),
      cached: message.cached === true,
      latest: seq === this.#lastSentSeq,
    };

    this.#lastShownSeq = seq;
    this.onResults(message.results, info);
  }

  // An error without a usable seq is not tied to one query, so it does not move the freshness
  // mark.
  #deliverError(message, seq) {
    const error = {
      code: typeof message.error === 'string' ? message.error : 'unknown',
      message: typeof message.message === 'string' ? message.message : '',
      q: typeof message.q === 'string' ? message.q : null,
      seq,
      latencyMs: seq === null ? null : this.#takeLatency(seq),
    };

    if (seq !== null) {
      this.#lastShownSeq = seq;
    }
    this.onError(error);
  }

  // Returns the ms since seq was sent, or null if it was never sent or already had a response.
  // Forgets seq and every older one, because the server sends no response to them after a
  // response to a newer one, and restarts the late timer for the queries still waiting.
  #takeLatency(seq) {
    const sentAt = this.#sentAt.get(seq);

    for (const key of this.#sentAt.keys()) {
      if (key > seq) {
        break;
      }
      this.#sentAt.delete(key);
    }
    this.#stopLateTimer();
    this.#startLateTimer();
    return sentAt === undefined ? null : IncSearch.#now() - sentAt;
  }

  // Monotonic ms, so that a change of the wall clock cannot make a latency negative.
  static #now() {
    return globalThis.performance ? globalThis.performance.now() : Date.now();
  }
}

if (typeof module !== 'undefined') {
  module.exports = IncSearch;
}
