# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Consul client built from module options or the standard CONSUL_* variables, and KV calls
whose errors say which server failed and why. Writes that must not race go through ``txn``."""
from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import time
from urllib.parse import quote, urlencode, urlparse

from ansible_collections.overlay.vxlan.plugins.module_utils import _keys, _validate
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

# Consul's HTTP API through the standard library's http.client: requests and py-consul cost a
# module run about 0.1 s of imports (benchmarks/README.md), and this client needs neither.

TXN_MAX_OPS = 64  # Consul's limit per transaction

CONNECTION_ARGS = dict(
    consul_host=dict(type="str"),
    consul_port=dict(type="int"),
    consul_scheme=dict(type="str", choices=["http", "https"]),
    consul_token=dict(type="str", no_log=True),
    consul_ca_cert=dict(type="path"),
    consul_validate_certs=dict(type="bool"),
    consul_timeout=dict(type="float", default=10),
    consul_prefix=dict(type="str", default="overlay"),
)


def connection_settings(params, environ=None):
    """Options first, then CONSUL_* variables, then the local agent's defaults."""
    env = os.environ if environ is None else environ
    host, port, scheme = None, None, None
    addr = env.get("CONSUL_HTTP_ADDR")
    if addr:
        parsed = urlparse(addr if "//" in addr else "//" + addr)
        host, scheme = parsed.hostname, parsed.scheme or None
        try:
            port = parsed.port
        except ValueError:
            raise OverlayError("CONSUL_HTTP_ADDR=%r is not host:port or scheme://host:port" % addr, "consul_host")
    if scheme is None and env.get("CONSUL_HTTP_SSL", "").lower() == "true":
        scheme = "https"
    verify = params.get("consul_validate_certs")
    if verify is None:
        verify = env.get("CONSUL_HTTP_SSL_VERIFY", "true").lower() != "false"
    settings = {
        "host": params.get("consul_host") or host or "127.0.0.1",
        "port": params.get("consul_port") or port or 8500,
        "scheme": params.get("consul_scheme") or scheme or "http",
        "token": params.get("consul_token") or env.get("CONSUL_HTTP_TOKEN") or None,
        "ca_cert": params.get("consul_ca_cert") or env.get("CONSUL_CACERT") or None,
        "verify": verify,
        "timeout": params.get("consul_timeout") or 10,
        "prefix": _validate.consul_prefix(params.get("consul_prefix"), "consul_prefix"),
    }
    if not 1 <= int(settings["port"]) <= 65535:
        raise OverlayError("port %s is outside 1..65535" % settings["port"], "consul_port")
    return settings


class ConsulPermissionDenied(OverlayError):
    """Consul refused the request for the token in use (HTTP 403, or a transaction error that says
    "Permission denied" / "ACL not found"). Never retried: another attempt gets the same answer."""

    def __init__(self, reason):
        super().__init__(reason, "consul_token")


class ConsulOutcomeUnknown(OverlayError):
    """A write may have reached Consul but no answer came back (a read timeout after sending, a
    connection cut mid-answer, an HTTP 500 such as "leadership lost while committing log"). The
    transaction may or may not have committed: re-read and settle. ``ops`` are the operations sent."""

    def __init__(self, reason, ops=None):
        super().__init__(reason, "consul_host")
        self.ops = list(ops or ())


class TxnConflict(OverlayError):
    """HTTP 409: a check of the transaction failed and nothing was applied.
    ``errors`` is the list of (op_index, what) Consul gave."""

    def __init__(self, reason, errors):
        super().__init__(reason)
        self.errors = list(errors)


_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
_RETRY_READ_CODES = (429, 500, 502, 503, 504)
_RETRY_WRITE_CODES = (429, 503)  # refused before the write was applied
_WAIT_MARGIN = 5.0  # seconds on top of a blocking query's wait (and its wait/16 jitter)


