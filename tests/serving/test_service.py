"""The HTTP service over real HTTP on 127.0.0.1: endpoints, auth, limits, hostile payloads, logs, batching.

``server`` runs each endpoint test twice: against the app with a fake predictor (uvicorn in a thread) and
against ``medfuse serve`` with the real tiny bundle (a subprocess). Batching, readiness and shutdown use the
fake, whose calls can be held and counted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from service_helpers import TOKEN, FakePredictor, ServiceProcess, in_process, record

from medfuse import __version__
from medfuse.config import ServeConfig
from medfuse.serving.service import RedactExceptions, bind_error, create_app

MARKER = "Zyxquorbel"  # a word that appears nowhere but in the requests of the logging test


@pytest.fixture(scope="module", params=["fake", "real"])
def server(request):
    if request.param == "fake":
        with in_process(create_app(FakePredictor, ServeConfig(), TOKEN)) as (served, _):
            yield served
        return
    bundle = request.getfixturevalue("bundle_dir")
    proc = ServiceProcess(bundle)
    try:
        yield proc.wait_ready()
    finally:
        rc = proc.stop()
    # uvicorn re-raises the SIGTERM it handled once the app has shut down: a clean stop ends with -SIGTERM
    clean = rc in (0, -signal.SIGTERM) and "stopped" in proc.log()
    assert clean, f"no clean shutdown on SIGTERM (exit {rc}):\n{proc.log()}"


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def labels_of(client) -> list[str]:
    return client.get("/v1/model").json()["labels"]


# ---------------------------------------------------------------- endpoints


def test_health_and_readiness_answer_without_a_token(server):
    with server.client(auth=False) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["model_version"].startswith(f"{__version__}+")


def test_model_card(client):
    card = client.get("/v1/model").json()
    assert card["model_version"] == client.get("/readyz").json()["model_version"]
    assert card["intended_use"] and len(card["labels"]) >= 3


def test_one_record_gets_probabilities_and_decisions(client):
    labels = labels_of(client)
    r = client.post("/v1/predict", json={"record": record("adm-7")})
    assert r.status_code == 200, r.text
    body = r.json()
    p = body["prediction"]
    assert p["id"] == "adm-7" and p["model_version"] == body["model_version"]
    assert list(p["probabilities"]) == labels and set(p["decisions"]) == set(labels)
    assert all(0.0 <= v <= 1.0 for v in p["probabilities"].values())
    assert all(isinstance(v, bool) for v in p["decisions"].values())
    assert "explanations" not in p
    again = client.post("/v1/predict", json={"record": record("adm-7")}).json()["prediction"]
    assert again["probabilities"] == p["probabilities"]  # deterministic, whatever was batched with it


def test_a_batch_keeps_order_and_matches_single_predictions(client):
    batch = [record(7, labs=1), record("b", labs=6, note="fever and productive cough"), record("c", labs=0)]
    r = client.post("/v1/predict", json={"records": batch})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["id"] for p in preds] == [7, "b", "c"]
    alone = client.post("/v1/predict", json={"record": batch[1]}).json()["prediction"]
    assert preds[1]["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-5)
    assert preds[0]["probabilities"] != preds[1]["probabilities"]


def test_explain_adds_explanations(client):
    r = client.post("/v1/predict", json={"records": [record("x", labs=5)], "explain": True})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["explanations"]


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/model", "/healthz", "/readyz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    assert {"PredictRequest", "PatientRecord", "LabResult"} <= set(spec["components"]["schemas"])
    assert spec["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]
    assert "swagger-ui" in client.get("/docs").text


def test_stats_count_requests(client):
    before = client.get("/v1/stats").json()
    client.post("/v1/predict", json={"records": [record("s1"), record("s2")]})
    after = client.get("/v1/stats").json()
    assert after["requests"] - before["requests"] == 1 and after["records"] - before["records"] == 2
    assert after["max_batch"] == 32 and after["queued"] == 0


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"])
def test_a_request_without_the_token_gets_401(server, header):
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        for method, path in (("POST", "/v1/predict"), ("GET", "/v1/model"), ("GET", "/v1/stats")):
            r = c.request(method, path, json={"record": record()})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert "token" in r.json()["detail"]


# ---------------------------------------------------------------- limits and hostile payloads


def raw(body: bytes, content_type: str | None = "application/json") -> dict:
    return {"content": body, "headers": {"Content-Type": content_type} if content_type else {}}


def labs_with(**lab) -> dict:
    return {"record": {"id": 1, "labs": [{"test": 50912, "value": 1.0} | lab]}}


def number(text: str) -> dict:
    return raw(b'{"record": {"id": 1, "labs": [{"test": 50912, "value": %s}]}}' % text.encode())


HOSTILE = {
    "empty body": (raw(b""), 422, ["body"]),
    "truncated JSON": (raw(b'{"record": {"id": '), 422, ["body"]),
    "deeply nested arrays": (raw(b'{"record": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 422, ["body"]),
    "deeply nested objects": (raw(b'{"a":' * 50_000 + b"1" + b"}" * 50_000), 422, ["body"]),
    "NaN": (number("NaN"), 422, ["body", "record", "labs", 0, "value"]),
    "Infinity": (number("Infinity"), 422, ["body", "record", "labs", 0, "value"]),
    "-Infinity": (number("-Infinity"), 422, ["body", "record", "labs", 0, "value"]),
    "1e999": (number("1e999"), 422, ["body", "record", "labs", 0, "value"]),
    "huge finite number": (number("1e300"), 422, ["body", "record", "labs", 0, "value"]),
    "huge number as a string": (number('">1e300"'), 422, ["body", "record", "labs", 0, "value"]),
    "infinity as a string": (number('"Infinity"'), 422, ["body", "record", "labs", 0, "value"]),
    "true as a value": (number("true"), 422, ["body", "record", "labs", 0, "value"]),
    "huge reference range": ({"json": labs_with(ref_range_upper=-1e20)}, 422,
                             ["body", "record", "labs", 0, "ref_range_upper"]),
    "huge integer itemid": ({"json": labs_with(test=10**30)}, 422, ["body", "record", "labs", 0, "test"]),
    "5000-digit id": (raw(b'{"record": {"id": ' + b"9" * 5000 + b"}}"), 422, ["body"]),
    "invalid UTF-8": (raw(b'{"record": {"id": "\xff\xfe\xfa", "note": "caf\xe9"}}'), 422, ["body"]),
    "lone surrogate": (raw(b'{"record": {"id": 1, "note": "\\ud800"}}'), 422, ["body"]),
    "unknown field": ({"json": {"record": record() | {"ssn": "123"}}}, 422, ["body", "record", "ssn"]),
    "wrong type": ({"json": {"record": {"id": 1, "labs": "many"}}}, 422, ["body", "record", "labs"]),
    "neither record nor records": ({"json": {"explain": True}}, 422, ["body"]),
    "empty batch": ({"json": {"records": []}}, 422, ["body", "records"]),
    "top-level array": ({"json": [record()]}, 422, ["body"]),
    "text/plain": (raw(json.dumps({"record": record()}).encode(), "text/plain"), 415, None),
    "form data": ({"data": {"record": "x"}}, 415, None),
    "no content type": (raw(json.dumps({"record": record()}).encode(), None), 415, None),
    "10,000 labs in one record": ({"json": {"record": record(labs=10_000)}}, 413, "10000 lab results"),
    "65 records": ({"json": {"records": [record(i, labs=0) for i in range(65)]}}, 413, "65 records"),
    "100,001 characters of note": ({"json": {"record": {"id": 1, "note": "a" * 100_001}}}, 413, "100001 characters"),
    "notes as a list": ({"json": {"record": {"id": 1, "note": ["a" * 60_000] * 2}}}, 413, "120000 characters"),
    "sections": ({"json": {"record": {"id": 1, "sections": {"chief_complaint": "a" * 100_001}}}}, 413,
                 "100001 characters"),
    "4 MiB + 1 body": (raw(b" " * (4 * 2**20 + 1)), 413, "body is over 4194304 bytes"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_payloads_get_a_4xx_with_a_message_and_the_service_lives_on(client, case):
    kwargs, status, expected = HOSTILE[case]
    r = client.post("/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail
    if isinstance(expected, list):
        assert [e["loc"] for e in detail if e["loc"] == expected], detail
        assert all(e["msg"] and "input" not in e for e in detail)  # the offending input is never echoed
    elif expected:
        assert expected in detail
    assert client.get("/healthz").status_code == 200


def test_a_streamed_body_is_cut_at_the_limit_while_reading(client):
    sent = []

    def chunks():  # no Content-Length: chunked transfer; the limit counts the bytes as they arrive
        for _ in range(64):
            sent.append(1)
            yield b" " * 2**17

    r = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over 4194304 bytes" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_non_finite_values_in_a_batch_name_the_record_and_lab(client):
    body = b'{"records": [{"id": 1}, {"id": 2, "labs": [{"test": 1, "value": 2}, {"test": 2, "value": NaN}]}]}'
    r = client.post("/v1/predict", **raw(body))
    assert r.status_code == 422
    assert ["body", "records", 1, "labs", 1, "value"] in [e["loc"] for e in r.json()["detail"]]


def test_many_errors_are_capped(client):
    r = client.post("/v1/predict", json={"record": {"id": 1, "labs": [{"test": 1, "value": [1]}] * 100}})
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(detail) == 21 and detail[-1]["type"] == "too_many_errors"


# ---------------------------------------------------------------- logs


def test_logs_never_carry_note_text_lab_values_or_ids(server, client):
    ok = {"records": [{"id": f"{MARKER}-id", "admittime": "2150-01-01T08:00:00",
                       "labs": [{"test": 50912, "value": f"{MARKER}", "unit": "mg/dL"},
                                {"test": f"{MARKER} test", "value": 1.0, "unit": MARKER}],
                       "note": f"Chief Complaint:\n{MARKER} pain\n\nHistory of Present Illness:\n{MARKER}.\n"}]}
    assert client.post("/v1/predict", json=ok).status_code == 200
    assert client.post("/v1/predict", json=ok | {"explain": True}).status_code == 200
    assert client.post(f"/v1/predict?id={MARKER}", json=ok | {MARKER: 1}).status_code == 422
    many = {"record": {"id": MARKER, "labs": [{"test": 1, "value": 1}] * 6000}}
    assert client.post("/v1/predict", json=many).status_code == 413
    assert client.get(f"/v1/{MARKER}").status_code == 404
    assert client.request(MARKER.upper(), "/v1/predict").status_code == 405
    log = server.sync_log()
    assert "POST /v1/predict 200" in log and "POST /v1/predict 422" in log and "GET <other> 404" in log
    assert MARKER.lower() not in log.lower()


def test_a_failing_prediction_fails_only_its_request_and_logs_no_message():
    gate = threading.Event()
    fake = FakePredictor(gate=gate)
    with in_process(create_app(lambda: fake, ServeConfig(), TOKEN)) as (served, _), \
            served.client() as c, ThreadPoolExecutor(6) as pool:
        first = pool.submit(c.post, "/v1/predict", json={"record": record("a")})
        assert fake.entered.wait(10)  # "a" holds the worker while the others queue up behind it
        ids = ["b", "poison", "c", "d", "e"]
        rest = [pool.submit(c.post, "/v1/predict", json={"record": record(i)}) for i in ids]
        deadline = time.monotonic() + 10
        while c.get("/v1/stats").json()["queued"] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        responses = [first.result()] + [f.result() for f in rest]
        log = served.sync_log()
    assert [r.status_code for r in responses] == [200, 200, 500, 200, 200, 200]
    assert [r.json()["prediction"]["id"] for r in responses if r.status_code == 200] == ["a", "b", "c", "d", "e"]
    assert responses[2].json() == {"detail": "the prediction failed"}
    assert [n for n, _, _ in fake.calls] == [1, 5, 1, 1, 1, 1, 1]  # the failed batch of 5, then each alone
    assert log.count("prediction failed") == 1 and "(ValueError at service_helpers.py:" in log and "poison" not in log


def test_the_redaction_filter_drops_exception_messages():
    try:
        raise KeyError(f"lab {MARKER} 7.3")
    except KeyError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed on %s", ("batch",), sys.exc_info())
    assert RedactExceptions().filter(rec)
    text = logging.Formatter().format(rec)
    assert text.startswith("failed on batch (KeyError at test_service.py:") and MARKER not in text


# ---------------------------------------------------------------- micro-batching, readiness, shutdown


def test_concurrent_requests_are_micro_batched_on_one_worker_thread():
    fake = FakePredictor(delay=0.03)
    cfg = ServeConfig(max_batch=8, max_wait_ms=20)
    with in_process(create_app(lambda: fake, cfg, TOKEN)) as (served, _), served.client() as c, \
            ThreadPoolExecutor(24) as pool:
        sizes = [1 + i % 3 for i in range(24)]
        responses = list(pool.map(lambda i: c.post("/v1/predict", json={"records": [
            record(f"{i}-{j}", labs=j) for j in range(sizes[i])]}), range(24)))
        stats = c.get("/v1/stats").json()
    assert all(r.status_code == 200 for r in responses)
    for i, r in enumerate(responses):  # each request gets its own records back, in order
        assert [p["id"] for p in r.json()["predictions"]] == [f"{i}-{j}" for j in range(sizes[i])]
    batch_sizes = [n for n, _, _ in fake.calls]
    assert sum(batch_sizes) == sum(sizes) == stats["records"] and stats["batches"] == len(fake.calls)
    assert max(batch_sizes) <= 8 and len(fake.calls) <= len(sizes) / 2
    assert len({t for _, _, t in fake.calls}) == 1 and fake.calls[0][2] != threading.get_ident()
    assert fake.warm_ups == 1


def test_a_lone_client_never_waits_and_concurrent_clients_share_batches():
    lone, fake = FakePredictor(), FakePredictor(delay=0.05)
    with in_process(create_app(lambda: lone, ServeConfig(max_wait_ms=2000), TOKEN)) as (served, _), \
            served.client() as c:
        started = time.monotonic()
        for i in range(3):
            assert c.post("/v1/predict", json={"record": record(str(i))}).status_code == 200
        alone = time.monotonic() - started  # 3 x 2 s if the batcher waited for company
    assert alone < 2 and [n for n, _, _ in lone.calls] == [1, 1, 1]

    def client_loop(c, k: int) -> None:
        for i in range(4):
            assert c.post("/v1/predict", json={"record": record(f"{k}-{i}")}).status_code == 200

    with in_process(create_app(lambda: fake, ServeConfig(max_wait_ms=100), TOKEN)) as (served, _), \
            served.client() as c, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: client_loop(c, k), range(4)))
    # closed-loop clients: once they overlap, the returning ones are waited for and join the same batch
    assert max(n for n, _, _ in fake.calls) == 4 and len(fake.calls) <= 8


def test_a_request_is_never_split_and_explained_requests_run_apart():
    fake = FakePredictor(delay=0.05)
    with in_process(create_app(lambda: fake, ServeConfig(max_batch=4, max_wait_ms=50), TOKEN)) as (served, _), \
            served.client() as c, ThreadPoolExecutor(3) as pool:
        bodies = [{"records": [record(f"big{j}") for j in range(10)]}, {"record": record("e"), "explain": True},
                  {"record": record("p")}]
        responses = list(pool.map(lambda b: c.post("/v1/predict", json=b), bodies))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert sorted(n for n, e, _ in fake.calls if not e) == [1, 10] and [n for n, e, _ in fake.calls if e] == [1]
    assert "explanations" in responses[1].json()["prediction"] and "explanations" not in responses[2].json()["prediction"]


def test_a_full_queue_answers_503_and_the_queue_drains():
    gate = threading.Event()
    fake = FakePredictor(gate=gate)
    with in_process(create_app(lambda: fake, ServeConfig(max_queue=1, max_wait_ms=0), TOKEN)) as (served, _), \
            served.client() as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.post, "/v1/predict", json={"record": record("1")})
        assert fake.entered.wait(10)
        second = pool.submit(c.post, "/v1/predict", json={"record": record("2")})
        deadline = time.monotonic() + 10
        while c.get("/v1/stats").json()["queued"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        third = c.post("/v1/predict", json={"record": record("3")})
        gate.set()
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert first.result().status_code == 200 and second.result().status_code == 200
        stats = c.get("/v1/stats").json()
    assert stats["busy"] == 1 and stats["queued"] == 0 and stats["requests"] == 2


def test_healthz_is_live_while_the_model_loads_and_readyz_waits_for_it():
    loaded = threading.Event()

    def load():
        assert loaded.wait(20)
        return FakePredictor()

    with in_process(create_app(load, ServeConfig(), TOKEN)) as (served, _), served.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").json() == {"ready": False, "status": "loading"}
        r = c.post("/v1/predict", json={"record": record()})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        loaded.set()
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.post("/v1/predict", json={"record": record()}).status_code == 200


def test_a_model_that_fails_to_load_is_reported_and_stops_the_server():
    stopped = threading.Event()

    def load():
        raise FileNotFoundError("bundle.json not found")

    with in_process(create_app(load, ServeConfig(), TOKEN, on_load_error=stopped.set)) as (served, _), \
            served.client() as c:
        assert stopped.wait(10)
        assert c.get("/readyz").json() == {"ready": False, "status": "failed"}
        assert "the model failed to load: FileNotFoundError: bundle.json not found" in served.log()


def test_shutdown_finishes_in_flight_requests():
    gate = threading.Event()
    fake = FakePredictor(gate=gate)
    app = create_app(lambda: fake, ServeConfig(max_wait_ms=0), TOKEN)
    with in_process(app) as (served, server), served.client() as c, ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(c.post, "/v1/predict", json={"record": record(str(i))}) for i in range(3)]
        assert fake.entered.wait(10)
        deadline = time.monotonic() + 10
        while fake.calls[0][0] + app.state.service.batcher.queued < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # until all three requests are in: one call running, the rest queued
        server.should_exit = True  # what SIGTERM does
        time.sleep(0.2)
        gate.set()
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200, 200, 200]
    log = served.log()
    assert sum(n for n, _, _ in fake.calls) == 3
    assert log.index("Shutting down") < log.index("POST /v1/predict 200") < log.index("stopped")


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("host, token, insecure, refused", [
    ("127.0.0.1", None, False, False), ("::1", None, False, False), ("localhost", None, False, False),
    ("127.0.0.2", None, False, False), ("0.0.0.0", None, False, True), ("10.1.2.3", None, False, True),
    ("::", None, False, True), ("example.org", None, False, True), ("0.0.0.0", "t", False, False),
    ("0.0.0.0", None, True, False)])
def test_a_non_loopback_host_needs_a_token_or_allow_insecure(host, token, insecure, refused):
    assert (bind_error(host, token, insecure) is not None) == refused


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``medfuse serve ARGS`` to its end, without MEDFUSE_API_TOKEN."""
    env = {k: v for k, v in os.environ.items() if k != "MEDFUSE_API_TOKEN"}
    return subprocess.run([sys.executable, "-m", "medfuse.cli", "serve", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_serve_refuses_a_public_host_without_a_token_before_loading(tmp_path):
    out = run_cli(str(tmp_path), "--host", "0.0.0.0")
    assert out.returncode == 2 and "refusing to serve on 0.0.0.0" in out.stderr and "MEDFUSE_API_TOKEN" in out.stderr


def test_serve_refuses_a_missing_bundle(tmp_path):
    out = run_cli(str(tmp_path / "nope"))
    assert out.returncode == 2 and "not a model bundle folder" in out.stderr


def test_serve_exits_1_when_the_bundle_does_not_load(tmp_path):
    out = run_cli(str(tmp_path), "--port", "0")
    assert out.returncode == 1 and "the model failed to load" in out.stderr
