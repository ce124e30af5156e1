"""The agent's peers passes in-process on one host, timed and profiled (bench_peers.py runs it on a
receiver whose service it stopped for the while).

    <venv>/bin/python micro_peers.py COLLECTIONS_PATH --host h9 --consul-host 10.0.0.5 --network-id ID
        [--changes 10] [--profile OUT.prof]

One full pass, then CHANGES change passes, each after this script wrote (or deleted) the record of
a fake endpoint of h0 (whose VTEP the firewall already accepts): the CPU time (process_time) of
each pass, of its read of the store alone, of the blocking query's request when it answers at once, and of one health
probe (a constant amount of work: it shows how much the machine's load inflates CPU times); then
as many change passes again under cProfile (CPU time). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("collections_path")
    ap.add_argument("--host", required=True)
    ap.add_argument("--consul-host", required=True)
    ap.add_argument("--network-id", required=True)
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--profile")
    a = ap.parse_args()
    sys.path.insert(0, a.collections_path)
    from ansible_collections.overlay.vxlan.agent import __main__ as cli, peers
    from ansible_collections.overlay.vxlan.plugins.module_utils import _consul, _keys

    params = cli.params_of(cli.parser().parse_args(["--host", a.host, "--vtep", "eth0", "--consul-host", a.consul_host]))
    store = peers.open_store(_consul.connection_settings(params))
    layout = _keys.Layout(store.settings["prefix"])
    state, problems = peers.State(), peers.Once(lambda text: None)

    def timed(call):
        c0 = time.process_time()
        out = call()
        return time.process_time() - c0, out

    full_s = timed(lambda: peers.sync_pass(params, store, layout, state, problems, True, False))[0]
    key = layout.endpoint(a.network_id, "micro-peers")
    record = {"schema": 1, "id": "f" * 64, "name": "micro-peers", "network_id": a.network_id, "network": "micro",
              "ip": "10.96.15.250", "prefixlen": 20, "mac": "02:42:0a:60:0f:fa", "host": "h0", "vtep": "10.0.0.10",
              "ifname": "eth0", "gateway_ip": None, "namespace": "x"}
    prof = cProfile.Profile(time.process_time) if a.profile else None  # CPU time, not wall
    passes, reads = [], []
    for i in range(2 * a.changes if prof is not None else a.changes):
        # Through commit(), as the collection's writers do (it adds the change marks).
        store.commit([_consul.op_set(key, record) if i % 2 == 0 else _consul.op_delete(key)])
        profiled = i >= a.changes  # timed passes first, then as many under the profiler
        if profiled:
            prof.enable()
        seconds, actions = timed(lambda: peers.sync_pass(params, store, layout, state, problems, False, False))
        if profiled:
            prof.disable()
            continue
        passes.append(seconds)
        reads.append(timed(lambda: state.read(store, layout, problems, False))[0])  # nothing changed: the read alone
        assert actions, "a change pass did nothing"
    index = store.wait(layout.root, 0, 1, separator="/")
    wait_s = statistics.median(timed(lambda: store.wait(layout.root, index - 1, 1, separator="/"))[0] for _i in range(5))
    alive_s = statistics.median(timed(store.alive)[0] for _i in range(5))
    out = {"full_pass_cpu_s": full_s, "change_pass_cpu_s": statistics.median(passes), "change_pass_cpu_s_runs": passes,
           "read_cpu_s": statistics.median(reads), "wait_request_cpu_s": wait_s, "health_probe_cpu_s": alive_s}
    if prof is not None:
        prof.dump_stats(a.profile)
        text = io.StringIO()
        pstats.Stats(a.profile, stream=text).sort_stats("cumulative").print_stats(25)
        out["profile_top_cumulative"] = text.getvalue()[-6000:]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