class _Attempt(Exception):
    """One failed attempt: ``reached`` says whether the request may have reached Consul."""

    def __init__(self, reason, field, reached, retry):
        super().__init__(reason)
        self.reason, self.field, self.reached, self.retry = reason, field, reached, retry


class _Cut(Exception):
    """The connection failed after the request may have been sent."""


class _NotSent(Exception):
    """The connection failed before the request was sent: connecting, or ``stale``, a kept-alive
    connection the server had closed (worth one immediate retry on a new one)."""

    def __init__(self, reason, stale=False):
        super().__init__(reason)
        self.stale = stale


class Consul:
    """KV access with clear errors, bounded retries and checked writes. Values are JSON.

    Every request is bounded: the whole call (retries included) by ``consul_timeout``, a blocking
    query by its ``wait`` plus a margin. Reads retry transient failures (connection refused or cut,
    429, 5xx) with a backoff starting at 50 ms, doubling, capped at 1 s. Writes retry only when the
    request provably did not reach Consul (connection refused) or when Consul answered 429/503
    (nothing applied); any other failure after sending raises ConsulOutcomeUnknown.
    """

    def __init__(self, settings):
        self.settings = settings
        self.url = "%s://%s:%s" % (settings["scheme"], settings["host"], settings["port"])
        self.timeout = float(settings["timeout"])
        self.headers = {"X-Consul-Token": settings["token"]} if settings["token"] else {}
        self._tls = None
        if settings["scheme"] == "https":
            import ssl  # only for https: most runs talk to a local agent over http
            if settings["verify"]:
                self._tls = ssl.create_default_context(cafile=settings["ca_cert"] or None)
            else:
                self._tls = ssl._create_unverified_context()  # noqa: S323 - consul_validate_certs: false asks for it
        self._pooled = None  # the kept-alive connection reads reuse
        self._token_label = None

    # -- transport --------------------------------------------------------------------------
    def _connect(self, timeout):
        """A new connection, connected (raises _NotSent, or OverlayError for TLS)."""
        host, port = self.settings["host"], int(self.settings["port"])
        if self._tls is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except socket.timeout:
            conn.close()
            raise _NotSent("cannot connect within %ss (is consul_host/consul_port right and reachable?)"
                           % _fmt(timeout))
        except OSError as e:
            conn.close()
            if _is_tls_error(e):
                raise self._tls_error(e)
            raise _NotSent("cannot connect (is the agent running and consul_host/consul_port right?): %s"
                           % (e.strerror or e))
        return conn

    def _tls_error(self, e):
        return OverlayError("Consul at %s: TLS error (check consul_ca_cert / consul_validate_certs): %s"
                            % (self.url, _short(str(e))), "consul_ca_cert")

    def _exchange(self, method, path, params, data, connect_timeout, read_timeout, pooled):
        """One HTTP exchange: (status, body text, headers). A kept-alive connection the server had
        closed is replaced by a new one at once, once. Raises _NotSent, _Cut, socket.timeout (no
        answer in time), or OverlayError (TLS)."""
        try:
            return self._exchange_once(method, path, params, data, connect_timeout, read_timeout, pooled)
        except _NotSent as e:
            if not e.stale:
                raise
        return self._exchange_once(method, path, params, data, connect_timeout, read_timeout, pooled)

    def _exchange_once(self, method, path, params, data, connect_timeout, read_timeout, pooled):
        if params:
            path += "?" + urlencode(params)
        headers = dict(self.headers)
        body = None
        if data is not None:
            body = data.encode() if isinstance(data, str) else data
            headers["Content-Type"] = "application/json"
        reused = pooled and self._pooled is not None
        conn = self._pooled if reused else self._connect(connect_timeout)
        if pooled:
            self._pooled = None  # given back below when the exchange ends cleanly
        try:
            conn.sock.settimeout(read_timeout)
            try:
                conn.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError, http.client.CannotSendRequest) as e:
                if reused:
                    raise _NotSent(str(e) or type(e).__name__, stale=True)
                raise _Cut(str(e) or type(e).__name__)
            try:
                resp = conn.getresponse()
                text = resp.read().decode("utf-8", "replace")
            except http.client.RemoteDisconnected as e:
                # A kept-alive connection the server closed while idle answers nothing at all: the
                # request was never read, as on a connection that could not be made.
                if reused:
                    raise _NotSent(str(e) or "the server closed the connection", stale=True)
                raise _Cut(str(e) or "the server closed the connection")
            except (ConnectionResetError, BrokenPipeError, http.client.HTTPException) as e:
                raise _Cut(str(e) or type(e).__name__)
        except BaseException as e:
            conn.close()
            if isinstance(e, OSError) and _is_tls_error(e):
                raise self._tls_error(e)
            raise
        if pooled and not resp.will_close:
            self._pooled = conn
        else:
            conn.close()
        return resp.status, text, resp.headers

    def _once(self, method, path, params, data, read_timeout, write):
        """One HTTP request: (status, body text), or _Attempt. Reads reuse one kept-alive connection;
        writes get a connection of their own (a pooled one the server closed while idle would fail
        after sending and make the outcome look unknown)."""
        connect = min(self.timeout, max(read_timeout, 0.05))
        try:
            status, text, _headers = self._exchange(method, path, params, data, connect, max(read_timeout, 0.05),
                                                    pooled=not write)
            return status, text
        except _NotSent as e:
            raise _Attempt(str(e), "consul_host", reached=False, retry=True)
        except socket.timeout:
            raise _Attempt("no answer within %ss" % _fmt(self.timeout), "consul_host", reached=True, retry=True)
        except _Cut as e:
            raise _Attempt("the connection was cut before Consul answered: %s" % _short(str(e)), "consul_host",
                           reached=True, retry=True)
        except OSError as e:
            raise _Attempt("the connection failed: %s" % (e.strerror or e), "consul_host", reached=True, retry=True)

    def _request(self, method, path, what, params=None, data=None, write=False, ops=None, refused=None):
        """Status and body of a request, retried within consul_timeout as the class says.

        403 raises ConsulPermissionDenied; for writes, a failure after sending raises
        ConsulOutcomeUnknown. Other statuses are returned for the caller to judge.
        """
        deadline = time.monotonic() + self.timeout
        delay = _BACKOFF_FIRST
        while True:
            remaining = deadline - time.monotonic()
            try:
                # Writes get a connection of their own: a pooled one the server closed while idle
                # would fail after sending and make the outcome look unknown.
                code, body = self._once(method, path, params, data, remaining, write)
            except _Attempt as a:
                if write and a.reached:
                    raise ConsulOutcomeUnknown("Consul at %s: %s failed, and may or may not have been applied: %s"
                                               % (self.url, what, a.reason), ops)
                failure = a
            else:
                if code == 403:
                    raise self._denied(what, body, refused)
                if code in (_RETRY_WRITE_CODES if write else _RETRY_READ_CODES) or \
                        (write and code == 500 and _before_apply(body)):
                    failure = _Attempt("HTTP %s: %s" % (code, body.strip()[:200]), None, reached=False, retry=True)
                elif write and code >= 500:
                    raise ConsulOutcomeUnknown("Consul at %s: %s failed with HTTP %s, and may or may not have been "
                                               "applied: %s" % (self.url, what, code, body.strip()[:200]), ops)
                else:
                    return code, body
            if time.monotonic() + delay >= deadline or not failure.retry:
                raise OverlayError("Consul at %s: %s failed: %s" % (self.url, what, failure.reason), failure.field)
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def _denied(self, what, body, refused):
        needed = refused or 'key_prefix "%s/" read' % self.settings["prefix"]
        return ConsulPermissionDenied("Consul at %s: %s failed: permission denied: %s needs %s (Consul said: %s)"
                                      % (self.url, what, self.token_label(), needed, body.strip()[:120]))

    def token_label(self):
        """The token in use by AccessorID and Description when Consul tells; never its secret."""
        if self._token_label is None:
            if not self.settings["token"]:
                self._token_label = "the anonymous token (no consul_token / CONSUL_HTTP_TOKEN set)"
            else:
                label = "the token in consul_token / CONSUL_HTTP_TOKEN"
                try:
                    timeout = min(self.timeout, 2.0)
                    status, text, _h = self._exchange("GET", "/v1/acl/token/self", None, None, timeout, timeout,
                                                      pooled=False)
                    if status == 200:
                        info = json.loads(text)
                        label = "token %s" % info.get("AccessorID")
                        if info.get("Description"):
                            label += " (%s)" % info["Description"]
                    elif "ACL not found" in text:
                        label += ", which Consul does not know (ACL not found),"
                except Exception:  # best effort: the refusal itself is what matters
                    pass
                self._token_label = label
        return self._token_label

    def _read(self, what, path, params=None, refused=None):
        """JSON of a GET, or None on 404."""
        code, body = self._request("GET", path, what, params=params, refused=refused)
        if code == 404:
            return None
        if code != 200:
            raise OverlayError("Consul at %s: %s failed with HTTP %s: %s" % (self.url, what, code, body.strip()[:200]))
        try:
            return json.loads(body)
        except ValueError:
            raise OverlayError("Consul at %s: %s returned something that is not JSON: %r" % (self.url, what, body[:80]))

    def _needs(self, key, verb="read"):
        prefix = self.settings["prefix"]
        return 'key_prefix "%s/" %s (for %s)' % (prefix, verb, key)

    def alive(self, timeout=1.0):
        """True when Consul answers, with a leader, within ``timeout`` (on a connection of its own)."""
        try:
            timeout = min(timeout, self.timeout)
            status, text, _h = self._exchange("GET", "/v1/status/leader", None, None, timeout, timeout, pooled=False)
            return status == 200 and bool(json.loads(text))
        except Exception:  # any failure means: not (yet) usable
            return False

    def reset(self):
        """Drop the kept-alive connection (after an outage it may be dead or silent)."""
        conn, self._pooled = self._pooled, None
        if conn is not None:
            conn.close()

    # -- KV ---------------------------------------------------------------------------------
    def get(self, key):
        """(value, modify_index) or (None, 0)."""
        items = self._read("reading %s" % key, _kv_path(key), refused=self._needs(key))
        if not items:
            return None, 0
        return _decode(key, _b64(items[0].get("Value"))), items[0]["ModifyIndex"]

    def get_tree(self, prefix, on_bad=None, known=None):
        """{key: (value, modify_index)} for every key under prefix.

        A value that is not JSON raises OverlayError, unless ``on_bad(key, raw)`` is given: then it is
        called and the key left out. ``known``: an earlier answer; an entry whose ModifyIndex did not
        change since is taken from it (the same tuple) instead of being decoded again.
        """
        items = self._read("reading %s" % prefix, _kv_path(prefix), params={"recurse": ""},
                           refused=self._needs(prefix))
        return _entries(items, on_bad, known)

    def get_trees(self, prefixes, on_bad=None, known=None):
        """get_tree() of each prefix, {prefix: tree}, in ONE read-only transaction (one request, one
        consistent view): for a reader that needs several parts of the store but not all of it. The
        prefixes must not overlap (none the start of another); ``known``: {prefix: an earlier tree}."""
        results = self._read_txn(prefixes, "reading %s" % ", ".join(prefixes))
        # The results come op after op, each op's keys under its prefix: split where they stop being.
        trees = {prefix: {} for prefix in prefixes}
        known = known or {}
        current, prefix, tree, seen = -1, "", None, {}
        for r in results:
            item = r.get("KV") or {}
            key = item.get("Key", "")
            if tree is None or not key.startswith(prefix):
                current += 1
                while current < len(prefixes) and not key.startswith(prefixes[current]):
                    current += 1
                if current == len(prefixes):
                    break
                prefix = prefixes[current]
                tree, seen = trees[prefix], known.get(prefix) or {}
            old = seen.get(key)
            if old is not None and old[1] == item["ModifyIndex"]:
                tree[key] = old
            else:
                tree.update(_entries([item], on_bad, None))
        return trees

    def get_many(self, keys, on_bad=None, known=None):
        """{key: (value, modify_index)} of those ``keys`` that exist, in one read-only transaction per
        TXN_MAX_OPS keys instead of a request each (a missing key is simply not in the answer).
        ``on_bad`` and ``known`` as for get_tree()."""
        found = {}
        wanted = set(keys)
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), TXN_MAX_OPS):
            part = keys[start:start + TXN_MAX_OPS]
            # get-tree, not get: a get of a missing key fails the whole transaction. A key's tree may
            # hold longer keys too (…/192.168.0.1 holds …/192.168.0.10): only the exact ones count.
            items = [r.get("KV") or {} for r in self._read_txn(
                part, "reading %s" % (part[0] if len(part) == 1 else "%s and %d more keys" % (part[0], len(part) - 1)),
                refused='key_prefix "%s/" read' % self.settings["prefix"])]
            found.update(_entries([i for i in items if i.get("Key") in wanted], on_bad, known))
        return found

    def _read_txn(self, prefixes, what, refused=None):
        """The Results of one read-only transaction: a get-tree of each prefix."""
        ops = [{"KV": {"Verb": "get-tree", "Key": prefix}} for prefix in prefixes]
        code, body = self._request("PUT", "/v1/txn", what, data=json.dumps(ops),
                                   refused=refused or " and ".join(self._needs(p) for p in prefixes))
        try:
            answer = json.loads(body) if code in (200, 409) else None
        except ValueError:
            raise OverlayError("Consul at %s: %s returned something that is not JSON: %r" % (self.url, what, body[:80]))
        if code != 200 or not isinstance(answer, dict):
            errors = "; ".join(str(e.get("What")) for e in (answer or {}).get("Errors") or ()) or body.strip()[:200]
            if "Permission denied" in errors:
                raise self._denied(what, errors, None)
            raise OverlayError("Consul at %s: %s failed with HTTP %s: %s" % (self.url, what, code, errors))
        return answer.get("Results") or ()

    def value(self, key):
        """The decoded value of key, or None."""
        return self.get(key)[0]

    def values(self, prefix):
        """The decoded values of every key under prefix (empty ones left out)."""
        return [value for value, index in self.get_tree(prefix).values() if value]

    def keys(self, prefix):
        return self._read("listing %s" % prefix, _kv_path(prefix), params={"keys": ""},
                          refused=self._needs(prefix)) or []

    def wait(self, prefix, index, wait, separator=None):
        """Block until something under prefix changes after ``index`` (or ``wait`` passes): the new index.

        ``wait`` is seconds (or a Go duration such as "60s"). The request is bounded by the wait plus a
        margin: a connection that stays silent longer raises OverlayError, as does any failure
        (no retry: the caller logs it and resyncs). With ``separator`` ("/") Consul answers with the
        keys up to it only (a handful of names, not every key) and the same index: the highest of
        the whole prefix, deletions included.
        """
        seconds = _seconds(wait)
        what = "watching %s" % prefix
        read_timeout = seconds + seconds / 16 + min(self.timeout, _WAIT_MARGIN)
        params = {"keys": "", "index": int(index or 0), "wait": "%dms" % int(seconds * 1000)}
        if separator:
            params["separator"] = separator
        try:
            status, text, headers = self._exchange("GET", _kv_path(prefix), params, None,
                                                   min(self.timeout, read_timeout), read_timeout, pooled=True)
        except _NotSent as e:
            raise OverlayError("Consul at %s: %s failed: %s" % (self.url, what, e), "consul_host")
        except socket.timeout:
            raise OverlayError("Consul at %s: %s failed: the connection stayed silent for %ss, past the %ss wait"
                               % (self.url, what, _fmt(read_timeout), _fmt(seconds)), "consul_host")
        except (_Cut, OSError) as e:
            raise OverlayError("Consul at %s: %s failed: the connection was cut before Consul answered: %s"
                               % (self.url, what, _short(str(e))), "consul_host")
        if status == 403:
            raise self._denied(what, text, self._needs(prefix))
        if status not in (200, 404):
            raise OverlayError("Consul at %s: %s failed with HTTP %s: %s"
                               % (self.url, what, status, text.strip()[:200]), "consul_host")
        try:
            return int(headers.get("X-Consul-Index") or 0)
        except ValueError:
            return 0

    def put(self, key, value):
        """Write key unconditionally; a refusal (Consul answering false) raises OverlayError."""
        code, body = self._request("PUT", _kv_path(key), "writing %s" % key, data=json.dumps(value, sort_keys=True),
                                   write=True, ops=[_kv("set", key, value)], refused=self._needs(key, "write"))
        if code != 200:
            raise OverlayError("Consul at %s: writing %s failed with HTTP %s: %s"
                               % (self.url, key, code, body.strip()[:200]))
        if body.strip() != "true":
            raise OverlayError("Consul at %s refused the write of %s (it answered %r)" % (self.url, key, body.strip()))

    @property
    def layout(self):
        return _keys.Layout(self.settings.get("prefix") or "overlay")

    def commit(self, ops):
        """Apply ops atomically: {key: ModifyIndex} of every KV op that returns an entry
        (cas, set, get, check-index ...; delete and check-not-exists return none).

        The transaction also sets the change mark of every endpoint record it writes
        (``_keys.Layout.change_marks``), after ``ops``: an op's index in a TxnConflict is its index in
        ``ops``. Raises TxnConflict (409: a check failed, nothing applied), ConsulPermissionDenied,
        ConsulOutcomeUnknown (may have committed: re-read), or OverlayError. Callers keep
        batches within TXN_MAX_OPS, marks included (``batches``).
        """
        ops = list(ops) + self.layout.change_marks(ops)
        if len(ops) > TXN_MAX_OPS:
            raise ValueError("a Consul transaction holds at most %d operations" % TXN_MAX_OPS)
        keys = sorted({op["KV"]["Key"] for op in ops if "KV" in op})
        what = "a transaction on %s" % _list_keys(keys)
        refused = 'key_prefix "%s/" write (for %s)' % (self.settings["prefix"], _list_keys(keys))
        code, body = self._request("PUT", "/v1/txn", what, data=json.dumps(ops), write=True, ops=ops,
                                   refused=refused)
        if code == 200:
            try:
                results = json.loads(body).get("Results") or []
            except ValueError:
                raise ConsulOutcomeUnknown("Consul at %s: %s: the answer is not JSON: %r" % (self.url, what, body[:80]),
                                           ops)
            return {r["KV"]["Key"]: r["KV"]["ModifyIndex"] for r in results if r.get("KV")}
        if code == 409:
            try:
                errors = [(e.get("OpIndex"), e.get("What")) for e in json.loads(body).get("Errors") or []]
            except ValueError:
                errors = [(None, body.strip())]
            texts = " ".join(str(w) for _i, w in errors)
            if "Permission denied" in texts or "ACL not found" in texts:
                raise self._denied(what, texts, refused)
            raise TxnConflict("Consul at %s: %s was not applied: %s"
                              % (self.url, what, "; ".join("op %s: %s" % e for e in errors)), errors)
        raise OverlayError("Consul at %s: %s failed with HTTP %s: %s" % (self.url, what, code, body.strip()[:200]))

    def batches(self, ops):
        """``ops`` cut, in order, into transactions that stay within TXN_MAX_OPS once commit() has
        added their change marks."""
        layout, part, marks = self.layout, [], set()
        for op in ops:
            mine = set(layout.mark_keys([op]))
            if part and len(part) + 1 + len(marks | mine) > TXN_MAX_OPS:
                yield part
                part, marks = [], set()
            part.append(op)
            marks |= mine
        if part:
            yield part

    def txn(self, ops):
        """Apply ops atomically. Returns None on success, or the list of (op index, reason) that failed
        (a 409: nothing applied). Raises as commit() does otherwise."""
        try:
            self.commit(ops)
        except TxnConflict as e:
            return e.errors
        return None


