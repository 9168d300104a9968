#!/usr/bin/python3
"""The operator's path, end to end: make install into a temporary DESTDIR, start the installed
incsearchd with the installed config pointed at the demo API, watch it with the installed
incsearchctl while a client types, reload a new rate live without dropping that client, check
the installed unit with systemd-analyze verify, then make uninstall.

Usage: install_test.py BUILD_DIR, from the top of the repository. Exits 0 when every step
passes, 1 with a message otherwise. Every process it starts listens on loopback only and is
stopped before it exits.
"""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import websockets

PREFIX = "/usr"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def make(*args):
    result = subprocess.run(["make", "--no-print-directory", *args], capture_output=True,
                            text=True)
    check(result.returncode == 0, f"make {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


class Installed:
    def __init__(self, destdir):
        self.destdir = destdir
        self.sbin = os.path.join(destdir, PREFIX.lstrip("/"), "sbin")
        self.conf = os.path.join(destdir, "etc", "incsearchd.conf")
        self.socket = os.path.join(destdir, "control.sock")

    def ctl(self, *args, expect=0):
        result = subprocess.run([os.path.join(self.sbin, "incsearchctl"), "-s", self.socket,
                                 *args], capture_output=True, text=True, timeout=10)
        check(result.returncode == expect,
              f"incsearchctl {' '.join(args)} exited {result.returncode}, expected {expect}:\n"
              f"{result.stdout}{result.stderr}")
        return result.stdout + result.stderr

    def status(self):
        return json.loads(self.ctl("--json", "status"))

    def set_key(self, key, value):
        with open(self.conf) as f:
            text = f.read()
        text, count = re.subn(rf"^#?{key} = .*$", f"{key} = {value}", text, flags=re.M)
        check(count == 1, f"{key} appears {count} times in the installed config")
        with open(self.conf, "w") as f:
            f.write(text)


def check_install(destdir):
    make("install", f"DESTDIR={destdir}", f"PREFIX={PREFIX}")
    expected = [
        "usr/sbin/incsearchd", "usr/sbin/incsearchd-worker", "usr/sbin/incsearchctl",
        "lib/systemd/system/incsearchd.service", "usr/lib/sysusers.d/incsearchd.conf",
        "usr/share/man/man8/incsearchd.8", "usr/share/man/man8/incsearchctl.8",
        "usr/share/man/man5/incsearchd.conf.5", "usr/share/incsearchd/index.html",
        "usr/share/incsearchd/incsearch.js", "etc/incsearchd.conf",
    ]
    for path in expected:
        check(os.path.exists(os.path.join(destdir, path)), f"make install did not install {path}")
    mode = stat.S_IMODE(os.stat(os.path.join(destdir, "etc/incsearchd.conf")).st_mode)
    check(mode == 0o600, f"the installed config has mode {mode:04o}, expected 0600")
    with open(os.path.join(destdir, "lib/systemd/system/incsearchd.service")) as f:
        unit = f.read()
    check("ExecStart=/usr/sbin/incsearchd -c /etc/incsearchd.conf" in unit,
          "the unit's ExecStart does not use PREFIX")


def check_no_overwrite(installed):
    with open(installed.conf, "a") as f:
        f.write("# edited by the operator\n")
    out = make("install", f"DESTDIR={installed.destdir}", f"PREFIX={PREFIX}")
    check("keeping the existing" in out, "make install did not say it kept the config")
    with open(installed.conf) as f:
        check("# edited by the operator" in f.read(), "make install overwrote the config")


def check_unit(installed):
    """systemd-analyze verify checks that ExecStart's program exists, so it reads a copy of the
    installed unit with the paths moved into DESTDIR, and man(1) finds the installed pages."""
    unit_dir = os.path.join(installed.destdir, "verify")
    os.makedirs(unit_dir)
    with open(os.path.join(installed.destdir, "lib/systemd/system/incsearchd.service")) as f:
        unit = f.read().replace("/usr/sbin/", installed.sbin + "/")
    path = os.path.join(unit_dir, "incsearchd.service")
    with open(path, "w") as f:
        f.write(unit)
    env = dict(os.environ, MANPATH=os.path.join(installed.destdir, "usr/share/man"))
    result = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True,
                            env=env)
    check(result.returncode == 0 and result.stderr.strip() == "",
          f"systemd-analyze verify failed:\n{result.stdout}{result.stderr}")


