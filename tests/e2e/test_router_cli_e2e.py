"""The ppd-server command as a user runs it: embedded unified cluster on the synthetic model
(replica route, workers stopped with the router), and `ppd-server profile` feeding `--profile`."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from processes import Process, free_port, http_json, router_argv

from ppd_server.config import RouterConfig
from ppd_server.http.app import create_app

pytestmark = pytest.mark.e2e


def test_embedded_unified_cluster_serves_replica_and_stops_its_workers():
    port = free_port()
    router = Process(
        "ppd-server",
        router_argv(port, "--embedded", "1R", "--model", "synthetic", "--api-key", "sk-test", "--admin-key", "adm"),
        port,
    )
    try:
        router.wait_healthy(timeout=420.0)
        assert http_json("GET", f"{router.url}/admin/workers", key="sk-test")[0] == 401, "an API key is no admin key"
        status, workers = http_json("GET", f"{router.url}/admin/workers", key="adm")
        assert status == 200 and [w["role"] for w in workers["workers"]] == ["unified"]
        worker_url = workers["workers"][0]["url"]
        req = urllib.request.Request(
            f"{router.url}/generate",
            method="POST",
            data=json.dumps(
                {"input_ids": [1, 2, 3, 4], "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
            ).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
        )
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=60) as r:
            out = json.loads(r.read())
            assert r.headers["X-PPD-Route"] == "replica" and out["ppd"]["decode"] == worker_url
        assert out["meta_info"]["completion_tokens"] == 2
    finally:
        router.stop()
    assert router.returncode == 0, router.log_tail()
    with pytest.raises(OSError):  # the worker went down with the router
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(worker_url + "/health", timeout=2)


def test_profile_subcommand_saves_a_profile_the_router_loads(tmp_path):
    out = tmp_path / "profile.json"
    done = subprocess.run(
        [sys.executable, "-m", "ppd_server", "profile", "--model", "synthetic", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    profile = json.loads(out.read_text())
    assert profile["coefficients"]["decode_base_ms"] > 0 and profile["samples"]
    app = create_app(RouterConfig(worker=("http://127.0.0.1:9",), profile=str(out)))
    assert app is not None
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(Exception, match="profile"):
        create_app(RouterConfig(worker=("http://127.0.0.1:9",), profile=str(bad)))