def _entries(items, on_bad, known):
    """{key: (value, modify_index)} of KV entries as Consul returns them (see Consul.get_tree)."""
    tree = {}
    known = known or {}
    for i in items or ():
        old = known.get(i["Key"])
        if old is not None and old[1] == i["ModifyIndex"]:
            tree[i["Key"]] = old
            continue
        raw = _b64(i.get("Value"))
        try:
            tree[i["Key"]] = (_decode(i["Key"], raw), i["ModifyIndex"])
        except OverlayError:
            if on_bad is None:
                raise
            on_bad(i["Key"], raw)
    return tree


# -- transaction operations --------------------------------------------------------------------
def _kv(verb, key, value=None, index=None):
    op = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = base64.b64encode(json.dumps(value, sort_keys=True).encode()).decode()
    if index is not None:
        op["Index"] = index
    return {"KV": op}


def op_create(key, value):
    """Write only if the key does not exist yet: the claim that makes allocations unique."""
    return _kv("cas", key, value, 0)


def op_set(key, value):
    """Write unconditionally (the change marks; tests that write as another host would)."""
    return _kv("set", key, value)


def op_cas(key, value, index):
    """Write only if the key's ModifyIndex is still ``index`` (0: only if it does not exist)."""
    return _kv("cas", key, value, index)