async def type_word(ws, word, seq):
    """Types WORD a key at a time, each key a query with an increasing seq, and returns the
    reply to the last one."""
    for i in range(1, len(word) + 1):
        seq += 1
        await ws.send(json.dumps({"q": word[:i], "seq": seq}))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply.get("seq") == seq:
            return reply, seq


async def drive(installed, port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", ping_interval=None) as ws:
        before = installed.status()
        reply, seq = await type_word(ws, "switz", 0)
        check(reply["type"] == "results", f"unexpected reply {reply}")
        after = installed.status()
        check(after["clients"]["now"] == 1, f"clients now is {after['clients']['now']}")
        check(after["queries"]["received"] - before["queries"]["received"] == 5,
              f"queries received moved from {before['queries']['received']} to "
              f"{after['queries']['received']}, expected 5 more")
        check(after["results"]["delivered"] > before["results"]["delivered"],
              "results delivered did not move")
        check(after["api"]["calls"] > before["api"]["calls"], "API calls did not move")
        check(after["latency"]["keystroke_to_result"]["count"] >= 1,
              "no keystroke-to-result latency recorded")
        text = installed.ctl("status")
        check("clients   1 now" in text, f"status text lacks the client:\n{text}")
        check("keystroke to result" in text, f"status text lacks the latency:\n{text}")

        # A new rate, applied live: the same connection keeps working.
        installed.set_key("rate", "3.5")
        out = installed.ctl("reload")
        check("rate 3.500/s" in out, f"reload said: {out}")
        check(installed.status()["bucket"]["rate"] == 3.5, "the reloaded rate is not in effect")
        reply, seq = await type_word(ws, "nor", seq)
        check(reply["type"] == "results", f"unexpected reply after the reload {reply}")
        check(installed.status()["clients"]["total"] == 1,
              "the client reconnected: the reload dropped its connection")

        # An invalid file changes nothing, and the daemon returns its errors.
        installed.set_key("burst", "0")
        out = installed.ctl("reload", expect=1)
        check("invalid value '0' for burst" in out, f"reload of a bad file said: {out}")
        check(installed.status()["bucket"]["rate"] == 3.5, "a failed reload changed the rate")


def run(build):
    destdir = tempfile.mkdtemp(prefix="incsearchd-install-")
    processes = []
    try:
        check_install(destdir)
        installed = Installed(destdir)
        check_no_overwrite(installed)
        check_unit(installed)

        api_port, port = free_port(), free_port()
        installed.set_key("listen", f"127.0.0.1:{port}")
        installed.set_key("shm_name", f"/incsearchd-install-{os.getpid()}")
        installed.set_key("control_socket", installed.socket)
        installed.set_key("url", f"http://127.0.0.1:{api_port}/search?q={{q}}&limit=10")
        log = open(os.path.join(destdir, "incsearchd.log"), "w")
        processes.append(subprocess.Popen(
            [os.path.join(build, "incsearch-demo-api"), "-l", f"127.0.0.1:{api_port}",
             "-r", "50", "-b", "10"], stdout=log, stderr=log))
        wait_port(api_port)
        processes.append(subprocess.Popen(
            [os.path.join(installed.sbin, "incsearchd"), "-c", installed.conf],
            stdout=log, stderr=log))
        wait_port(port)
        asyncio.run(drive(installed, port))

        processes[-1].send_signal(signal.SIGTERM)
        check(processes[-1].wait(10) == 0, "the installed incsearchd did not exit 0")
        installed.ctl("status", expect=1)

        make("uninstall", f"DESTDIR={destdir}", f"PREFIX={PREFIX}")
        left = [os.path.relpath(os.path.join(d, f), destdir)
                for d, _, files in os.walk(destdir) for f in files]
        installed_left = [p for p in left if p.startswith(("usr/", "lib/"))]
        check(installed_left == [], f"make uninstall left {installed_left}")
        check(os.path.exists(installed.conf), "make uninstall removed the edited config")
    except Exception:
        log_path = os.path.join(destdir, "incsearchd.log")
        if os.path.exists(log_path):
            with open(log_path) as f:
                sys.stderr.write(f.read()[-4000:])
        raise
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(destdir, ignore_errors=True)


def main():
    start = time.monotonic()
    try:
        run(os.path.abspath(sys.argv[1]))
    except Exception as error:  # report any failure as one line after the log
        print(f"install_test.py: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"install_test.py: passed in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
