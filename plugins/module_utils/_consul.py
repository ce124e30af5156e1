# Copyright (c) overlay.vxlan developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Consul client built from module options or the standard CONSUL_* variables, and KV calls
whose errors say which server failed and why. Writes that must not race go through ``txn``."""
from __future__ import annotations

import base64
import json
import os
from urllib.parse import urlparse

from ansible_collections.overlay.vxlan.plugins.module_utils import _validate
from ansible_collections.overlay.vxlan.plugins.module_utils._errors import OverlayError

try:
    import consul
    import requests
    HAS_CONSUL = True
    CONSUL_IMPORT_ERROR = None
except ImportError as e:
    consul = requests = None
    HAS_CONSUL = False
    CONSUL_IMPORT_ERROR = e

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


class TxnConflict(OverlayError):
    """A transaction's checks failed (HTTP 409): nothing was applied; re-read and try again."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("a transaction's checks failed: %s" % "; ".join("op %s: %s" % e for e in errors))


class ConsulOutcomeUnknown(OverlayError):
    """A write may or may not have been applied: its answer never arrived."""

    def __init__(self, reason, ops=None, field="consul_host"):
        self.ops = ops
        super().__init__(reason, field)


class Consul:
    """Thin KV access with clear errors. Values are JSON."""

    def __init__(self, settings):
        if not HAS_CONSUL:
            raise OverlayError("the Python library py-consul (import consul) is required on the target host: %s"
                               % CONSUL_IMPORT_ERROR)
        self.settings = settings
        self.url = "%s://%s:%s" % (settings["scheme"], settings["host"], settings["port"])
        verify = settings["ca_cert"] if (settings["verify"] and settings["ca_cert"]) else settings["verify"]
        self.client = consul.Consul(host=settings["host"], port=settings["port"], scheme=settings["scheme"],
                                    verify=verify)
        # py-consul lets CONSUL_HTTP_TOKEN override an explicit token; ours was resolved already.
        self.client.token = settings["token"]
        self.client.http.connections_timeout = settings["timeout"]
        self.headers = {"X-Consul-Token": settings["token"]} if settings["token"] else {}

    # -- errors ---------------------------------------------------------------------------
    def _error(self, what, exc):
        text = str(exc)
        if isinstance(exc, getattr(consul, "ACLPermissionDenied", ())) or "403" in text[:4] or \
                "Permission denied" in text or "ACL not found" in text:
            reason = "permission denied (check consul_token / CONSUL_HTTP_TOKEN): %s" % text.strip()
            field = "consul_token"
        elif requests is not None and isinstance(exc, requests.exceptions.SSLError):
            reason = "TLS error (check consul_ca_cert / consul_validate_certs): %s" % text
            field = "consul_ca_cert"
        elif requests is not None and isinstance(exc, requests.exceptions.Timeout):
            reason = "no answer within %ss" % self.settings["timeout"]
            field = "consul_host"
        elif requests is not None and isinstance(exc, requests.exceptions.ConnectionError):
            reason = "cannot connect (is the agent running and consul_host/consul_port right?): %s" % _short(text)
            field = "consul_host"
        else:
            reason = text
            field = None
        return OverlayError("Consul at %s: %s failed: %s" % (self.url, what, reason), field)

    def _call(self, what, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OverlayError:
            raise
        except Exception as e:  # py-consul and requests raise many types; all become one clear error
            raise self._error(what, e)

    # -- KV ---------------------------------------------------------------------------------
    def get(self, key):
        """(value, modify_index) or (None, 0)."""
        item = self._call("reading %s" % key, self.client.kv.get, key)[1]
        if not item:
            return None, 0
        return _decode(key, item["Value"]), item["ModifyIndex"]

    def get_tree(self, prefix):
        """{key: (value, modify_index)} for every key under prefix."""
        items = self._call("reading %s" % prefix, self.client.kv.get, prefix, recurse=True)[1]
        return {i["Key"]: (_decode(i["Key"], i["Value"]), i["ModifyIndex"]) for i in items or ()}

    def value(self, key):
        """The decoded value of key, or None."""
        return self.get(key)[0]

    def values(self, prefix):
        """The decoded values of every key under prefix (empty ones left out)."""
        return [value for value, index in self.get_tree(prefix).values() if value]

    def keys(self, prefix):
        keys = self._call("listing %s" % prefix, self.client.kv.get, prefix, keys=True)[1]
        return keys or []

    def wait(self, prefix, index, wait):
        """Block until something under prefix changes after ``index`` (or ``wait`` passes): the new index."""
        new_index = self._call("watching %s" % prefix, self.client.kv.get, prefix, recurse=True, keys=True,
                               index=index, wait=wait)[0]
        return int(new_index or 0)

    def put(self, key, value):
        ok = self._call("writing %s" % key, self.client.kv.put, key, json.dumps(value, sort_keys=True))
        if not ok:
            raise OverlayError("Consul at %s refused the write of %s" % (self.url, key))

    def txn(self, ops):
        """Apply ops atomically. Returns None on success, or the list of (op index, reason) that failed.

        Callers keep batches within TXN_MAX_OPS.
        """
        if len(ops) > TXN_MAX_OPS:
            raise ValueError("a Consul transaction holds at most %d operations" % TXN_MAX_OPS)

        def callback(response):
            return response.code, response.body

        code, body = self._call("a transaction", self.client.http.put, callback, "/v1/txn",
                                data=json.dumps(ops), headers=self.headers)
        if code == 200:
            return None
        if code == 409:
            errors = json.loads(body).get("Errors") or []
            return [(e.get("OpIndex"), e.get("What")) for e in errors]
        if code == 403:
            raise OverlayError("Consul at %s: a transaction was refused: permission denied (check consul_token): %s"
                               % (self.url, body.strip()), "consul_token")
        raise OverlayError("Consul at %s: a transaction failed with HTTP %s: %s" % (self.url, code, body.strip()))


    def commit(self, ops):
        """Apply ops atomically; {key: ModifyIndex} of the KV results. Raises TxnConflict (409),
        ConsulOutcomeUnknown (the request went out, no answer came back) or OverlayError."""
        if len(ops) > TXN_MAX_OPS:
            raise ValueError("a Consul transaction holds at most %d operations" % TXN_MAX_OPS)

        def callback(response):
            return response.code, response.body

        try:
            code, body = self.client.http.put(callback, "/v1/txn", data=json.dumps(ops), headers=self.headers)
        except Exception as e:  # noqa: BLE001
            if requests is not None and isinstance(e, (requests.exceptions.ReadTimeout,
                                                       requests.exceptions.ChunkedEncodingError)):
                raise ConsulOutcomeUnknown("Consul at %s: no answer to a transaction within %ss; it may have "
                                           "been applied" % (self.url, self.settings["timeout"]), ops)
            raise self._error("a transaction", e)
        if code == 200:
            out = {}
            for result in json.loads(body).get("Results") or ():
                kv = result.get("KV")
                if kv:
                    out[kv["Key"]] = kv["ModifyIndex"]
            return out
        if code == 409:
            errors = [(e.get("OpIndex"), e.get("What")) for e in json.loads(body).get("Errors") or []]
            if any("Permission denied" in (w or "") or "ACL not found" in (w or "") for _i, w in errors):
                raise OverlayError("Consul at %s: a transaction was refused: permission denied (check consul_token)"
                                   % self.url, "consul_token")
            raise TxnConflict(errors)
        if code == 403:
            raise OverlayError("Consul at %s: a transaction was refused: permission denied (check consul_token): %s"
                               % (self.url, body.strip()), "consul_token")
        raise OverlayError("Consul at %s: a transaction failed with HTTP %s: %s" % (self.url, code, body.strip()))


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


def op_cas(key, value, index):
    return _kv("cas", key, value, index)


def op_delete_cas(key, index):
    return _kv("delete-cas", key, None, index)


def op_check_index(key, index):
    return _kv("check-index", key, None, index)


def op_delete(key):
    return _kv("delete", key)


def op_delete_tree(prefix):
    return _kv("delete-tree", prefix)


def _decode(key, raw):
    if raw is None or raw == b"":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise OverlayError("Consul key %s holds %r, which is not the JSON this collection writes" % (key, raw[:80]))


def _short(text):
    # requests' connection errors are long chains; the last part says what happened.
    return text.rsplit(":", 1)[-1].strip(" )'\"") if len(text) > 160 else text