def op_delete(key):
    return _kv("delete", key)


def op_delete_cas(key, index):
    """Delete only if the key's ModifyIndex is still ``index``."""
    return _kv("delete-cas", key, index=index)


def op_delete_tree(prefix):
    return _kv("delete-tree", prefix)


def op_check_index(key, index):
    """Fail the transaction unless the key exists with ModifyIndex ``index``."""
    return _kv("check-index", key, index=index)


def op_check_not_exists(key):
    """Fail the transaction if the key exists."""
    return _kv("check-not-exists", key)


def op_get(key):
    """Read the key inside the transaction (fails the transaction if it does not exist)."""
    return _kv("get", key)


def _decode(key, raw):
    if raw is None or raw == b"":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise OverlayError("Consul key %s holds %r, which is not the JSON this collection writes" % (key, raw[:80]))


def _kv_path(key):
    return "/v1/kv/" + quote(key, safe="/")


def _b64(value):
    return None if value is None else base64.b64decode(value)


def _seconds(wait):
    if isinstance(wait, (int, float)):
        return float(wait)
    text = str(wait).strip()
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for unit, factor in units:
        if text.endswith(unit) and text[:-len(unit)].replace(".", "", 1).isdigit():
            return float(text[:-len(unit)]) * factor
    return float(text)


def _fmt(seconds):
    return ("%.1f" % seconds).rstrip("0").rstrip(".")


def _list_keys(keys):
    return ", ".join(keys[:3]) + (" and %d more" % (len(keys) - 3) if len(keys) > 3 else "")


def _is_tls_error(exc):
    """True for a TLS failure (certificate, handshake), which no retry can cure."""
    try:
        import ssl
    except ImportError:  # pragma: no cover - Python without ssl
        return False
    return isinstance(exc, (ssl.SSLError, ssl.CertificateError))


def _before_apply(body):
    """A 500 on a write that says the request was refused before it was applied."""
    text = body.lower()
    if "leadership lost" in text or "timed out" in text or "commit" in text:
        return False
    return "no cluster leader" in text or "no path to datacenter" in text


def _short(text):
    # Long error chains: the last part says what happened.
    return text.rsplit(":", 1)[-1].strip(" )'\"") if len(text) > 160 else text
