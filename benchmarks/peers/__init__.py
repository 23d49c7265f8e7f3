"""`make bench-peers`: encoder-serve against other serving stacks on the same package and cores.

    run       the runner: environments, the in-process limit, every contender under the same wrk load
    stacks    the contenders: how each is installed, started, asked (request body) and understood (answer)
    venvs     one pinned virtual environment per peer under build/peers/<peer>/venv
    report    the two goals against the peers, results.md and throughput_latency.png
    servers/  what each stack serves: peer_model.py (the model code every peer shares), naive_ort_app.py,
              bentoml_service.py, mlserver_runtime.py + mlserver/model-settings.json, ray_app.py
"""
